/**
 * The request plane: how a request reaches a worker, up to its ack.
 *
 * Shapes only. Each transport (memory, http, ...) implements a client and a server and
 * registers them in the `TransportRegistry`. The client resolves when the worker has
 * acknowledged the request (HTTP 202, NATS reply, TCP ack); the response stream itself
 * travels on the response plane.
 */
import type { Effect, Scope, Stream } from "effect"
import type { RequestControlMessage } from "./ConnectionInfo.ts"
import type { EndpointPath, TransportType } from "./Instance.ts"
import type { TransportId } from "./Transport.ts"
import type { PendingStream } from "./ResponsePlane.ts"
import type { EndpointNotFound, TransportError } from "./TransportError.ts"

/** Transport headers that travel beside the frame: traceparent, tracestate, x-request-id. */
export type RequestHeaders = Readonly<Record<string, string>>

/** A request on the request plane: its control header, the request value, and headers. */
export interface RequestMessage {
  readonly control: RequestControlMessage
  /** The request value. Wire transports encode it with `control.payload_codec`. */
  readonly payload: unknown
  readonly headers: RequestHeaders
  /**
   * A streamed request (bidirectional streaming; `control.request_type` is "many_in"): the items
   * that follow the request value. On the router, the transport runs this Stream and sends each
   * item, with flow control; a failure of the Stream is sent to the worker as the request stream's
   * error. On the worker, the transport provides a Stream of the items as they arrive, which fails
   * with a `TransportError` when the router's stream failed or the connection died. Only transports
   * registered with `bidirectional: true` carry it; others never see it set.
   */
  readonly items?: Stream.Stream<unknown, unknown> | undefined
  /**
   * On the router: the pending response stream that `control.connection_info` names, when the
   * Endpoint layer opened one. A request plane that carries the responses on its own connection
   * (`RequestPlaneClient.carriesResponses`) takes the stream from here; `connection_info` is then
   * a placeholder. Set only for those.
   */
  readonly responseStream?: PendingStream | undefined
}

/** Where to send: the address from the instance record, and the endpoint's name for errors. */
export interface RequestTarget {
  readonly address: string
  readonly endpoint: string
  /**
   * The `metadata` of the instance record's unified `request_transport`, when it has that form
   * (for example `{"tcp_mux": "1"}`: the worker also speaks the full TCP mode). Empty otherwise.
   */
  readonly metadata?: Readonly<Record<string, string>> | undefined
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
  /**
   * Optional: true when requests to `target` whose streams are opened on the `response` plane
   * travel with their response stream on this client's own connection (the full TCP mode, with
   * the tcp response plane), so that the client takes `message.responseStream` and never reads
   * `control.connection_info`. The Endpoint layer asks once per instance record and then leaves
   * the call-home address unbuilt (a placeholder stands in for it).
   */
  readonly carriesResponses?: ((target: Omit<RequestTarget, "endpoint">, response: TransportId) => boolean) | undefined
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

/**
 * Whether a worker takes one more request now: undefined to admit it, or why not. "overloaded":
 * the endpoint is at its in-flight cap; "unavailable": it is draining (shutting down). Request
 * servers ask before they ack, and refuse with the reason (TCP: Dynamo's `Server overloaded: ...`
 * and `Server unavailable: ...` ack texts).
 */
export type Admission = () => { readonly refuse: "overloaded" | "unavailable"; readonly detail: string } | undefined

/** Options of `RequestPlaneServer.register`. */
export interface RegisterOptions {
  /** Asked before each request is acked; absent means every request is admitted. */
  readonly admit?: Admission | undefined
}

/** The worker's side: route requests for an endpoint to a handler. */
export interface RequestPlaneServer {
  readonly transport: TransportId
  /**
   * Serves `key` for the life of the scope. Returns the transport form to advertise in
   * discovery (`{"http": url}`, `{"nats_tcp": subject}`, ...).
   */
  readonly register: (
    key: ServedEndpointKey,
    handler: RequestHandler,
    options?: RegisterOptions
  ) => Effect.Effect<TransportType, TransportError, Scope.Scope>
}

/** The NATS-style subject of an endpoint instance: `{ns}_{component}.{endpoint}-{id hex}`. */
export const instanceSubject = (key: ServedEndpointKey): string =>
  `${key.path.namespace}_${key.path.component}.${key.path.endpoint}-${key.instanceId.toString(16)}`
