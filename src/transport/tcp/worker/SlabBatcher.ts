/**
 * Per-tick write batching of TwoPartCodec frames for a one-shot call-home socket (DESIGN.md,
 * "The hot path"), encoded straight into a buffer shared by every such socket of the process.
 *
 * What it does: `bytes` copies an already-encoded frame, `data` writes a data-only frame's
 * 24-byte prefix and copies its body, and `dataText` encodes a JSON stream item (`{"data":` +
 * the item's JSON + `,"complete_final":false}`) behind its prefix, with no bytes of the item
 * made on their own. The shared slab is used like a bump allocator: bytes handed to a socket are
 * never rewritten, and a full slab is replaced by a fresh one (the old one stays with the views
 * handed out). A socket's frames of one tick that sit next to each other in the slab leave as
 * one view, without a copy; when another socket wrote in between, or the slab was replaced, its
 * runs are joined at the flush. A body of `BY_REFERENCE_BYTES` or more is queued by reference.
 *
 * Why: one-shot sockets live for one stream each, so a buffer of their own would be mostly
 * empty, and a separate prefix and body per item (plus their join) cost about 3,000
 * instructions an item more on the worker (measured: docs/performance.md, "Eleventh session").
 *
 * What it does not do: decide whether the socket can take the bytes (the `write` it is given
 * does), or check sizes against a maximum (the writer does).
 */
import { FRAME_PREFIX_SIZE } from "../../../protocol/TwoPartCodec.ts"
import { FLUSH_EARLY_BYTES } from "../../../internal/WriteBatcher.ts"
import type { FlushSchedule } from "../../../internal/WriteBatcher.ts"
import { onNextTick } from "../../../internal/SharedTick.ts"
import { BY_REFERENCE_BYTES, mostUtf8Bytes } from "./FrameBatcher.ts"
import { writeUtf8 } from "../../../protocol/AsciiText.ts"

/** Size of each shared slab. */
export const SLAB_BYTES = 64 * 1024

// The shared slab and how much of it is taken. Only ever grows within one slab, so that a view
// handed to a socket is never rewritten.
let slab: Buffer = Buffer.allocUnsafe(SLAB_BYTES)
let used = 0

/** Writes a u64 BE that is below 2^32 at `o`: four zero bytes, then `v`. */
const putSmallU64 = (b: Buffer, o: number, v: number): void => {
  b[o] = 0
  b[o + 1] = 0
  b[o + 2] = 0
  b[o + 3] = 0
  b[o + 4] = v >>> 24
  b[o + 5] = (v >>> 16) & 0xff
  b[o + 6] = (v >>> 8) & 0xff
  b[o + 7] = v & 0xff
}

/** A data-only frame's prefix at `o`: header_len 0, `bodyLen`, checksum 0 (unchecked). */
const putDataPrefix = (b: Buffer, o: number, bodyLen: number): void => {
  putSmallU64(b, o, 0)
  putSmallU64(b, o + 8, bodyLen)
  putSmallU64(b, o + 16, 0)
}

/** Queues one socket's TwoPartCodec frames and writes them once per tick; see the module comment. */
export class SlabBatcher {
  /** This tick's earlier runs and by-reference bodies, when there are any. */
  private pieces: Array<Uint8Array> | undefined = undefined
  /** The slab of the current run (undefined: no run), and the run's bounds in it. */
  private runSlab: Buffer | undefined = undefined
  private runStart = 0
  private runEnd = 0
  private queued = 0
  private scheduled = false
  private readonly write: (chunk: Uint8Array) => void
  private readonly schedule: FlushSchedule
  private readonly afterFlush: (() => void) | undefined

  /**
   * `write` receives each tick's bytes as one chunk; it decides whether the socket can still
   * take them. `afterFlush`, when given, runs after every flush (e.g. to end the socket once the
   * last frames are out).
   */
  constructor(write: (chunk: Uint8Array) => void, schedule: FlushSchedule = onNextTick, afterFlush?: () => void) {
    this.write = write
    this.schedule = schedule
    this.afterFlush = afterFlush
  }

  /** True while a flush is scheduled. */
  get pending(): boolean {
    return this.scheduled
  }

  /** Queues bytes already encoded (a whole frame, or several). */
  bytes(chunk: Uint8Array): void {
    const n = chunk.length
    if (n >= BY_REFERENCE_BYTES) this.piece(chunk)
    else {
      const o = this.reserve(n)
      slab.set(chunk, o)
    }
    this.queued += n
    this.requestFlush()
  }

  /** Queues a data-only frame (header_len 0) of `body`. */
  data(body: Uint8Array): void {
    const n = body.length
    if (n >= BY_REFERENCE_BYTES) {
      const o = this.reserve(FRAME_PREFIX_SIZE)
      putDataPrefix(slab, o, n)
      this.piece(body)
    } else {
      const o = this.reserve(FRAME_PREFIX_SIZE + n)
      putDataPrefix(slab, o, n)
      slab.set(body, o + FRAME_PREFIX_SIZE)
    }
    this.queued += FRAME_PREFIX_SIZE + n
    this.requestFlush()
  }

  /**
   * Queues a data-only frame whose body is `prefix`, the UTF-8 of `text`, then `suffix`: room for
   * the most the text can take (`mostUtf8Bytes`) is reserved, the text written, and the room
   * left over given back. Returns the body's length. The caller keeps the most under
   * `BY_REFERENCE_BYTES` (`mostTextFrameBytes`).
   */
  dataText(prefix: Uint8Array, text: string, suffix: Uint8Array): number {
    const room = mostUtf8Bytes(text)
    const most = FRAME_PREFIX_SIZE + prefix.length + room + suffix.length
    const o = this.reserve(most)
    const b = slab
    const p = o + FRAME_PREFIX_SIZE
    b.set(prefix, p)
    const textBytes = writeUtf8(b, text, p + prefix.length, room)
    b.set(suffix, p + prefix.length + textBytes)
    const bodyLen = prefix.length + textBytes + suffix.length
    putDataPrefix(b, o, bodyLen)
    // give back the room not used (nothing was reserved after it)
    const end = p + bodyLen
    used = end
    this.runEnd = end
    this.queued += FRAME_PREFIX_SIZE + bodyLen
    this.requestFlush()
    return bodyLen
  }

  /** Writes what is queued now if it is `FLUSH_EARLY_BYTES` or more (backpressure checks). */
  flushEarly(): void {
    if (this.queued >= FLUSH_EARLY_BYTES) this.flush()
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
    this.scheduled = false
    if (this.queued > 0) {
      const run = this.endRun()
      const pieces = this.pieces
      let chunk: Uint8Array
      if (pieces === undefined) chunk = run!
      else {
        if (run !== undefined) pieces.push(run)
        chunk = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, this.queued)
        this.pieces = undefined
      }
      this.queued = 0
      this.write(chunk)
    }
    this.afterFlush?.()
  }

  /** Drops what is queued (the socket is gone). */
  clear(): void {
    this.runSlab = undefined
    this.pieces = undefined
    this.queued = 0
  }

  private readonly flushBound = (): void => this.flush()

  /** The current run as a view (undefined when there is none), and no run after it. */
  private endRun(): Uint8Array | undefined {
    const s = this.runSlab
    if (s === undefined) return undefined
    this.runSlab = undefined
    return s.subarray(this.runStart, this.runEnd)
  }

  /** Room for `n` (< `SLAB_BYTES`) more bytes in the shared slab, at the end of this socket's run; returns where they go. */
  private reserve(n: number): number {
    if (used + n > SLAB_BYTES) {
      slab = Buffer.allocUnsafe(SLAB_BYTES)
      used = 0
    }
    if (this.runSlab !== slab || this.runEnd !== used) {
      const run = this.endRun()
      if (run !== undefined) (this.pieces ??= []).push(run)
      this.runSlab = slab
      this.runStart = used
    }
    const at = used
    used += n
    this.runEnd = used
    return at
  }

  /** Ends the current run and queues `chunk` by reference after it. */
  private piece(chunk: Uint8Array): void {
    const pieces = (this.pieces ??= [])
    const run = this.endRun()
    if (run !== undefined) pieces.push(run)
    pieces.push(chunk)
  }
}

/** The most bytes a `dataText` frame of `text`, with `prefix` and `suffix` of `overhead` bytes, can take. */
export const mostTextFrameBytes = (text: string, overhead: number): number => FRAME_PREFIX_SIZE + overhead + mostUtf8Bytes(text)

