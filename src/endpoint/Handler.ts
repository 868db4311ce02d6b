/**
 * The shapes of a worker's handlers: what a handler knows about its request, the lean
 * emit-style handler and the Stream handler. Types only; `Worker.ts` runs them.
 */
import type { Effect, Stream } from "effect"
import type { RequestHeaders } from "../RequestPlane.ts"
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
