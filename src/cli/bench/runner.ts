/**
 * Runs a benchmark: for each selected row, starts its worker and its router in processes of
 * their own (the worker of this project's modes is `transport-registry worker`; the others are
 * childMain.ts with a side module), then for each concurrency level runs warm-up streams and the
 * measured streams, reading each process's CPU time around them, and each one's peak RSS at the
 * end. With `interleave` above 1, each baseline and the rows measured against it run side by side
 * instead (`runGroup`), their measured streams in slices taken in turn. A row that cannot start
 * is `unavailable`, one that fails while measuring `failed`; every row has a time limit, so a run
 * always completes. It reports progress through a callback and returns the report; it prints
 * nothing itself.
 */
import { mkdtempSync, rmSync } from "node:fs"
import * as os from "node:os"
import { join } from "node:path"
import { childEnvironment } from "../../TransportConfig.ts"
import { loopbackFileEnv } from "../defaults.ts"
import { rows as catalog, select } from "./catalog.ts"
import type { RowSpec } from "./catalog.ts"
import { startChild } from "./child.ts"
import type { Child } from "./child.ts"
import { BENCH_ENDPOINT } from "./ipc.ts"
import type { ProcessStats } from "./ipc.ts"
import { startNatsServer } from "./natsServer.ts"
import type { NatsServer } from "./natsServer.ts"
import { withRatios } from "./report.ts"
import type { BenchReport, Row, Run } from "./report.ts"
import type { ServerInfo, SideOptions } from "./sides/side.ts"
import { cdf, summarize } from "./stats.ts"

/** What to run. */
export interface BenchOptions {
  readonly streams: number
  readonly items: number
  readonly itemSize: number
  readonly delayMs: number
  readonly concurrency: ReadonlyArray<number>
  /** Least seconds of warm-up streams before each concurrency level. */
  readonly warmupSecs: number
  /** Least streams of warm-up per level (V8 tiers code up by calls, not time). */
  readonly warmupStreams: number
  /** Most seconds of warm-up: the warm-up goes on past `warmupSecs` and `warmupStreams` while throughput still rises. */
  readonly warmupMaxSecs: number
  /** Least seconds of each measured level: more streams than `streams` when the level runs faster. */
  readonly measureSecs: number
  /**
   * Node/V8 flags given to every router and worker process, this project's and the baselines'
   * alike (this project's processes also turn allocation-site pretenuring off themselves, as the
   * `transport-registry` program does: `NodeTuning.ts`).
   */
  readonly nodeFlags: ReadonlyArray<string>
  /** `--modes`: row ids, presets, prefixes with `*`. */
  readonly modes: string
  readonly quick: boolean
  /** Time limit of one row, seconds. */
  readonly rowTimeoutS: number
  /** Rounds: every row is measured this many times, round after round, and its samples pooled. */
  readonly rounds: number
  /**
   * Slices per level when above 1: each baseline runs beside the rows measured against it, their
   * measured streams split into this many slices taken in turn (`runGroup`); 1 runs row after row.
   */
  readonly interleave: number
  /** Where each child process writes a V8 CPU profile (`node --cpu-prof`), if anywhere. */
  readonly cpuProfDir?: string | undefined
}

/** Where a run is, for the progress line. */
export interface Progress {
  readonly row: string
  readonly index: number
  readonly total: number
  readonly round: number
  readonly rounds: number
  readonly phase: string
  readonly done?: number
  readonly of?: number
}

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
const warmUp = async (
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

const message = (e: unknown): string => (e instanceof Error ? e.message : String(e)).split("\n")[0]!.slice(0, 600)

class RowTimeout extends Error {}

/** The raw measurements of one concurrency level in one round. */
interface Level {
  readonly concurrency: number
  readonly latencyUs: ReadonlyArray<number>
  readonly firstItemUs: ReadonlyArray<number>
  readonly seconds: number
  readonly routerCpuUs: number
  readonly workerCpuUs: number | null
  /** How long the level's warm-up ran. */
  readonly warmupSecs: number
}

/** One round of one row, measured. */
interface Measured {
  readonly levels: ReadonlyArray<Level>
  readonly peakRssKb: Row["peakRssKb"]
}

/** One round of one row: measured, or why not. */
type Outcome = { readonly status: "ok"; readonly measured: Measured } | { readonly status: "unavailable" | "failed"; readonly reason: string }

/** What a row's processes share while it runs: whether measuring began, its children, what to clean up. */
interface RowState {
  measuring: boolean
  readonly children: Array<Child>
  readonly cleanups: Array<() => void>
}

/** A row whose worker and router run. */
interface Started {
  readonly client: Child
  readonly server: Child | undefined
}

/** Starts one row's worker and router; throws when either cannot start. */
const startRow = async (
  spec: RowSpec,
  options: BenchOptions,
  natsUrl: string | undefined,
  state: RowState,
  progress: (phase: string, done?: number, of?: number) => void
): Promise<Started> => {
  const dir = mkdtempSync(join(os.tmpdir(), "bench-discovery-"))
  state.cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
  const env = spec.env === undefined && spec.server !== undefined && "cliEnv" in spec.server ? spec.server.cliEnv : spec.env
  const settings = env === undefined ? undefined : modeEnv(dir, env, natsUrl)
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
  return { client, server }
}

/** Runs `streams` measured streams at `concurrency`, reading both processes' CPU time around them. */
const measureStreams = async (
  row: Started,
  concurrency: number,
  streams: number,
  onProgress: (done: number) => void
): Promise<Omit<Level, "warmupSecs">> => {
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

/** Reads both processes' peak RSS, then asks the router to close (at most 2 s). */
const finishRow = async (row: Started, progress: (phase: string) => void): Promise<Measured["peakRssKb"]> => {
  const routerStats = await row.client.stats()
  const workerStats = await row.server?.stats()
  progress("stopping")
  await Promise.race([row.client.ask({ t: "close" }, "closed"), new Promise((r) => setTimeout(r, 2000))]).catch(() => {})
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
const failure = async (e: unknown, state: RowState): Promise<Outcome> => {
  // a child that died says why
  await new Promise((r) => setTimeout(r, 100))
  const died = state.children.map((c) => c.exited()).find((x) => x !== undefined)
  const reason = message(e) + (died === undefined || message(e).includes(died) ? "" : ` (${died})`)
  return { status: state.measuring ? "failed" : "unavailable", reason }
}

/** Stops a row's children (longer while they write CPU profiles) and removes its files. */
const cleanUp = async (state: RowState, options: BenchOptions): Promise<void> => {
  // a process writing its CPU profile gets longer to exit
  await Promise.all(state.children.map((c) => c.stop(options.cpuProfDir === undefined ? 3000 : 20_000)))
  for (const f of state.cleanups) f()
}

/** A promise that rejects with `RowTimeout` after `seconds`, and its cancel. */
const deadline = (seconds: number): { readonly expired: Promise<never>; readonly cancel: () => void } => {
  let timer: ReturnType<typeof setTimeout> | undefined
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new RowTimeout(`timed out after ${seconds} s`)), seconds * 1000)
  })
  expired.catch(() => {})
  return { expired, cancel: () => clearTimeout(timer) }
}

/** The nats-server's URL for a row, or why the row cannot run. */
const natsFor = (spec: RowSpec, nats: NatsServer | { readonly failed: string } | undefined): { readonly url: string | undefined } | Outcome => {
  if (spec.nats === true && (nats === undefined || "failed" in nats)) {
    return { status: "unavailable", reason: `no nats-server: ${nats !== undefined && "failed" in nats ? nats.failed : "not started"}` }
  }
  return { url: nats !== undefined && !("failed" in nats) ? nats.url : undefined }
}

/** Runs one round of one row under its time limit; never throws. */
const runRow = async (
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

/** The streams of slice `index` of `slices` when `streams` are split as evenly as whole streams allow. */
export const sliceStreams = (streams: number, slices: number, index: number): number =>
  Math.floor((streams * (index + 1)) / slices) - Math.floor((streams * index) / slices)

/** The order of a group's rows in slice `index`: forward, then backward, so no row always follows the same one. */
export const sliceOrder = <A>(rows: ReadonlyArray<A>, index: number): ReadonlyArray<A> => (index % 2 === 0 ? rows : [...rows].reverse())

/**
 * Runs one round of a group of rows side by side (`--interleave`): a baseline and the rows
 * measured against it. Every row's processes start first and stay up; at each level every row
 * warms up, then each one's measured streams are split into `options.interleave` slices, run
 * one row at a time in turn (forward, then backward), each slice after a short unmeasured
 * re-warm (a row's processes sat idle while the others ran). A slow phase of the machine then
 * falls on a row and its baseline alike. A row that fails is stopped; the others go on. The
 * group's time limit is the rows' together. Never throws.
 */
const runGroup = async (
  specs: ReadonlyArray<RowSpec>,
  options: BenchOptions,
  nats: NatsServer | { readonly failed: string } | undefined,
  progressOf: (spec: RowSpec) => (phase: string, done?: number, of?: number) => void
): Promise<Map<string, Outcome>> => {
  const outcomes = new Map<string, Outcome>()
  interface Live {
    readonly spec: RowSpec
    readonly state: RowState
    readonly progress: (phase: string, done?: number, of?: number) => void
    row: Started | undefined
    readonly levels: Array<Level>
    failed: Outcome | undefined
  }
  const live: Array<Live> = []
  for (const spec of specs) {
    const natsUrl = natsFor(spec, nats)
    if ("status" in natsUrl) outcomes.set(spec.id, natsUrl)
    else live.push({ spec, state: { measuring: false, children: [], cleanups: [] }, progress: progressOf(spec), row: undefined, levels: [], failed: undefined })
  }
  const limit = deadline(options.rowTimeoutS * Math.max(1, live.length))
  /** Runs `f` for a row that has not failed; a failure (or the group's time limit) fails that row only. */
  const step = async (l: Live, f: (row: Started) => Promise<void>): Promise<void> => {
    if (l.failed !== undefined || l.row === undefined) return
    try {
      await Promise.race([f(l.row), limit.expired])
    } catch (e) {
      l.failed = await failure(e, l.state)
      await cleanUp(l.state, options)
    }
  }
  try {
    for (const l of live) {
      const natsUrl = natsFor(l.spec, nats) as { readonly url: string | undefined }
      try {
        l.row = await Promise.race([startRow(l.spec, options, natsUrl.url, l.state, l.progress), limit.expired])
      } catch (e) {
        l.failed = await failure(e, l.state)
        await cleanUp(l.state, options)
      }
    }
    const paced = options.delayMs > 0
    const slices = options.interleave
    for (const concurrency of options.concurrency) {
      const plan = new Map<Live, { streams: number; warmupSecs: number; parts: Array<Omit<Level, "warmupSecs">> }>()
      for (const l of live) {
        await step(l, async (row) => {
          l.progress(`c=${concurrency} warming up`)
          l.state.measuring = true
          const warm = await warmUp(row.client, concurrency, options.warmupSecs, paced ? 0 : options.warmupStreams, options.warmupMaxSecs, paced)
          plan.set(l, { streams: measuredStreams(options.streams, warm.rate, options.measureSecs), warmupSecs: warm.secs, parts: [] })
        })
      }
      for (let index = 0; index < slices; index++) {
        for (const l of sliceOrder(live, index)) {
          const p = plan.get(l)
          if (p === undefined) continue
          await step(l, async (row) => {
            const n = sliceStreams(p.streams, slices, index)
            if (n === 0) return
            l.progress(`c=${concurrency} slice ${index + 1}/${slices}`)
            // The row sat idle while the others ran: a few streams to bring it back to speed.
            if (!paced && index > 0) await row.client.ask({ t: "run", streams: Math.max(2 * concurrency, 100), concurrency }, "result")
            const done = p.parts.reduce((k, part) => k + part.latencyUs.length, 0)
            p.parts.push(await measureStreams(row, concurrency, n, (k) => l.progress(`c=${concurrency} slice ${index + 1}/${slices}`, done + k, p.streams)))
          })
        }
      }
      for (const [l, p] of plan) {
        if (l.failed !== undefined) continue
        const parts = p.parts
        const workerCpu = parts.some((x) => x.workerCpuUs === null) ? null : parts.reduce((k, x) => k + x.workerCpuUs!, 0)
        l.levels.push({
          concurrency,
          latencyUs: parts.flatMap((x) => x.latencyUs),
          firstItemUs: parts.flatMap((x) => x.firstItemUs),
          seconds: parts.reduce((k, x) => k + x.seconds, 0),
          routerCpuUs: parts.reduce((k, x) => k + x.routerCpuUs, 0),
          workerCpuUs: workerCpu,
          warmupSecs: p.warmupSecs
        })
      }
    }
    for (const l of live) {
      let peakRssKb: Measured["peakRssKb"] | undefined
      await step(l, async (row) => {
        peakRssKb = await finishRow(row, l.progress)
      })
      if (l.failed === undefined && peakRssKb !== undefined) outcomes.set(l.spec.id, { status: "ok", measured: { levels: l.levels, peakRssKb } })
    }
  } finally {
    limit.cancel()
    await Promise.all(live.map((l) => cleanUp(l.state, options)))
  }
  for (const l of live) if (!outcomes.has(l.spec.id)) outcomes.set(l.spec.id, l.failed ?? { status: "failed", reason: "stopped before it was measured" })
  return outcomes
}

/**
 * The groups `--interleave` runs side by side, in the order of `rows`: each baseline with the
 * selected rows measured against it; a row with neither baseline nor followers alone.
 */
export const interleaveGroups = (rows: ReadonlyArray<RowSpec>): Array<Array<RowSpec>> => {
  const groups = new Map<string, Array<RowSpec>>()
  for (const r of rows) {
    const key = r.baseline !== undefined && rows.some((b) => b.id === r.baseline) ? r.baseline : r.id
    const group = groups.get(key)
    if (group === undefined) groups.set(key, [r])
    else group.push(r)
  }
  // The baseline first in its group (it comes first in the catalog, but a group is keyed by it in any case).
  return [...groups.entries()].map(([key, g]) => [...g.filter((r) => r.id === key), ...g.filter((r) => r.id !== key)])
}

/** A row from its rounds: their samples pooled (a failed round fails the row). */
const combine = (spec: RowSpec, outcomes: ReadonlyArray<Outcome>, rounds: number): Row => {
  const base = { id: spec.id, kind: spec.kind, description: spec.description, baseline: spec.baseline ?? null }
  const bad = outcomes.findIndex((o) => o.status !== "ok")
  if (bad >= 0) {
    const o = outcomes[bad] as Extract<Outcome, { reason: string }>
    return { ...base, status: o.status, reason: rounds > 1 ? `round ${bad + 1}: ${o.reason}` : o.reason, peakRssKb: { router: null, worker: null }, runs: [] }
  }
  const measured = outcomes.map((o) => (o as Extract<Outcome, { status: "ok" }>).measured)
  const max = (xs: ReadonlyArray<number | null>) => (xs.some((x) => x === null) ? null : Math.max(...(xs as Array<number>)))
  const runs: Array<Run> = measured[0]!.levels.map(({ concurrency }) => {
    const levels = measured.map((m) => m.levels.find((l) => l.concurrency === concurrency)!)
    const latencyUs = levels.flatMap((l) => l.latencyUs)
    const streams = latencyUs.length
    const seconds = levels.reduce((n, l) => n + l.seconds, 0)
    const workerCpu = levels.some((l) => l.workerCpuUs === null) ? null : levels.reduce((n, l) => n + l.workerCpuUs!, 0)
    return {
      concurrency,
      streams,
      seconds,
      reqPerSec: streams / seconds,
      latencyUs: summarize(latencyUs),
      firstItemUs: summarize(levels.flatMap((l) => l.firstItemUs)),
      cpuUsPerRequest: { router: levels.reduce((n, l) => n + l.routerCpuUs, 0) / streams, worker: workerCpu === null ? null : workerCpu / streams },
      cdf: cdf(latencyUs, 100).map(([v, f]) => [v, f] as const),
      warmupSecs: levels.reduce((n, l) => n + l.warmupSecs, 0) / levels.length,
      ratio: { p50: null, reqPerSec: null }
    }
  })
  return {
    ...base,
    status: "ok",
    reason: null,
    peakRssKb: { router: max(measured.map((m) => m.peakRssKb.router)), worker: max(measured.map((m) => m.peakRssKb.worker)) },
    runs
  }
}

/** Runs the benchmark. */
export const runBench = async (options: BenchOptions, onProgress: (p: Progress) => void): Promise<BenchReport> => {
  const started = new Date()
  const t0 = performance.now()
  const { rows: selected, unknown } = select(options.modes)
  if (unknown.length > 0) throw new Error(`--modes: unknown ${unknown.join(", ")}; rows: ${catalog.map((r) => r.id).join(", ")}`)
  let nats: NatsServer | { readonly failed: string } | undefined
  if (selected.some((r) => r.nats === true)) nats = await startNatsServer().catch((e: unknown) => ({ failed: message(e) }))
  const outcomes = new Map<string, Array<Outcome>>(selected.map((r) => [r.id, []]))
  try {
    for (let round = 1; round <= options.rounds; round++) {
      const progressOf = (spec: RowSpec) => {
        const index = selected.indexOf(spec)
        return (phase: string, count?: number, of?: number) =>
          onProgress({
            row: spec.id,
            index: index + 1,
            total: selected.length,
            round,
            rounds: options.rounds,
            phase,
            ...(count === undefined ? {} : { done: count }),
            ...(of === undefined ? {} : { of })
          })
      }
      // a row that did not run in an earlier round is not tried again
      const runnable = selected.filter((spec) => !outcomes.get(spec.id)!.some((o) => o.status !== "ok"))
      if (options.interleave > 1) {
        for (const group of interleaveGroups(runnable)) {
          const results = await runGroup(group, options, nats, progressOf)
          for (const spec of group) outcomes.get(spec.id)!.push(results.get(spec.id)!)
        }
      } else {
        for (const spec of runnable) outcomes.get(spec.id)!.push(await runRow(spec, options, nats, progressOf(spec)))
      }
    }
  } finally {
    if (nats !== undefined && !("failed" in nats)) nats.stop()
  }
  const out = selected.map((spec) => combine(spec, outcomes.get(spec.id)!, options.rounds))
  const cpus = os.cpus()
  return {
    version: 3,
    tool: "transport-registry bench",
    startedAt: started.toISOString(),
    seconds: (performance.now() - t0) / 1000,
    machine: {
      node: process.version,
      platform: process.platform,
      arch: process.arch,
      cpus: cpus.length,
      cpuModel: cpus[0]?.model ?? "unknown",
      memoryMb: Math.round(os.totalmem() / 1024 / 1024),
      loadAverage: os.loadavg().map((l) => Math.round(l * 100) / 100)
    },
    workload: {
      streams: options.streams,
      items: options.items,
      itemSize: options.itemSize,
      delayMs: options.delayMs,
      concurrency: options.concurrency,
      warmupSecs: options.warmupSecs,
      warmupStreams: options.warmupStreams,
      warmupMaxSecs: options.warmupMaxSecs,
      measureSecs: options.measureSecs,
      nodeFlags: options.nodeFlags,
      quick: options.quick,
      modes: options.modes,
      rounds: options.rounds,
      interleave: options.interleave
    },
    rows: withRatios(out)
  }
}
