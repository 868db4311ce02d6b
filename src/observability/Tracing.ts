/**
 * Tracing helpers: W3C trace context in and out of transport headers, the OpenTelemetry RPC
 * attributes of our spans, and the layer that exports spans through the OpenTelemetry SDK.
 *
 * Spans are per request, never per frame: the router's `send <endpoint>` (kind client) and
 * the worker's `handle <endpoint>` (kind server), whose parent comes from `traceparent`.
 * `DYN_TRACING=off` creates no span at all; `sampled` samples `sampleRatio` of requests; and no
 * span is made that nothing could observe (`unobserved`).
 */
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { Context, Effect, Layer, Tracer } from "effect"
import type { Fiber } from "effect"
import type { EndpointPath } from "../Instance.ts"
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

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/

/** The `traceparent` header of a span. */
export const injectHeaders = (span: Tracer.Span): Record<string, string> => ({
  traceparent: `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`
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

/**
 * Exports spans through the OpenTelemetry SDK with OTLP over HTTP when
 * `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and does nothing otherwise.
 */
export const layerConfig: Layer.Layer<never, never, TransportConfig> = Layer.unwrap(
  Effect.gen(function*() {
    const config = yield* TransportConfig
    if (config.tracing === "off" || config.otlpEndpoint === undefined) return Layer.empty
    const url = `${config.otlpEndpoint.replace(/\/$/, "")}/v1/traces`
    return NodeSdk.layer(() => ({
      spanProcessor: new BatchSpanProcessor(new OTLPTraceExporter({ url })),
      resource: { serviceName: config.serviceName }
    })) as unknown as Layer.Layer<never>
  })
)
