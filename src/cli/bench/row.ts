/**
 * One benchmark row's processes and their measurement: starts its worker and its router (the
 * worker of this project's modes is `transport-registry worker`; the others are childMain.ts with
 * a side module), warms a concurrency level up, runs measured streams reading both processes' CPU
 * time around them, reads their peak RSS, and stops them. `runRow` does all of it for one row
 * under its time limit; runner.ts and interleave.ts put rows together. Nothing here prints.
 */
import { mkdtempSync, rmSync } from "node:fs"
import * as os from "node:os"
import { join } from "node:path"
import { childEnvironment } from "../../TransportConfig.ts"
import { loopbackFileEnv } from "../defaults.ts"
import type { RowSpec } from "./catalog.ts"
import { startChild } from "./child.ts"
import type { Child } from "./child.ts"
import { BENCH_ENDPOINT } from "./ipc.ts"
import type { ProcessStats } from "./ipc.ts"
import type { NatsServer } from "./natsServer.ts"
import { startOtlpSink } from "./otlpSink.ts"
import type { OtlpSink } from "./otlpSink.ts"
import type { BenchOptions } from "./options.ts"
import type { Row } from "./report.ts"
import type { ServerInfo, SideOptions } from "./sides/side.ts"

const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js"
const here = (path: string) => new URL(path + ext, import.meta.url)
const execArgv = ["--no-warnings"]

/** The DYN_* settings of a row of this project: loopback, free ports, file discovery in `dir`, then the mode's own. */
const modeEnv = (dir: string, mode: Readonly<Record<string, string>>, natsUrl: string | undefined): Record<string, string> => ({
  DYN_REQUEST_PLANE: "http",
  DYN_RESPONSE_PLANE: "tcp",
  ...loopbackFileEnv(dir),
  ...mode,
  ...(natsUrl === undefined ? {} : { NATS_SERVER: natsUrl })
})

/** Largest warm-up batch, in streams, and the time one batch aims at. */
const WARMUP_BATCH_MAX = 20_000
const WARMUP_BATCH_SECS = 0.5
/** A warm-up batch this much faster than every batch before it means throughput is still rising. */
const STILL_RISING = 1.05
/** Most streams measured in one level (`measureSecs` at a very fast row). */
const MEASURED_STREAMS_MAX = 200_000

/**
 * Runs unmeasured streams at `concurrency` for at least `minSecs` seconds and `minStreams` streams
 * (and at least one batch), then on while throughput still rises, up to `maxSecs`: this project's
 * layers need tens of thousands of calls (V8's optimizing tiers, the heap growing to its working
 * size) before they run at their steady rate, raw Node a few hundred, so a fixed count or time
 * that suits one would leave the other cold (http+tcp pooled at one in flight: p50 853, 313 and
 * 245 µs after 4,000, 10,000 and 16,000 calls). Batches start small (one stream per slot when items are paced) and are sized from
 * the rate seen to last about half a second each; throughput still rises while a batch runs
 * `STILL_RISING` times faster than every batch before it. The last batch may overrun `maxSecs`.
 * Returns the last batch's rate, in streams per second, and the seconds it took in all.
 */
export const warmUp = async (
  client: Child,
  concurrency: number,
  minSecs: number,
  minStreams: number,
  maxSecs: number,
  paced: boolean
): Promise<{ readonly rate: number; readonly secs: number }> => {
  const t0 = performance.now()
  // A paced stream lasts items x delay: start with one stream per slot, then size from the rate.
  let batch = paced ? concurrency : Math.max(concurrency, 50)
  let best = 0
  let streams = 0
  for (;;) {
    const b0 = performance.now()
    await client.ask({ t: "run", streams: batch, concurrency }, "result")
    const took = Math.max((performance.now() - b0) / 1000, 0.001)
    streams += batch
    const rate = batch / took
    const rising = rate > best * STILL_RISING
    best = Math.max(best, rate)
    const elapsed = (performance.now() - t0) / 1000
    if (elapsed >= maxSecs || (elapsed >= minSecs && streams >= minStreams && !rising)) return { rate, secs: elapsed }
    batch = Math.max(concurrency, Math.min(WARMUP_BATCH_MAX, Math.round(rate * WARMUP_BATCH_SECS)))
  }
}

/** Streams to measure at a level whose warm-up ran at `rate` per second: `streams`, or more to last `measureSecs`. */
export const measuredStreams = (streams: number, rate: number, measureSecs: number): number =>
  Math.max(streams, Math.min(MEASURED_STREAMS_MAX, Math.ceil(rate * measureSecs)))

/** The first line of an error's message, at most 600 characters, for a row's reason. */
export const message = (e: unknown): string => (e instanceof Error ? e.message : String(e)).split("\n")[0]!.slice(0, 600)

class RowTimeout extends Error {}

/** The raw measurements of one concurrency level in one round. */
export interface Level {
  readonly concurrency: number
  readonly latencyUs: ReadonlyArray<number>
  readonly firstItemUs: ReadonlyArray<number>
  readonly seconds: number
  readonly routerCpuUs: number
  readonly workerCpuUs: number | null
  /** How long the level's warm-up ran. */
  readonly warmupSecs: number
}

/** Measurements of one concurrency level without the warm-up: what a run of measured streams gives. */
export type Streams = Omit<Level, "warmupSecs">

/** `parts` of one level as one: their samples together, their seconds and CPU times added (the worker's unknown if any part's is). */
export const pooled = (concurrency: number, parts: ReadonlyArray<Streams>): Streams => ({
  concurrency,
  latencyUs: parts.flatMap((x) => x.latencyUs),
  firstItemUs: parts.flatMap((x) => x.firstItemUs),
  seconds: parts.reduce((n, x) => n + x.seconds, 0),
  routerCpuUs: parts.reduce((n, x) => n + x.routerCpuUs, 0),
  workerCpuUs: parts.some((x) => x.workerCpuUs === null) ? null : parts.reduce((n, x) => n + x.workerCpuUs!, 0)
})

/** One round of one row, measured. */
export interface Measured {
  readonly levels: ReadonlyArray<Level>
  readonly peakRssKb: Row["peakRssKb"]
}

/** One round of one row: measured, or why not. */
export type Outcome = { readonly status: "ok"; readonly measured: Measured } | { readonly status: "unavailable" | "failed"; readonly reason: string }

/** What a row's processes share while it runs: whether measuring began, its children, what to clean up. */
export interface RowState {
  measuring: boolean
  readonly children: Array<Child>
  readonly cleanups: Array<() => void>
}

/** A row whose worker and router run. */
export interface Started {
  readonly client: Child
  readonly server: Child | undefined
  /** The collector stand-in of a row that exports its spans (`otlp`). */
  readonly sink?: OtlpSink
}

/** Starts one row's worker and router; throws when either cannot start. */
export const startRow = async (
  spec: RowSpec,
  options: BenchOptions,
  natsUrl: string | undefined,
  state: RowState,
  progress: (phase: string, done?: number, of?: number) => void
): Promise<Started> => {
  const dir = mkdtempSync(join(os.tmpdir(), "bench-discovery-"))
  state.cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
  const env = spec.env === undefined && spec.server !== undefined && "cliEnv" in spec.server ? spec.server.cliEnv : spec.env
  let sink: OtlpSink | undefined
  if (spec.otlp === true) {
    const started = await startOtlpSink()
    state.cleanups.push(started.stop)
    sink = started
  }
  const settings = env === undefined
    ? undefined
    : { ...modeEnv(dir, env, natsUrl), ...(sink === undefined ? {} : { OTEL_EXPORTER_OTLP_ENDPOINT: sink.url }) }
  const sideOptions = (variant: string): SideOptions => ({
    variant,
    items: options.items,
    itemSize: options.itemSize,
    delayMs: options.delayMs,
    ...(settings === undefined ? {} : { env: settings }),
    ...(natsUrl === undefined ? {} : { natsUrl })
  })

  // with --cpu-prof: each process writes <row>.<router|worker>.<pid>.cpuprofile when it exits
  const base = options.nodeFlags.length === 0 ? execArgv : [...execArgv, ...options.nodeFlags]
  const flagsOf = (role: string) =>
    options.cpuProfDir === undefined ? base : [...base, "--cpu-prof", `--cpu-prof-dir=${options.cpuProfDir}`, `--cpu-prof-name=${spec.id.replace(/[^\w.+-]/g, "_")}.${role}.\${pid}.cpuprofile`]
  progress("starting the worker")
  // the router's process starts (and loads its module) while the worker starts
  const client = startChild(here("./childMain"), [spec.client.module], childEnvironment({}), flagsOf("router"))
  state.children.push(client)
  let server: Child | undefined
  let info: ServerInfo = {}
  if (spec.server !== undefined && "cliEnv" in spec.server) {
    server = startChild(here("../main"), ["worker", "--endpoint", BENCH_ENDPOINT], childEnvironment(settings!), [...flagsOf("worker"), "--import", here("./statsHook").href])
    state.children.push(server)
    const record = await server.firstLine
    const problem = spec.check?.(record)
    if (problem !== undefined) throw new Error(problem)
  } else if (spec.server !== undefined) {
    server = startChild(here("./childMain"), [spec.server.module], childEnvironment({}), flagsOf("worker"))
    state.children.push(server)
    info = (await server.ask({ t: "start", role: "server", module: spec.server.module, options: sideOptions(spec.server.variant) }, "ready")).info
  }
  progress("starting the router")
  await client.ask({ t: "start", role: "client", module: spec.client.module, options: sideOptions(spec.client.variant), server: info }, "ready")
  return { client, server, ...(sink === undefined ? {} : { sink }) }
}

/** Runs `streams` measured streams at `concurrency`, reading both processes' CPU time around them. */
export const measureStreams = async (
  row: Started,
  concurrency: number,
  streams: number,
  onProgress: (done: number) => void
): Promise<Streams> => {
  const before: ProcessStats | undefined = await row.server?.stats()
  const result = await row.client.ask({ t: "run", streams, concurrency }, "result", onProgress)
  const after = await row.server?.stats()
  return {
    concurrency,
    latencyUs: result.latencyUs,
    firstItemUs: result.firstItemUs,
    seconds: result.seconds,
    routerCpuUs: result.cpuUs,
    workerCpuUs: before === undefined || after === undefined ? null : after.cpuUs - before.cpuUs
  }
}

/**
 * Reads both processes' peak RSS, then asks the router to close (at most 2 s). A row that exports
 * its spans then stops its worker too (SIGTERM: it flushes its spans as it exits, as the router
 * did on closing), and fails if its collector stand-in did not receive both sides' spans: it
 * would have measured an export that did not happen.
 */
export const finishRow = async (row: Started, progress: (phase: string) => void): Promise<Measured["peakRssKb"]> => {
  const routerStats = await row.client.stats()
  const workerStats = await row.server?.stats()
  progress("stopping")
  await Promise.race([row.client.ask({ t: "close" }, "closed"), new Promise((r) => setTimeout(r, 2000))]).catch(() => {})
  if (row.sink !== undefined) {
    await row.server?.stop(5000)
    const { withSend, withHandle } = row.sink.received()
    const missing = [withSend === 0 ? "the router's send spans" : undefined, withHandle === 0 ? "the worker's handle spans" : undefined].filter((x) => x !== undefined)
    if (missing.length > 0) throw new Error(`the OTLP collector stand-in at ${row.sink.url} received none of ${missing.join(" and ")}`)
  }
  return { router: routerStats.maxRssKb, worker: workerStats?.maxRssKb ?? null }
}

/** Measures one row; throws with `measuring` set when it fails after measuring began. */
const measureRow = async (
  spec: RowSpec,
  options: BenchOptions,
  natsUrl: string | undefined,
  state: RowState,
  progress: (phase: string, done?: number, of?: number) => void
): Promise<Measured> => {
  const row = await startRow(spec, options, natsUrl, state, progress)
  const levels: Array<Level> = []
  for (const concurrency of options.concurrency) {
    progress(`c=${concurrency} warming up`)
    state.measuring = true
    // Paced streams last items x delay each: a count of them would only ever stop at the most.
    const paced = options.delayMs > 0
    const warm = await warmUp(row.client, concurrency, options.warmupSecs, paced ? 0 : options.warmupStreams, options.warmupMaxSecs, paced)
    const streams = measuredStreams(options.streams, warm.rate, options.measureSecs)
    const level = await measureStreams(row, concurrency, streams, (done) => progress(`c=${concurrency}`, done, streams))
    levels.push({ ...level, warmupSecs: warm.secs })
  }
  return { levels, peakRssKb: await finishRow(row, progress) }
}

/** Why a row failed or could not start, with the reason its child gave if one died. */
export const failure = async (e: unknown, state: RowState): Promise<Outcome> => {
  // a child that died says why
  await new Promise((r) => setTimeout(r, 100))
  const died = state.children.map((c) => c.exited()).find((x) => x !== undefined)
  const reason = message(e) + (died === undefined || message(e).includes(died) ? "" : ` (${died})`)
  return { status: state.measuring ? "failed" : "unavailable", reason }
}

/** Stops a row's children (longer while they write CPU profiles) and removes its files. */
export const cleanUp = async (state: RowState, options: BenchOptions): Promise<void> => {
  // a process writing its CPU profile gets longer to exit
  await Promise.all(state.children.map((c) => c.stop(options.cpuProfDir === undefined ? 3000 : 20_000)))
  for (const f of state.cleanups) f()
}

/** A promise that rejects with `RowTimeout` after `seconds`, and its cancel. */
export const deadline = (seconds: number): { readonly expired: Promise<never>; readonly cancel: () => void } => {
  let timer: ReturnType<typeof setTimeout> | undefined
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new RowTimeout(`timed out after ${seconds} s`)), seconds * 1000)
  })
  expired.catch(() => {})
  return { expired, cancel: () => clearTimeout(timer) }
}

/** The nats-server's URL for a row, or why the row cannot run. */
export const natsFor = (spec: RowSpec, nats: NatsServer | { readonly failed: string } | undefined): { readonly url: string | undefined } | Outcome => {
  if (spec.nats === true && (nats === undefined || "failed" in nats)) {
    return { status: "unavailable", reason: `no nats-server: ${nats !== undefined && "failed" in nats ? nats.failed : "not started"}` }
  }
  return { url: nats !== undefined && !("failed" in nats) ? nats.url : undefined }
}

/** Runs one round of one row under its time limit; never throws. */
export const runRow = async (
  spec: RowSpec,
  options: BenchOptions,
  nats: NatsServer | { readonly failed: string } | undefined,
  progress: (phase: string, done?: number, of?: number) => void
): Promise<Outcome> => {
  const natsUrl = natsFor(spec, nats)
  if ("status" in natsUrl) return natsUrl
  const state: RowState = { measuring: false, children: [], cleanups: [] }
  const limit = deadline(options.rowTimeoutS)
  try {
    return { status: "ok", measured: await Promise.race([measureRow(spec, options, natsUrl.url, state, progress), limit.expired]) }
  } catch (e) {
    return await failure(e, state)
  } finally {
    limit.cancel()
    await cleanUp(state, options)
  }
}

