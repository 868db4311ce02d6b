/**
 * A router in a process of its own for the metrics tests (test/metrics.truth.test.ts):
 * `node metricsRouter.ts <endpoint> <calls> <request json> [hold]`, configured by `DYN_*` in its
 * environment (file discovery, so it finds a CLI worker). It waits (up to 10 s) for an instance,
 * makes `<calls>` calls one after another with one client (so a pooled router's streams share
 * one call-home target), prints `{"items":[n, ...]}` (items per call) on stdout and exits 0, or
 * prints the failure on stderr and exits 1. With `hold`, it stays up (its call-home server and
 * the worker's pooled connections to it open) until its stdin closes.
 */
import { Effect, Layer, Stream } from "effect"
import * as Discovery from "../../src/discovery/index.ts"
import * as Endpoint from "../../src/Endpoint.ts"
import * as TransportRegistry from "../../src/registry/index.ts"

const [endpoint, calls, request, hold] = process.argv.slice(2)
if (endpoint === undefined || calls === undefined) throw new Error("usage: metricsRouter.ts <endpoint> <calls> [request json]")

const Live = Discovery.layerConfig.pipe(Layer.provideMerge(TransportRegistry.layerConfig))

Effect.gen(function*() {
  const client = yield* Endpoint.client<unknown, unknown>(endpoint)
  for (let i = 0; i < 200 && client.instances().length === 0; i++) yield* Effect.sleep(50)
  const items: Array<number> = []
  for (let i = 0; i < Number(calls); i++) {
    items.push((yield* Stream.runCollect(client.generate(JSON.parse(request ?? "{}")))).length)
  }
  process.stdout.write(`${JSON.stringify({ items })}\n`)
  if (hold === "hold") {
    yield* Effect.promise(() => new Promise<void>((resolve) => {
      process.stdin.on("end", resolve).on("close", resolve).resume()
    }))
  }
}).pipe(Effect.scoped, Effect.provide(Live), Effect.runPromise).then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`${String(error)}\n`)
    process.exit(1)
  }
)
