/**
 * transport-registry: pluggable request and response transports for a distributed
 * inference runtime, on Effect 4. One namespace per module.
 *
 * Every namespace is also a package subpath of its own (`transport-registry/Endpoint`,
 * `transport-registry/TcpResponseTransport`, ...; the map is `exports` in package.json and
 * docs/architecture.md, "Package"). `transport-registry/internal/*` is not exported.
 */

// The API users call

/** Serve an endpoint on a worker (`serve`, `serveEmit`) and call it from a router (`client`). */
export * as Endpoint from "./Endpoint.ts"

// Composition

/**
 * The registry of transports: the service, its empty layer, and the registry composed from
 * `DYN_*` (`layerConfig`, `layerFromConfig`).
 */
export * as TransportRegistry from "./registry/index.ts"
/**
 * Discovery of worker instances: the service, the backend `DYN_DISCOVERY_BACKEND` names
 * (`layerConfig`), and the backends (`MemoryDiscovery`, `FileDiscovery`).
 */
export * as Discovery from "./discovery/index.ts"
/** Every `DYN_*` variable, validated at once: the `TransportConfig` service and its layers. */
export * as TransportConfig from "./TransportConfig.ts"
/** Process-wide V8 settings for router and worker processes, to opt in to (`disableAllocationSitePretenuring`). */
export * as NodeTuning from "./NodeTuning.ts"

// Transports: layers that register themselves in the TransportRegistry

/** The in-memory transport, on both planes: tests and the one-process embedded mode. */
export * as MemoryTransport from "./transport/memory/MemoryTransport.ts"
/** The HTTP/2 (h2c, and HTTP/1.1 on the same port) request plane. */
export * as HttpRequestTransport from "./transport/http/HttpRequestTransport.ts"
/** The NATS request plane (`DYN_REQUEST_PLANE=nats`, Dynamo's legacy mode) on a real nats-server (`NATS_SERVER`). */
export * as NatsRequestTransport from "./transport/nats/NatsRequestTransport.ts"
export * as TcpRequestTransport from "./transport/tcp/request/TcpRequestTransport.ts"
/** The TCP call-home response plane, one-shot or pooled and multiplexed (`DYN_TCP_POOL_ENABLED`). */
export * as TcpResponseTransport from "./transport/tcp/TcpResponseTransport.ts"
/**
 * The HTTP response plane (`DYN_RESPONSE_PLANE=http`): each response streams in its request's own
 * HTTP/2 (or HTTP/1.1) response, as SSE, NDJSON or binary frames.
 */
export * as HttpResponseTransport from "./transport/http/HttpResponseTransport.ts"
/** The seed's subject-based response server (`DYN_HTTP_RESPONSE_*`): `createResponseStream`, attached with `GET {root}/{subject}`. */
export * as HttpResponseServer from "./transport/http/HttpResponseServer.ts"
/** Reads a stream of the response server (`attach(url)`) as an Effect Stream. */
export * as HttpResponseReader from "./transport/http/HttpResponseReader.ts"

// Observability

/** The transport metrics, as Effect Metrics (names and labels of docs/metrics.md). */
export * as Metrics from "./observability/Metrics.ts"
/** `/metrics` (Prometheus), `/health` and `/ready` on `DYN_METRICS_PORT`. */
export * as MetricsServer from "./observability/MetricsServer.ts"
/** W3C trace context on transport headers, and span export (`Tracing.layerConfig` by OTLP, `Tracing.layerExporting` to any span processor). */
export * as Tracing from "./observability/Tracing.ts"
/** The `DYN_LOG` logger: a global level and per-module levels, logfmt on stderr. */
export * as Logging from "./observability/Logging.ts"
/** What `/health` and `/ready` answer: the endpoints this process serves. */
export * as Health from "./observability/Health.ts"

// The domain, and the service shapes a new transport implements

/** The typed failures: timeout, connection and protocol errors, `HandlerError`, and the rest. */
export * as TransportError from "./TransportError.ts"
/** Transport ids, planes, capabilities and registrations. */
export * as Transport from "./Transport.ts"
/** Endpoint paths and the instance records discovery holds. */
export * as Instance from "./Instance.ts"
/** The `ConnectionInfo` a request carries: where its response stream calls home. */
export * as ConnectionInfo from "./ConnectionInfo.ts"
/** The request plane's service shapes: what a request transport implements. */
export * as RequestPlane from "./RequestPlane.ts"
/** The response plane's service shapes: what a response transport implements. */
export * as ResponsePlane from "./ResponsePlane.ts"
