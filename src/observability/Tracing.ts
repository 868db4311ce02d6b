/**
 * Tracing helpers: W3C trace context in and out of transport headers, the OpenTelemetry RPC
 * attributes of our spans, the sampling decision, and the layers that export spans through the
 * OpenTelemetry SDK.
 *
 * Spans are per request, never per frame: the router's `send <endpoint>` (kind client) and
 * the worker's `handle <endpoint>` (kind server), whose parent comes from `traceparent`.
 * `DYN_TRACING=off` creates no span at all; `sampled` samples `sampleRatio` of the requests made
 * outside any span, and a call inside one follows its decision (`sampledUnder`); and no span is
 * made that nothing could observe (`unobserved`).
 */
import * as Otel from "@opentelemetry/api"
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base"
import type { SpanProcessor } from "@opentelemetry/sdk-trace-base"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import * as OtelTracer from "@effect/opentelemetry/OtelTracer"
import * as Resource from "@effect/opentelemetry/Resource"
import { Context, Effect, Layer, Tracer } from "effect"
import type { Fiber } from "effect"
import type { EndpointPath } from "../Instance.ts"
import { randomUuid } from "../protocol/StreamId.ts"
import type { TransportId } from "../Transport.ts"
import { TransportConfig } from "../TransportConfig.ts"

/**
 * True when a span made here now would have no observer, so the Endpoint layer makes none: no
 * tracing backend is installed (the fiber's tracer is Effect's `nativeTracer`, which keeps spans
 * in memory and exports nothing) and the fiber runs in no span whose trace a child would carry
 * on. A backend installed (the OTLP exporter of `layerConfig`, or the application's own tracer
 * layer), or a caller's span, and the spans are made as `DYN_TRACING` says. This is what the
 * per-request spans cost with the default settings and no `OTEL_EXPORTER_OTLP_ENDPOINT`: about a
 * third of the full mode's throughput, for spans nobody could see.
 */
export const unobserved = (fiber: Fiber.Fiber<unknown, unknown>): boolean =>
  fiber.getRef(Tracer.Tracer) === Tracer.nativeTracer && Context.getOrUndefined(fiber.context, Tracer.ParentSpan) === undefined

/** The share of requests traced when `DYN_TRACING=sampled`. */
export const sampleRatio = 0.1

/**
 * Whether the router's `send` span of a call under `parent` (the fiber's `Tracer.ParentSpan`) is
 * sampled: as its parent's when there is one (the application's trace decides, as
 * OpenTelemetry's parent-based sampling does, so its sampled traces have no holes and its
 * unsampled ones gain no spans); at the root, always with `on` and for `sampleRatio` of the
 * calls with `sampled`.
 */
export const sampledUnder = (tracing: "on" | "sampled", parent: Tracer.AnySpan | undefined): boolean =>
  parent !== undefined ? parent.sampled : tracing === "on" || Math.random() < sampleRatio

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/

const traceparent = (traceId: string, spanId: string, sampled: boolean): string => `00-${traceId}-${spanId}-${sampled ? "01" : "00"}`

/**
 * The `traceparent` header of a call that is not sampled: the trace of `parent` (a new one
 * without), a fresh span id, and the sampled flag off. The router sends it instead of making a
 * span, so the worker follows the decision and makes none either, and spans of the worker's own
 * handler stay in the same (unsampled) trace. The ids are random UUIDs' hex digits (from the
 * stream ids' pool), never all zero: the version and variant digits are not 0.
 */
export const unsampledTraceparent = (parent: Tracer.AnySpan | undefined): string => {
  const id = randomUuid().replaceAll("-", "")
  return traceparent(parent?.traceId ?? id, id.slice(16), false)
}

/** The `traceparent` header of a span. */
export const injectHeaders = (span: Tracer.Span): Record<string, string> => ({
  traceparent: traceparent(span.traceId, span.spanId, span.sampled)
})

/** The remote parent named by a `traceparent` header, if it is valid. */
export const extractParent = (headers: Readonly<Record<string, string>>): Tracer.AnySpan | undefined => {
  const value = headers.traceparent
  if (value === undefined) return undefined
  const m = TRACEPARENT.exec(value)
  if (m === null || /^0+$/.test(m[1]!) || /^0+$/.test(m[2]!)) return undefined
  return Tracer.externalSpan({ traceId: m[1]!, spanId: m[2]!, sampled: (parseInt(m[3]!, 16) & 1) === 1 })
}

/** OpenTelemetry RPC semantic-convention attributes, plus our transport and plane. */
export const rpcAttributes = (
  path: EndpointPath,
  address: string | undefined,
  requestTransport: TransportId,
  responseTransport: TransportId | undefined
): Record<string, unknown> => {
  const attributes: Record<string, unknown> = {
    "rpc.system": "dynamo",
    "rpc.service": `${path.namespace}.${path.component}`,
    "rpc.method": path.endpoint,
    "transport.request": requestTransport,
    "transport.plane": "request"
  }
  if (responseTransport !== undefined) attributes["transport.response"] = responseTransport
  if (address !== undefined) {
    const server = serverOf(address)
    if (server !== undefined) {
      attributes["server.address"] = server.host
      attributes["server.port"] = server.port
    }
  }
  return attributes
}

const serverOf = (address: string): { host: string; port: number } | undefined => {
  try {
    if (address.includes("://")) {
      const url = new URL(address)
      if (url.port === "") return undefined
      return { host: url.hostname, port: Number(url.port) }
    }
    const m = /^\[?([^\]/]+?)\]?:(\d+)/.exec(address)
    return m === null ? undefined : { host: m[1]!, port: Number(m[2]) }
  } catch {
    return undefined
  }
}

const probeKey = Otel.createContextKey("transport-registry/context-probe")

/**
 * True when OpenTelemetry's global context manager carries a context into the function run
 * under it: a manager is registered (an SDK's `register()`/`start()`, or
 * `context.setGlobalContextManager`). Without one, `context.with` runs the function and
 * `context.active()` is always the root context.
 */
export const otelContextPropagates = (): boolean => {
  const probe = Otel.ROOT_CONTEXT.setValue(probeKey, true)
  return Otel.context.with(probe, () => Otel.context.active().getValue(probeKey) === true)
}

/**
 * Effect's OpenTelemetry tracer, without its per-step context hook where that hook could do
 * nothing. `@effect/opentelemetry`'s tracer makes the current span OpenTelemetry's active
 * context around every Effect step that runs inside a span (two context objects and a
 * `context.with` per step), so that libraries instrumented by OpenTelemetry itself see it as
 * their parent. With no global context manager registered, `context.with` drops the context,
 * and the hook cost the full mode's worker about 12% of its busy time for nothing (2026-11-30
 * profiles). The spans are the same either way. Checked when the layer is built: a context manager
 * registered after that is not seen, so register it first (as OpenTelemetry's SDKs do on start).
 *
 * A span Effect makes unsampled (`DYN_TRACING=sampled` chose not to, or its parent is not
 * sampled) is Effect's in-memory span, never handed to the SDK: `@effect/opentelemetry`'s tracer
 * ignores the flag and lets the SDK's sampler decide, which with the SDK's default records every
 * span, so `sampled` had exported all of them. Its trace context still travels, flagged not
 * sampled, so the worker's span is not exported either.
 */
export const layerTracer: Layer.Layer<never, never, OtelTracer.OtelTracer> = Layer.effect(
  Tracer.Tracer,
  Effect.map(OtelTracer.make, (full) => {
    const span: Tracer.Tracer["span"] = (options) => (options.sampled ? full.span(options) : Tracer.nativeTracer.span(options))
    return Tracer.make(otelContextPropagates() && full.context !== undefined ? { span, context: full.context } : { span })
  })
)

/**
 * Spans exported through the OpenTelemetry SDK by `processor`, with `layerTracer`'s tracer: the
 * resource is read from OpenTelemetry's environment (`OTEL_RESOURCE_ATTRIBUTES`), with
 * `service.name` set to `serviceName`. The provider flushes and shuts down when the layer's scope
 * closes.
 */
export const layerExporting = (processor: SpanProcessor, serviceName: string): Layer.Layer<never> =>
  layerTracer.pipe(
    Layer.provide(OtelTracer.layerTracer),
    Layer.provide(NodeSdk.layerTracerProvider(processor)),
    Layer.provide(Resource.layerFromEnv(Resource.configToAttributes({ serviceName })))
  )

/**
 * Exports spans through the OpenTelemetry SDK with OTLP over HTTP when
 * `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`layerExporting`, batched), and does nothing otherwise.
 */
export const layerConfig: Layer.Layer<never, never, TransportConfig> = Layer.unwrap(
  Effect.gen(function*() {
    const config = yield* TransportConfig
    if (config.tracing === "off" || config.otlpEndpoint === undefined) return Layer.empty
    const url = `${config.otlpEndpoint.replace(/\/$/, "")}/v1/traces`
    return layerExporting(new BatchSpanProcessor(new OTLPTraceExporter({ url })), config.serviceName)
  })
)
