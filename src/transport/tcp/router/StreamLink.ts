/**
 * The contract between a router-side call-home stream (CallHomeStream) and what carries it: the
 * `StreamLink` its driver implements (a one-shot socket, or a stream on a mux connection), and
 * the `StreamEnv` its server shares with every stream, and the stream's `Phase`, which drivers
 * read to map frames to events.
 *
 * Types and constants only: no I/O, no state.
 */
import type { ConnectionInfo } from "../../../ConnectionInfo.ts"
import type { DeadlineList } from "../../../internal/DeadlineList.ts"

/** A debug log line from a socket callback (never throws). */
export type LogDebug = (message: string, annotations: Record<string, unknown>) => void

/** How a claimed stream reaches its worker: a one-shot socket, or a stream on a mux connection. */
export interface StreamLink {
  /** True when a `"sentinel"` frame follows complete_final (one-shot); a mux stream is over at its end. */
  readonly awaitsSentinel: boolean
  /** Sends the router's stop or kill to the worker. */
  control(message: "stop" | "kill"): void
  /** Takes no more of the stream's data: the socket is not read (one-shot), no credit is granted (mux). */
  pause(): void
  /** Takes the stream's data again after `pause`. */
  resume(): void
  /** Items were queued since the last `flush()`: the driver must flush the stream at the end of the chunk. */
  batchStarted(): void
  /**
   * The stream is over on the router's side: the link lets it go (the one-shot socket is
   * destroyed; the mux stream is forgotten, with a Reset carrying `reset` when given).
   */
  release(reset: string | undefined): void
  /** The consumer closed the stream before its end: the worker must hear a disconnect. */
  cancel(): void
  /** The worker's "host:port", named in an idle timeout. */
  readonly peer?: string | undefined
  /**
   * The inactivity sweep asks (at sweep time `now`): when the link last showed that the worker is
   * alive for every stream it carries (a mux connection with heartbeats: any frame), or undefined
   * when only the stream's own frames count (a one-shot socket, a mux connection without them).
   */
  heardAt?(now: number): number | undefined
  /** Turns TCP keepalive on with `delayMs` (a one-shot socket that outlived a sweep; once, later calls do nothing). */
  keepAlive?(delayMs: number): void
}

/** The phases of a call-home stream, in order. */
export const Phase = {
  /** Opened; no worker has called home yet. */
  Waiting: 0,
  /** The worker called home; its prologue is next. */
  Prologue: 1,
  /** The handler started: items flow. */
  Streaming: 2,
  /** complete_final was read (one-shot): the sentinel is next. */
  Sentinel: 3,
  /** Over: its link is released or gone. */
  Closed: 4
} as const

/** A phase of a call-home stream. */
export type Phase = (typeof Phase)[keyof typeof Phase]

/** A stream as the server's deadline lists see it. */
export interface CallHomeWaiter {
  /** Its call-home deadline passed before a worker called home. */
  callHomeExpired(): void
  /** Its wait for the one-shot sentinel after complete_final ran out. */
  sentinelExpired(): void
}

/** What every stream of one server shares. */
export interface StreamEnv {
  /** How long a stream waits for its worker to call home. */
  readonly callHomeTimeoutMs: number
  /**
   * The server's call-home deadlines (`callHomeTimeoutMs` each), one timer for all of its
   * streams: a stream adds itself when it opens and leaves when claimed or over; the list calls
   * its `callHomeExpired` when the deadline passes first.
   */
  readonly callHomeDeadlines: DeadlineList<CallHomeWaiter>
  /** How long after complete_final a one-shot stream waits for the sentinel. */
  readonly sentinelTimeoutMs: number
  /** The server's sentinel deadlines (`sentinelTimeoutMs` each), one timer for all of its streams. */
  readonly sentinelDeadlines: DeadlineList<CallHomeWaiter>
  /** Removes a settled or closed stream from the server's table by its id (its subject's bytes): the subject is used up. */
  readonly forget: (id: Uint8Array) => void
  /** Debug logging from socket callbacks. */
  readonly logDebug: LogDebug
  /** The call-home address of the stream `subject` for `requestId`, advertised at `address` (the server's form: one-shot or pooled). */
  readonly connectionInfo: (address: string, subject: string, requestId: string) => ConnectionInfo
}
