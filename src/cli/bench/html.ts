/**
 * The `--html` report: one self-contained page (inline CSS and SVG; no script, font, image or
 * other fetch) with the workload and machine, the results table, a bar chart of throughput per
 * concurrency level (baselines included), and a latency CDF per row, its baseline's CDF dashed
 * beside it. Pure: a report in, HTML text out.
 */
import type { BenchReport, Row, Run } from "./report.ts"
import { us } from "../latency.ts"

const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
const f1 = (n: number) => (Math.round(n * 10) / 10).toString()

/** Colours by row kind, and one per concurrency level. */
const kindColour: Record<Row["kind"], string> = { mode: "#2b6cb0", baseline: "#8a8f98", anchor: "#dd6b20", reference: "#2f855a" }
const levelColours = ["#2b6cb0", "#c53030", "#2f855a", "#6b46c1", "#b7791f", "#319795"]

const okRows = (report: BenchReport) => report.rows.filter((r) => r.status === "ok" && r.runs.length > 0)

/** A "nice" upper bound for an axis. */
const niceMax = (n: number): number => {
  if (n <= 0) return 1
  const p = Math.pow(10, Math.floor(Math.log10(n)))
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= n) return m * p
  return 10 * p
}

/** Horizontal bars of req/s at one concurrency level. */
const throughputChart = (report: BenchReport, concurrency: number): string => {
  const bars = okRows(report).flatMap((row) => {
    const run = row.runs.find((r) => r.concurrency === concurrency)
    return run === undefined ? [] : [{ row, run }]
  })
  if (bars.length === 0) return ""
  const label = 190
  const width = 760
  const plot = width - label - 150
  const barH = 16
  const gap = 6
  const top = 24
  const height = top + bars.length * (barH + gap) + 28
  const max = niceMax(Math.max(...bars.map((b) => b.run.reqPerSec)))
  const scale = (v: number) => (v / max) * plot
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((t) => t * max)
  const parts: Array<string> = []
  parts.push(`<text x="${label}" y="14" class="axis-title">req/s at ${concurrency} in flight</text>`)
  for (const t of ticks) {
    const x = label + scale(t)
    parts.push(`<line x1="${f1(x)}" y1="${top - 4}" x2="${f1(x)}" y2="${height - 24}" class="grid"/>`)
    parts.push(`<text x="${f1(x)}" y="${height - 10}" class="tick" text-anchor="middle">${Math.round(t)}</text>`)
  }
  bars.forEach(({ row, run }, i) => {
    const y = top + i * (barH + gap)
    const w = Math.max(1, scale(run.reqPerSec))
    const ratio = run.ratio.reqPerSec === null ? "" : ` (${run.ratio.reqPerSec.toFixed(2)}x raw)`
    parts.push(`<text x="${label - 6}" y="${y + barH - 4}" class="label" text-anchor="end">${esc(row.id)}</text>`)
    parts.push(
      `<rect class="bar" data-row="${esc(row.id)}" x="${label}" y="${y}" width="${f1(w)}" height="${barH}" fill="${kindColour[row.kind]}"><title>${esc(row.id)}: ${Math.round(run.reqPerSec)} req/s${ratio}</title></rect>`
    )
    parts.push(`<text x="${f1(label + w + 4)}" y="${y + barH - 4}" class="value">${Math.round(run.reqPerSec)}${esc(ratio)}</text>`)
  })
  return `<svg class="chart throughput" data-concurrency="${concurrency}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="throughput at ${concurrency} in flight">${parts.join("")}</svg>`
}

/** Log-scale ticks (1, 2, 5 per decade) between lo and hi. */
const logTicks = (lo: number, hi: number): Array<number> => {
  const out: Array<number> = []
  for (let p = Math.floor(Math.log10(lo)); p <= Math.ceil(Math.log10(hi)); p++) {
    for (const m of [1, 2, 5]) {
      const v = m * Math.pow(10, p)
      if (v >= lo && v <= hi) out.push(v)
    }
  }
  return out
}

/** The latency CDF of one row (one line per concurrency level), its baseline's dashed. */
const cdfChart = (row: Row, baseline: Row | undefined): string => {
  const width = 360
  const height = 230
  const left = 40
  const right = 28
  const top = 12
  const bottom = 40
  const series = [
    ...row.runs.map((run, i) => ({ run, colour: levelColours[i % levelColours.length]!, dashed: false })),
    ...(baseline?.status === "ok" ? baseline.runs.map((run, i) => ({ run, colour: levelColours[i % levelColours.length]!, dashed: true })) : [])
  ].filter((s) => s.run.cdf.length > 0)
  if (series.length === 0) return ""
  const values = series.flatMap((s) => s.run.cdf.map(([v]) => v)).filter((v) => v > 0)
  const lo = Math.pow(10, Math.floor(Math.log10(Math.max(1, Math.min(...values)))))
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(lo * 10, ...values))))
  const x = (v: number) => left + ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (width - left - right)
  const y = (fraction: number) => top + (1 - fraction) * (height - top - bottom)
  const parts: Array<string> = []
  for (const t of logTicks(lo, hi)) {
    parts.push(`<line x1="${f1(x(t))}" y1="${top}" x2="${f1(x(t))}" y2="${height - bottom}" class="grid"/>`)
    if (Math.log10(t) % 1 === 0 || logTicks(lo, hi).length <= 8) parts.push(`<text x="${f1(x(t))}" y="${height - bottom + 14}" class="tick" text-anchor="middle">${esc(us(t))}</text>`)
  }
  for (const fr of [0, 0.25, 0.5, 0.75, 1]) {
    parts.push(`<line x1="${left}" y1="${f1(y(fr))}" x2="${width - right}" y2="${f1(y(fr))}" class="grid"/>`)
    parts.push(`<text x="${left - 4}" y="${f1(y(fr) + 3)}" class="tick" text-anchor="end">${fr}</text>`)
  }
  for (const s of series) {
    // a step line: up at each sample value
    let d = `M${f1(x(s.run.cdf[0]![0]))},${f1(y(0))}`
    let prev = 0
    for (const [v, fr] of s.run.cdf) {
      d += `L${f1(x(v))},${f1(y(prev))}L${f1(x(v))},${f1(y(fr))}`
      prev = fr
    }
    parts.push(
      `<path class="cdf${s.dashed ? " baseline" : ""}" d="${d}" fill="none" stroke="${s.colour}" stroke-width="${s.dashed ? 1.2 : 1.8}"${s.dashed ? ` stroke-dasharray="4 3"` : ""}><title>${esc(s.dashed ? `${baseline!.id}` : row.id)} at ${s.run.concurrency} in flight: p50 ${esc(us(s.run.latencyUs.p50))}, p99 ${esc(us(s.run.latencyUs.p99))}</title></path>`
    )
  }
  parts.push(`<text x="${(left + width - right) / 2}" y="${height - 8}" class="axis-title" text-anchor="middle">latency (log scale)${baseline === undefined ? "" : `; dashed: ${esc(baseline.id)}`}</text>`)
  const legend = row.runs.map((run, i) => `<span class="swatch" style="background:${levelColours[i % levelColours.length]}"></span>c=${run.concurrency}`).join(" ")
  return `<figure class="cdf-figure"><figcaption><b>${esc(row.id)}</b> <span class="legend">${legend}</span></figcaption><svg class="chart cdf-chart" data-row="${esc(row.id)}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="latency CDF of ${esc(row.id)}">${parts.join("")}</svg></figure>`
}

const ratioCell = (n: number | null) => (n === null ? "" : `${n.toFixed(2)}x`)
const cpuCell = (n: number | null) => (n === null ? "-" : n.toFixed(0))
const mbCell = (kb: number | null) => (kb === null ? "-" : (kb / 1024).toFixed(0))

const tableHtml = (report: BenchReport): string => {
  const head = ["row", "kind", "c", "p50", "p95", "p99", "1st item p50", "req/s", "CPU µs/req router", "CPU µs/req worker", "peak RSS MB router/worker", "baseline", "p50 / raw", "req/s / raw"]
  const body = report.rows.flatMap((row) => {
    if (row.status !== "ok") return [`<tr class="not-run"><td>${esc(row.id)}</td><td>${row.kind}</td><td colspan="12">${row.status}: ${esc(row.reason ?? "")}</td></tr>`]
    return row.runs.map((run: Run) =>
      `<tr class="${row.kind}"><td title="${esc(row.description)}">${esc(row.id)}</td><td>${row.kind}</td><td>${run.concurrency}</td><td>${us(run.latencyUs.p50)}</td><td>${us(run.latencyUs.p95)}</td><td>${us(run.latencyUs.p99)}</td><td>${us(run.firstItemUs.p50)}</td><td>${Math.round(run.reqPerSec)}</td><td>${cpuCell(run.cpuUsPerRequest.router)}</td><td>${cpuCell(run.cpuUsPerRequest.worker)}</td><td>${mbCell(row.peakRssKb.router)} / ${mbCell(row.peakRssKb.worker)}</td><td>${esc(row.baseline ?? "")}</td><td>${ratioCell(run.ratio.p50)}</td><td>${ratioCell(run.ratio.reqPerSec)}</td></tr>`
    )
  })
  return `<table><thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead><tbody>${body.join("")}</tbody></table>`
}

const style = `
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1a202c;max-width:1200px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;font-size:12px}th,td{padding:3px 7px;border-bottom:1px solid #e2e8f0;text-align:right}td{white-space:nowrap}
th:first-child,td:first-child,td:nth-child(2),td:nth-child(12){text-align:left}
tr.baseline td{color:#4a5568}tr.not-run td{color:#a0aec0}
.grid{stroke:#e2e8f0;stroke-width:1}.tick{font-size:10px;fill:#4a5568}.label{font-size:11px;fill:#1a202c}.value{font-size:10px;fill:#2d3748}
.axis-title{font-size:11px;fill:#2d3748}
.cdfs{display:flex;flex-wrap:wrap;gap:12px}.cdf-figure{margin:0}.cdf-figure figcaption{font-size:12px}
.swatch{display:inline-block;width:10px;height:10px;margin:0 3px 0 8px;vertical-align:middle}
.keys span{margin-right:14px}
`

/** The report as one self-contained HTML page. */
export const renderHtml = (report: BenchReport): string => {
  const w = report.workload
  const m = report.machine
  const byId = new Map(report.rows.map((r) => [r.id, r]))
  const keys = (Object.keys(kindColour) as Array<Row["kind"]>).map((k) => `<span><span class="swatch" style="background:${kindColour[k]}"></span>${k}</span>`).join("")
  const cdfs = okRows(report).map((row) => cdfChart(row, row.baseline === null ? undefined : byId.get(row.baseline))).join("")
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>transport-registry bench ${esc(report.startedAt)}</title><style>${style}</style></head>
<body>
<h1>transport-registry bench</h1>
<p>${esc(report.startedAt)}, ${f1(report.seconds)} s. Workload: at least ${w.streams} streams and ${w.measureSecs} s per concurrency level (${w.concurrency.join(", ")} in flight), ${w.items} items of ${w.itemSize} B each, ${w.delayMs} ms between items, ${w.warmupSecs} to ${w.warmupMaxSecs} s and at least ${w.warmupStreams} streams of warm-up per level (until throughput stops rising);${w.nodeFlags.length > 0 ? ` node flags ${esc(w.nodeFlags.join(" "))};` : ""} rows: ${esc(w.modes)}${w.quick ? " (quick)" : ""}.</p>
<p>Machine: ${m.cpus} × ${esc(m.cpuModel)}, ${m.memoryMb} MB, ${esc(m.platform)}/${esc(m.arch)}, Node ${esc(m.node)}, load average ${m.loadAverage.join(" ")} at the end. Only ratios taken within one run mean much on a shared machine.</p>
<h2>Results</h2>
${tableHtml(report)}
<h2>Throughput</h2>
<p class="keys">${keys}</p>
${w.concurrency.map((c) => throughputChart(report, c)).join("\n")}
<h2>Latency CDF per row</h2>
<p>Fraction of streams finished within a latency; one line per concurrency level, the row's raw baseline dashed.</p>
<div class="cdfs">${cdfs}</div>
</body></html>
`
}
