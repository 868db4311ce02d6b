/**
 * The metrics of the seed's Metrics section, as Effect Metrics, with synchronous recorders
 * for hot paths (one Metric per label set, built once and cached, so recording is a map lookup
 * and an update: no Effect, no allocation).
 *
 * Names and labels are the seed's, plus `role`: `client` for what a router records (it sends
 * requests and receives streams), `server` for what a worker records (it serves them). Labels are
 * bounded (transport, plane, role, error_type, target = host:port; the router's failover series,
 * which the seed does not have, are by endpoint = "ns.component.endpoint"). Latencies are
 * histograms in seconds, with buckets from 50 µs to 5 min.
 *
 * What it does not do: serve or render the text (`MetricsServer.ts` does, adding the HELP and
 * TYPE of every declared family that has no series yet), or decide what a failure is (the
 * transports build their typed errors; `recordFailure` counts one).
 */
import { Cause, Context, Metric } from "effect"
import type { PlaneType, TransportId } from "../Transport.ts"
import { errorTypeOf } from "../TransportError.ts"

const none = Context.empty()

/** Who records: `client` (a router: sends requests, receives streams) or `server` (a worker: serves them). */
export type Role = "client" | "server"
/** The seed's `error_type` label. */
export type ErrorType = "timeout" | "connection" | "protocol"

const roles: ReadonlyArray<Role> = ["client", "server"]
const errorTypes: ReadonlyArray<ErrorType> = ["timeout", "connection", "protocol"]

/** Histogram buckets in seconds, from 50 µs to 5 minutes. */
export const latencyBuckets: ReadonlyArray<number> = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300
]

type Attributes = Readonly<Record<string, string>>
type Kind = "counter" | "gauge" | "histogram"

/** A metric family: its name, Prometheus type and help text. */
export interface Family {
  readonly name: string
  readonly type: Kind
  readonly help: string
}

/** A family's Metric for one label set (its own instance, so its series key is computed once). */
const build = (family: Family, attributes?: Attributes) =>
  family.type === "counter"
    ? Metric.counter(family.name, { description: family.help, incremental: true, attributes })
    : family.type === "gauge"
    ? Metric.gauge(family.name, { description: family.help, attributes })
    : Metric.histogram(family.name, { description: family.help, boundaries: latencyBuckets, attributes })

const family = (name: string, type: Kind, help: string): Family => ({ name, type, help })

const f = {
  requests: family("transport_requests_total", "counter", "Requests by transport, plane and role: a router (role client) counts request-plane sends at the ack and response streams at their end; a worker (role server) counts requests and response streams it served, at their end"),
  latency: family("transport_request_latency_seconds", "histogram", "Request latency: router, time to the ack (request plane) or to the end of the stream (response plane); worker, time from accepting the request to the end of its response"),
  errors: family("transport_errors_total", "counter", "Typed transport failures by transport, type (timeout, connection, protocol) and role: the router's calls and call-home server, the worker's call-homes, request-server refusals and protocol errors"),
  active: family("transport_active_streams", "gauge", "Streams in progress: on a router, response streams; on a worker, requests being served (request plane) and their response streams (response plane)"),
  serverRequests: family("transport_server_requests_total", "counter", "Requests accepted (acked) by this process's request-plane servers"),
  retries: family("transport_request_retries_total", "counter", "Router failovers: a send that failed before the ack (connection refused or lost, worker unavailable or overloaded, endpoint gone), sent again to another instance"),
  quarantined: family("transport_instance_quarantined_total", "counter", "Instances a router quarantined (skipped for DYN_ROUTER_QUARANTINE_SECS) after consecutive connection failures before the ack"),
  quarantinedNow: family("transport_quarantined_instances", "gauge", "Instances in quarantine now, summed over this process's clients of the endpoint"),
  poolCreated: family("tcp_pool_connections_created_total", "counter", "Pooled call-home connections created"),
  poolReused: family("tcp_pool_connections_reused_total", "counter", "Streams that reused an existing pooled connection"),
  poolActive: family("tcp_pool_active_connections", "gauge", "Pooled connections carrying at least one stream"),
  poolIdle: family("tcp_pool_idle_connections", "gauge", "Pooled connections open and carrying no stream"),
  poolAcquisition: family("tcp_pool_acquisition_latency_seconds", "histogram", "Time to acquire a pooled connection (including connecting when none is free)"),
  poolValidation: family("tcp_pool_validation_failures_total", "counter", "Pooled connections found dead or half-closed when validated, and replaced")
} as const

/** The transport families (every process): the seed's four and ours. */
export const transportFamilies: ReadonlyArray<Family> = [f.requests, f.latency, f.errors, f.active, f.serverRequests]
/** The connection pool's families (workers whose routers pool). */
export const poolFamilies: ReadonlyArray<Family> = [f.poolCreated, f.poolReused, f.poolActive, f.poolIdle, f.poolAcquisition, f.poolValidation]

/** transport_requests_total{transport,plane,role}. */
export const transportRequestsTotal = build(f.requests) as Metric.Counter<number>
/** transport_request_latency_seconds{transport,plane,role}. */
export const transportRequestLatency = build(f.latency) as Metric.Histogram<number>
/** transport_errors_total{transport,error_type,role}: typed transport failures. */
export const transportErrorsTotal = build(f.errors) as Metric.Counter<number>
/** transport_active_streams{transport,plane,role}: streams open now. */
export const transportActiveStreams = build(f.active) as Metric.Gauge<number>
/** transport_server_requests_total{transport,role}: requests accepted by a worker's request server. */
export const transportServerRequestsTotal = build(f.serverRequests) as Metric.Counter<number>
/** transport_request_retries_total{endpoint,role}: calls sent again, to another instance, after a failure before the ack. */
export const transportRequestRetriesTotal = build(f.retries) as Metric.Counter<number>
/** transport_instance_quarantined_total{endpoint,role}: instances put in quarantine after repeated failures before the ack. */
export const transportInstanceQuarantinedTotal = build(f.quarantined) as Metric.Counter<number>
/** transport_quarantined_instances{endpoint,role}: instances in quarantine now. */
export const transportQuarantinedInstances = build(f.quarantinedNow) as Metric.Gauge<number>
/** tcp_pool_connections_created_total{target,role} */
export const poolConnectionsCreated = build(f.poolCreated) as Metric.Counter<number>
/** tcp_pool_connections_reused_total{target,role} */
export const poolConnectionsReused = build(f.poolReused) as Metric.Counter<number>
/** tcp_pool_active_connections{target,role} */
export const poolActiveConnections = build(f.poolActive) as Metric.Gauge<number>
/** tcp_pool_idle_connections{target,role} */
export const poolIdleConnections = build(f.poolIdle) as Metric.Gauge<number>
/** tcp_pool_acquisition_latency_seconds{target,role} */
export const poolAcquisitionLatency = build(f.poolAcquisition) as Metric.Histogram<number>
/** tcp_pool_validation_failures_total{target,role} */
export const poolValidationFailures = build(f.poolValidation) as Metric.Counter<number>

/** One series, updated synchronously. */
interface Series {
  readonly updateUnsafe: (input: number, context: Context.Context<never>) => void
  readonly modifyUnsafe: (input: number, context: Context.Context<never>) => void
  readonly valueUnsafe: (context: Context.Context<never>) => unknown
  readonly removeUnsafe: (context: Context.Context<never>) => void
}

/**
 * The series of `fam` by its two label values, found without building anything: per request, the
 * recorders ran with a label object and a key string made each time (about 120-140 B of
 * allocation per update, 850 B per request served by a worker); a hit here allocates nothing.
 * `fixed` labels come first in every series' label set.
 */
const seriesBy2 = (fam: Family, names: readonly [string, string], fixed?: Attributes) => {
  const cache = new Map<string, Map<string, Series>>()
  return (a: string, b: string): Series => {
    let byB = cache.get(a)
    if (byB === undefined) cache.set(a, byB = new Map())
    let s = byB.get(b)
    if (s === undefined) {
      s = build(fam, { ...fixed, [names[0]]: a, [names[1]]: b }) as unknown as Series
      byB.set(b, s)
    }
    return s
  }
}

/** `seriesBy2` for a family of three labels: one `seriesBy2` per value of the first. */
const seriesBy3 = (fam: Family, [first, ...rest]: readonly [string, string, string]) => {
  const byFirst = new Map<string, (b: string, c: string) => Series>()
  return (a: string, b: string, c: string): Series => {
    let series = byFirst.get(a)
    if (series === undefined) byFirst.set(a, series = seriesBy2(fam, rest as [string, string], { [first]: a }))
    return series(b, c)
  }
}

const requests = seriesBy3(f.requests, ["transport", "plane", "role"])
const latency = seriesBy3(f.latency, ["transport", "plane", "role"])
const errors = seriesBy3(f.errors, ["transport", "error_type", "role"])
const active = seriesBy3(f.active, ["transport", "plane", "role"])
const serverRequests = seriesBy2(f.serverRequests, ["transport", "role"])
const retries = seriesBy2(f.retries, ["endpoint", "role"])
const quarantined = seriesBy2(f.quarantined, ["endpoint", "role"])
const quarantinedNow = seriesBy2(f.quarantinedNow, ["endpoint", "role"])

/** Counts a request (or stream) on `transport`/`plane`, and records its latency in seconds. */
export const recordRequest = (transport: TransportId, plane: PlaneType, seconds: number, role: Role = "client"): void => {
  requests(transport, plane, role).updateUnsafe(1, none)
  latency(transport, plane, role).updateUnsafe(seconds, none)
}

/** Counts a typed transport failure. */
export const recordError = (transport: TransportId, errorType: ErrorType, role: Role = "client"): void => {
  errors(transport, errorType, role).updateUnsafe(1, none)
}

/**
 * Counts the typed transport failure in `failure` (a TransportError, or a Cause holding one), by
 * its own transport and type; anything else (a handler's failure, an interruption) is not counted.
 * Returns whether it counted one. Off the hot path: called where a failure is built or logged.
 */
export const recordFailure = (failure: unknown, role: Role): boolean => {
  const error = Cause.isCause(failure) ? typedIn(failure) : failure
  const type = errorTypeOf(error)
  if (type === undefined) return false
  recordError((error as { readonly transport: TransportId }).transport, type, role)
  return true
}

const typedIn = (cause: Cause.Cause<unknown>): unknown => {
  for (const reason of cause.reasons) {
    const e = reason._tag === "Fail" ? reason.error : reason._tag === "Die" ? reason.defect : undefined
    if (errorTypeOf(e) !== undefined) return e
  }
  return undefined
}

/** Moves the active-streams gauge by `delta` (+1 on open, -1 on end). */
export const streamDelta = (transport: TransportId, plane: PlaneType, delta: 1 | -1, role: Role = "client"): void => {
  active(transport, plane, role).modifyUnsafe(delta, none)
}

/** Counts a request accepted by a worker's request server. */
export const recordServerRequest = (transport: TransportId, role: Role = "server"): void => {
  serverRequests(transport, role).updateUnsafe(1, none)
}

const noopEnd = (): void => {}

/**
 * A worker starts serving a request that came on `transport` and answers on `response` (the
 * response transport, undefined when none matches): its response stream counts as active now.
 * The returned function, called once when the request's handling ends however it ends, counts the
 * request and the response stream with the time since now.
 */
export const serving = (transport: TransportId, response: TransportId | undefined): () => void => {
  const started = performance.now()
  if (response !== undefined) streamDelta(response, "response", 1, "server")
  return () => {
    const seconds = (performance.now() - started) / 1000
    recordRequest(transport, "request", seconds, "server")
    if (response === undefined) return
    streamDelta(response, "response", -1, "server")
    recordRequest(response, "response", seconds, "server")
  }
}

/** Counts a failover: a call sent again to another instance of `endpoint` ("ns.component.endpoint"). */
export const recordRetry = (endpoint: string): void => {
  retries(endpoint, "client").updateUnsafe(1, none)
}

/** Counts an instance of `endpoint` put in quarantine. */
export const recordQuarantine = (endpoint: string): void => {
  quarantined(endpoint, "client").updateUnsafe(1, none)
}

/** Moves the quarantined-instances gauge of `endpoint` by `delta` (+1 in, -1 out). */
export const quarantineDelta = (endpoint: string, delta: 1 | -1): void => {
  quarantinedNow(endpoint, "client").modifyUnsafe(delta, none)
}

/** Creates the zero-valued failover series of `endpoint` (retries, quarantines, quarantined now), from a router's first client of it. */
export const initEndpoint = (endpoint: string): void => {
  retries(endpoint, "client").updateUnsafe(0, none)
  quarantined(endpoint, "client").updateUnsafe(0, none)
  quarantinedNow(endpoint, "client").modifyUnsafe(0, none)
}

/**
 * Creates the zero-valued series of a transport on its plane, for both roles (requests, latency,
 * active streams, errors of each type; a request server's accepted requests), so that every
 * family is on /metrics from start-up, not from the first event.
 */
export const initTransport = (transport: TransportId, plane: PlaneType): void => {
  for (const role of roles) {
    requests(transport, plane, role).updateUnsafe(0, none)
    latency(transport, plane, role).valueUnsafe(none)
    active(transport, plane, role).modifyUnsafe(0, none)
    for (const type of errorTypes) errors(transport, type, role).updateUnsafe(0, none)
  }
  if (plane === "request") serverRequests(transport, "server").updateUnsafe(0, none)
}

const declared = new Set<Family>(transportFamilies)

/** Declares the pool's families, so that /metrics lists them (HELP and TYPE) before the first pooled stream. */
export const declarePool = (): void => {
  for (const fam of poolFamilies) declared.add(fam)
}

/** The families /metrics lists even when they have no series yet. */
export const declaredFamilies = (): ReadonlyArray<Family> => [...declared]

/** Recorders of the pool metrics for one target (host:port). */
export interface PoolRecorder {
  readonly created: () => void
  readonly reused: () => void
  readonly validationFailed: () => void
  readonly acquired: (seconds: number) => void
  readonly setActive: (n: number) => void
  readonly setIdle: (n: number) => void
  /** Removes every series of the target from the registry; later calls do nothing. */
  readonly remove: () => void
}

const noop = () => {}

/** The pool recorder of a pool that records nothing (`DYN_METRICS=off`). */
export const NO_POOL_RECORDER: PoolRecorder = {
  created: noop,
  reused: noop,
  validationFailed: noop,
  acquired: noop,
  setActive: noop,
  setIdle: noop,
  remove: noop
}

/** The pool metrics bound to `target`, created at zero (the gauges on their first set). */
export const poolRecorder = (target: string): PoolRecorder => {
  declarePool()
  const attributes = { target, role: "server" }
  const created = build(f.poolCreated, attributes)
  const reused = build(f.poolReused, attributes)
  const failed = build(f.poolValidation, attributes)
  const acquisition = build(f.poolAcquisition, attributes)
  const activeGauge = build(f.poolActive, attributes)
  const idleGauge = build(f.poolIdle, attributes)
  const all = [created, reused, failed, acquisition, activeGauge, idleGauge] as unknown as ReadonlyArray<Series>
  let live = true
  for (const s of all) s.valueUnsafe(none)
  return {
    created: () => live && created.updateUnsafe(1, none),
    reused: () => live && reused.updateUnsafe(1, none),
    validationFailed: () => live && failed.updateUnsafe(1, none),
    acquired: (seconds) => live && acquisition.updateUnsafe(seconds, none),
    setActive: (n) => live && activeGauge.updateUnsafe(n, none),
    setIdle: (n) => live && idleGauge.updateUnsafe(n, none),
    remove: () => {
      if (!live) return
      live = false
      for (const s of all) s.removeUnsafe(none)
    }
  }
}

/** The recorders the Endpoint layer calls: the real ones for one role, or no-ops when metrics are off. */
export interface Recorders {
  readonly recordRequest: (transport: TransportId, plane: PlaneType, seconds: number) => void
  readonly recordError: (transport: TransportId, errorType: ErrorType) => void
  readonly streamDelta: (transport: TransportId, plane: PlaneType, delta: 1 | -1) => void
  readonly recordServerRequest: (transport: TransportId) => void
  readonly serving: typeof serving
  readonly recordRetry: typeof recordRetry
  readonly recordQuarantine: typeof recordQuarantine
  readonly quarantineDelta: typeof quarantineDelta
  readonly initEndpoint: typeof initEndpoint
}

/** Recorders for `DYN_METRICS=on` (real, labelled `role`, by default `client`) or `off` (no-ops). */
export const recorders = (enabled: boolean, role: Role = "client"): Recorders =>
  enabled
    ? {
      recordRequest: (transport, plane, seconds) => recordRequest(transport, plane, seconds, role),
      recordError: (transport, errorType) => recordError(transport, errorType, role),
      streamDelta: (transport, plane, delta) => streamDelta(transport, plane, delta, role),
      recordServerRequest: (transport) => recordServerRequest(transport, role),
      serving,
      recordRetry,
      recordQuarantine,
      quarantineDelta,
      initEndpoint
    }
    : {
      recordRequest: noop,
      recordError: noop,
      streamDelta: noop,
      recordServerRequest: noop,
      serving: () => noopEnd,
      recordRetry: noop,
      recordQuarantine: noop,
      quarantineDelta: noop,
      initEndpoint: noop
    }
