import { describe, expect, it } from "@effect/vitest"
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { execFile } from "node:child_process"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { Effect, Layer, Stream, Tracer } from "effect"
import { Discovery } from "../src/Discovery.ts"
import * as Endpoint from "../src/Endpoint.ts"
import * as MetricsServer from "../src/observability/MetricsServer.ts"
import * as Tracing from "../src/observability/Tracing.ts"
import * as TransportRegistry from "../src/registry/index.ts"
import { configuredStack } from "./support/stack.ts"

const run = promisify(execFile)

/** Every built mode, selected through DYN_* exactly as users do. */
const modes: ReadonlyArray<{ name: string; request: string; response: string; env: Record<string, string> }> = [
  { name: "memory", request: "memory", response: "memory", env: { DYN_REQUEST_PLANE: "memory", DYN_RESPONSE_PLANE: "memory" } },
  { name: "http + memory", request: "http", response: "memory", env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "memory" } },
  { name: "http + tcp", request: "http", response: "tcp", env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp" } },
  { name: "memory + tcp", request: "memory", response: "tcp", env: { DYN_REQUEST_PLANE: "memory", DYN_RESPONSE_PLANE: "tcp" } },
  {
    name: "http + pooled tcp",
    request: "http",
    response: "tcp",
    env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_POOL_ENABLED: "true", DYN_TCP_POOL_MIN_IDLE: "1" }
  }
]

const poolMetricNames = [
  "tcp_pool_connections_created_total",
  "tcp_pool_connections_reused_total",
  "tcp_pool_active_connections",
  "tcp_pool_idle_connections",
  "tcp_pool_acquisition_latency_seconds",
  "tcp_pool_validation_failures_total"
]

const stack = configuredStack

const scrape = (url: string) => Effect.promise(() => fetch(`${url}/metrics`).then((r) => r.text()))

/** The value of one series in exposition text, or 0 when absent. */
const valueOf = (text: string, series: string): number => {
  const line = text.split("\n").find((l) => l.startsWith(series + " "))
  return line === undefined ? 0 : Number(line.slice(series.length + 1))
}

describe("metrics", () => {
  for (const mode of modes) {
    it.live(`counts ${mode.name} traffic on /metrics, and promtool accepts the text`, () =>
      Effect.gen(function*() {
        const server = yield* MetricsServer.make({ host: "127.0.0.1", port: 0 })
        const before = yield* scrape(server.url)
        yield* Endpoint.serve("obs.metrics.gen", (n: number) => Stream.range(1, n))
        yield* Endpoint.serveEmit("obs.metrics.fail", () => Effect.fail(new Error("nope")))
        const client = yield* Endpoint.client<number, number>("obs.metrics.gen")
        for (let i = 0; i < 7; i++) yield* Stream.runDrain(client.generate(3))
        const failing = yield* Endpoint.client<number, number>("obs.metrics.fail")
        yield* Effect.flip(Stream.runDrain(failing.generate(1)))
        const text = yield* scrape(server.url)

        const req = `transport_requests_total{transport="${mode.request}",plane="request",role="client"}`
        const resp = `transport_requests_total{transport="${mode.response}",plane="response",role="client"}`
        expect(valueOf(text, req) - valueOf(before, req)).toBe(8)
        expect(valueOf(text, resp) - valueOf(before, resp)).toBe(8)
        const count = `transport_request_latency_seconds_count{transport="${mode.request}",plane="request",role="client"}`
        expect(valueOf(text, count) - valueOf(before, count)).toBe(8)
        expect(valueOf(text, `transport_active_streams{transport="${mode.response}",plane="response",role="client"}`)).toBe(0)
        // the worker half, in the same process, counted the same 8 requests as role="server" (when
        // each handler had ended: polled, since the router may see the end first)
        const served = `transport_requests_total{transport="${mode.request}",plane="request",role="server"}`
        let final = text
        for (let i = 0; i < 100 && valueOf(final, served) - valueOf(before, served) < 8; i++) {
          yield* Effect.sleep(20)
          final = yield* scrape(server.url)
        }
        expect(valueOf(final, served) - valueOf(before, served)).toBe(8)
        const servedResponse = `transport_requests_total{transport="${mode.response}",plane="response",role="server"}`
        expect(valueOf(final, servedResponse) - valueOf(before, servedResponse)).toBe(8)
        // every transport and pool series says which side recorded it
        const series = text.split("\n").filter((l) => /^(transport_|tcp_pool_)/.test(l))
        expect(series.length).toBeGreaterThan(0)
        for (const line of series) expect(line).toMatch(/role="(client|server)"/)
        for (const name of [
          "transport_requests_total",
          "transport_request_latency_seconds",
          "transport_errors_total",
          "transport_active_streams"
        ]) {
          expect(text, name).toContain(`# HELP ${name} `)
          expect(text, name).toContain(`# TYPE ${name} `)
          // from start-up, before any traffic
          expect(before, name).toContain(`# TYPE ${name} `)
        }
        if (mode.env.DYN_TCP_POOL_ENABLED === "true") {
          for (const name of poolMetricNames) expect(text, name).toContain(`# TYPE ${name} `)
          // 8 streams on one target: every stream after the first connection's reused it
          const created = text.split("\n").filter((l) => l.startsWith("tcp_pool_connections_created_total{")).map((l) => Number(l.split(" ")[1]))
          const reused = text.split("\n").filter((l) => l.startsWith("tcp_pool_connections_reused_total{")).map((l) => Number(l.split(" ")[1]))
          expect(created.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(1)
          expect(reused.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(1)
          expect(text).toContain("# TYPE tcp_pool_acquisition_latency_seconds histogram")
        }
        expect(text).toContain("# TYPE transport_requests_total counter")
        expect(text).toContain("# TYPE transport_request_latency_seconds histogram")
        expect(text).not.toMatch(/request_id|x-request-id/)

        const dir = mkdtempSync(join(tmpdir(), "promtool-"))
        const file = join(dir, "metrics.txt")
        writeFileSync(file, text)
        const { stdout, stderr } = yield* Effect.promise(() =>
          run("sh", ["-c", `promtool check metrics < ${file}; echo "rc=$?"`])
        )
        // promtool lints naming; it must find no parse errors (exit 0, or lint-only warnings)
        const out = stdout + stderr
        expect(out, out).not.toMatch(/error while linting|text format parsing error/)
        expect(out).toContain("rc=0")
      }).pipe(Effect.provide(stack(mode.env))))
  }

  it.live("counts a typed transport failure in transport_errors_total", () =>
    Effect.gen(function*() {
      const server = yield* MetricsServer.make({ host: "127.0.0.1", port: 0 })
      const before = yield* scrape(server.url)
      const registry = yield* TransportRegistry.TransportRegistry
      const requestServer = yield* registry.getRequestServer("memory")
      // a worker that acks but never calls home: the router times out
      const transport = yield* requestServer.register({ path: { namespace: "obs", component: "m", endpoint: "mute" }, instanceId: 5n }, () => {})
      const disc = yield* Discovery
      yield* disc.register({ type: "Endpoint", namespace: "obs", component: "m", endpoint: "mute", instance_id: 5n, transport })
      const client = yield* Endpoint.client<number, number>("obs.m.mute")
      const error = yield* Effect.flip(Stream.runDrain(client.generate(1)))
      expect(error._tag).toBe("TransportTimeoutError")
      const text = yield* scrape(server.url)
      const series = `transport_errors_total{transport="memory",error_type="timeout",role="client"}`
      expect(valueOf(text, series) - valueOf(before, series)).toBe(1)
    }).pipe(Effect.provide(stack({ DYN_REQUEST_PLANE: "memory", DYN_RESPONSE_PLANE: "memory", DYN_TCP_CALL_HOME_TIMEOUT_SECS: "0.1" }))))

  it.live("answers /health, and /ready once an endpoint is served", () =>
    Effect.gen(function*() {
      const server = yield* MetricsServer.make({ host: "127.0.0.1", port: 0 })
      expect((yield* Effect.promise(() => fetch(`${server.url}/health`))).status).toBe(200)
      expect((yield* Effect.promise(() => fetch(`${server.url}/ready`))).status).toBe(503)
      yield* Endpoint.serve("obs.ready.gen", () => Stream.make(1))
      expect((yield* Effect.promise(() => fetch(`${server.url}/ready`))).status).toBe(200)
    }).pipe(Effect.provide(stack({ DYN_REQUEST_PLANE: "memory", DYN_RESPONSE_PLANE: "memory" }))))
})

describe("tracing", () => {
  for (const mode of modes) {
    it.live(`makes the worker's span a child of the router's over ${mode.name}`, () => {
      const exporter = new InMemorySpanExporter()
      const otel = NodeSdk.layer(() => ({ spanProcessor: new SimpleSpanProcessor(exporter), resource: { serviceName: "test" } }))
      return Effect.gen(function*() {
        yield* Endpoint.serve("obs.trace.gen", (n: number) => Stream.range(1, n))
        const client = yield* Endpoint.client<number, number>("obs.trace.gen")
        expect(yield* Stream.runCollect(client.generate(4))).toEqual([1, 2, 3, 4])
        yield* Effect.sleep(20)
        const spans = exporter.getFinishedSpans()
        const send = spans.find((s) => s.name === "send obs.trace.gen")
        const handle = spans.find((s) => s.name === "handle obs.trace.gen")
        expect(send, spans.map((s) => s.name).join(",")).toBeDefined()
        expect(handle).toBeDefined()
        expect(handle!.spanContext().traceId).toBe(send!.spanContext().traceId)
        expect(handle!.parentSpanContext?.spanId).toBe(send!.spanContext().spanId)
        expect(send!.attributes["rpc.system"]).toBe("dynamo")
        expect(send!.attributes["rpc.service"]).toBe("obs.trace")
        expect(send!.attributes["rpc.method"]).toBe("gen")
        expect(send!.attributes["transport.request"]).toBe(mode.request)
        expect(send!.attributes["transport.response"]).toBe(mode.response)
        expect(send!.attributes["rpc.response.items"]).toBe(4)
        expect(handle!.attributes["rpc.response.items"]).toBe(4)
        if (mode.request !== "memory") {
          expect(send!.attributes["server.address"]).toBe("127.0.0.1")
          expect(typeof send!.attributes["server.port"]).toBe("number")
        }
      }).pipe(Effect.provide(Layer.merge(stack(mode.env), otel)))
    })
  }

  describe("with no tracing backend installed (Effect's in-memory native tracer)", () => {
    const full = { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_REQUEST_HOST: "127.0.0.1", DYN_TCP_REQUEST_PORT: "0" }
    /** What the worker's handler saw: the traceparent header it got, and the span it ran in. */
    const seen: Array<{ traceparent: string | undefined; span: string | undefined }> = []
    const serveProbe = (name: string) =>
      Endpoint.serveEmit(name, (_request: unknown, context, emit) =>
        Effect.gen(function*() {
          const parent = yield* Effect.serviceOption(Tracer.ParentSpan)
          seen.push({ traceparent: context.headers.traceparent, span: parent._tag === "Some" && parent.value._tag === "Span" ? parent.value.name : undefined })
          yield* emit(1)
        }))

    for (const [name, env] of [["memory", { DYN_REQUEST_PLANE: "memory", DYN_RESPONSE_PLANE: "memory" }], ["tcp full mode", full]] as const) {
      it.live(`${name}: a call in no span makes no span on either side and sends no traceparent; a call in a span carries its trace to the worker's handle span`, () =>
        Effect.gen(function*() {
          seen.length = 0
          const endpoint = `obs.unobserved.${name === "memory" ? "mem" : "full"}`
          yield* serveProbe(endpoint)
          const client = yield* Endpoint.client<unknown, number>(endpoint)
          yield* client.call({}, () => {})
          expect(seen).toEqual([{ traceparent: undefined, span: undefined }])
          // The caller's own span (in memory, exported nowhere) is a trace to carry on.
          const traceId = yield* Effect.withSpan(
            Effect.flatMap(Effect.currentSpan, (span) => Effect.as(client.call({}, () => {}), span.traceId)),
            "caller"
          )
          expect(seen).toHaveLength(2)
          expect(seen[1]!.traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`))
          expect(seen[1]!.span).toBe(`handle ${endpoint}`)
        }).pipe(Effect.provide(stack(env))))
    }

    it("Tracing.unobserved: true only with the native tracer and no parent span", () => {
      const check = Effect.withFiber((fiber) => Effect.succeed(Tracing.unobserved(fiber)))
      expect(Effect.runSync(check)).toBe(true)
      expect(Effect.runSync(Effect.withSpan(check, "outer"))).toBe(false)
      const other = Tracer.make({ span: (options) => new Tracer.NativeSpan(options) })
      expect(Effect.runSync(Effect.withTracer(check, other))).toBe(false)
    })
  })

  it.live("records nothing with DYN_METRICS=off", () =>
    Effect.gen(function*() {
      const server = yield* MetricsServer.make({ host: "127.0.0.1", port: 0 })
      yield* Endpoint.serve("obs.nometrics.gen", (n: number) => Stream.range(1, n))
      const client = yield* Endpoint.client<number, number>("obs.nometrics.gen")
      const before = yield* scrape(server.url)
      yield* Stream.runDrain(client.generate(2))
      const after = yield* scrape(server.url)
      const series = `transport_requests_total{transport="memory",plane="request",role="client"}`
      expect(valueOf(after, series)).toBe(valueOf(before, series))
    }).pipe(Effect.provide(stack({ DYN_REQUEST_PLANE: "memory", DYN_RESPONSE_PLANE: "memory", DYN_METRICS: "off" }))))

  it.live("records no pool series with DYN_METRICS=off (pooled call-home)", () =>
    Effect.gen(function*() {
      const server = yield* MetricsServer.make({ host: "127.0.0.1", port: 0 })
      yield* Endpoint.serve("obs.nometrics.pool", (n: number) => Stream.range(1, n))
      const client = yield* Endpoint.client<number, number>("obs.nometrics.pool")
      const poolLines = (text: string) => text.split("\n").filter((l) => l.startsWith("tcp_pool_"))
      const before = poolLines(yield* scrape(server.url))
      for (let i = 0; i < 3; i++) expect(yield* Stream.runCollect(client.generate(2))).toEqual([1, 2])
      expect(poolLines(yield* scrape(server.url))).toEqual(before)
    }).pipe(Effect.provide(stack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_POOL_ENABLED: "true", DYN_METRICS: "off" }))))

  it.live("creates no span with DYN_TRACING=off", () => {
    const exporter = new InMemorySpanExporter()
    const otel = NodeSdk.layer(() => ({ spanProcessor: new SimpleSpanProcessor(exporter) }))
    return Effect.gen(function*() {
      yield* Endpoint.serve("obs.off.gen", (n: number) => Stream.range(1, n))
      const client = yield* Endpoint.client<number, number>("obs.off.gen")
      yield* Stream.runDrain(client.generate(2))
      yield* Effect.sleep(20)
      expect(exporter.getFinishedSpans().filter((s) => s.name.includes("obs.off.gen"))).toEqual([])
    }).pipe(Effect.provide(Layer.merge(stack({ DYN_REQUEST_PLANE: "memory", DYN_RESPONSE_PLANE: "memory", DYN_TRACING: "off" }), otel)))
  })
})

describe("OTLP export", () => {
  it.live("exports spans over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT", () =>
    Effect.gen(function*() {
      // A collector stand-in on loopback that records what it receives.
      const received: Array<{ path: string; type: string; bytes: number }> = []
      const collector = http.createServer((req, res) => {
        let bytes = 0
        req.on("data", (c: Buffer) => (bytes += c.length))
        req.on("end", () => {
          received.push({ path: req.url ?? "", type: String(req.headers["content-type"]), bytes })
          res.writeHead(200, { "content-type": "application/json" })
          res.end("{}")
        })
      })
      yield* Effect.promise(() => new Promise<void>((r) => collector.listen(0, "127.0.0.1", () => r())))
      yield* Effect.addFinalizer(() => Effect.sync(() => collector.close()))
      const port = (collector.address() as AddressInfo).port
      const env = { DYN_REQUEST_PLANE: "memory", DYN_RESPONSE_PLANE: "memory", OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}` }
      // Closing the layer's scope shuts the SDK down, which flushes the batch.
      yield* Effect.gen(function*() {
        yield* Endpoint.serve("obs.otlp.gen", (n: number) => Stream.range(1, n))
        const client = yield* Endpoint.client<number, number>("obs.otlp.gen")
        yield* Stream.runDrain(client.generate(3))
      }).pipe(Effect.scoped, Effect.provide(Tracing.layerConfig.pipe(Layer.provideMerge(stack(env)))))
      for (let i = 0; i < 100 && received.length === 0; i++) yield* Effect.sleep(20)
      expect(received.length).toBeGreaterThan(0)
      expect(received[0]!.path).toBe("/v1/traces")
      expect(received[0]!.bytes).toBeGreaterThan(0)
    }))
})
