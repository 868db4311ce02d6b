/**
 * `transport-registry worker`: serves the built-in token handler on an endpoint with the
 * configured transports and discovery. It prints its instance record as one JSON line on stdout
 * (logs go to stderr), and on SIGINT/SIGTERM leaves discovery, drains in-flight streams within a
 * bound, and exits 0. Requests are decoded with `TokenRequestSchema`: one outside its bounds
 * fails in the prologue with a `HandlerError` naming the field and the bound.
 */
import { Console, Effect } from "effect"
import * as Endpoint from "../Endpoint.ts"
import { instanceToJson } from "../Instance.ts"
import { TransportConfig } from "../TransportConfig.ts"
import { tokenHandler, TokenRequestSchema } from "./tokenHandler.ts"

/** Options of `worker`. */
export interface WorkerOptions {
  readonly endpoint: string
  readonly drainTimeoutMs: number
}

/** Serves until interrupted (the runtime interrupts on SIGINT/SIGTERM). */
export const worker = (options: WorkerOptions) =>
  Effect.gen(function*() {
    const config = yield* TransportConfig
    const served = yield* Endpoint.serveEmit(options.endpoint, tokenHandler, {
      drainTimeoutMs: options.drainTimeoutMs,
      requestSchema: TokenRequestSchema
    })
    yield* Console.log(instanceToJson(served.instance))
    yield* Effect.logInfo("serving").pipe(
      Effect.annotateLogs({
        endpoint: options.endpoint,
        request_plane: config.requestPlane,
        discovery: config.discoveryBackend === "file" ? `file:${config.discoveryPath}` : config.discoveryBackend
      })
    )
    yield* Effect.addFinalizer(() =>
      Effect.logInfo("shutting down").pipe(Effect.annotateLogs({ endpoint: options.endpoint, in_flight: served.inFlight() }))
    )
    return yield* Effect.never
  }).pipe(Effect.scoped)
