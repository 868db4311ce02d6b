/**
 * The full mode's liveness check for one connection (docs/protocol.md, "The full TCP mode",
 * heartbeats), without a socket: when to send a Ping, and when the peer is dead.
 *
 * What it does: `heard` records that a chunk arrived (any frame counts, a Pong as much as Data).
 * The worker's side (`"always"`) pings every interval; the router's (`"whenSilent"`) pings only
 * once it has heard nothing for one interval (and at most once per interval). A peer heard from
 * not at all for two intervals (or for `silenceLimitMs`, when that is shorter: the worker's idle
 * timeout) is dead: `onDead` runs once, with how long it was silent, and the heartbeat stops.
 * One timer per connection, set for the next thing due (a ping, or the deadline), never re-armed
 * per chunk; it does not keep the process alive (unref). A deadline is judged after one more I/O
 * turn, so frames waiting unread after a busy stretch still count.
 *
 * What it does not do: encode or send frames (`onPing` does), or close anything (`onDead`'s owner
 * does).
 */

/** Who pings: the worker every interval, the router only after an interval of silence. */
export type PingPolicy = "always" | "whenSilent"

/** One connection's heartbeat; see the module comment. */
export class Heartbeat {
  private readonly intervalMs: number
  private readonly policy: PingPolicy
  private readonly onPing: () => void
  private readonly onDead: (silentMs: number) => void
  private readonly silenceLimitMs: number
  private lastHeard: number
  private lastPing: number
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  private stopped = false

  /** Starts at once: the peer counts as heard now. Silence beyond `silenceLimitMs` (default two intervals, at most that) is death. */
  constructor(intervalMs: number, policy: PingPolicy, onPing: () => void, onDead: (silentMs: number) => void, silenceLimitMs: number = 2 * intervalMs) {
    this.intervalMs = intervalMs
    this.policy = policy
    this.onPing = onPing
    this.onDead = onDead
    this.silenceLimitMs = Math.min(silenceLimitMs, 2 * intervalMs)
    const now = performance.now()
    this.lastHeard = now
    this.lastPing = now
    this.arm(now)
  }

  /** Something arrived from the peer. */
  heard(): void {
    this.lastHeard = performance.now()
  }

  /** Stops the timer for good (the connection is closing). */
  stop(): void {
    this.stopped = true
    clearTimeout(this.timer)
    this.timer = undefined
  }

  private nextPing(): number {
    return this.policy === "always" ? this.lastPing + this.intervalMs : Math.max(this.lastHeard, this.lastPing) + this.intervalMs
  }

  private arm(now: number): void {
    const due = Math.min(this.nextPing(), this.lastHeard + this.silenceLimitMs)
    this.timer = setTimeout(this.onTimer, Math.max(1, Math.ceil(due - now)))
    this.timer.unref?.()
  }

  private readonly onTimer = (): void => {
    this.timer = undefined
    if (this.stopped) return
    const now = performance.now()
    if (now - this.lastHeard >= this.silenceLimitMs) {
      // Timers run before I/O in a turn of the event loop: after a busy stretch the peer's frames
      // may be waiting unread. Judge after one more I/O turn.
      const heard = this.lastHeard
      setImmediate(() => {
        if (this.stopped) return
        if (this.lastHeard !== heard) return this.arm(performance.now())
        this.stopped = true
        this.onDead(performance.now() - heard)
      })
      return
    }
    if (now >= this.nextPing()) {
      this.lastPing = now
      this.onPing()
      if (this.stopped) return
    }
    this.arm(now)
  }
}
