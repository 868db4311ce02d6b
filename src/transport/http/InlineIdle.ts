/**
 * The inactivity timeout of the pure HTTP mode's response streams on the router
 * (`DYN_STREAM_IDLE_TIMEOUT_SECS`), with HTTP/2 PING as the heartbeat.
 *
 * What it does:
 * - `watch` takes an attached inline stream (`InlineStream.ts`), which marks its `Activity` on
 *   every body chunk (items, SSE heartbeat comments: anything); `unwatch` drops it at its end.
 * - One `IdleSweep` per response-plane server: every period it PINGs each HTTP/2 session that
 *   carries watched streams once the ping interval has passed since its last PING (one PING
 *   outstanding per session at most). The worker's HTTP/2 stack answers a PING while its process
 *   runs and its event loop turns, so an acknowledged PING shows life for every stream of the
 *   session, whatever the body format (NDJSON and binary have no in-band heartbeat); no answer
 *   is what a frozen (SIGSTOP) worker gives, whose kernel still acknowledges TCP.
 * - A stream quiet for the timeout (its own chunks and its session's PING acks both silent), and
 *   still quiet after one more I/O turn, gets `onIdle`: its owner fails it with
 *   TransportTimeoutError "StreamIdle" and resets the HTTP/2 stream (CANCEL), which the worker
 *   sees as its client going away. A paused stream is not idle: the router holds it back.
 *
 * What it does not do: read bodies, or change the wire: PING is HTTP/2's own frame.
 */
import type * as http2 from "node:http2"
import { idleTimings, IdleSweep, lastSeen } from "../../internal/IdleSweep.ts"
import type { Activity } from "../../internal/IdleSweep.ts"
import { LinkedSet } from "../../internal/LinkedSet.ts"

/** One watched stream, as the sweep sees it. */
export interface InlineWatched extends Activity {
  /** The HTTP/2 session that carries it. */
  readonly session: http2.Http2Session
  /** True while the router pauses it. */
  readonly isPaused: () => boolean
  /** Nothing arrived for `silentMs` (at least the timeout `idleMs`). */
  readonly onIdle: (silentMs: number, idleMs: number) => void
}

/** What the sweep keeps per session. */
interface SessionBeat {
  /** When a PING was last acknowledged (or the session first seen). */
  ackedAt: number
  /** When the last PING was sent. */
  pingedAt: number
  pinging: boolean
}

/** The inactivity sweep of one HTTP response-plane server; see the module comment. */
export class InlineIdle {
  private readonly entries = new LinkedSet<InlineWatched>()
  private readonly beats = new WeakMap<http2.Http2Session, SessionBeat>()
  private readonly sweep: IdleSweep
  private readonly idleMs: number
  private readonly pingMs: number

  /** A sweep for streams that may be quiet `idleMs` (> 0) at most. */
  constructor(idleMs: number) {
    this.idleMs = idleMs
    const timings = idleTimings(idleMs)
    this.pingMs = timings.pingMs
    this.sweep = new IdleSweep(timings.periodMs, (now) => this.tick(now))
  }

  /** Watches an attached stream (it counts as active now). */
  watch(entry: InlineWatched): void {
    entry.active = true
    this.entries.add(entry)
    this.sweep.wake()
  }

  /** Stops watching a stream that is over. */
  unwatch(entry: InlineWatched): void {
    this.entries.delete(entry)
  }

  /** Stops the sweep for good (the server's scope closes). */
  stop(): void {
    this.sweep.stop()
    this.entries.clear()
  }

  private beatOf(session: http2.Http2Session, now: number): SessionBeat {
    let beat = this.beats.get(session)
    if (beat === undefined) {
      beat = { ackedAt: now, pingedAt: now, pinging: false }
      this.beats.set(session, beat)
    }
    return beat
  }

  private ping(session: http2.Http2Session, beat: SessionBeat, now: number): void {
    if (beat.pinging || now - beat.pingedAt < this.pingMs || session.closed || session.destroyed) return
    beat.pingedAt = now
    try {
      beat.pinging = session.ping((error) => {
        beat.pinging = false
        if (error === null) beat.ackedAt = performance.now()
      })
    } catch {
      beat.pinging = false // a session closing under us: its streams end on their own
    }
  }

  /** When `entry` last showed life at sweep time `now`: its own chunks or its session's PING acks. */
  private seen(entry: InlineWatched, now: number): number {
    const own = lastSeen(entry, now)
    const acked = this.beats.get(entry.session)?.ackedAt ?? own
    return own > acked ? own : acked
  }

  private tick(now: number): boolean {
    const idleMs = this.idleMs
    let idle: Array<InlineWatched> | undefined
    for (const entry of this.entries.items()) {
      if (entry.isPaused()) {
        entry.active = true
        continue
      }
      this.ping(entry.session, this.beatOf(entry.session, now), now)
      if (now - this.seen(entry, now) >= idleMs) (idle ??= []).push(entry)
    }
    if (idle !== undefined) {
      const candidates = idle
      this.sweep.confirm(() => {
        const later = performance.now()
        for (const entry of candidates) {
          if (!this.entries.has(entry) || entry.isPaused()) continue
          const quiet = later - this.seen(entry, later)
          if (quiet >= idleMs) {
            this.entries.delete(entry)
            entry.onIdle(quiet, idleMs)
          }
        }
      })
    }
    return this.entries.size > 0
  }
}
