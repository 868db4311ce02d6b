/**
 * The coarse clock of the inactivity timeouts (`DYN_STREAM_IDLE_TIMEOUT_SECS`): one interval per
 * server instead of a timer per stream or per item.
 *
 * What it does:
 * - `Activity` is what a watched thing (a stream, a connection) carries: the hot path sets
 *   `active = true` (one store per frame or chunk, no clock read); the sweep reads it with
 *   `lastSeen`, which turns the flag into the sweep time at which activity was seen. That time is
 *   never earlier than the activity itself, so a timeout judged on it never fires early (it fires
 *   up to two sweep periods late).
 * - `IdleSweep` runs `sweep(now)` every `periodMs` on one unref'd interval, started by `wake()`
 *   (a field check when it runs already) and stopped when `sweep` reports nothing left to watch.
 *   A thing that looks idle is judged once more after one I/O turn (`confirm`): timers run before
 *   I/O in a turn of the event loop, so after a busy stretch of the router's own, frames may be
 *   waiting unread, and they must count.
 * - `idleTimings(idleMs)` derives the sweep period and the heartbeat interval from the timeout;
 *   `ConnectionLiveness` is a connection's side (heartbeats heard, Pings due); `streamIdleError`
 *   builds the TransportTimeoutError "StreamIdle" every plane reports.
 *
 * What it does not do: know streams, sockets or sessions, send heartbeats, or fail anything: its
 * owners do, in `sweep` and in the `confirm` callback.
 */
import { TransportTimeoutError } from "../TransportError.ts"
import type { TransportId } from "../Transport.ts"

/** Activity of one watched thing; see the module comment. */
export interface Activity {
  /** Set by the hot path on every sign of life; cleared by the sweep. */
  active: boolean
  /** The sweep time (performance.now() ms) at which activity was last seen. */
  seenAt: number
}

/** The sweep time at which `a` was last seen active; `now` when it is active since the last look. */
export const lastSeen = (a: Activity, now: number): number => {
  if (a.active) {
    a.active = false
    a.seenAt = now
  }
  return a.seenAt
}

/** The period of the sweep and of heartbeats for one idle timeout. */
export interface IdleTimings {
  /** The timeout, ms (> 0). */
  readonly idleMs: number
  /** How often the sweep looks: a tenth of the timeout, from 10 ms to 5 s. */
  readonly periodMs: number
  /** How long a connection may be silent before the router pings it: a quarter of the timeout, from two periods to 30 s. */
  readonly pingMs: number
}

/** The sweep period and heartbeat interval for `idleMs` (> 0). */
export const idleTimings = (idleMs: number): IdleTimings => {
  const periodMs = Math.min(5000, Math.max(10, Math.floor(idleMs / 10)))
  const pingMs = Math.min(30_000, Math.max(2 * periodMs, Math.floor(idleMs / 4)))
  return { idleMs, periodMs, pingMs }
}

/** One sweep; see the module comment. */
export class IdleSweep {
  /** How often `sweep` runs, ms. */
  private readonly periodMs: number
  private readonly sweep: (now: number) => boolean
  private timer: ReturnType<typeof setInterval> | undefined = undefined
  private stopped = false

  /** `sweep(now)` runs every `periodMs` once woken; it returns false when nothing is left to watch. */
  constructor(periodMs: number, sweep: (now: number) => boolean) {
    this.periodMs = periodMs
    this.sweep = sweep
  }

  /** Makes sure the sweep runs (something new is watched). */
  wake(): void {
    if (this.timer !== undefined || this.stopped) return
    this.timer = setInterval(this.tick, this.periodMs)
    this.timer.unref?.()
  }

  /** Stops for good (the owner closes). */
  stop(): void {
    this.stopped = true
    clearInterval(this.timer)
    this.timer = undefined
  }

  /**
   * Runs `f` after one more I/O turn, unless stopped by then: the owner judges there whether a
   * thing that looked idle still is (its `active` flag tells).
   */
  confirm(f: () => void): void {
    setImmediate(() => {
      if (!this.stopped) f()
    })
  }

  private readonly tick = (): void => {
    if (this.sweep(performance.now())) return
    clearInterval(this.timer)
    this.timer = undefined
  }
}

/**
 * A connection's liveness for the sweep: any chunk sets `active`. With `heartbeats` (the peer
 * answers Pings, or the protocol has them) it shows life for every stream on the connection.
 */
export class ConnectionLiveness implements Activity {
  active = false
  seenAt = performance.now()
  private pingedAt = 0
  /** True when any frame counts for every stream on the connection. */
  readonly heartbeats: boolean

  constructor(heartbeats: boolean) {
    this.heartbeats = heartbeats
  }

  /** When the connection last showed life (sweep time), when that counts for its streams; else undefined. */
  heardAt(now: number): number | undefined {
    return this.heartbeats ? lastSeen(this, now) : undefined
  }

  /** True (and counted as sent) when a Ping is due: heartbeats, silent for `pingMs`, none sent for `pingMs`. */
  pingDue(now: number, pingMs: number): boolean {
    if (!this.heartbeats || now - lastSeen(this, now) < pingMs || now - this.pingedAt < pingMs) return false
    this.pingedAt = now
    return true
  }
}

const secondsText = (ms: number): string => String(Math.round(ms / 100) / 10)

/** TransportTimeoutError "StreamIdle": `what` (the stream) heard nothing from `target` for `silentMs`. */
export const streamIdleError = (transport: TransportId, target: string, what: string, silentMs: number, idleMs: number): TransportTimeoutError =>
  new TransportTimeoutError({
    reason: "StreamIdle",
    transport,
    target,
    detail: `${what} received nothing (no item, no heartbeat) from the worker for ${secondsText(silentMs)} s; ` +
      `the idle timeout is ${secondsText(idleMs)} s (DYN_STREAM_IDLE_TIMEOUT_SECS)`
  })
