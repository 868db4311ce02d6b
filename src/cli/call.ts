/**
 * `transport-registry call ns.comp.ep --data '<json>'`: sends one request through the
 * configured transports and prints each response item as a JSON line.
 */
import { Console, Effect, Stream } from "effect"
import * as Endpoint from "../Endpoint.ts"
import { stringifyWithU64 } from "../Instance.ts"

/** Options of `call`. */
export interface CallCommandOptions {
  readonly endpoint: string
  readonly data: unknown
  /** How long to wait for an instance to appear in discovery, in ms. */
  readonly waitMs: number
}

/** Calls the endpoint once and prints the items. */
export const call = (options: CallCommandOptions) =>
  Effect.gen(function*() {
    const client = yield* Endpoint.client<unknown, unknown>(options.endpoint)
    const deadline = Date.now() + options.waitMs
    while (client.instances().length === 0 && Date.now() < deadline) yield* Effect.sleep(50)
    yield* client.generate(options.data).pipe(Stream.runForEach((item) => Console.log(stringifyWithU64(item))))
  }).pipe(Effect.scoped)
