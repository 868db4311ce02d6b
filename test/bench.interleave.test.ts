/**
 * `transport-registry bench --interleave`: a real run of the full TCP mode beside its raw
 * baseline (worker and router of each in processes of their own, all four up at once). Each
 * level's measured streams come in slices taken in turn, forward then backward (the progress
 * lines on stderr say which row runs which slice, in order), every row measures exactly
 * `--streams` per level in all, and the JSON records the setting.
 */
import { execFile } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Schema } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { BenchReportSchema } from "../src/cli/bench/report.ts"

const main = new URL("../src/cli/main.ts", import.meta.url).pathname
const dir = mkdtempSync(join(tmpdir(), "bench-interleave-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("bench --interleave", () => {
  it("runs a row beside its baseline, each level's streams in slices taken in turn", async () => {
    const json = join(dir, "out.json")
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        [main, "bench", "--modes", "tcp-full", "--streams", "30", "--concurrency", "1,4", "--interleave", "3", "--warmup-secs", "0.2", "--warmup-streams", "100", "--warmup-max-secs", "0.6", "--measure-secs", "0", "--row-timeout", "100", "--json", json],
        { timeout: 200_000, maxBuffer: 16 * 1024 * 1024 },
        (error, out, err) => resolve({ code: error === null ? 0 : (error as { code?: number }).code ?? 1, stdout: out, stderr: err })
      )
    })
    expect(stderr + stdout).not.toMatch(/unavailable|failed/)
    expect(code).toBe(0)
    expect(stderr).toMatch(/each baseline beside its rows, 3 slices per level/)

    // the slices in the order they ran: forward, backward, forward, at each level
    const slices = [...stderr.matchAll(/\] (\S+): c=(\d+) slice (\d)\/3/g)].map((m) => `${m[1]} c=${m[2]} ${m[3]}`)
    const level = (c: number) => [
      `raw-corked c=${c} 1`,
      `tcp-full c=${c} 1`,
      `tcp-full c=${c} 2`,
      `raw-corked c=${c} 2`,
      `raw-corked c=${c} 3`,
      `tcp-full c=${c} 3`
    ]
    expect(slices).toEqual([...level(1), ...level(4)])
    // both rows were up before either measured: every start comes before the first slice
    const firstSlice = stderr.indexOf("slice 1/3")
    expect(stderr.lastIndexOf("starting the router")).toBeLessThan(firstSlice)

    const report = Schema.decodeUnknownSync(BenchReportSchema)(JSON.parse(readFileSync(json, "utf8")))
    expect(report.workload.interleave).toBe(3)
    expect(report.rows.map((r) => [r.id, r.status])).toEqual([["raw-corked", "ok"], ["tcp-full", "ok"]])
    for (const row of report.rows) {
      expect(row.runs.map((r) => [r.concurrency, r.streams])).toEqual([[1, 30], [4, 30]])
      for (const r of row.runs) {
        expect(r.reqPerSec).toBeGreaterThan(0)
        expect(r.cpuUsPerRequest.worker).toBeGreaterThan(0)
      }
      expect(row.peakRssKb.worker).toBeGreaterThan(10_000)
    }
    expect(report.rows[1]!.runs[0]!.ratio.p50).toBeGreaterThan(0)
  }, 300_000)
})
