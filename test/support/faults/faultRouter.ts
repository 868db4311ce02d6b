/**
 * A router in its own process for the fault-injection tests:
 * `node --experimental-strip-types faultRouter.ts '{"path": "ns.comp.ep", "calls": 3}'`,
 * configured by `DYN_*` in its environment (the mode's record plus file discovery on the worker's
 * directory). It prints `ready` once its client is built; after a line on stdin (the test's go)
 * and once the endpoint has an instance, it starts `calls` streaming calls of it, and prints
 * `streaming` once every call received 3 items; it prints `failed` (with the error) if a call
 * fails. It runs until it is killed.
 */
import { Effect, Layer } from "effect"
import * as Discovery from "../../../src/discovery/index.ts"
import * as Endpoint from "../../../src/Endpoint.ts"
import * as TransportRegistry from "../../../src/registry/index.ts"

const options = JSON.parse(process.argv[2] ?? "{}") as { readonly path: string; readonly calls?: number }
const report = (event: string, fields: Record<string, unknown> = {}) =>
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`)

const Live = Discovery.layerConfig.pipe(Layer.provideMerge(TransportRegistry.layerConfig))

Effect.gen(function*() {
  const client = yield* Endpoint.client<unknown, number>(options.path)
  report("ready", { pid: process.pid })
  yield* Effect.promise(() => new Promise<void>((resolve) => process.stdin.once("data", () => resolve())))
  while (client.instances().length === 0) yield* Effect.sleep(20)
  const calls = options.calls ?? 1
  let streaming = 0
  yield* Effect.forEach(Array.from({ length: calls }, (_, i) => i), (i) => {
    let seen = 0
    return client.call(i, (items) => {
      seen += items.length
      if (seen >= 3 && seen - items.length < 3 && ++streaming === calls) report("streaming")
    }).pipe(Effect.catch((error) => Effect.sync(() => report("failed", { error: String(error) }))))
  }, { concurrency: "unbounded", discard: true })
  return yield* Effect.never
}).pipe(Effect.scoped, Effect.provide(Live), Effect.runFork)
