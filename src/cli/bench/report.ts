/**
 * The benchmark's result: its JSON shape (`BenchReport`, a Schema, so that `--json` output can be
 * checked and read back), the ratios of each row to its baseline, and the text table. No I/O.
 */
import { Schema } from "effect"
import { us } from "../latency.ts"
import { ratio } from "./stats.ts"

const Num = Schema.Number
const NullableNum = Schema.NullOr(Schema.Number)

/** Percentiles of one set of samples, µs. */
export const SummarySchema = Schema.Struct({ count: Num, min: Num, p50: Num, p95: Num, p99: Num, max: Num, mean: Num })

/** One concurrency level of one row. */
export const RunSchema = Schema.Struct({
  concurrency: Num,
  streams: Num,
  seconds: Num,
  reqPerSec: Num,
  /** Each stream's latency: request sent to last item received. */
  latencyUs: SummarySchema,
  /** Request sent to first item received. */
  firstItemUs: SummarySchema,
  /** CPU time (user + system) per stream of each process over the measured streams; null where there is no such process. */
  cpuUsPerRequest: Schema.Struct({ router: NullableNum, worker: NullableNum }),
  /** The latency CDF: [µs, fraction of streams at or below it], ascending. */
  cdf: Schema.Array(Schema.Tuple([Num, Num])),
  /** Seconds the level's warm-up ran (the mean over rounds): longer while throughput still rose. */
  warmupSecs: Num,
  /** This run against its baseline's run at the same concurrency: p50 / baseline p50, req/s / baseline req/s. */
  ratio: Schema.Struct({ p50: NullableNum, reqPerSec: NullableNum })
})
/** One concurrency level of one row. */
export type Run = typeof RunSchema.Type

/** One row. */
export const RowSchema = Schema.Struct({
  id: Schema.String,
  kind: Schema.Literals(["mode", "baseline", "anchor", "reference"]),
  description: Schema.String,
  baseline: Schema.NullOr(Schema.String),
  status: Schema.Literals(["ok", "unavailable", "failed"]),
  /** Why the row is unavailable or failed. */
  reason: Schema.NullOr(Schema.String),
  /** Peak resident set size of each process over the row, KiB. */
  peakRssKb: Schema.Struct({ router: NullableNum, worker: NullableNum }),
  runs: Schema.Array(RunSchema)
})
/** One row. */
export type Row = typeof RowSchema.Type

/** A whole run: the machine, the workload, every row. */
export const BenchReportSchema = Schema.Struct({
  version: Schema.Literal(3),
  tool: Schema.String,
  startedAt: Schema.String,
  seconds: Num,
  machine: Schema.Struct({
    node: Schema.String,
    platform: Schema.String,
    arch: Schema.String,
    cpus: Num,
    cpuModel: Schema.String,
    memoryMb: Num,
    loadAverage: Schema.Array(Num)
  }),
  workload: Schema.Struct({
    streams: Num,
    items: Num,
    itemSize: Num,
    delayMs: Num,
    concurrency: Schema.Array(Num),
    warmupSecs: Num,
    warmupStreams: Num,
    warmupMaxSecs: Num,
    measureSecs: Num,
    nodeFlags: Schema.Array(Schema.String),
    quick: Schema.Boolean,
    modes: Schema.String,
    /** Rounds: each row measured this many times, its samples pooled. */
    rounds: Num,
    /** `--interleave`: slices per level of rows run beside their baseline (absent in reports before it, as 1). */
    interleave: Schema.optionalKey(Num)
  }),
  rows: Schema.Array(RowSchema)
})
/** A whole run. */
export type BenchReport = typeof BenchReportSchema.Type

/** Fills each run's `ratio` from its row's baseline's run at the same concurrency. */
export const withRatios = (rows: ReadonlyArray<Row>): Array<Row> => {
  const byId = new Map(rows.map((r) => [r.id, r]))
  return rows.map((row) => {
    const base = row.baseline === null ? undefined : byId.get(row.baseline)
    return {
      ...row,
      runs: row.runs.map((run) => {
        const b = base?.status === "ok" ? base.runs.find((x) => x.concurrency === run.concurrency) : undefined
        return {
          ...run,
          ratio: {
            p50: ratio(run.latencyUs.p50, b?.latencyUs.p50) ?? null,
            reqPerSec: ratio(run.reqPerSec, b?.reqPerSec) ?? null
          }
        }
      })
    }
  })
}

const x = (n: number | null) => (n === null ? "-" : `${n.toFixed(2)}x`)
const num = (n: number | null, digits = 0) => (n === null ? "-" : n.toFixed(digits))
const mb = (kb: number | null) => (kb === null ? "-" : (kb / 1024).toFixed(0))

/** Rows as an aligned text table. */
export const textTable = (header: ReadonlyArray<string>, body: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n")
}

/** The report as the table the command prints: one line per row and concurrency, then the rows that did not run. */
export const renderTable = (report: BenchReport): string => {
  const header = ["row", "c", "p50", "p95", "p99", "1st item p50", "req/s", "CPU µs/req router+worker", "peak RSS MB r/w", "warm-up s", "baseline", "p50/raw", "req/s/raw"]
  const body: Array<Array<string>> = []
  for (const row of report.rows) {
    if (row.status !== "ok") {
      body.push([row.id, "-", row.status, "", "", "", "", "", "", "", row.baseline ?? "", "", ""])
      continue
    }
    for (const run of row.runs) {
      const cpu = run.cpuUsPerRequest
      body.push([
        row.id,
        String(run.concurrency),
        us(run.latencyUs.p50),
        us(run.latencyUs.p95),
        us(run.latencyUs.p99),
        us(run.firstItemUs.p50),
        num(run.reqPerSec),
        `${num(cpu.router)}+${num(cpu.worker)}`,
        `${mb(row.peakRssKb.router)}/${mb(row.peakRssKb.worker)}`,
        num(run.warmupSecs, 1),
        row.baseline ?? "",
        x(run.ratio.p50),
        x(run.ratio.reqPerSec)
      ])
    }
  }
  const notes = report.rows.filter((r) => r.status !== "ok").map((r) => `${r.id}: ${r.status}: ${r.reason ?? ""}`)
  return [textTable(header, body), ...(notes.length > 0 ? ["", ...notes] : [])].join("\n")
}

/** Pairs compared in the summary under the table: what one setting costs (`row` against `than`). */
const costs: ReadonlyArray<readonly [label: string, row: string, than: string]> = [
  ["metrics on (http+tcp)", "http+tcp-metrics", "http+tcp"],
  ["tracing on, metrics on (http+tcp)", "http+tcp-observed", "http+tcp-metrics"],
  ["spans exported to a backend (http+tcp, defaults)", "http+tcp-traced", "http+tcp-observed"],
  ["the Stream API (http+tcp, defaults)", "http+tcp-generate", "http+tcp-observed"],
  ["metrics and tracing on (tcp full mode)", "tcp-full-observed", "tcp-full"],
  ["spans exported to a backend (tcp full mode)", "tcp-full-traced", "tcp-full-observed"],
  ["a tenth of the spans exported (tcp full mode, DYN_TRACING=sampled)", "tcp-full-sampled", "tcp-full-observed"],
  ["pooling (http+tcp)", "http+tcp-pooled", "http+tcp"],
  ["pooling (raw node)", "raw-http+tcp-pooled", "raw-http+tcp"]
]

/**
 * The summary under the table: each mode against issue 14's targets (p50 at one in flight at most
 * 1.2x its raw baseline, 1.3x for the Stream API; req/s at the highest level at least 0.8x, 0.7x
 * for the Stream API), and what metrics, tracing, the Stream API and pooling cost.
 */
export const renderSummary = (report: BenchReport): string => {
  const byId = new Map(report.rows.filter((r) => r.status === "ok").map((r) => [r.id, r]))
  const low = Math.min(...report.workload.concurrency)
  const high = Math.max(...report.workload.concurrency)
  const at = (row: Row, c: number) => row.runs.find((r) => r.concurrency === c)
  const lines: Array<string> = []
  for (const row of byId.values()) {
    if (row.kind !== "mode" || row.baseline === null) continue
    const stream = row.id.endsWith("-generate")
    const p50 = at(row, low)?.ratio.p50 ?? null
    const rps = at(row, high)?.ratio.reqPerSec ?? null
    const mark = (ok: boolean) => (ok ? "met" : "MISSED")
    const [p50Max, rpsMin] = stream ? [1.3, 0.7] : [1.2, 0.8]
    lines.push(
      `  ${row.id}: p50 at ${low} in flight ${x(p50)} of ${row.baseline} (target <= ${p50Max}x: ${p50 === null ? "-" : mark(p50 <= p50Max)}), ` +
        `req/s at ${high} ${x(rps)} (target >= ${rpsMin}x: ${rps === null ? "-" : mark(rps >= rpsMin)})`
    )
  }
  const costLines = costs.flatMap(([label, a, b]) => {
    const ra = byId.get(a)
    const rb = byId.get(b)
    if (ra === undefined || rb === undefined) return []
    const parts = report.workload.concurrency.map((c) => {
      const ea = at(ra, c)
      const eb = at(rb, c)
      return ea === undefined || eb === undefined
        ? `c=${c} -`
        : `c=${c} p50 ${x(ratio(ea.latencyUs.p50, eb.latencyUs.p50) ?? null)}, req/s ${x(ratio(ea.reqPerSec, eb.reqPerSec) ?? null)}`
    })
    return [`  ${label}: ${a} / ${b}: ${parts.join("; ")}`]
  })
  return [
    ...(lines.length > 0 ? ["targets (issue 14):", ...lines] : []),
    ...(costLines.length > 0 ? ["costs (each row against the one without the setting):", ...costLines] : [])
  ].join("\n")
}
