/**
 * The transport failures a router-side call-home stream (`CallHomeStream`) ends with, each with
 * the stream's subject as its target: the state machine decides when, this module what.
 *
 * Does not: settle streams, log, or touch sockets.
 */
import { STREAM_ENDED_EARLY } from "../../../protocol/CallHome.ts"
import { TransportConnectionError, TransportProtocolError, TransportTimeoutError } from "../../../TransportError.ts"

/** "ConnectionClosed" for the stream `subject`, saying why. */
export const connectionClosed = (subject: string, detail: string): TransportConnectionError =>
  new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: subject, detail })

/** "StreamEndedEarly": the stream `subject` was cut short (its link closed, a Reset, an early sentinel). */
export const endedEarly = (subject: string, cause: unknown): TransportConnectionError =>
  new TransportConnectionError({ reason: "StreamEndedEarly", transport: "tcp", target: subject, detail: STREAM_ENDED_EARLY, cause })

/** "CallHomeTimeout": no worker called home to `address` for the stream `subject` within `timeoutMs`. */
export const callHomeTimeout = (subject: string, address: string, timeoutMs: number): TransportTimeoutError =>
  new TransportTimeoutError({
    reason: "CallHomeTimeout",
    transport: "tcp",
    target: subject,
    detail: `no worker called home to ${address} within ${timeoutMs} ms`
  })

/**
 * The failure of the connection that carried the stream `subject`, as the stream's own: its
 * TransportProtocolError or TransportTimeoutError (a full-mode peer that missed its heartbeats:
 * "HeartbeatTimeout") with the stream as target; undefined for any other cause (the stream ended
 * early).
 */
export const linkFailure = (cause: Error | undefined, subject: string): TransportProtocolError | TransportTimeoutError | undefined =>
  cause instanceof TransportProtocolError
    ? new TransportProtocolError({ reason: cause.reason, transport: "tcp", target: subject, detail: cause.detail, cause })
    : cause instanceof TransportTimeoutError
    ? new TransportTimeoutError({ reason: cause.reason, transport: "tcp", target: subject, detail: cause.detail, cause })
    : undefined
