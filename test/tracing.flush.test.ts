/**
 * Spans of short-lived CLI processes reach a real OTLP/HTTP receiver: a small node:http server
 * on loopback that records every POST to /v1/traces (the exporter sends OTLP JSON, ids in hex).
 * A `worker` and `call`s run in separate processes: each call's client span has arrived by the time
 * its `call` has exited (success, failure, SIGINT), and the worker's `handle` spans, children of
 * the calls' spans, by the time the worker has exited on SIGTERM, including the span of a stream
 * that was still in flight at the SIGTERM (it ends during the drain, well within the exporter's
 * own 5 s batch delay, so only the flush on exit can deliver it).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
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

describe("span export from CLI processes (OTLP/HTTP receiver on loopback)", () => {
  // One receiver and one worker for the file; the last test stops the worker.
  let otlp: Awaited<ReturnType<typeof receiver>>
  let dir: string
  let worker: ReturnType<typeof spawn>
  const endpoint = "trace.flush.generate"
  const callSpan = (service: string) => otlp.spans.find((s) => s.service === service && s.name === `send ${endpoint}`)

  beforeAll(async () => {
    otlp = await receiver()
    dir = mkdtempSync(join(tmpdir(), "trace-flush-"))
    worker = await startWorker(envFor(dir, otlp.url, "flush-worker"), endpoint)
  }, 30_000)

  afterAll(async () => {
    if (worker.exitCode === null) worker.kill("SIGKILL")
    rmSync(dir, { recursive: true, force: true })
    await otlp.close()
  })

  it("a call's client span has arrived by the time `call` exits: on success, on failure (exit 1), on SIGINT", async () => {
    const { stdout } = await run(process.execPath, [main, "call", endpoint, "--data", "{\"prompt\":\"a b c\"}"], {
      env: envFor(dir, otlp.url, "flush-call")
    })
    expect(stdout.trim().split("\n")).toHaveLength(3)
    // `call` has exited: its span must be here already (flushed before exit, no batch delay)
    const send = callSpan("flush-call")
    expect(send, JSON.stringify(otlp.spans)).toBeDefined()
    expect(send!.kind).toBe(3) // SPAN_KIND_CLIENT
    expect([...otlp.types]).toEqual(["application/json"])

    // max_tokens out of bounds: the worker fails the call in its prologue, `call` exits 1
    const failed = await run(process.execPath, [main, "call", endpoint, "--data", "{\"max_tokens\":0}"], {
      env: envFor(dir, otlp.url, "flush-failed")
    }).catch((e: { code: number }) => e)
    expect((failed as { code: number }).code).toBe(1)
    expect(callSpan("flush-failed")).toBeDefined()

    // a long stream, interrupted by SIGINT once its first item is out
    const caller = spawn(process.execPath, [main, "call", endpoint, "--data", "{\"max_tokens\":100,\"delay_ms\":200}"], {
      env: envFor(dir, otlp.url, "flush-sigint"),
      stdio: ["ignore", "pipe", "pipe"]
    })
    await new Promise<void>((resolve) => caller.stdout!.once("data", () => resolve()))
    const callerExit = exitOf(caller)
    caller.kill("SIGINT")
    expect(await callerExit).toBe(0)
    expect(callSpan("flush-sigint")).toBeDefined()
  }, 60_000)

  it("a worker stopped by SIGTERM exports its handle spans, each the child of its call's span", async () => {
    // A stream in flight at the SIGTERM: the worker drains it, then exits; its span ends during
    // the drain, so it is still in the exporter's batch (5 s delay) when the process exits.
    const caller = spawn(process.execPath, [main, "call", endpoint, "--data", "{\"max_tokens\":6,\"delay_ms\":100}"], {
      env: envFor(dir, otlp.url, "flush-drained"),
      stdio: ["ignore", "pipe", "pipe"]
    })
    const callerExit = exitOf(caller)
    await new Promise<void>((resolve) => caller.stdout!.once("data", () => resolve()))
    const exited = exitOf(worker)
    worker.kill("SIGTERM")
    expect(await callerExit).toBe(0)
    expect(await exited).toBe(0)
    const handles = otlp.spans.filter((s) => s.service === "flush-worker" && s.name === `handle ${endpoint}`)
    expect(handles, JSON.stringify(otlp.spans)).toHaveLength(4)
    for (const service of ["flush-call", "flush-failed", "flush-sigint", "flush-drained"]) {
      const send = callSpan(service)!
      const handle = handles.find((h) => h.traceId === send.traceId)
      expect(handle, service).toBeDefined()
      expect(handle!.kind).toBe(2) // SPAN_KIND_SERVER
      expect(handle!.parentSpanId).toBe(send.spanId)
    }
  }, 30_000)
})
