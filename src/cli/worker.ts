/**
 * `transport-registry worker`: serves the built-in token handler on an endpoint with the
 * configured transports and discovery. It prints its instance record as one JSON line, and
 * on SIGINT/SIGTERM leaves discovery, drains in-flight streams within a bound, and exits 0.
 */
import { Console, Effect } from "effect"
import * as Endpoint from "../Endpoint.ts"
import { instanceToJson } from "../Instance.ts"
import { tokenHandler } from "./tokenHandler.ts"

/** Options of `worker`. */
export interface WorkerOptions {
  readonly endpoint: string
  readonly drainTimeoutMs: number
}

/** Serves until interrupted (the runtime interrupts on SIGINT/SIGTERM). */
export const worker = (options: WorkerOptions) =>
  Effect.gen(function*() {
    const served = yield* Endpoint.serveEmit(options.endpoint, tokenHandler, { drainTimeoutMs: options.drainTimeoutMs })
    yield* Console.log(instanceToJson(served.instance))
    yield* Effect.addFinalizer(() => Console.error(`worker ${options.endpoint}: shutting down, ${served.inFlight()} in flight`))
    return yield* Effect.never
  }).pipe(Effect.scoped)
