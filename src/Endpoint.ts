/**
 * The API users call: `serve` an endpoint on a worker, and call it from a router through a
 * `client`. A façade: the pieces live in `endpoint/`.
 *
 * Beneath the Stream forms is a lean core (DESIGN.md, "The hot path"): on the worker an
 * emit-style handler `(request, context, emit) => Effect` (`endpoint/Worker.ts`, one request at
 * a time in `endpoint/HandleRequest.ts`, writes through `endpoint/Emit.ts`); on the router
 * `call(request, onItems)` (`endpoint/Router.ts`, `endpoint/Call.ts`), which hands over each
 * batch of items as it arrives through one `Effect.callback` per request, its transitions decided
 * by the socket-free `endpoint/CallState.ts`. `serve` with a Stream handler and `generate`
 * returning a Stream (`endpoint/BufferedStream.ts`) are thin adapters over them, as are the
 * bidirectional forms: `serveDuplex` (a handler that also takes the request's item Stream) and
 * `generateDuplex` / `callDuplex` (a call that also sends one), on a bidirectional request
 * transport.
 *
 * Wiring: serving registers the handler on a request-plane server and the instance in
 * discovery; a call picks an instance (`endpoint/InstanceSet.ts`), opens a pending stream on the
 * response plane, sends the request with its ConnectionInfo, and waits for the stream to end. A
 * consumer that interrupts sends `stop`, then `kill` after `DYN_CANCEL_GRACE_MS`; either
 * interrupts the worker's handler fiber. A handler failure, or a response item the worker could
 * not write, reaches the router as a `HandlerError`. Each served endpoint has an admission
 * check (`endpoint/Admission.ts`): an in-flight cap (`maxInFlight`) and, once its scope closes,
 * refusal while it drains; its request server asks it before each ack.
 *
 * The user guide is docs/endpoint.md.
 */
export type { Emit } from "./endpoint/Emit.ts"
export type { DuplexHandler, EmitHandler, HandlerContext, StreamHandler } from "./endpoint/Handler.ts"
export type { Routing } from "./endpoint/InstanceSet.ts"
export { client, DEFAULT_MAX_BUFFERED_ITEMS } from "./endpoint/Router.ts"
export type { CallOptions, ClientOptions, EndpointClient } from "./endpoint/Router.ts"
export { serve, serveDuplex, serveEmit } from "./endpoint/Worker.ts"
export type { ServedEndpoint, ServeOptions } from "./endpoint/Worker.ts"
