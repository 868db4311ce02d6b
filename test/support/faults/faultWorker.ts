/**
 * A worker in its own process for the fault-injection tests:
 * `node --experimental-strip-types faultWorker.ts '<json options>'`, configured by `DYN_*` in its
 * environment (the mode's record plus file discovery). It serves each of `options.paths` with a
 * handler that emits 0, 1, 2, … every `itemDelayMs` without end, and each of `waitingPaths` with
 * one that never emits. It reports on stdout, one JSON object a line: `ready` (pid, the advertised
 * transports) once its instances are in discovery, `started` (with the path) when a handler
 * starts, and `interrupted` when one is interrupted. It runs until it is killed.
 */
import { Effect, Layer } from "effect"
import * as Discovery from "../../../src/discovery/index.ts"
import * as Endpoint from "../../../src/Endpoint.ts"
import * as TransportRegistry from "../../../src/registry/index.ts"

interface Options {
  readonly paths?: ReadonlyArray<string>
  readonly waitingPaths?: ReadonlyArray<string>
  readonly itemDelayMs?: number
}

const options = JSON.parse(process.argv[2] ?? "{}") as Options
const report = (event: string, fields: Record<string, unknown> = {}) =>
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`)

const handler = (path: string, waits: boolean): Endpoint.EmitHandler<unknown, number> => (_req, ctx, emit) =>
  Effect.gen(function*() {
    report("started", { path, id: ctx.requestId })
    if (waits) return yield* Effect.never
    for (let i = 0;; i++) {
      emit(i)
      yield* emit.ready
      yield* Effect.sleep(options.itemDelayMs ?? 10)
    }
  }).pipe(Effect.onInterrupt(() => Effect.sync(() => report("interrupted", { path, id: ctx.requestId }))))

const Live = Discovery.layerConfig.pipe(Layer.provideMerge(TransportRegistry.layerConfig))

Effect.gen(function*() {
  const transports: Array<unknown> = []
  for (const path of options.paths ?? []) transports.push((yield* Endpoint.serveEmit(path, handler(path, false))).instance.transport)
  for (const path of options.waitingPaths ?? []) transports.push((yield* Endpoint.serveEmit(path, handler(path, true))).instance.transport)
  report("ready", { pid: process.pid, transports })
  return yield* Effect.never
}).pipe(Effect.scoped, Effect.provide(Live), Effect.runFork)
