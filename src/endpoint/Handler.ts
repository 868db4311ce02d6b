/**
 * The shapes of a worker's handlers: what a handler knows about its request, the lean
 * emit-style handler, the Stream handler and the duplex (bidirectional) Stream handler. Types
 * only; `Worker.ts` runs them.
 */
import type { Effect, Stream } from "effect"
import type { RequestHeaders } from "../RequestPlane.ts"
import type { TransportError } from "../TransportError.ts"
import type { Emit } from "./Emit.ts"

/** What a handler knows about the request it serves. */
export interface HandlerContext {
  readonly requestId: string
  /** "ns.component.endpoint" */
  readonly endpoint: string
  readonly instanceId: bigint
  /** Transport headers: traceparent, tracestate, x-request-id. */
  readonly headers: RequestHeaders
}

/** The lean worker handler: emit items, and succeed to complete the stream. */
export type EmitHandler<Req, Res, E = never, R = never> = (
  request: Req,
  context: HandlerContext,
  emit: Emit<Res>
) => Effect.Effect<void, E, R>

/** The Stream worker handler. */
export type StreamHandler<Req, Res, E = never, R = never> = (
  request: Req,
  context: HandlerContext
) => Stream.Stream<Res, E, R>

/**
 * The duplex worker handler (bidirectional streaming): the request value, the Stream of the
 * items the router streams after it, and the context. `items` fails with a `TransportError` when
 * the router's item Stream failed (its message is in the error) or the connection died; a request
 * sent without items gives an empty Stream. It can be run once.
 */
export type DuplexHandler<Req, Item, Res, E = never, R = never> = (
  request: Req,
  items: Stream.Stream<Item, TransportError>,
  context: HandlerContext
) => Stream.Stream<Res, E, R>

/**
 * What the request runner calls (internal): an emit-style handler that also gets the request's
 * item Stream as the transport delivered it (undefined for a request without items). An
 * `EmitHandler` is one that ignores it.
 */
export type RunnableHandler<Req, Res, E = never, R = never> = (
  request: Req,
  context: HandlerContext,
  emit: Emit<Res>,
  items: Stream.Stream<unknown, TransportError> | undefined
) => Effect.Effect<void, E, R>
