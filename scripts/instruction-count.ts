// One side of scripts/instruction-count.sh: the full TCP mode's worker or router (or raw Node's
// corked baseline; with MODE=http or http-pooled, the HTTP/2 request plane and TCP call-home;
// with MODE=dynamo or dynamo-pooled, Dynamo's TCP request plane and TCP call-home; or their raw
// baselines), one call in flight, with the measured side under valgrind's callgrind. The
// router switches callgrind's instrumentation on for the measured calls only, then dumps.
//
//   node --experimental-strip-types --no-warnings scripts/instruction-count.ts worker|rawworker <dir>
//   node --experimental-strip-types --no-warnings scripts/instruction-count.ts router|rawrouter <dir> <warm-up calls> <calls> [<pid>|self]
//
// instruction-count.sh starts ours with --no-allocation-site-pretenuring, as src/cli/main.ts
// tunes the program's processes before loading them. <dir> holds the file discovery (and the raw
// worker's port). <pid>: the valgrind'ed worker's pid, or "self" when this router runs under
// valgrind; absent, nothing is counted.
import { execFile } from "node:child_process"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { JsonTraceSerializer } from "@opentelemetry/otlp-transformer"
import type { ExportResult } from "@opentelemetry/core"
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base"
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace-base"
import { Effect, Layer, Stream } from "effect"
import { concurrent } from "../src/cli/latency.ts"
import { tokenHandler, TokenRequestSchema } from "../src/cli/tokenHandler.ts"
import * as Endpoint from "../src/Endpoint.ts"
import * as Tracing from "../src/observability/Tracing.ts"
import { countedMode, ENDPOINT, fullModeLayer, rawSideOf, request } from "./fullModeSetup.ts"

const [role, dir] = [process.argv[2]!, process.argv[3]!]
// the mode counted: full (the default), http or http-pooled (instruction-count.sh's MODE)
const mode = countedMode(process.env.MODE)
// OBSERVED=1: metrics and tracing on (the library's defaults), as the benchmark's -observed rows;
// TRACED=1: the same with a tracing backend, as its -traced rows, except that each batch of
// spans is serialized as an OTLP/HTTP export is (JSON) and then dropped, not sent.
const traced = process.env.TRACED === "1"
const observed = traced || process.env.OBSERVED === "1"
/** An exporter that serializes each batch as OTLP/HTTP's JSON exporter does, and sends nothing. */
const serializingExporter: SpanExporter = {
  export: (spans: Array<ReadableSpan>, done: (result: ExportResult) => void) => {
    JsonTraceSerializer.serializeRequest(spans)
    done({ code: 0 })
  },
  shutdown: () => Promise.resolve()
}
const layerOf = () => {
  const layer = fullModeLayer(dir, POLL_MS, mode, observed)
  return traced ? Layer.merge(layer, Tracing.layerExporting(new BatchSpanProcessor(serializingExporter), "instruction-count")) : layer
}
const raw = rawSideOf(mode)
// The router reads the discovery folder once, at its start (the worker is up by then): polls
// every 250 ms would count their work per call, and a run under valgrind takes tens of times
// longer than without it.
const POLL_MS = 3_600_000
/** Runs `callgrind_control <args> <pid>` and waits for it (asynchronously: a process under valgrind must keep running to answer). */
const callgrind = (args: Array<string>, pid: string | undefined) =>
  pid === undefined
    ? Promise.resolve()
    : new Promise<void>((resolve, reject) =>
      execFile("callgrind_control", [...args, pid === "self" ? String(process.pid) : pid], (error) => (error ? reject(error) : resolve()))
    )
const measureOn = (pid: string | undefined) => callgrind(["-i", "on"], pid)
const measureOff = async (pid: string | undefined) => {
  await callgrind(["-d"], pid)
  await callgrind(["-i", "off"], pid)
}

const ready = () => console.error("worker ready")
process.on("SIGTERM", () => process.exit(0))

if (role === "rawworker") {
  const served = await raw.side.serve(raw.options)
  mkdirSync(dir, { recursive: true })
  writeFileSync(`${dir}/raw.json`, JSON.stringify(served.info))
  ready()
} else if (role === "worker") {
  await Effect.runPromise(
    Effect.gen(function*() {
      yield* Endpoint.serveEmit(ENDPOINT, tokenHandler, { requestSchema: TokenRequestSchema })
      ready()
      yield* Effect.never
    }).pipe(Effect.scoped, Effect.provide(layerOf()))
  )
} else {
  const warm = Number(process.argv[4])
  const calls = Number(process.argv[5])
  const pid = process.argv[6]
  if (role === "rawrouter") {
    const driver = await raw.side.connect(raw.options, JSON.parse(readFileSync(`${dir}/raw.json`, "utf8")))
    await driver.run(warm, 1, () => {})
    await measureOn(pid)
    await driver.run(calls, 1, () => {})
    await measureOff(pid)
    await driver.close()
  } else {
    await Effect.runPromise(
      Effect.gen(function*() {
        const client = yield* Endpoint.client<unknown, unknown>(ENDPOINT)
        while (client.instances().length === 0) yield* Effect.sleep(20)
        // API=generate: through the Stream API, as the benchmark's generate row
        const once = process.env.API === "generate"
          ? Stream.runDrain(client.generate(request))
          : client.call(request, () => {})
        yield* concurrent(warm, 1, once)
        yield* Effect.promise(() => measureOn(pid))
        yield* concurrent(calls, 1, once)
        yield* Effect.promise(() => measureOff(pid))
      }).pipe(Effect.scoped, Effect.provide(layerOf()))
    )
  }
  process.exit(0)
}
