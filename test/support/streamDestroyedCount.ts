/**
 * Run by http.trailers.test.ts in a child process with `--expose-internals`: counts how many
 * `ERR_STREAM_DESTROYED` errors node builds while `argv[3]` streams of three items are served and
 * read by a router and a worker in this process, on the stack (`configStack`) of the DYN_*
 * settings (JSON) in argv[2], by wrapping node's internal `format`, which builds their message. First a control (a write after
 * `destroy()`) checks that the count sees one. Prints `{"control", "items", "built"}` on stdout.
 */
import { createRequire } from "node:module"
import { Writable } from "node:stream"
import { Effect, Stream } from "effect"
import * as Endpoint from "../../src/Endpoint.ts"
import { configStack } from "./stacks.ts"

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

// The streams, through `client.generate`, on the stack of these DYN_* settings (over baseEnv).
const items = await Effect.runPromise(
  Effect.gen(function*() {
    yield* Endpoint.serveEmit("ns.trailers.count", (_req: unknown, _ctx, emit: Endpoint.Emit<string>) =>
      Effect.sync(() => emit.all(["a", "b", "c"])))
    const client = yield* Endpoint.client<unknown, string>("ns.trailers.count")
    while (client.instances().length === 0) yield* Effect.sleep(10)
    let n = 0
    for (let i = 0; i < calls; i++) n += (yield* Stream.runCollect(client.generate({}))).length
    // node completes the last writes on later ticks
    yield* Effect.sleep(50)
    return n
  }).pipe(Effect.scoped, Effect.provide(configStack(JSON.parse(process.argv[2]!)).layer))
)
console.log(JSON.stringify({ control, items, built }))
process.exit(0)
