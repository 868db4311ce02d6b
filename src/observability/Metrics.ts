/**
 * The metrics of the seed's Metrics section, as Effect Metrics, with synchronous recorders
 * for hot paths (cached per label set, so recording is a map lookup and an update).
 *
 * Names and labels are the seed's; labels are bounded (transport, plane, error_type, target =
 * host:port; the router's failover series, which the seed does not have, are by endpoint =
 * "ns.component.endpoint"). Latencies are histograms in seconds, with buckets from 50 µs to
 * 5 min. Exposed in Prometheus text by `observability/MetricsServer.ts`.
 */
import { Context, Metric } from "effect"
import type { PlaneType, TransportId } from "../Transport.ts"

const none = Context.empty()

/** Histogram buckets in seconds, from 50 µs to 5 minutes. */
export const latencyBuckets: ReadonlyArray<number> = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300
]

/** transport_requests_total{transport,plane}: requests sent (request plane) and streams opened (response plane), by the router. */
export const transportRequestsTotal = Metric.counter("transport_requests_total", {
  description: "Requests by transport: request-plane sends and response-plane streams, counted on the router",
  incremental: true
})
/** transport_request_latency_seconds{transport,plane}: ack latency (request plane) and whole-stream duration (response plane). */
export const transportRequestLatency = Metric.histogram("transport_request_latency_seconds", {
  description: "Request latency by transport: time to the ack on the request plane, time to the end of the stream on the response plane",
  boundaries: latencyBuckets
})
/** transport_errors_total{transport,error_type}: typed transport failures. */
export const transportErrorsTotal = Metric.counter("transport_errors_total", {
  description: "Transport failures by type: timeout, connection, protocol",
  incremental: true
})
/** transport_active_streams{transport,plane}: streams open now. */
export const transportActiveStreams = Metric.gauge("transport_active_streams", {
  description: "Streams in progress: router-side streams (response plane) and worker-side handlers (request plane)"
})
/** transport_server_requests_total{transport}: requests accepted by a worker's request server. */
export const transportServerRequestsTotal = Metric.counter("transport_server_requests_total", {
  description: "Requests accepted (acked) by this process's request-plane servers",
  incremental: true
})

/** transport_request_retries_total{endpoint}: calls sent again, to another instance, after a failure before the ack. */
export const transportRequestRetriesTotal = Metric.counter("transport_request_retries_total", {
  description: "Router failovers: a send that failed before the ack (connection refused or lost, worker unavailable or overloaded, endpoint gone), sent again to another instance",
  incremental: true
})
/** transport_instance_quarantined_total{endpoint}: instances put in quarantine after repeated failures before the ack. */
export const transportInstanceQuarantinedTotal = Metric.counter("transport_instance_quarantined_total", {
  description: "Instances a router quarantined (skipped for DYN_ROUTER_QUARANTINE_SECS) after consecutive connection failures before the ack",
  incremental: true
})
/** transport_quarantined_instances{endpoint}: instances in quarantine now. */
export const transportQuarantinedInstances = Metric.gauge("transport_quarantined_instances", {
  description: "Instances in quarantine now, summed over this process's clients of the endpoint"
})

/** tcp_pool_connections_created_total{target} */
export const poolConnectionsCreated = Metric.counter("tcp_pool_connections_created_total", {
  description: "Pooled call-home connections created",
  incremental: true
})
/** tcp_pool_connections_reused_total{target} */
export const poolConnectionsReused = Metric.counter("tcp_pool_connections_reused_total", {
  description: "Streams that reused an existing pooled connection",
  incremental: true
})
/** tcp_pool_active_connections{target} */
export const poolActiveConnections = Metric.gauge("tcp_pool_active_connections", {
  description: "Pooled connections carrying at least one stream"
})
/** tcp_pool_idle_connections{target} */
export const poolIdleConnections = Metric.gauge("tcp_pool_idle_connections", {
  description: "Pooled connections open and carrying no stream"
})
/** tcp_pool_acquisition_latency_seconds{target} */
export const poolAcquisitionLatency = Metric.histogram("tcp_pool_acquisition_latency_seconds", {
  description: "Time to acquire a pooled connection (including connecting when none is free)",
  boundaries: latencyBuckets
})
/** tcp_pool_validation_failures_total{target} */
export const poolValidationFailures = Metric.counter("tcp_pool_validation_failures_total", {
  description: "Pooled connections found dead or half-closed when validated, and replaced",
  incremental: true
})

type Bound<I> = { readonly updateUnsafe: (input: I, context: Context.Context<never>) => void; readonly modifyUnsafe: (input: I, context: Context.Context<never>) => void }

const bind = <I, S>(metric: Metric.Metric<I, S>) => {
  const cache = new Map<string, Bound<I>>()
  return (attributes: Readonly<Record<string, string>>, key: string): Bound<I> => {
    let bound = cache.get(key)
    if (bound === undefined) {
      bound = Metric.withAttributes(metric, attributes) as unknown as Bound<I>
      cache.set(key, bound)
    }
    return bound
  }
}

const requests = bind(transportRequestsTotal)
const latency = bind(transportRequestLatency)
const errors = bind(transportErrorsTotal)
const active = bind(transportActiveStreams)
const serverRequests = bind(transportServerRequestsTotal)
const retries = bind(transportRequestRetriesTotal)
const quarantined = bind(transportInstanceQuarantinedTotal)
const quarantinedNow = bind(transportQuarantinedInstances)

/** Counts a request (or stream) on `transport`/`plane`, and records its latency in seconds. */
export const recordRequest = (transport: TransportId, plane: PlaneType, seconds: number): void => {
  const key = `${transport}|${plane}`
  requests({ transport, plane }, key).updateUnsafe(1, none)
  latency({ transport, plane }, key).updateUnsafe(seconds, none)
}

/** Counts a typed transport failure. */
export const recordError = (transport: TransportId, errorType: "timeout" | "connection" | "protocol"): void => {
  errors({ transport, error_type: errorType }, `${transport}|${errorType}`).updateUnsafe(1, none)
}

/** Moves the active-streams gauge by `delta` (+1 on open, -1 on end). */
export const streamDelta = (transport: TransportId, plane: PlaneType, delta: 1 | -1): void => {
  active({ transport, plane }, `${transport}|${plane}`).modifyUnsafe(delta, none)
}

/** Counts a request accepted by a worker's request server. */
export const recordServerRequest = (transport: TransportId): void => {
  serverRequests({ transport }, transport).updateUnsafe(1, none)
}

/** Counts a failover: a call sent again to another instance of `endpoint` ("ns.component.endpoint"). */
export const recordRetry = (endpoint: string): void => {
  retries({ endpoint }, endpoint).updateUnsafe(1, none)
}

/** Counts an instance of `endpoint` put in quarantine. */
export const recordQuarantine = (endpoint: string): void => {
  quarantined({ endpoint }, endpoint).updateUnsafe(1, none)
}

/** Moves the quarantined-instances gauge of `endpoint` by `delta` (+1 in, -1 out). */
export const quarantineDelta = (endpoint: string, delta: 1 | -1): void => {
  quarantinedNow({ endpoint }, endpoint).modifyUnsafe(delta, none)
}

/** Creates the zero-valued failover series of `endpoint` (retries, quarantines, quarantined now), from a router's first client of it. */
export const initEndpoint = (endpoint: string): void => {
  retries({ endpoint }, endpoint).updateUnsafe(0, none)
  quarantined({ endpoint }, endpoint).updateUnsafe(0, none)
  quarantinedNow({ endpoint }, endpoint).modifyUnsafe(0, none)
}

/** Recorders of the pool metrics for one target (host:port). */
export interface PoolRecorder {
  readonly created: () => void
  readonly reused: () => void
  readonly validationFailed: () => void
  readonly acquired: (seconds: number) => void
  readonly setActive: (n: number) => void
  readonly setIdle: (n: number) => void
}

/** The pool metrics bound to `target`. */
export const poolRecorder = (target: string): PoolRecorder => {
  const attributes = { target }
  const created = Metric.withAttributes(poolConnectionsCreated, attributes)
  const reused = Metric.withAttributes(poolConnectionsReused, attributes)
  const failed = Metric.withAttributes(poolValidationFailures, attributes)
  const acquisition = Metric.withAttributes(poolAcquisitionLatency, attributes)
  const activeGauge = Metric.withAttributes(poolActiveConnections, attributes)
  const idleGauge = Metric.withAttributes(poolIdleConnections, attributes)
  // zero-valued series from the first use of a target, so every pool metric is on /metrics
  created.updateUnsafe(0, none)
  reused.updateUnsafe(0, none)
  failed.updateUnsafe(0, none)
  return {
    created: () => created.updateUnsafe(1, none),
    reused: () => reused.updateUnsafe(1, none),
    validationFailed: () => failed.updateUnsafe(1, none),
    acquired: (seconds) => acquisition.updateUnsafe(seconds, none),
    setActive: (n) => activeGauge.updateUnsafe(n, none),
    setIdle: (n) => idleGauge.updateUnsafe(n, none)
  }
}

/**
 * Creates the zero-valued series of a transport (requests, errors of each type, active
 * streams), so that every metric name is on /metrics from start-up, not from the first event.
 */
export const initTransport = (transport: TransportId, plane: PlaneType): void => {
  const key = `${transport}|${plane}`
  requests({ transport, plane }, key).updateUnsafe(0, none)
  active({ transport, plane }, key).modifyUnsafe(0, none)
  for (const type of ["timeout", "connection", "protocol"] as const) {
    errors({ transport, error_type: type }, `${transport}|${type}`).updateUnsafe(0, none)
  }
}

/** The recorders the Endpoint layer calls: the real ones, or no-ops when metrics are off. */
export interface Recorders {
  readonly recordRequest: typeof recordRequest
  readonly recordError: typeof recordError
  readonly streamDelta: typeof streamDelta
  readonly recordServerRequest: typeof recordServerRequest
  readonly recordRetry: typeof recordRetry
  readonly recordQuarantine: typeof recordQuarantine
  readonly quarantineDelta: typeof quarantineDelta
  readonly initEndpoint: typeof initEndpoint
}

const noop = () => {}

/** Recorders for `DYN_METRICS=on` (real) or `off` (no-ops). */
export const recorders = (enabled: boolean): Recorders =>
  enabled
    ? { recordRequest, recordError, streamDelta, recordServerRequest, recordRetry, recordQuarantine, quarantineDelta, initEndpoint }
    : {
      recordRequest: noop,
      recordError: noop,
      streamDelta: noop,
      recordServerRequest: noop,
      recordRetry: noop,
      recordQuarantine: noop,
      quarantineDelta: noop,
      initEndpoint: noop
    }
