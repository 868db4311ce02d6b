/**
 * Per-tick write batching for a socket: frames pushed in the same tick go out in one write
 * (DESIGN.md, "The hot path": never a write per frame, never an awaited write). The socket is
 * the caller's; this only queues, concatenates and hands one chunk to `write`.
 */
import { onNextTick } from "./SharedTick.ts"

/**
 * Frames queued in one tick beyond this many bytes are written at once by `flushEarly`, so a
 * handler that emits a lot without yielding is still held back by its socket.
 */
export const FLUSH_EARLY_BYTES = 64 * 1024

/** The writer's schedule: the end of the tick (`onNextTick`, SharedTick.ts: the default) or `setImmediate`. */
export type FlushSchedule = (f: () => void) => void

/** Queues frames and writes them once per tick. */
export class WriteBatcher {
  private out: Array<Uint8Array> = []
  private bytes = 0
  private scheduled = false
  private readonly write: (chunk: Uint8Array) => void
  private readonly schedule: FlushSchedule
  private readonly afterFlush: (() => void) | undefined
  private readonly beforeFlush: (() => void) | undefined

  /**
   * `write` receives each batch; it decides whether the socket can still take it.
   * `afterFlush`, when given, runs after every flush (e.g. to end the socket once the last
   * frames are out). `beforeFlush`, when given, runs at the start of every flush and may `push`
   * more into it (a writer's bytes held apart until then).
   */
  constructor(write: (chunk: Uint8Array) => void, schedule: FlushSchedule = onNextTick, afterFlush?: () => void, beforeFlush?: () => void) {
    this.write = write
    this.schedule = schedule
    this.afterFlush = afterFlush
    this.beforeFlush = beforeFlush
  }

  /** Writes what is queued now if it is `FLUSH_EARLY_BYTES` or more (backpressure checks). */
  flushEarly(): void {
    if (this.bytes >= FLUSH_EARLY_BYTES) this.flush()
  }

  /** True while a flush is scheduled. */
  get pending(): boolean {
    return this.scheduled
  }

  /** Queues a frame (or part of one) for this tick's write. */
  push(frame: Uint8Array): void {
    this.out.push(frame)
    this.bytes += frame.length
    this.requestFlush()
  }

  /** Schedules a flush for this tick even with nothing queued (so `afterFlush` runs). */
  requestFlush(): void {
    if (!this.scheduled) {
      this.scheduled = true
      this.schedule(this.flushBound)
    }
  }

  /** Writes what is queued now (no-op when empty). */
  flush(): void {
    // Still "scheduled" while the hook pushes: what it pushes joins this flush.
    this.beforeFlush?.()
    this.scheduled = false
    const n = this.out.length
    if (n > 0) {
      const chunk = n === 1 ? this.out[0]! : Buffer.concat(this.out, this.bytes)
      this.out = []
      this.bytes = 0
      this.write(chunk)
    }
    this.afterFlush?.()
  }

  /** Drops what is queued (the socket is gone). */
  clear(): void {
    this.out = []
    this.bytes = 0
  }

  private readonly flushBound = (): void => this.flush()
}
