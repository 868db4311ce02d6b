/**
 * `transport-registry bench`: the flags, the progress line (stderr), the table (stdout), and the
 * `--json` / `--html` files. The measuring is runner.ts's; this module only wires it to the CLI.
 */
import { writeFileSync } from "node:fs"
import { Data, Effect } from "effect"
import { Command, Flag } from "effect/cli"
import { describe, HelpSections } from "../help.ts"
import { presets, rows, select } from "./catalog.ts"
import { renderHtml } from "./html.ts"
import { renderSummary, renderTable } from "./report.ts"
import type { BenchReport } from "./report.ts"
import { runBench } from "./runner.ts"
import type { BenchOptions, Progress } from "./runner.ts"

/** A bench flag's value that cannot be used, or a run that could not complete. */
export class BenchError extends Data.TaggedError("BenchError")<{ readonly detail: string }> {
  override get message(): string {
    return this.detail
  }
}

/** Writes the progress line to stderr: rewritten in place on a terminal, one line per phase otherwise. */
const progressWriter = () => {
  const tty = process.stderr.isTTY === true
  let last = ""
  const started = performance.now()
  return {
    update: (p: Progress) => {
      const count = p.done === undefined ? "" : ` ${p.done}/${p.of}`
      const round = p.rounds > 1 ? `round ${p.round}/${p.rounds} ` : ""
      const line = `${round}[${p.index}/${p.total}] ${p.row}: ${p.phase}${count} (${((performance.now() - started) / 1000).toFixed(0)} s)`
      if (tty) process.stderr.write(`\r\x1b[2K${line}`)
      else if (p.done === undefined && `${p.round}${p.row}${p.phase}` !== last) process.stderr.write(line + "\n")
      last = `${p.round}${p.row}${p.phase}`
    },
    end: () => {
      if (tty) process.stderr.write("\r\x1b[2K")
    }
  }
}

const parseConcurrency = (text: string): Array<number> | undefined => {
  const list = text.split(",").map((s) => Number(s.trim()))
  return list.length > 0 && list.every((n) => Number.isInteger(n) && n >= 1 && n <= 4096) ? list : undefined
}

/** The command's options, as parsed. */
export interface BenchFlags {
  readonly streams: number | undefined
  readonly items: number
  readonly itemSize: number
  readonly concurrency: string
  readonly delayMs: number
  readonly modes: string | undefined
  readonly quick: boolean
  readonly json: string | undefined
  readonly html: string | undefined
  readonly rowTimeout: number | undefined
  readonly rounds: number
  readonly interleave?: number | undefined
  readonly warmupSecs?: number | undefined
  readonly warmupMaxSecs?: number | undefined
  readonly warmupStreams?: number | undefined
  readonly measureSecs?: number | undefined
  readonly nodeFlags?: string | undefined
  readonly cpuProf?: string | undefined
}

/** Least seconds of warm-up per row and level by default, and with `--quick`. */
const WARMUP_SECS = 3
const WARMUP_SECS_QUICK = 1
/** Least streams of warm-up per row and level by default, and with `--quick`. */
const WARMUP_STREAMS = 20_000
const WARMUP_STREAMS_QUICK = 3_000
/** The default most seconds of warm-up, as a multiple of the least. */
const WARMUP_MAX_FACTOR = 4
/** Least seconds of each measured level by default, and with `--quick`. */
const MEASURE_SECS = 1
const MEASURE_SECS_QUICK = 0.25

/** The run's options from the flags (`--quick` changes the defaults, not given values). */
export const benchOptions = (flags: BenchFlags): BenchOptions | string => {
  const concurrency = parseConcurrency(flags.concurrency)
  if (concurrency === undefined) return `--concurrency: a comma-separated list of integers from 1 to 4096, got ${JSON.stringify(flags.concurrency)}`
  const streams = flags.streams ?? (flags.quick ? 300 : 2000)
  if (!(streams >= 1)) return `--streams: at least 1, got ${streams}`
  if (!(flags.items >= 1 && flags.items <= 100_000)) return `--items: from 1 to 100000, got ${flags.items}`
  if (!(flags.itemSize >= 1 && flags.itemSize <= 65_536)) return `--item-size: from 1 to 65536, got ${flags.itemSize}`
  if (!(flags.delayMs >= 0 && flags.delayMs <= 10_000)) return `--delay-ms: from 0 to 10000, got ${flags.delayMs}`
  if (!(flags.rounds >= 1 && flags.rounds <= 100)) return `--rounds: from 1 to 100, got ${flags.rounds}`
  const interleave = flags.interleave ?? 1
  if (!(Number.isInteger(interleave) && interleave >= 1 && interleave <= 100)) return `--interleave: a whole number from 1 to 100, got ${interleave}`
  const nodeFlags = flags.nodeFlags === undefined ? [] : flags.nodeFlags.split(/\s+/).filter((f) => f.length > 0)
  const notFlag = nodeFlags.find((f) => !f.startsWith("--"))
  if (notFlag !== undefined) return `--node-flags: each must start with --, got ${JSON.stringify(notFlag)}`
  if (flags.warmupSecs !== undefined && !(flags.warmupSecs >= 0 && flags.warmupSecs <= 600)) return `--warmup-secs: from 0 to 600, got ${flags.warmupSecs}`
  const modes = flags.modes ?? (flags.quick ? "core" : "all")
  const { unknown } = select(modes)
  if (unknown.length > 0) return `--modes: unknown ${unknown.join(", ")} (rows: ${rows.map((r) => r.id).join(", ")}; presets: ${Object.keys(presets).join(", ")})`
  // An explicit most lowers the default least to it; the default most is 4x the least, within 600 s.
  const defaultWarmupSecs = flags.quick ? WARMUP_SECS_QUICK : WARMUP_SECS
  const warmupSecs = flags.warmupSecs ?? Math.min(defaultWarmupSecs, flags.warmupMaxSecs ?? defaultWarmupSecs)
  const warmupMaxSecs = flags.warmupMaxSecs ?? Math.min(600, Math.max(warmupSecs, warmupSecs * WARMUP_MAX_FACTOR))
  if (!(warmupMaxSecs >= warmupSecs && warmupMaxSecs <= 600)) return `--warmup-max-secs: from --warmup-secs (${warmupSecs}) to 600, got ${warmupMaxSecs}`
  const warmupStreams = flags.warmupStreams ?? (flags.quick ? WARMUP_STREAMS_QUICK : WARMUP_STREAMS)
  if (!(Number.isInteger(warmupStreams) && warmupStreams >= 0)) return `--warmup-streams: a whole number from 0, got ${warmupStreams}`
  const measureSecs = flags.measureSecs ?? (flags.quick ? MEASURE_SECS_QUICK : MEASURE_SECS)
  if (!(measureSecs >= 0 && measureSecs <= 600)) return `--measure-secs: from 0 to 600, got ${measureSecs}`
  // the slowest stream at one in flight bounds a row's time: give each row room for it
  const paced = (streams * 2 * flags.items * flags.delayMs) / 1000
  return {
    streams,
    items: flags.items,
    itemSize: flags.itemSize,
    delayMs: flags.delayMs,
    concurrency,
    warmupSecs,
    warmupStreams,
    warmupMaxSecs,
    measureSecs,
    nodeFlags,
    modes,
    quick: flags.quick,
    // each level's longest warm-up plus one paced stream it may overrun by, and its least measured time
    rowTimeoutS: flags.rowTimeout ??
      Math.ceil((flags.quick ? 60 : 120) + (paced + warmupMaxSecs + measureSecs + (flags.items * flags.delayMs) / 1000) * concurrency.length),
    rounds: flags.rounds,
    interleave,
    cpuProfDir: flags.cpuProf
  }
}

/** Runs the benchmark for `flags`: progress on stderr, the table on stdout, the files asked for. */
export const bench = (flags: BenchFlags): Effect.Effect<BenchReport, BenchError> =>
  Effect.gen(function*() {
    const options = benchOptions(flags)
    if (typeof options === "string") return yield* new BenchError({ detail: options })
    const progress = progressWriter()
    process.stderr.write(
      `transport-registry bench: at least ${options.streams} streams and ${options.measureSecs} s per level, after ${options.warmupSecs}-${options.warmupMaxSecs} s and at least ${options.warmupStreams} streams of warm-up, at ${options.concurrency.join(", ")} in flight, ${options.items} items of ${options.itemSize} B, ${options.delayMs} ms apart; rows: ${options.modes}` +
        (options.rounds > 1 ? `; ${options.rounds} rounds` : "") +
        (options.interleave > 1 ? `; each baseline beside its rows, ${options.interleave} slices per level` : "") + "\n"
    )
    const report = yield* Effect.tryPromise({
      try: () => runBench(options, progress.update),
      catch: (e) => new BenchError({ detail: e instanceof Error ? e.message : String(e) })
    }).pipe(Effect.ensuring(Effect.sync(progress.end)))
    const summary = renderSummary(report)
    process.stdout.write(renderTable(report) + "\n" + (summary === "" ? "" : `\n${summary}\n`))
    const write = (path: string, text: string) =>
      Effect.try({ try: () => writeFileSync(path, text), catch: (e) => new BenchError({ detail: `cannot write ${path}: ${(e as Error).message}` }) })
    if (flags.json !== undefined) yield* write(flags.json, JSON.stringify(report, null, 2) + "\n")
    if (flags.html !== undefined) yield* write(flags.html, renderHtml(report))
    return report
  })

const rowLines = rows.map((r) => `${r.id.padEnd(22)}${r.kind.padEnd(10)}${r.baseline === undefined ? "" : `vs ${r.baseline}: `}${r.description}`)

/** The `bench` subcommand. */
export const benchCommand = Command.make(
  "bench",
  {
    streams: Flag.Int("streams").pipe(Flag.withDescription(describe("Least measured streams per row and concurrency level (more when --measure-secs asks for them)", { default: "2000; 300 with --quick" })), Flag.optional),
    items: Flag.Int("items").pipe(Flag.withDescription(describe("Items per stream", { default: "10" })), Flag.withDefault(10)),
    itemSize: Flag.Int("item-size").pipe(Flag.withDescription(describe("Bytes of token per item", { default: "50" })), Flag.withDefault(50)),
    concurrency: Flag.String("concurrency").pipe(
      Flag.withMetavar("list"),
      Flag.withDescription(describe("Streams in flight, a comma-separated list; each level is measured", { default: "1,64" })),
      Flag.withDefault("1,64")
    ),
    delayMs: Flag.Int("delay-ms").pipe(Flag.withDescription(describe("Delay after each item, in ms (token generation)", { default: "0" })), Flag.withDefault(0)),
    modes: Flag.String("modes").pipe(
      Flag.withMetavar("list"),
      Flag.withDescription(describe("Rows to run: row ids, presets, or prefixes ending in *, comma-separated; each row's baseline comes along", { default: "all; core with --quick" })),
      Flag.optional
    ),
    quick: Flag.Boolean("quick").pipe(
      Flag.withDescription(describe("Fewer streams and warm-up streams, and the core rows (no metrics/tracing/Stream-API variants): under 2 minutes", { default: "false" })),
      Flag.withDefault(false)
    ),
    json: Flag.String("json").pipe(Flag.withMetavar("file"), Flag.withDescription(describe("Write the results as JSON", { default: "none" })), Flag.optional),
    html: Flag.String("html").pipe(
      Flag.withMetavar("file"),
      Flag.withDescription(describe("Write a self-contained HTML report (table, throughput bars, latency CDFs)", { default: "none" })),
      Flag.optional
    ),
    rowTimeout: Flag.Int("row-timeout").pipe(Flag.withDescription(describe("Time limit of one row, in s", { default: "120 (60 with --quick), more with --delay-ms" })), Flag.optional),
    warmupSecs: Flag.Finite("warmup-secs").pipe(
      Flag.withDescription(describe("Least seconds of unmeasured streams before each row's concurrency level, so that both processes run optimized code; the warm-up goes on while throughput still rises (5% or more per half-second batch), up to --warmup-max-secs", { default: `${WARMUP_SECS}; ${WARMUP_SECS_QUICK} with --quick` })),
      Flag.optional
    ),
    warmupStreams: Flag.Int("warmup-streams").pipe(
      Flag.withDescription(describe("Least streams of warm-up per row and level, as well as --warmup-secs (V8 optimizes code by calls, not time: a row at 1,500 streams/s needs more seconds than one at 15,000), up to --warmup-max-secs", { default: `${WARMUP_STREAMS}; ${WARMUP_STREAMS_QUICK} with --quick` })),
      Flag.optional
    ),
    warmupMaxSecs: Flag.Finite("warmup-max-secs").pipe(
      Flag.withDescription(describe("Most seconds of warm-up per row and level", { default: `${WARMUP_MAX_FACTOR} x --warmup-secs` })),
      Flag.optional
    ),
    measureSecs: Flag.Finite("measure-secs").pipe(
      Flag.withDescription(describe("Least seconds of each measured level: a level that runs --streams faster measures more streams (from the warm-up's rate), so that a garbage collection or a scheduling hiccup weighs less", { default: `${MEASURE_SECS}; ${MEASURE_SECS_QUICK} with --quick` })),
      Flag.optional
    ),
    nodeFlags: Flag.String("node-flags").pipe(
      Flag.withMetavar("flags"),
      Flag.withDescription(describe("Node/V8 flags for every router and worker process of the run, this project's and the raw baselines' alike (e.g. \"--single-threaded-gc\"); this project's processes turn allocation-site pretenuring off themselves, as the program does", { default: "none" })),
      Flag.optional
    ),
    rounds: Flag.Int("rounds").pipe(
      Flag.withDescription(describe("Measure every row this many times, round after round, and pool the samples (evens out drift between rows)", { default: "1" })),
      Flag.withDefault(1)
    ),
    interleave: Flag.Int("interleave").pipe(
      Flag.withMetavar("slices"),
      Flag.withDescription(describe("Run each baseline beside the rows measured against it, all their processes up at once, and split each level's measured streams into this many slices taken in turn (after a short re-warm each), so that a slow phase of the machine falls on a row and its baseline alike; 1 measures row after row", { default: "1" })),
      Flag.optional
    ),
    cpuProf: Flag.String("cpu-prof").pipe(
      Flag.withMetavar("dir"),
      Flag.withDescription(describe("Every router and worker process writes a V8 CPU profile (node --cpu-prof) into this directory when it exits", { default: "none" })),
      Flag.optional
    )
  },
  (flags) =>
    bench({
      ...flags,
      streams: flags.streams._tag === "Some" ? flags.streams.value : undefined,
      modes: flags.modes._tag === "Some" ? flags.modes.value : undefined,
      json: flags.json._tag === "Some" ? flags.json.value : undefined,
      html: flags.html._tag === "Some" ? flags.html.value : undefined,
      rowTimeout: flags.rowTimeout._tag === "Some" ? flags.rowTimeout.value : undefined,
      warmupSecs: flags.warmupSecs._tag === "Some" ? flags.warmupSecs.value : undefined,
      warmupMaxSecs: flags.warmupMaxSecs._tag === "Some" ? flags.warmupMaxSecs.value : undefined,
      warmupStreams: flags.warmupStreams._tag === "Some" ? flags.warmupStreams.value : undefined,
      measureSecs: flags.measureSecs._tag === "Some" ? flags.measureSecs.value : undefined,
      nodeFlags: flags.nodeFlags._tag === "Some" ? flags.nodeFlags.value : undefined,
      interleave: flags.interleave._tag === "Some" ? flags.interleave.value : undefined,
      cpuProf: flags.cpuProf._tag === "Some" ? flags.cpuProf.value : undefined
    }).pipe(Effect.asVoid)
).pipe(
  Command.withDescription(
    "Measure every transport mode against a raw Node implementation of the same exchange, and against gRPC, Effect RPC and NATS, with worker and router in processes of their own; prints a table, optionally JSON and an HTML report"
  ),
  Command.annotate(HelpSections, [
    { title: "ROWS (id, kind, baseline: what it runs)", lines: rowLines },
    { title: "PRESETS (for --modes)", lines: Object.entries(presets).map(([name, ids]) => `${name.padEnd(14)}${ids.join(", ")}`) },
    {
      title: "NEEDS",
      lines: [
        "Every row runs from an installed package. The NATS rows need nats-server on PATH (Debian: apt-get install nats-server),",
        "and are unavailable without it; grpc-stream needs @grpc/grpc-js (npm install --save-dev @grpc/grpc-js).",
        "Ratios (p50 / raw, req/s / raw) compare a row with its baseline at the same concurrency in the same run: below 1x for",
        "p50 and above 1x for req/s would beat raw Node. Only ratios are stable on a shared machine. See docs/performance.md."
      ]
    }
  ])
)
