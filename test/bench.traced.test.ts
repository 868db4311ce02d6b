/**
 * The benchmark's `-traced` rows: both processes export their spans by OTLP/HTTP to a collector
 * stand-in (`otlpSink.ts`) the row starts. The stand-in counts what it takes; a real run of
 * `tcp-full-traced` beside `tcp-full-observed` measures, and the row would fail if either side's
 * spans had not reached the stand-in (a run this short leaves the worker's spans to its flush on
 * exit).
 */
import { execFile } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { request } from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Schema } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { startOtlpSink } from "../src/cli/bench/otlpSink.ts"
import { BenchReportSchema } from "../src/cli/bench/report.ts"

const main = new URL("../src/cli/main.ts", import.meta.url).pathname
const dir = mkdtempSync(join(tmpdir(), "bench-traced-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const send = (url: string, method: string, body: string) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(url, { method, headers: { "content-type": "application/json" } }, (res) => {
      let text = ""
      res.setEncoding("utf8")
      res.on("data", (c: string) => (text += c))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }))
    })
    req.on("error", reject)
    req.end(body)
  })

describe("bench: spans exported to a backend", () => {
  it("the collector stand-in takes POST /v1/traces (200, counted with its bytes and which side's spans it held) and answers 404 to anything else", async () => {
    const sink = await startOtlpSink()
    try {
      expect(sink.received()).toEqual({ exports: 0, bytes: 0, withSend: 0, withHandle: 0 })
      const empty = JSON.stringify({ resourceSpans: [] })
      const router = JSON.stringify({ resourceSpans: [{ scopeSpans: [{ spans: [{ name: "send a.b.c" }] }] }] })
      const worker = JSON.stringify({ resourceSpans: [{ scopeSpans: [{ spans: [{ name: "handle a.b.c" }, { name: "call-home" }] }] }] })
      for (const body of [empty, router, worker]) expect(await send(`${sink.url}/v1/traces`, "POST", body)).toEqual({ status: 200, body: "{}" })
      expect((await send(`${sink.url}/v1/metrics`, "POST", router)).status).toBe(404)
      expect((await send(`${sink.url}/v1/traces`, "GET", "")).status).toBe(404)
      expect(sink.received()).toEqual({ exports: 3, bytes: empty.length + router.length + worker.length, withSend: 1, withHandle: 1 })
    } finally {
      sink.stop()
    }
  })

  it("tcp-full-traced runs beside tcp-full-observed, and the summary says what the export costs", async () => {
    const json = join(dir, "out.json")
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        [main, "bench", "--modes", "tcp-full-traced,tcp-full-observed", "--streams", "200", "--concurrency", "1,8", "--warmup-secs", "0.2", "--warmup-streams", "100", "--warmup-max-secs", "0.6", "--measure-secs", "0", "--row-timeout", "100", "--json", json],
        { timeout: 200_000, maxBuffer: 16 * 1024 * 1024 },
        (error, out, err) => resolve({ code: error === null ? 0 : (error as { code?: number }).code ?? 1, stdout: out, stderr: err })
      )
    })
    expect(stderr + stdout).not.toMatch(/unavailable|failed/)
    expect(code).toBe(0)
    const report = Schema.decodeUnknownSync(BenchReportSchema)(JSON.parse(readFileSync(json, "utf8")))
    expect(report.rows.map((r) => [r.id, r.status])).toEqual([["raw-corked", "ok"], ["tcp-full-observed", "ok"], ["tcp-full-traced", "ok"]])
    expect(stdout).toMatch(/spans exported to a backend \(tcp full mode\): tcp-full-traced \/ tcp-full-observed: c=1 p50 [\d.]+x/)
  }, 210_000)
})
