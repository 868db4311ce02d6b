/**
 * Run by http.trailers.test.ts in a child process with `--expose-internals`: counts how many
 * `ERR_STREAM_DESTROYED` errors node builds while `argv[3]` streams of three items are served and
 * read by a router and a worker in this process, on the DYN_* settings (JSON) in argv[2], by
 * wrapping node's internal `format`, which builds their message. First a control (a write after
 * `destroy()`) checks that the count sees one. Prints `{"control", "items", "built"}` on stdout.
 */
import { createRequire } from "node:module"
import { Writable } from "node:stream"
import { Effect, Layer, Stream } from "effect"
import { MemoryDiscovery } from "../../src/discovery/index.ts"
import * as Endpoint from "../../src/Endpoint.ts"
import * as TransportRegistry from "../../src/registry/index.ts"
import { TransportConfig } from "../../src/TransportConfig.ts"

const inspect = createRequire(import.meta.url)("internal/util/inspect") as { format: (...args: Array<unknown>) => string }
const format = inspect.format
let built = 0
inspect.format = (...args) => {
  if (String(args[0]).includes("after a stream was destroyed")) built++
  return format(...args)
}

const calls = Number(process.argv[3])
const control = await new Promise<number>((resolve) => {
  const w = new Writable({ write: (_c, _e, cb) => cb() })
  w.on("error", () => {})
  w.destroy()
  w.write("x", () => resolve(built))
})
built = 0

/** Streams of the stack whose DYN_* settings are `env`, through `client.generate`. */
const viaStack = (env: Record<string, string>) =>
  Effect.gen(function*() {
    yield* Endpoint.serveEmit("ns.trailers.count", (_req: unknown, _ctx, emit: Endpoint.Emit<string>) =>
      Effect.sync(() => emit.all(["a", "b", "c"])))
    const client = yield* Endpoint.client<unknown, string>("ns.trailers.count")
    while (client.instances().length === 0) yield* Effect.sleep(10)
    let n = 0
    for (let i = 0; i < calls; i++) n += (yield* Stream.runCollect(client.generate({}))).length
    return n
  }).pipe(
    Effect.provide(
      Layer.mergeAll(TransportRegistry.layerFromConfig, MemoryDiscovery.layer).pipe(
        Layer.provideMerge(TransportConfig.layerFromRecord(env))
      )
    )
  )

const items = await Effect.runPromise(
  Effect.gen(function*() {
    const n = yield* viaStack(JSON.parse(process.argv[2]!))
    // node completes the last writes on later ticks
    yield* Effect.sleep(50)
    return n
  }).pipe(Effect.scoped)
)
console.log(JSON.stringify({ control, items, built }))
process.exit(0)
