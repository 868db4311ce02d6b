/**
 * Spans of short-lived CLI processes reach a real OTLP/HTTP receiver: a small node:http server
 * on loopback that records every POST to /v1/traces (the exporter sends OTLP JSON, ids in hex).
 * A `worker` and a `call` run in two processes: the call's client span arrives by the time `call`
 * has exited (success, failure, SIGINT), and the worker's `handle` span, child of the call's span,
 * arrives when the worker exits on SIGTERM, sooner than the exporter's own 5 s batch delay.
 */
import { describe, expect, it } from "vitest"
import { execFile, spawn } from "node:child_process"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"

const run = promisify(execFile)
const main = new URL("../src/cli/main.ts", import.meta.url).pathname

/** One received span, flattened from OTLP JSON. */
interface Span {
  readonly service: string
  readonly name: string
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string
  readonly kind: number
}

interface OtlpJson {
  readonly resourceSpans?: ReadonlyArray<{
    readonly resource?: { readonly attributes?: ReadonlyArray<{ readonly key: string; readonly value: { readonly stringValue?: string } }> }
    readonly scopeSpans?: ReadonlyArray<{
      readonly spans?: ReadonlyArray<{ name: string; traceId: string; spanId: string; parentSpanId?: string; kind: number }>
    }>
  }>
}

/** An OTLP/HTTP receiver on loopback: every span it was sent, and the content types it saw. */
const receiver = async () => {
  const spans: Array<Span> = []
  const types = new Set<string>()
  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      if (req.method === "POST" && req.url === "/v1/traces") {
        types.add(String(req.headers["content-type"]))
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as OtlpJson
        for (const rs of body.resourceSpans ?? []) {
          const service = rs.resource?.attributes?.find((a) => a.key === "service.name")?.value.stringValue ?? ""
          for (const ss of rs.scopeSpans ?? []) {
            for (const s of ss.spans ?? []) {
              spans.push({ service, name: s.name, traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId ?? "", kind: s.kind })
            }
          }
        }
      }
      res.writeHead(200, { "content-type": "application/json" })
      res.end("{}")
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return {
    spans,
    types,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

const envFor = (dir: string, otlp: string, service: string, extra: Record<string, string> = {}) => ({
  ...process.env,
  DYN_REQUEST_PLANE: "http",
  DYN_RESPONSE_PLANE: "tcp",
  DYN_DISCOVERY_BACKEND: "file",
  DYN_DISCOVERY_PATH: dir,
  DYN_HTTP_RPC_HOST: "127.0.0.1",
  DYN_HTTP_RPC_PORT: "0",
  DYN_TCP_RESPONSE_HOST: "127.0.0.1",
  DYN_METRICS_PORT: "0",
  DYN_LOG: "warn",
  DYN_TRACING: "on",
  OTEL_EXPORTER_OTLP_ENDPOINT: otlp,
  OTEL_SERVICE_NAME: service,
  ...extra
})

const startWorker = (env: NodeJS.ProcessEnv, endpoint: string) =>
  new Promise<ReturnType<typeof spawn>>((resolve, reject) => {
    const child = spawn(process.execPath, [main, "worker", "--endpoint", endpoint], { env, stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    const timer = setTimeout(() => reject(new Error(`worker did not start: ${out}`)), 20_000)
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString()
      if (out.includes("\n")) {
        clearTimeout(timer)
        resolve(child)
      }
    })
    child.on("exit", (code) => reject(new Error(`worker exited with ${code}: ${out}`)))
  })

const exitOf = (child: ReturnType<typeof spawn>) => new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))

/** Waits (bounded) until `check` holds. */
const eventually = async (check: () => boolean, ms = 5000) => {
  const deadline = Date.now() + ms
  while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25))
  return check()
}

describe("span export from CLI processes (OTLP/HTTP receiver on loopback)", () => {
  it("sees both halves of a cross-process trace: the call's span on its exit, the worker's on SIGTERM", async () => {
    const otlp = await receiver()
    const dir = mkdtempSync(join(tmpdir(), "trace-flush-"))
    try {
      const worker = await startWorker(envFor(dir, otlp.url, "flush-worker"), "trace.flush.generate")
      const { stdout } = await run(process.execPath, [main, "call", "trace.flush.generate", "--data", "{\"prompt\":\"a b c\"}"], {
        env: envFor(dir, otlp.url, "flush-call")
      })
      expect(stdout.trim().split("\n")).toHaveLength(3)
      // `call` has exited: its span must be here already (flushed before exit, no batch delay).
      const send = otlp.spans.find((s) => s.service === "flush-call" && s.name === "send trace.flush.generate")
      expect(send, JSON.stringify(otlp.spans)).toBeDefined()
      expect(send!.kind).toBe(3) // SPAN_KIND_CLIENT

      // The worker's handle span is still in its batch (5 s delay): SIGTERM flushes it.
      const exited = exitOf(worker)
      worker.kill("SIGTERM")
      expect(await exited).toBe(0)
      const handle = otlp.spans.find((s) => s.service === "flush-worker" && s.name === "handle trace.flush.generate")
      expect(handle, JSON.stringify(otlp.spans)).toBeDefined()
      expect(handle!.kind).toBe(2) // SPAN_KIND_SERVER
      expect(handle!.traceId).toBe(send!.traceId)
      expect(handle!.parentSpanId).toBe(send!.spanId)
      expect([...otlp.types]).toEqual(["application/json"])
    } finally {
      rmSync(dir, { recursive: true, force: true })
      await otlp.close()
    }
  }, 60_000)

  it("a call that fails (exit 1) and one stopped by SIGINT still export their spans before exiting", async () => {
    const otlp = await receiver()
    const dir = mkdtempSync(join(tmpdir(), "trace-flush-"))
    try {
      const worker = await startWorker(envFor(dir, otlp.url, "flush-worker2"), "trace.fail.generate")
      // max_tokens out of bounds: the worker fails the call in its prologue, `call` exits 1
      const failed = await run(process.execPath, [main, "call", "trace.fail.generate", "--data", "{\"max_tokens\":0}"], {
        env: envFor(dir, otlp.url, "flush-failed")
      }).catch((e: { code: number }) => e)
      expect((failed as { code: number }).code).toBe(1)
      expect(otlp.spans.some((s) => s.service === "flush-failed" && s.name === "send trace.fail.generate")).toBe(true)

      // a long stream, interrupted by SIGINT once its first item is out
      const caller = spawn(process.execPath, [main, "call", "trace.fail.generate", "--data", "{\"max_tokens\":100,\"delay_ms\":200}"], {
        env: envFor(dir, otlp.url, "flush-sigint"),
        stdio: ["ignore", "pipe", "pipe"]
      })
      await new Promise<void>((resolve) => caller.stdout!.once("data", () => resolve()))
      const callerExit = exitOf(caller)
      caller.kill("SIGINT")
      expect(await callerExit).toBe(0)
      expect(otlp.spans.some((s) => s.service === "flush-sigint" && s.name === "send trace.fail.generate")).toBe(true)

      const exited = exitOf(worker)
      worker.kill("SIGTERM")
      expect(await exited).toBe(0)
      // both of the worker's handle spans (the failed one and the cancelled one)
      expect(await eventually(() => otlp.spans.filter((s) => s.service === "flush-worker2" && s.name === "handle trace.fail.generate").length === 2))
        .toBe(true)
    } finally {
      rmSync(dir, { recursive: true, force: true })
      await otlp.close()
    }
  }, 60_000)
})
