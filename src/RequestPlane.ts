/**
 * The request plane: how a request reaches a worker, up to its ack.
 *
 * Shapes only. Each transport (memory, http, ...) implements a client and a server and
 * registers them in the `TransportRegistry`. The client resolves when the worker has
 * acknowledged the request (HTTP 202, NATS reply, TCP ack); the response stream itself
 * travels on the response plane.
 */
import type { Effect, Scope } from "effect"
import type { RequestControlMessage } from "./ConnectionInfo.ts"
import type { EndpointPath, TransportType } from "./Instance.ts"
import type { TransportId } from "./Transport.ts"
import type { EndpointNotFound, TransportError } from "./TransportError.ts"

/** Transport headers that travel beside the frame: traceparent, tracestate, x-request-id. */
export type RequestHeaders = Readonly<Record<string, string>>

/** A request on the request plane: its control header, the request value, and headers. */
export interface RequestMessage {
  readonly control: RequestControlMessage
  /** The request value. Wire transports encode it with `control.payload_codec`. */
  readonly payload: unknown
  readonly headers: RequestHeaders
}

/** Where to send: the address from the instance record, and the endpoint's name for errors. */
export interface RequestTarget {
  readonly address: string
  readonly endpoint: string
}

/** The router's side: send a request and wait for the ack. */
export interface RequestPlaneClient {
  readonly transport: TransportId
  /** Sends `message` to `target`; succeeds at the worker's ack. */
  readonly send: (target: RequestTarget, message: RequestMessage) => Effect.Effect<void, TransportError | EndpointNotFound>
  /**
   * The lean form of `send` (optional): calls `onAck` once, with undefined at the ack or the
   * failure, possibly synchronously; returns a function that cancels the wait. The Endpoint
   * layer uses it to wait for the ack and the stream in one callback; without it, it runs `send`.
   */
  readonly sendCallback?: (
    target: RequestTarget,
    message: RequestMessage,
    onAck: (error: TransportError | EndpointNotFound | undefined) => void
  ) => () => void
}

/**
 * Called for each accepted request, after the ack was sent. It must not throw; the endpoint
 * layer reports failures on the response plane.
 */
export type RequestHandler = (message: RequestMessage) => void

/** What a served endpoint is keyed by: its path and the serving instance's id. */
export interface ServedEndpointKey {
  readonly path: EndpointPath
  readonly instanceId: bigint
}

/** The worker's side: route requests for an endpoint to a handler. */
export interface RequestPlaneServer {
  readonly transport: TransportId
  /**
   * Serves `key` for the life of the scope. Returns the transport form to advertise in
   * discovery (`{"http": url}`, `{"nats_tcp": subject}`, ...).
   */
  readonly register: (key: ServedEndpointKey, handler: RequestHandler) => Effect.Effect<TransportType, TransportError, Scope.Scope>
}

/** The NATS-style subject of an endpoint instance: `{ns}_{component}.{endpoint}-{id hex}`. */
export const instanceSubject = (key: ServedEndpointKey): string =>
  `${key.path.namespace}_${key.path.component}.${key.path.endpoint}-${key.instanceId.toString(16)}`
