// bench/tcp_pool_benchmark.ts: the recommended mode (HTTP/2 request plane + TCP call-home
// response plane) with the call-home connection pool off (one new connection per stream, the
// Dynamo one-shot protocol) and on (pooled, multiplexed response mux v1 connections,
// DYN_TCP_POOL_ENABLED=true on both sides), in one process and one run. The worker runs in a
// child process (`src/cli/main.ts worker`, file discovery); the router is this process.
//
// The same workload for both: 10 items of 50 B per response. For each mode it measures
// sequential calls (p50/p95/p99, req/s) and 64 in flight (p50/p95/p99, req/s), in alternating
// rounds (off, on, off, on, ...) whose samples are pooled, so drift on a noisy machine hits both
// modes alike. It prints the table and the on/off ratios; the target is pooled p50 and p99 at
// most 0.6 of unpooled. The same rounds run a raw baseline (bench/raw_worker.ts and
// bench/rawRouter.ts: node:http2 + node:net, no framework), unpooled and pooled, so the run
// also shows what pooling alone can save on this machine.
//
//   npm run bench:pool -- [--requests 2000] [--rounds 2] [--items 10] [--size 50]
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"
import { concurrentPromise, summarize, table, us } from "../src/cli/latency.ts"
import type { LatencyStats } from "../src/cli/latency.ts"
import * as Endpoint from "../src/Endpoint.ts"
import { recommendedEnv, routerLayer, startChild } from "./crossProcess.ts"
import { startRawBaseline } from "./rawRouter.ts"

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : def
}
const REQUESTS = arg("requests", 2000)
const ROUNDS = arg("rounds", 2)
const ITEMS = arg("items", 10)
const SIZE = arg("size", 50)
const IN_FLIGHT = 64
const WARMUP = 300

/** Raw samples of one round (milliseconds) and its wall times (seconds). */
interface Round {
  readonly seq: Array<number>
  readonly seqSeconds: number
  readonly c64: Array<number>
  readonly c64Seconds: number
}

interface Row {
  readonly name: string
  readonly seq: LatencyStats
  readonly rpsSeq: number
  readonly c64: LatencyStats
  readonly rps64: number
}

const startWorker = (env: Record<string, string>) =>
  startChild("src/cli/main.ts", ["worker", "--endpoint", "bench.pool.generate"], env).then(({ child }) => child)

/** One round of one mode: a fresh worker, warm-up, sequential calls, then 64 in flight. */
const runRound = async (pooled: boolean): Promise<Round> => {
  const dir = mkdtempSync(join(tmpdir(), "bench-pool-"))
  const env = recommendedEnv(dir, { DYN_TRACING: "off", DYN_TCP_POOL_ENABLED: pooled ? "true" : "false" })
  const child = await startWorker(env)
  const layer = routerLayer(env)
  const program = Effect.gen(function*() {
    const client = yield* Endpoint.client<unknown, unknown>("bench.pool.generate")
    while (client.instances().length === 0) yield* Effect.sleep(20)
    const request = { max_tokens: ITEMS, token_size: SIZE }
    let received = 0
    const once = client.call(request, (items) => {
      received += items.length
    })
    const timed = (samples: Array<number>) =>
      Effect.suspend(() => {
        const t0 = performance.now()
        return Effect.tap(once, () => Effect.sync(() => samples.push(performance.now() - t0)))
      })
    const warm: Array<number> = []
    for (let i = 0; i < WARMUP; i++) yield* timed(warm)
    const seq: Array<number> = []
    let t0 = performance.now()
    for (let i = 0; i < REQUESTS; i++) yield* timed(seq)
    const seqSeconds = (performance.now() - t0) / 1000
    const c64: Array<number> = []
    t0 = performance.now()
    yield* Effect.forEach(Array.from({ length: REQUESTS * 2 }), () => timed(c64), { concurrency: IN_FLIGHT, discard: true })
    const c64Seconds = (performance.now() - t0) / 1000
    if (received !== (WARMUP + REQUESTS * 3) * ITEMS) throw new Error(`received ${received} items, expected ${(WARMUP + REQUESTS * 3) * ITEMS}`)
    return { seq, seqSeconds, c64, c64Seconds } satisfies Round
  })
  try {
    return await Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(layer)))
  } finally {
    child.kill("SIGTERM")
    rmSync(dir, { recursive: true, force: true })
  }
}

/** One round of the raw baseline (node:http2 + node:net, no framework), unpooled or pooled. */
const runRawRound = async (pooled: boolean): Promise<Round> => {
  const raw = await startRawBaseline({ pooled, items: ITEMS, size: SIZE })
  try {
    const timed = (samples: Array<number>) => async () => {
      const t0 = performance.now()
      await raw.once()
      samples.push(performance.now() - t0)
    }
    const warm: Array<number> = []
    await concurrentPromise(WARMUP, 1, timed(warm))
    const seq: Array<number> = []
    let t0 = performance.now()
    await concurrentPromise(REQUESTS, 1, timed(seq))
    const seqSeconds = (performance.now() - t0) / 1000
    const c64: Array<number> = []
    t0 = performance.now()
    await concurrentPromise(REQUESTS * 2, IN_FLIGHT, timed(c64))
    return { seq, seqSeconds, c64, c64Seconds: (performance.now() - t0) / 1000 }
  } finally {
    raw.close()
  }
}

const combine = (name: string, rounds: ReadonlyArray<Round>): Row => {
  const seq = rounds.flatMap((r) => r.seq)
  const c64 = rounds.flatMap((r) => r.c64)
  const seqSeconds = rounds.reduce((n, r) => n + r.seqSeconds, 0)
  const c64Seconds = rounds.reduce((n, r) => n + r.c64Seconds, 0)
  return { name, seq: summarize(seq), rpsSeq: seq.length / seqSeconds, c64: summarize(c64), rps64: c64.length / c64Seconds }
}

const main = async () => {
  console.log(
    `tcp pool benchmark: http request plane + tcp call-home response plane, ${ITEMS} items of ${SIZE} B per response; worker in a child process\n` +
      `${ROUNDS} alternating rounds per mode, each ${REQUESTS} sequential calls and ${REQUESTS * 2} at ${IN_FLIGHT} in flight (after ${WARMUP} warm-up calls)\n`
  )
  const rawOff: Array<Round> = []
  const rawOn: Array<Round> = []
  const off: Array<Round> = []
  const on: Array<Round> = []
  for (let r = 0; r < ROUNDS; r++) {
    rawOff.push(await runRawRound(false))
    rawOn.push(await runRawRound(true))
    off.push(await runRound(false))
    on.push(await runRound(true))
    process.stdout.write(`round ${r + 1}/${ROUNDS} done\n`)
  }
  const rows = [
    combine("raw, unpooled (node:http2 + node:net)", rawOff),
    combine("raw, pooled (node:http2 + node:net)", rawOn),
    combine("pool off (one connection per stream)", off),
    combine("pool on (pooled, multiplexed)", on)
  ]
  console.log(
    "\n" +
      table(
        ["mode", "seq p50", "seq p95", "seq p99", "seq req/s", "@64 p50", "@64 p95", "@64 p99", "@64 req/s"],
        rows.map((r) => [r.name, us(r.seq.p50), us(r.seq.p95), us(r.seq.p99), r.rpsSeq.toFixed(0), us(r.c64.p50), us(r.c64.p95), us(r.c64.p99), r.rps64.toFixed(0)])
      )
  )
  const [ra, rb, a, b] = rows as [Row, Row, Row, Row]
  const ratio = (x: number, y: number) => (x / y).toFixed(2)
  const met = (on: LatencyStats, off: LatencyStats) => (on.p50 / off.p50 <= 0.6 && on.p99 / off.p99 <= 0.6 ? "met" : "missed")
  const ratios = (on: Row, off: Row) =>
    `  sequential: p50 ${ratio(on.seq.p50, off.seq.p50)}, p95 ${ratio(on.seq.p95, off.seq.p95)}, p99 ${ratio(on.seq.p99, off.seq.p99)}, req/s ${ratio(on.rpsSeq, off.rpsSeq)}\n` +
    `  64 in flight: p50 ${ratio(on.c64.p50, off.c64.p50)}, p95 ${ratio(on.c64.p95, off.c64.p95)}, p99 ${ratio(on.c64.p99, off.c64.p99)}, req/s ${ratio(on.rps64, off.rps64)}\n`
  console.log(
    `\non/off ratios, this project (lower is better for latency, higher for req/s):\n` + ratios(b, a) +
      `  target: pooled p50 and p99 at most 0.60 of unpooled: sequential ${met(b.seq, a.seq)}, 64 in flight ${met(b.c64, a.c64)}\n` +
      `\non/off ratios, raw baseline (what pooling alone can save here):\n` + ratios(rb, ra) +
      `\nthis project / raw: pool off seq p50 ${ratio(a.seq.p50, ra.seq.p50)}, pool on seq p50 ${ratio(b.seq.p50, rb.seq.p50)}, ` +
      `pool off @64 req/s ${ratio(a.rps64, ra.rps64)}, pool on @64 req/s ${ratio(b.rps64, rb.rps64)}`
  )
  process.exit(0)
}
main().catch((e) => {
  console.error(e)
  process.exit(1)
})
