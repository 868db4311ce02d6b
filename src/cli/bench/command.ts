/**
 * `transport-registry bench`: the flags, the progress line (stderr), the table (stdout), and the
 * `--json` / `--html` files. The measuring is runner.ts's; this module only wires it to the CLI.
 */
import { writeFileSync } from "node:fs"
import { Data, Effect } from "effect"
import { Command, Flag } from "effect/cli"
import { describe, HelpSections } from "../help.ts"
import { presets, rows } from "./catalog.ts"
import { renderHtml } from "./html.ts"
import { renderTable } from "./report.ts"
import type { BenchReport } from "./report.ts"
import { runBench, selectRows } from "./runner.ts"
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
      const line = `[${p.index}/${p.total}] ${p.row}: ${p.phase}${count} (${((performance.now() - started) / 1000).toFixed(0)} s)`
      if (tty) process.stderr.write(`\r\x1b[2K${line}`)
      else if (p.done === undefined && `${p.row}${p.phase}` !== last) process.stderr.write(line + "\n")
      last = `${p.row}${p.phase}`
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
  readonly modes: string
  readonly quick: boolean
  readonly json: string | undefined
  readonly html: string | undefined
  readonly rowTimeout: number | undefined
}

/** The run's options from the flags (`--quick` changes the defaults, not given values). */
export const benchOptions = (flags: BenchFlags): BenchOptions | string => {
  const concurrency = parseConcurrency(flags.concurrency)
  if (concurrency === undefined) return `--concurrency: a comma-separated list of integers from 1 to 4096, got ${JSON.stringify(flags.concurrency)}`
  const streams = flags.streams ?? (flags.quick ? 300 : 2000)
  if (!(streams >= 1)) return `--streams: at least 1, got ${streams}`
  if (!(flags.items >= 1 && flags.items <= 100_000)) return `--items: from 1 to 100000, got ${flags.items}`
  if (!(flags.itemSize >= 1 && flags.itemSize <= 65_536)) return `--item-size: from 1 to 65536, got ${flags.itemSize}`
  if (!(flags.delayMs >= 0 && flags.delayMs <= 10_000)) return `--delay-ms: from 0 to 10000, got ${flags.delayMs}`
  const { unknown } = selectRows(flags.modes)
  if (unknown.length > 0) return `--modes: unknown ${unknown.join(", ")} (rows: ${rows.map((r) => r.id).join(", ")}; presets: ${Object.keys(presets).join(", ")})`
  // the slowest stream at one in flight bounds a row's time: give each row room for it
  const paced = (streams * 2 * flags.items * flags.delayMs) / 1000
  return {
    streams,
    items: flags.items,
    itemSize: flags.itemSize,
    delayMs: flags.delayMs,
    concurrency,
    warmup: flags.quick ? Math.min(50, streams) : Math.min(200, streams),
    modes: flags.modes,
    quick: flags.quick,
    rowTimeoutS: flags.rowTimeout ?? Math.ceil((flags.quick ? 30 : 90) + paced * concurrency.length)
  }
}

/** Runs the benchmark for `flags`: progress on stderr, the table on stdout, the files asked for. */
export const bench = (flags: BenchFlags): Effect.Effect<BenchReport, BenchError> =>
  Effect.gen(function*() {
    const options = benchOptions(flags)
    if (typeof options === "string") return yield* new BenchError({ detail: options })
    const progress = progressWriter()
    process.stderr.write(
      `transport-registry bench: ${options.streams} streams per level at ${options.concurrency.join(", ")} in flight, ${options.items} items of ${options.itemSize} B, ${options.delayMs} ms apart; rows: ${options.modes}\n`
    )
    const report = yield* Effect.tryPromise({
      try: () => runBench(options, progress.update),
      catch: (e) => new BenchError({ detail: e instanceof Error ? e.message : String(e) })
    }).pipe(Effect.ensuring(Effect.sync(progress.end)))
    process.stdout.write(renderTable(report) + "\n")
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
    streams: Flag.Int("streams").pipe(Flag.withDescription(describe("Measured streams per row and concurrency level", { default: "2000; 300 with --quick" })), Flag.optional),
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
      Flag.withDescription(describe("Rows to run: row ids, presets, or prefixes ending in *, comma-separated; each row's baseline comes along", { default: "all" })),
      Flag.withDefault("all")
    ),
    quick: Flag.Boolean("quick").pipe(Flag.withDescription(describe("Fewer streams and warm-up: the whole run in under 2 minutes", { default: "false" })), Flag.withDefault(false)),
    json: Flag.String("json").pipe(Flag.withMetavar("file"), Flag.withDescription(describe("Write the results as JSON", { default: "none" })), Flag.optional),
    html: Flag.String("html").pipe(
      Flag.withMetavar("file"),
      Flag.withDescription(describe("Write a self-contained HTML report (table, throughput bars, latency CDFs)", { default: "none" })),
      Flag.optional
    ),
    rowTimeout: Flag.Int("row-timeout").pipe(Flag.withDescription(describe("Time limit of one row, in s", { default: "90 (30 with --quick), more with --delay-ms" })), Flag.optional)
  },
  (flags) =>
    bench({
      ...flags,
      streams: flags.streams._tag === "Some" ? flags.streams.value : undefined,
      json: flags.json._tag === "Some" ? flags.json.value : undefined,
      html: flags.html._tag === "Some" ? flags.html.value : undefined,
      rowTimeout: flags.rowTimeout._tag === "Some" ? flags.rowTimeout.value : undefined
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
