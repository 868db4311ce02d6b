/**
 * The typed failure family of the transport layer.
 *
 * Three transport failures, one per Prometheus `error_type` (timeout, connection, protocol),
 * each with a `reason` literal, the `target` it concerns (host:port, subject, endpoint) and the
 * underlying `cause`. Plus the failures a caller of the Endpoint API meets: no transport
 * matches, no such endpoint, and a worker handler that failed.
 */
import { Data } from "effect"
import type { PlaneType, TransportCapabilities, TransportId } from "./Transport.ts"

const describe = (head: string, target: string, detail: string | undefined): string =>
  detail === undefined || detail === "" ? `${head} (target ${target})` : `${head} (target ${target}): ${detail}`

/**
 * A wait that ran out of time: an ack, a call-home, a connect, a pool acquisition, or a peer that
 * stopped answering heartbeats ("HeartbeatTimeout": nothing heard for two heartbeat intervals).
 * "StreamIdle": a response stream that received nothing, no item and no heartbeat, for
 * `DYN_STREAM_IDLE_TIMEOUT_SECS` (a frozen worker).
 */
export class TransportTimeoutError extends Data.TaggedError("TransportTimeoutError")<{
  readonly reason: "AckTimeout" | "CallHomeTimeout" | "ConnectTimeout" | "AcquireTimeout" | "StreamTimeout" | "HeartbeatTimeout" | "StreamIdle"
  readonly transport: TransportId
  readonly target: string
  readonly detail?: string | undefined
  readonly cause?: unknown
}> {
  /** The Prometheus `error_type` label of this failure. */
  get errorType(): "timeout" {
    return "timeout"
  }
  override get message(): string {
    return describe(`${this.transport} ${this.reason}`, this.target, this.detail)
  }
}

/**
 * A connection that could not be made, was refused, or died. "Overloaded": the worker refused the
 * request because it is at its in-flight cap (Dynamo's `Server overloaded:` ack); "ServerUnavailable":
 * it cannot serve it now (draining, unknown to it, `Server unavailable:`). "TlsHandshakeFailed":
 * the TCP connect succeeded but the TLS handshake did not (`DYN_TCP_TLS_*`: a certificate the CA
 * does not verify, a name mismatch, a plaintext peer).
 */
export class TransportConnectionError extends Data.TaggedError("TransportConnectionError")<{
  readonly reason:
    | "ConnectFailed"
    | "ConnectionClosed"
    | "StreamEndedEarly"
    | "SendFailed"
    | "Refused"
    | "ServerUnavailable"
    | "Overloaded"
    | "ListenFailed"
    | "TlsHandshakeFailed"
  readonly transport: TransportId
  readonly target: string
  readonly detail?: string | undefined
  readonly cause?: unknown
}> {
  /** The Prometheus `error_type` label of this failure. */
  get errorType(): "connection" {
    return "connection"
  }
  override get message(): string {
    return describe(`${this.transport} ${this.reason}`, this.target, this.detail)
  }
}

/** Bytes or messages that break the protocol: bad frames, oversized messages, bad handshakes. */
export class TransportProtocolError extends Data.TaggedError("TransportProtocolError")<{
  readonly reason:
    | "MalformedFrame"
    | "MessageTooLarge"
    | "ChecksumMismatch"
    | "BadHandshake"
    | "UnknownSubject"
    | "BadPayload"
    | "BadStatus"
    | "UnexpectedMessage"
  readonly transport: TransportId
  readonly target: string
  readonly detail?: string | undefined
  readonly cause?: unknown
}> {
  /** The Prometheus `error_type` label of this failure. */
  get errorType(): "protocol" {
    return "protocol"
  }
  override get message(): string {
    return describe(`${this.transport} ${this.reason}`, this.target, this.detail)
  }
}

/** Any transport failure. */
export type TransportError = TransportTimeoutError | TransportConnectionError | TransportProtocolError

/** No registered transport on `plane` meets `required`. */
export class NoTransportAvailable extends Data.TaggedError("NoTransportAvailable")<{
  readonly plane: PlaneType
  readonly required: TransportCapabilities
  readonly transport?: TransportId | undefined
}> {
  override get message(): string {
    const want = this.transport === undefined ? "" : ` with id ${this.transport}`
    return `no ${this.plane} transport${want} meets ${JSON.stringify(this.required)}`
  }
}

/** The endpoint is unknown: no instance in discovery, or the worker answered 404. */
export class EndpointNotFound extends Data.TaggedError("EndpointNotFound")<{
  readonly endpoint: string
  readonly target?: string | undefined
  readonly detail?: string | undefined
}> {
  override get message(): string {
    const where = this.target === undefined ? "" : ` at ${this.target}`
    const why = this.detail === undefined ? "" : `: ${this.detail}`
    return `endpoint ${this.endpoint} not found${where}${why}`
  }
}

/** An endpoint path given to `serve` or `client` is not "namespace.component.endpoint". */
export class InvalidEndpointPath extends Data.TaggedError("InvalidEndpointPath")<{
  readonly path: string
  readonly detail: string
}> {
  override get message(): string {
    return `invalid endpoint path ${JSON.stringify(this.path)}: ${this.detail}`
  }
}

/** The worker's handler failed, before the stream started (prologue) or during it. */
export class HandlerError extends Data.TaggedError("HandlerError")<{
  readonly endpoint: string
  readonly requestId: string
  readonly detail: string
  readonly phase: "prologue" | "stream"
}> {
  override get message(): string {
    return `handler of ${this.endpoint} failed (${this.phase}, request ${this.requestId}): ${this.detail}`
  }
}

/**
 * A response item the worker could not write: it has no encoding in the stream's payload codec
 * (`EncodeFailed`), or its frame is larger than the transport's maximum message size
 * (`MessageTooLarge`). Returned by `ResponseWriter.send`/`sendAll` and by `emit` as a failed
 * `Exit`, so `yield* emit(item)` fails in the handler's error channel; the stream itself is then
 * failed in-band, so the router sees a `HandlerError` naming the problem and nothing ends silently.
 */
export class ResponseWriteError extends Data.TaggedError("ResponseWriteError")<{
  readonly reason: "EncodeFailed" | "MessageTooLarge"
  readonly transport: TransportId
  readonly target: string
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return describe(`${this.transport} response write ${this.reason}`, this.target, this.detail)
  }
}

/** Every failure a router can see from `client.generate`. */
export type CallError = TransportError | NoTransportAvailable | EndpointNotFound | HandlerError

/** The Prometheus `error_type` label of a transport failure, or undefined for other failures. */
export const errorTypeOf = (e: unknown): "timeout" | "connection" | "protocol" | undefined => {
  if (e instanceof TransportTimeoutError) return "timeout"
  if (e instanceof TransportConnectionError) return "connection"
  if (e instanceof TransportProtocolError) return "protocol"
  return undefined
}
