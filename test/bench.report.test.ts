/**
 * The HTML report as a person sees it: a tiny real run of `transport-registry bench` (the gRPC
 * anchor and its raw HTTP/2 baseline, worker and router in processes of their own), its JSON
 * decoded with `BenchReportSchema`, its page rendered by headless Chromium (the Debian `chromium`
 * package, which the test command installs) with a script added to a copy of the page that
 * measures every chart's bars and CDF lines after layout. The charts must be drawn: a throughput
 * bar of non-zero size per row and level, and a CDF path of non-zero size per row and level. The
 * page itself must fetch nothing: no script, link, image, font or url().
 */
import { execFile } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Schema } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { renderHtml } from "../src/cli/bench/html.ts"
import { BenchReportSchema } from "../src/cli/bench/report.ts"
import type { BenchReport } from "../src/cli/bench/report.ts"

const main = new URL("../src/cli/main.ts", import.meta.url).pathname
const dir = mkdtempSync(join(tmpdir(), "bench-report-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const run = (command: string, args: ReadonlyArray<string>, timeout: number) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(command, [...args], { timeout, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : (error as { code?: number }).code ?? 1, stdout, stderr }))
  })

/** Added to a copy of the page: after layout, writes each chart's measured shapes into the DOM. */
const measure = `<script>
addEventListener("load", () => {
  const charts = [...document.querySelectorAll("svg.chart")].map((svg) => ({
    kind: svg.classList.contains("throughput") ? "throughput" : "cdf",
    row: svg.getAttribute("data-row"),
    concurrency: svg.getAttribute("data-concurrency"),
    box: [svg.getBoundingClientRect().width, svg.getBoundingClientRect().height],
    bars: [...svg.querySelectorAll("rect.bar")].map((r) => ({ row: r.getAttribute("data-row"), w: r.getBBox().width, h: r.getBBox().height })),
    paths: [...svg.querySelectorAll("path.cdf")].map((p) => ({ baseline: p.classList.contains("baseline"), w: p.getBBox().width, h: p.getBBox().height, length: p.getTotalLength() }))
  }))
  const out = document.createElement("pre")
  out.id = "measured"
  out.textContent = JSON.stringify(charts)
  document.body.appendChild(out)
})
</script>`

interface Measured {
  readonly kind: "throughput" | "cdf"
  readonly row: string | null
  readonly concurrency: string | null
  readonly box: [number, number]
  readonly bars: ReadonlyArray<{ readonly row: string; readonly w: number; readonly h: number }>
  readonly paths: ReadonlyArray<{ readonly baseline: boolean; readonly w: number; readonly h: number; readonly length: number }>
}

describe("bench --html", () => {
  it("draws a throughput bar per row and level and a latency CDF per row, in headless Chromium, from a real run", async () => {
    const json = join(dir, "out.json")
    const html = join(dir, "report.html")
    const bench = await run(
      process.execPath,
      [main, "bench", "--modes", "grpc-stream", "--streams", "40", "--warmup-secs", "0.2", "--warmup-streams", "100", "--warmup-max-secs", "0.6", "--measure-secs", "0", "--concurrency", "1,4", "--quick", "--row-timeout", "100", "--json", json, "--html", html],
      200_000
    )
    expect(bench.stderr + bench.stdout).not.toMatch(/unavailable|failed/)
    expect(bench.code).toBe(0)
    expect(bench.stdout).toMatch(/grpc-stream\s+4\s/)

    const report: BenchReport = Schema.decodeUnknownSync(BenchReportSchema)(JSON.parse(readFileSync(json, "utf8")))
    expect(report.rows.map((r) => [r.id, r.status])).toEqual([["raw-http-sse", "ok"], ["grpc-stream", "ok"]])
    for (const row of report.rows) {
      expect(row.runs.map((r) => r.concurrency)).toEqual([1, 4])
      for (const r of row.runs) {
        // --measure-secs 0: exactly --streams; the warm-up ran at least --warmup-secs (and at most one batch past the most)
        expect(r.streams).toBe(40)
        expect(r.warmupSecs).toBeGreaterThanOrEqual(0.2)
        expect(r.warmupSecs).toBeLessThan(3)
        expect(r.reqPerSec).toBeGreaterThan(0)
        expect(r.latencyUs.p50).toBeGreaterThan(0)
        expect(r.firstItemUs.p50).toBeLessThanOrEqual(r.latencyUs.p50)
        expect(r.cpuUsPerRequest.router).toBeGreaterThan(0)
        expect(r.cpuUsPerRequest.worker).toBeGreaterThan(0)
      }
      expect(row.peakRssKb.router).toBeGreaterThan(10_000)
      expect(row.peakRssKb.worker).toBeGreaterThan(10_000)
    }
    expect(report.rows[1]!.runs[0]!.ratio.p50).toBeGreaterThan(0)

    // the file the command wrote is what the renderer makes of the JSON
    const page = readFileSync(html, "utf8")
    expect(page).toBe(renderHtml(report))
    // self-contained: nothing to fetch
    expect(page).not.toMatch(/<script|<link|<img|<iframe|<object|@import|url\(|\bsrc=|\bhref=/i)

    const probe = join(dir, "probe.html")
    writeFileSync(probe, page.replace("</body>", `${measure}</body>`))
    const chrome = await run(
      "chromium",
      ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", `--user-data-dir=${join(dir, "profile")}`, "--virtual-time-budget=5000", "--dump-dom", `file://${probe}`],
      60_000
    )
    const m = /<pre id="measured">([\s\S]*?)<\/pre>/.exec(chrome.stdout)
    expect(m, `chromium printed no measurements (exit ${chrome.code}): ${chrome.stderr.slice(-500)}`).not.toBeNull()
    const charts = JSON.parse(m![1]!.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&")) as Array<Measured>

    const bars = charts.filter((c) => c.kind === "throughput")
    expect(bars.map((c) => c.concurrency)).toEqual(["1", "4"])
    for (const chart of bars) {
      expect(chart.box[0]).toBeGreaterThan(100)
      expect(chart.bars.map((b) => b.row)).toEqual(["raw-http-sse", "grpc-stream"])
      for (const b of chart.bars) {
        expect(b.w).toBeGreaterThan(0)
        expect(b.h).toBeGreaterThan(0)
      }
    }
    const cdfs = charts.filter((c) => c.kind === "cdf")
    expect(cdfs.map((c) => c.row)).toEqual(["raw-http-sse", "grpc-stream"])
    for (const chart of cdfs) {
      expect(chart.box[1]).toBeGreaterThan(100)
      const own = chart.paths.filter((p) => !p.baseline)
      expect(own.length).toBe(2)
      for (const p of chart.paths) {
        expect(p.w).toBeGreaterThan(0)
        expect(p.h).toBeGreaterThan(0)
        expect(p.length).toBeGreaterThan(0)
      }
    }
    // the anchor's chart has its baseline's lines dashed beside its own
    expect(cdfs[1]!.paths.filter((p) => p.baseline).length).toBe(2)
  }, 300_000)
})
