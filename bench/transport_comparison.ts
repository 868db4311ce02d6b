// bench/transport_comparison.ts: every request/response mode of this project against raw
// node baselines of the same exchange (one request, N items of S bytes back), in the same run, with
// each worker in its own process. Prints p50/p95/p99 of sequential calls and req/s at 1 and 64 in
// flight, and each row's ratios to its raw baseline (only ratios are stable on a noisy machine).
//
// Raw baselines (no framework):
// - raw node:http2 + node:net: HTTP/2 POST -> 202 -> one-shot TCP call-home (bench/rawRouter.ts);
// - raw tcp corked (full-mode floor): one persistent connection, requests and responses multiplexed
//   by stream id, each response's frames corked into one write (bench/rawTcpRouter.ts);
// - raw tcp dynamo shape: a persistent request connection with in-order acks and a pooled
//   persistent call-home connection (bench/rawTcpRouter.ts).
// This project's rows, configured through DYN_* as a deployment would be:
// - http + tcp (the recommended mode), with metrics and tracing off/on (their overhead is printed);
// - http + http in each response stream format (sse, ndjson, binary);
// - tcp + tcp (Dynamo framing, call-home), tcp + tcp pooled, and the tcp full mode, with the
//   issue-13 targets (full mode p50 <= 1.5x the corked floor, req/s at 64 >= 0.5x);
// - nats + tcp (Dynamo's legacy mode: NATS request plane, call-home), one-shot and pooled, on a
//   nats-server this bench starts on a free loopback port (unavailable when nats-server is not on
//   PATH); its ratios are to the raw dynamo shape (a persistent request link and pooled call-home:
//   the NATS rows add the broker's hop).
// A row whose mode cannot start (NoTransportAvailable, a configuration error, a worker that exits,
// a worker whose instance record does not advertise the wire the row names) prints
// "unavailable: <reason>"; a row that fails while measuring prints "failed: <reason>";
// every row has a time limit, so the run always completes.
//
//   npm run bench:transport -- [--requests 2000] [--items 10] [--size 50] [--row-timeout 60] [--only <text>]
//   (--only: run only this project's rows whose name starts with <text>, e.g. "tcp"; the raw baselines always run)
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Stream } from "effect"
import { concurrent, concurrentPromise, sequential, table, us } from "../src/cli/latency.ts"
import type { LatencyStats } from "../src/cli/latency.ts"
import * as Endpoint from "../src/Endpoint.ts"
import { recommendedEnv, routerLayer, startChild } from "./crossProcess.ts"
import { startRawBaseline } from "./rawRouter.ts"
import type { RawBaseline } from "./rawRouter.ts"
import { startRawTcpBaseline } from "./rawTcpRouter.ts"
import { startNatsServer } from "../test/support/servers.ts"
import type { NatsServer } from "../test/support/servers.ts"

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? Number(process.argv[i + 1]) : def
}
const textArg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}
const REQUESTS = arg("requests", 2000)
const ITEMS = arg("items", 10)
const SIZE = arg("size", 50)
const ROW_TIMEOUT_MS = arg("row-timeout", 60) * 1000
const ONLY = textArg("only")
const IN_FLIGHT = 64
const WARMUP = 200

/** A measured row. */
interface Row {
  readonly name: string
  readonly seq: LatencyStats
  readonly rps1: number
  readonly rps64: number
  readonly p99at64: number
}

/** A row's outcome: measured, or why not. */
type Outcome =
  | { readonly _tag: "ok"; readonly row: Row }
  | { readonly _tag: "unavailable" | "failed"; readonly name: string; readonly reason: string }

/** What a row's body gets: where it is (for the reason of a time-out), cleanups, an abort signal. */
interface RowContext {
  readonly signal: AbortSignal
  readonly phase: (what: string, measuring?: boolean) => void
  readonly onCleanup: (f: () => void) => void
  /** Where to read why the row's worker exited, if it did (added to a failure's reason). */
  readonly onWorkerExit: (exited: () => string | undefined) => void
}

const describeError = (e: unknown): string => {
  if (e !== null && typeof e === "object") {
    const tag = (e as { _tag?: unknown })._tag
    const message = (e as { message?: unknown }).message
    const text = typeof message === "string" && message.length > 0 ? message : String(e)
    return (typeof tag === "string" && !text.startsWith(tag) ? `${tag}: ${text}` : text).split("\n")[0]!.slice(0, 600)
  }
  return String(e)
}

/**
 * Runs one row under the time limit. A failure (or time-out) before measuring starts is
 * "unavailable", after it "failed"; either way the row's cleanups run and the bench goes on.
 */
const runRow = async (name: string, body: (ctx: RowContext) => Promise<Row>): Promise<Outcome> => {
  const controller = new AbortController()
  const cleanups: Array<() => void> = []
  let where = "starting"
  let measuring = false
  let done = false
  let workerExit: () => string | undefined = () => undefined
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ROW_TIMEOUT_MS / 1000} s while ${where}`)), ROW_TIMEOUT_MS)
  })
  const ctx: RowContext = {
    signal: controller.signal,
    phase: (what, m = false) => {
      where = what
      measuring = m
    },
    // A cleanup registered after the row ended (its body outlived the time limit) runs at once.
    onCleanup: (f) => (done ? f() : cleanups.push(f)),
    onWorkerExit: (exited) => {
      workerExit = exited
    }
  }
  let outcome: Outcome
  try {
    outcome = { _tag: "ok", row: await Promise.race([body(ctx), timeout]) }
  } catch (e) {
    // Give a worker that died a moment to be reaped, so that its own reason can be added.
    await new Promise((r) => setTimeout(r, 200))
    const died = workerExit()
    outcome = { _tag: measuring ? "failed" : "unavailable", name, reason: describeError(e) + (died === undefined ? "" : ` (worker ${died})`) }
  } finally {
    clearTimeout(timer)
    done = true
    controller.abort()
    for (const f of cleanups.reverse()) {
      try {
        f()
      } catch {
        // best effort
      }
    }
  }
  if (outcome._tag === "ok") {
    const r = outcome.row
    console.log(`  ${name}: p50 ${us(r.seq.p50)}, req/s @64 ${r.rps64.toFixed(0)}`)
  } else {
    console.log(`  ${name}: ${outcome._tag}: ${outcome.reason}`)
  }
  return outcome
}

// ---------- raw baselines: node:http2 / node:net only, worker in a child process ----------
const runRaw = (name: string, start: () => Promise<RawBaseline>) =>
  runRow(name, async (ctx) => {
    ctx.phase("starting the raw worker")
    const raw = await start()
    ctx.onCleanup(raw.close)
    const measure = (count: number, inFlight: number) => concurrentPromise(count, inFlight, raw.once)
    ctx.phase("warming up")
    await measure(WARMUP, 1)
    ctx.phase("measuring sequential calls", true)
    const seq = await measure(REQUESTS, 1)
    ctx.phase(`measuring ${IN_FLIGHT} in flight`, true)
    const c64 = await measure(REQUESTS * 2, IN_FLIGHT)
    return { name, seq: seq.stats, rps1: seq.rps, rps64: c64.rps, p99at64: c64.stats.p99 }
  })

// ---------- this project: the worker via the CLI, the router in this process ----------
const runMode = (name: string, env: Record<string, string>, useStream: boolean, checkRecord?: (record: string) => string | undefined) =>
  runRow(name, async (ctx) => {
    const dir = mkdtempSync(join(tmpdir(), "bench-discovery-"))
    ctx.onCleanup(() => rmSync(dir, { recursive: true, force: true }))
    const common = recommendedEnv(dir, env)
    ctx.phase("starting the worker")
    const { child, exited, firstLine } = await startChild("src/cli/main.ts", ["worker", "--endpoint", "bench.worker.generate"], common, { quiet: true })
    ctx.onCleanup(() => child.kill("SIGTERM"))
    ctx.onWorkerExit(exited)
    // The router picks the wire from the worker's record: a row measures the mode it names or none.
    const problem = checkRecord?.(firstLine)
    if (problem !== undefined) throw new Error(problem)
    const step = (what: string, measuring = false) => Effect.sync(() => ctx.phase(what, measuring))
    const program = Effect.gen(function*() {
      yield* step("building the router")
      const client = yield* Endpoint.client<unknown, unknown>("bench.worker.generate")
      yield* step("waiting for the worker's instance record")
      while (client.instances().length === 0) yield* Effect.sleep(20)
      const request = { max_tokens: ITEMS, token_size: SIZE }
      const once = useStream
        ? Stream.runDrain(client.generate(request))
        : client.call(request, () => {})
      yield* step("making the first call")
      yield* once
      yield* step("warming up", true)
      yield* sequential(WARMUP, once)
      yield* step("measuring sequential calls", true)
      const seq = yield* sequential(REQUESTS, once)
      const c1 = 1e6 / Math.max(seq.mean, 1)
      yield* step(`measuring ${IN_FLIGHT} in flight`, true)
      const c64 = yield* concurrent(REQUESTS * 2, IN_FLIGHT, once)
      return { name, seq, rps1: c1, rps64: c64.rps, p99at64: c64.stats.p99 } satisfies Row
    })
    return await Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(routerLayer(common))), { signal: ctx.signal })
  })

/** The TCP request plane's env: both planes tcp, the worker's request server on loopback. */
const tcpEnv = (extra: Record<string, string>): Record<string, string> => ({
  DYN_REQUEST_PLANE: "tcp",
  DYN_RESPONSE_PLANE: "tcp",
  DYN_TCP_REQUEST_HOST: "127.0.0.1",
  DYN_TCP_REQUEST_PORT: "0",
  ...extra
})
const lean = { DYN_METRICS: "off", DYN_TRACING: "off" }

const RAW_HTTP = "raw node:http2 + node:net"
const RAW_CORKED = "raw tcp corked (full-mode floor)"
const RAW_DYNAMO = "raw tcp dynamo shape"
const HTTP_BARE = "http + tcp (call; metrics off, tracing off)"
const HTTP_METRICS = "http + tcp (call; metrics on, tracing off)"
const HTTP_BOTH = "http + tcp (call; metrics on, tracing on)"
const TCP_DYNAMO = "tcp + tcp (Dynamo framing, call-home; call; metrics off, tracing off)"
const TCP_POOLED = "tcp + tcp pooled (Dynamo framing, pooled call-home; call; metrics off, tracing off)"
const TCP_FULL = "tcp full mode (call; metrics off, tracing off)"
const TCP_FULL_DEFAULTS = "tcp full mode (call; defaults)"
const NATS_TCP = "nats + tcp (call-home; call; metrics off, tracing off)"
const NATS_POOLED = "nats + tcp pooled (pooled call-home; call; metrics off, tracing off)"

/** The transport of a worker's instance record (its first stdout line), as JSON text. */
const recordTransport = (record: string): string => {
  try {
    return JSON.stringify((JSON.parse(record) as { transport?: unknown }).transport)
  } catch {
    return record.slice(0, 200)
  }
}
/** The full mode is used only with a worker whose record advertises it (metadata tcp_mux). */
const advertisesFullMode = (record: string) =>
  /"tcp_mux"\s*:\s*"1"/.test(record) ? undefined : `the worker's instance record does not advertise the full mode (metadata "tcp_mux": "1"): ${recordTransport(record)}`
/** Dynamo's framing: a worker that advertises the full mode would be driven in it instead. */
const advertisesDynamoOnly = (record: string) =>
  /"tcp_mux"/.test(record) ? `the worker advertises the full mode although DYN_TCP_FULL_MODE=false: ${recordTransport(record)}` : undefined

/** The NATS request plane: the worker advertises Dynamo's `{"nats_tcp": subject}`. */
const advertisesNats = (record: string) =>
  /"nats_tcp"/.test(record) ? undefined : `the worker's instance record does not advertise nats_tcp: ${recordTransport(record)}`
/** The NATS request plane's env (NATS_SERVER is added once the bench's nats-server runs). */
const natsEnv = (extra: Record<string, string>): Record<string, string> => ({ DYN_REQUEST_PLANE: "nats", DYN_RESPONSE_PLANE: "tcp", ...extra })

/**
 * This project's rows: name, env, Stream or call, the raw baseline its ratios are taken to, and
 * a check of the worker's record (the row is unavailable when the record names another wire).
 * `nats`: the row needs the bench's nats-server.
 */
const modes: ReadonlyArray<{
  name: string
  env: Record<string, string>
  stream: boolean
  baseline: string
  check?: (record: string) => string | undefined
  nats?: boolean
}> = [
  { name: HTTP_BARE, env: lean, stream: false, baseline: RAW_HTTP },
  { name: HTTP_METRICS, env: { DYN_METRICS: "on", DYN_TRACING: "off" }, stream: false, baseline: RAW_HTTP },
  { name: HTTP_BOTH, env: { DYN_METRICS: "on", DYN_TRACING: "on" }, stream: false, baseline: RAW_HTTP },
  { name: "http + tcp (generate Stream; defaults)", env: {}, stream: true, baseline: RAW_HTTP },
  // The pure HTTP mode: each response in its request's own HTTP/2 response, in each format.
  ...["sse", "ndjson", "binary"].map((format) => ({
    name: `http + http ${format} (call; defaults)`,
    env: { DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_STREAM_FORMAT: format },
    stream: false,
    baseline: RAW_HTTP
  })),
  // The TCP request plane (issue 13): Dynamo's framing with call-home, one-shot or pooled, and the full mode.
  {
    name: TCP_DYNAMO,
    env: tcpEnv({ DYN_TCP_FULL_MODE: "false", DYN_TCP_POOL_ENABLED: "false", ...lean }),
    stream: false,
    baseline: RAW_DYNAMO,
    check: advertisesDynamoOnly
  },
  {
    name: TCP_POOLED,
    env: tcpEnv({ DYN_TCP_FULL_MODE: "false", DYN_TCP_POOL_ENABLED: "true", ...lean }),
    stream: false,
    baseline: RAW_DYNAMO,
    check: advertisesDynamoOnly
  },
  { name: TCP_FULL, env: tcpEnv({ DYN_TCP_FULL_MODE: "true", ...lean }), stream: false, baseline: RAW_CORKED, check: advertisesFullMode },
  { name: TCP_FULL_DEFAULTS, env: tcpEnv({ DYN_TCP_FULL_MODE: "true" }), stream: false, baseline: RAW_CORKED, check: advertisesFullMode },
  // Dynamo's legacy mode (issue 11): the NATS request plane through a real nats-server, call-home.
  { name: NATS_TCP, env: natsEnv({ DYN_TCP_POOL_ENABLED: "false", ...lean }), stream: false, baseline: RAW_DYNAMO, check: advertisesNats, nats: true },
  { name: NATS_POOLED, env: natsEnv({ DYN_TCP_POOL_ENABLED: "true", ...lean }), stream: false, baseline: RAW_DYNAMO, check: advertisesNats, nats: true }
]
const baselineOf = new Map(modes.map((m) => [m.name, m.baseline]))

const main = async () => {
  console.log(
    `transport comparison: ${REQUESTS} sequential calls, ${REQUESTS * 2} at ${IN_FLIGHT} in flight, ${ITEMS} items of ${SIZE} B each; ` +
      `workers in child processes; ${ROW_TIMEOUT_MS / 1000} s per row at most\n`
  )
  const outcomes: Array<Outcome> = []
  outcomes.push(await runRaw(RAW_HTTP, () => startRawBaseline({ pooled: false, items: ITEMS, size: SIZE })))
  outcomes.push(await runRaw(RAW_CORKED, () => startRawTcpBaseline({ shape: "corked", items: ITEMS, size: SIZE })))
  outcomes.push(await runRaw(RAW_DYNAMO, () => startRawTcpBaseline({ shape: "dynamo", items: ITEMS, size: SIZE })))
  // One nats-server for the NATS rows, started before the first of them; a start that fails makes them unavailable.
  let nats: NatsServer | { readonly failed: string } | undefined
  for (const mode of modes) {
    if (ONLY !== undefined && !mode.name.startsWith(ONLY)) continue
    if (mode.nats === true) {
      nats ??= await startNatsServer().catch((e: unknown) => ({ failed: describeError(e) }))
      if ("failed" in nats) {
        outcomes.push({ _tag: "unavailable", name: mode.name, reason: `no nats-server: ${nats.failed}` })
        console.log(`  ${mode.name}: unavailable: no nats-server: ${nats.failed}`)
        continue
      }
      outcomes.push(await runMode(mode.name, { ...mode.env, NATS_SERVER: nats.url }, mode.stream, mode.check))
      continue
    }
    outcomes.push(await runMode(mode.name, mode.env, mode.stream, mode.check))
  }
  if (nats !== undefined && !("failed" in nats)) await nats.stop()

  const rows = new Map(outcomes.flatMap((o) => (o._tag === "ok" ? [[o.row.name, o.row] as const] : [])))
  const x = (n: number) => n.toFixed(2) + "x"
  console.log(
    "\n" +
      table(
        ["run", "p50", "p95", "p99", "req/s @1", "req/s @64", "p99 @64", "raw", "p50 / raw", "req/s@64 / raw"],
        outcomes.map((o) => {
          if (o._tag !== "ok") return [o.name, o._tag, "-", "-", "-", "-", "-", "-", "-", "-"]
          const r = o.row
          const baseName = baselineOf.get(r.name)
          const base = baseName === undefined ? undefined : rows.get(baseName)
          const label = baseName === undefined ? "-" : baseName === RAW_HTTP ? "http2" : baseName === RAW_CORKED ? "corked" : "dynamo"
          return [
            r.name,
            us(r.seq.p50),
            us(r.seq.p95),
            us(r.seq.p99),
            r.rps1.toFixed(0),
            r.rps64.toFixed(0),
            us(r.p99at64),
            label,
            base === undefined ? "-" : x(r.seq.p50 / base.seq.p50),
            base === undefined ? "-" : x(r.rps64 / base.rps64)
          ]
        })
      )
  )
  const notRun = outcomes.filter((o) => o._tag !== "ok")
  if (notRun.length > 0) {
    console.log("")
    for (const o of notRun) console.log(`${o.name}: ${o._tag}: ${o.reason}`)
  }

  const ratio = (a: string, b: string) => {
    const ra = rows.get(a)
    const rb = rows.get(b)
    return ra === undefined || rb === undefined ? "n/a" : `p50 ${x(ra.seq.p50 / rb.seq.p50)}, req/s@64 ${x(ra.rps64 / rb.rps64)}`
  }
  console.log(`\nmetrics on vs off: ${ratio(HTTP_METRICS, HTTP_BARE)}`)
  console.log(`tracing on vs off (metrics on): ${ratio(HTTP_BOTH, HTTP_METRICS)}`)
  console.log(`metrics + tracing vs neither: ${ratio(HTTP_BOTH, HTTP_BARE)}`)

  // The issue-13 targets, and the Dynamo-shape rows against their raw shape.
  const corked = rows.get(RAW_CORKED)
  const dynamo = rows.get(RAW_DYNAMO)
  const why = (name: string) => {
    const o = outcomes.find((o) => o._tag !== "ok" && o.name === name)
    return o === undefined || o._tag === "ok" ? "not run" : `${o._tag}: ${o.reason}`
  }
  const against = (name: string, base: Row | undefined, baseName: string, targets: boolean) => {
    const r = rows.get(name)
    if (r === undefined) return `  ${name}: ${why(name)}`
    if (base === undefined) return `  ${name}: ${baseName} ${why(baseName)}`
    const p50 = r.seq.p50 / base.seq.p50
    const p99 = r.seq.p99 / base.seq.p99
    const rps = r.rps64 / base.rps64
    const mark = (ok: boolean) => (ok ? "met" : "MISSED")
    return (
      `  ${name}: p50 ${us(r.seq.p50)} / ${us(base.seq.p50)} = ${x(p50)}` + (targets ? ` (target <= 1.5x: ${mark(p50 <= 1.5)})` : "") +
      `, p99 ${x(p99)}, req/s @64 ${r.rps64.toFixed(0)} / ${base.rps64.toFixed(0)} = ${x(rps)}` + (targets ? ` (target >= 0.5x: ${mark(rps >= 0.5)})` : "")
    )
  }
  console.log(`\ntcp full mode / ${RAW_CORKED} (issue 13 targets):`)
  console.log(against(TCP_FULL, corked, RAW_CORKED, true))
  console.log(against(TCP_FULL_DEFAULTS, corked, RAW_CORKED, true))
  console.log(`tcp + tcp (Dynamo framing) / ${RAW_DYNAMO}:`)
  console.log(against(TCP_DYNAMO, dynamo, RAW_DYNAMO, false))
  console.log(against(TCP_POOLED, dynamo, RAW_DYNAMO, false))
  console.log(`nats + tcp (legacy mode, through nats-server) / ${RAW_DYNAMO}:`)
  console.log(against(NATS_TCP, dynamo, RAW_DYNAMO, false))
  console.log(against(NATS_POOLED, dynamo, RAW_DYNAMO, false))
  process.exit(0)
}
main().catch((e) => {
  console.error(e)
  process.exit(1)
})
