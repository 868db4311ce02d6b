// bench/transport_comparison.ts: the recommended mode (HTTP/2 request plane + TCP call-home
// response plane) against a raw node:http2 + node:net implementation of the same exchange,
// in the same run, with each worker in its own process. Also the pure HTTP mode (http + http) in each
// response stream format (sse, ndjson, binary). Prints p50/p95/p99 of sequential
// calls and req/s at 1 and 64 in flight, and the ratios to raw (only ratios are stable on a
// noisy machine). Also measures the overhead of metrics and tracing (DYN_METRICS, DYN_TRACING).
//
//   npm run bench:transport -- [--requests 2000] [--items 10] [--size 50]
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Stream } from "effect"
import { concurrent, concurrentPromise, sequential, table, us } from "../src/cli/latency.ts"
import type { LatencyStats } from "../src/cli/latency.ts"
import * as Endpoint from "../src/Endpoint.ts"
import { recommendedEnv, routerLayer, startChild } from "./crossProcess.ts"
import { startRawBaseline } from "./rawRouter.ts"

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : def
}
const REQUESTS = arg("requests", 2000)
const ITEMS = arg("items", 10)
const SIZE = arg("size", 50)
const IN_FLIGHT = 64

interface Row {
  readonly name: string
  readonly seq: LatencyStats
  readonly rps1: number
  readonly rps64: number
  readonly p99at64: number
}

// ---------- raw baseline: node:http2 client + node:net call-home server ----------
const runRaw = async (): Promise<Row> => {
  const raw = await startRawBaseline({ pooled: false, items: ITEMS, size: SIZE })
  const measure = (count: number, inFlight: number) => concurrentPromise(count, inFlight, raw.once)
  await measure(200, 1)
  const seq = await measure(REQUESTS, 1)
  const c64 = await measure(REQUESTS * 2, IN_FLIGHT)
  raw.close()
  return { name: "raw node:http2 + node:net", seq: seq.stats, rps1: seq.rps, rps64: c64.rps, p99at64: c64.stats.p99 }
}

// ---------- this project: HTTP/2 request plane + TCP call-home, worker via the CLI ----------
const runMode = async (name: string, env: Record<string, string>, useStream: boolean): Promise<Row> => {
  const dir = mkdtempSync(join(tmpdir(), "bench-discovery-"))
  const common = recommendedEnv(dir, env)
  const { child } = await startChild("src/cli/main.ts", ["worker", "--endpoint", "bench.worker.generate"], common)
  const layer = routerLayer(common)
  const program = Effect.gen(function*() {
    const client = yield* Endpoint.client<unknown, unknown>("bench.worker.generate")
    while (client.instances().length === 0) yield* Effect.sleep(20)
    const request = { max_tokens: ITEMS, token_size: SIZE }
    const once = useStream
      ? Stream.runDrain(client.generate(request))
      : client.call(request, () => {})
    yield* sequential(200, once)
    const seq = yield* sequential(REQUESTS, once)
    const c1 = 1e6 / Math.max(seq.mean, 1)
    const c64 = yield* concurrent(REQUESTS * 2, IN_FLIGHT, once)
    return { name, seq, rps1: c1, rps64: c64.rps, p99at64: c64.stats.p99 } satisfies Row
  })
  try {
    return await Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(layer)))
  } finally {
    child.kill("SIGTERM")
    rmSync(dir, { recursive: true, force: true })
  }
}

const main = async () => {
  console.log(`transport comparison: ${REQUESTS} sequential calls, ${REQUESTS * 2} at ${IN_FLIGHT} in flight, ${ITEMS} items of ${SIZE} B each; workers in child processes\n`)
  const rows: Array<Row> = []
  rows.push(await runRaw())
  rows.push(await runMode("http + tcp (call; metrics off, tracing off)", { DYN_METRICS: "off", DYN_TRACING: "off" }, false))
  rows.push(await runMode("http + tcp (call; metrics on, tracing off)", { DYN_METRICS: "on", DYN_TRACING: "off" }, false))
  rows.push(await runMode("http + tcp (call; metrics on, tracing on)", { DYN_METRICS: "on", DYN_TRACING: "on" }, false))
  rows.push(await runMode("http + tcp (generate Stream; defaults)", {}, true))
  // The pure HTTP mode: each response in its request's own HTTP/2 response, in each format.
  for (const format of ["sse", "ndjson", "binary"]) {
    rows.push(await runMode(`http + http ${format} (call; defaults)`, { DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_STREAM_FORMAT: format }, false))
  }
  const raw = rows[0]!
  console.log(
    table(
      ["run", "p50", "p95", "p99", "req/s @1", "req/s @64", "p99 @64", "p50 / raw", "req/s@64 / raw"],
      rows.map((r) => [
        r.name,
        us(r.seq.p50),
        us(r.seq.p95),
        us(r.seq.p99),
        r.rps1.toFixed(0),
        r.rps64.toFixed(0),
        us(r.p99at64),
        (r.seq.p50 / raw.seq.p50).toFixed(2) + "x",
        (r.rps64 / raw.rps64).toFixed(2) + "x"
      ])
    )
  )
  const bare = rows[1]!
  const metrics = rows[2]!
  const both = rows[3]!
  const ratio = (a: Row, b: Row) => `p50 ${(a.seq.p50 / b.seq.p50).toFixed(2)}x, req/s@64 ${(a.rps64 / b.rps64).toFixed(2)}x`
  console.log(`\nmetrics on vs off: ${ratio(metrics, bare)}`)
  console.log(`tracing on vs off (metrics on): ${ratio(both, metrics)}`)
  console.log(`metrics + tracing vs neither: ${ratio(both, bare)}`)
  process.exit(0)
}
main().catch((e) => {
  console.error(e)
  process.exit(1)
})
