/**
 * Every `DYN_*` variable (and `NATS_SERVER`, `ETCD_ENDPOINTS`) as one typed, validated object.
 *
 * This is the only module that reads the environment, through Effect `Config` (so tests
 * provide a map-backed `ConfigProvider` instead). All variables are read as text and checked
 * together: bad values fail start-up with one `TransportConfigError` that names every bad
 * variable, the value it got, and what it accepts. There is no silent fallback to a default.
 */
import { Config, Context, Data, Effect, Layer, Option } from "effect"
import type { ConfigProvider } from "effect"
import { tcpTlsProblems, tcpTlsVars } from "./TransportConfigTls.ts"
import { bool, byteSize, host, httpUrl, intIn, logSpec, millis, natsUrl, nonNegativeInt, oneOf, port, positiveInt, seconds, secondsOrOff, text, urlList, urlPath, v } from "./TransportConfigParsers.ts"
import type { ConfigProblem, Variable, VariableDoc } from "./TransportConfigParsers.ts"
import type { LogFormat, TransportSettings } from "./TransportSettings.ts"

export type { ConfigProblem, VariableDoc } from "./TransportConfigParsers.ts"
export type {
  DiscoveryBackendKind,
  LogFormat,
  RequestPlaneKind,
  ResponsePlaneKind,
  StreamFormat,
  TcpTlsSettings,
  TracingMode,
  TransportSettings
} from "./TransportSettings.ts"

/** Start-up failed: one or more variables hold bad values. The message lists every one. */
export class TransportConfigError extends Data.TaggedError("TransportConfigError")<{
  readonly problems: ReadonlyArray<ConfigProblem>
}> {
  override get message(): string {
    const lines = this.problems.map((p) => `  ${p.variable}=${JSON.stringify(p.got)}: expected ${p.expected}`)
    return `invalid transport configuration (${this.problems.length} bad variable${
      this.problems.length === 1 ? "" : "s"
    }):\n${lines.join("\n")}`
  }
}

/** Every variable, in documentation order. */
const vars = {
  requestPlane: v("DYN_REQUEST_PLANE", "http", oneOf("http", "nats", "tcp", "memory"), "Request plane transport"),
  responsePlane: v("DYN_RESPONSE_PLANE", "tcp", oneOf("tcp", "http", "memory"), "Response plane transport"),
  requestPlaneCodec: v("DYN_REQUEST_PLANE_CODEC", "json", oneOf("json", "msgpack"), "Payload codec of requests and response items"),
  discoveryBackend: v("DYN_DISCOVERY_BACKEND", "mem", oneOf("mem", "file", "etcd"), "Discovery backend"),
  discoveryPath: v("DYN_DISCOVERY_PATH", ".dynamo-discovery", text, "Directory of the file discovery backend"),
  natsServer: v("NATS_SERVER", "nats://localhost:4222", natsUrl, "NATS server URL(s)"),
  natsRequestTimeout: v(
    "DYN_NATS_REQUEST_TIMEOUT",
    "5",
    seconds,
    "Router: how long a NATS request waits for the worker's ack (the NATS reply); also bounds the first connect to nats-server"
  ),
  etcdEndpoints: v("ETCD_ENDPOINTS", "http://localhost:2379", urlList, "etcd endpoints"),
  etcdLeaseTtl: v(
    "ETCD_LEASE_TTL",
    "10",
    intIn(1, 2_147_483, "a whole number of seconds from 1 to 2147483"),
    "TTL of the etcd discovery lease: a worker killed without cleanup leaves routers' sets within about this long (etcd raises a TTL below its minimum, 2 s with its default election timeout)"
  ),
  metricsPort: v("DYN_METRICS_PORT", "9090", port, "Port of /metrics, /health and /ready"),
  log: v("DYN_LOG", "info", logSpec, "Log level, globally or per module: info,transport.tcp.pool=debug"),
  logFormat: v("DYN_LOG_FORMAT", "logfmt", oneOf("logfmt", "json"), "Format of log lines on stderr: logfmt, or json (one object per line) for log shippers"),
  tracing: v("DYN_TRACING", "on", oneOf("off", "on", "sampled"), "Tracing: off (no spans), on (a span per request), sampled (10% of requests); spans are made only where a tracing backend is installed (OTEL_EXPORTER_OTLP_ENDPOINT or the application's tracer layer) or a trace is being carried on"),
  metrics: v("DYN_METRICS", "on", bool, "Record the transport metrics (off skips every recorder on the request path)"),
  otlpEndpoint: v("OTEL_EXPORTER_OTLP_ENDPOINT", "(unset)", httpUrl, "OTLP/HTTP collector base URL; spans are exported to {url}/v1/traces when set"),
  serviceName: v("OTEL_SERVICE_NAME", "transport-registry", text, "service.name of exported spans"),
  tcpMaxMessageSize: v("DYN_TCP_MAX_MESSAGE_SIZE", String(32 * 1024 * 1024), byteSize, "Largest frame accepted or sent, in bytes"),
  cancelGraceMs: v("DYN_CANCEL_GRACE_MS", "1000", millis, "After a consumer cancels: how long after `stop` the router waits before `kill`"),
  routerMaxAttempts: v(
    "DYN_ROUTER_MAX_ATTEMPTS",
    "3",
    positiveInt,
    "Router: most instances one call is sent to; a send that fails before the ack (connection refused or lost, worker unavailable or overloaded, endpoint gone) is retried on another instance, never after the ack. 1 turns failover off"
  ),
  routerQuarantineSecs: v(
    "DYN_ROUTER_QUARANTINE_SECS",
    "10",
    seconds,
    "Router: an instance with 3 consecutive connection failures before its ack is skipped for this long (while other instances exist); logged and counted in transport_instance_quarantined_total"
  ),
  httpRpcHost: v("DYN_HTTP_RPC_HOST", "0.0.0.0", host, "HTTP request server bind address"),
  httpRpcPort: v("DYN_HTTP_RPC_PORT", "8081", port, "HTTP request server port"),
  httpRpcRootPath: v("DYN_HTTP_RPC_ROOT_PATH", "/v1/rpc", urlPath, "HTTP request API root path"),
  httpRequestTimeout: v("DYN_HTTP_REQUEST_TIMEOUT", "5", seconds, "HTTP request timeout (covers the 202 ack only)"),
  httpRpcBodyTimeout: v(
    "DYN_HTTP_RPC_BODY_TIMEOUT_SECS",
    "30",
    seconds,
    "Worker: the HTTP request server answers 408 and closes a request whose body has not ended this long after its headers arrived (a client stalled mid-body); the router's own wait for the 202 is DYN_HTTP_REQUEST_TIMEOUT"
  ),
  httpResponseHost: v("DYN_HTTP_RESPONSE_HOST", "0.0.0.0", host, "HTTP response server bind address"),
  httpResponsePort: v("DYN_HTTP_RESPONSE_PORT", "8082", port, "HTTP response server port"),
  httpResponseRootPath: v("DYN_HTTP_RESPONSE_ROOT_PATH", "/v1/rpc/response", urlPath, "HTTP response API root path"),
  httpResponseStreamFormat: v("DYN_HTTP_RESPONSE_STREAM_FORMAT", "sse", oneOf("sse", "ndjson", "binary"), "Response streaming format"),
  httpResponseTimeout: v("DYN_HTTP_RESPONSE_TIMEOUT_SECS", "3600", seconds, "Response stream timeout"),
  tcpResponseHost: v("DYN_TCP_RESPONSE_HOST", "0.0.0.0", host, "Bind address of the router's call-home stream server"),
  tcpResponsePort: v("DYN_TCP_RESPONSE_PORT", "0", port, "Port of the router's call-home stream server (0 picks a free port)"),
  tcpResponseAdvertiseHost: v("DYN_TCP_RESPONSE_ADVERTISE_HOST", "(auto)", host, "Host that workers call home to; by default the bind address, or the first non-internal IPv4 when binding 0.0.0.0"),
  callHomeTimeout: v("DYN_TCP_CALL_HOME_TIMEOUT_SECS", "30", seconds, "How long a router waits for the worker to call home"),
  tcpPoolEnabled: v("DYN_TCP_POOL_ENABLED", "false", bool, "Enable pooled, multiplexed call-home connections. Set on the router: its ConnectionInfo decides; workers always understand both"),
  tcpPoolMaxPerTarget: v("DYN_TCP_POOL_MAX_PER_TARGET", "50", positiveInt, "Max pooled connections per router (host:port), on the worker"),
  tcpPoolMinIdle: v("DYN_TCP_POOL_MIN_IDLE", "5", nonNegativeInt, "Pooled connections kept warm per router in use, on the worker"),
  tcpPoolIdleTimeout: v("DYN_TCP_POOL_IDLE_TIMEOUT_SECS", "300", seconds, "Close a pooled connection idle this long (beyond the warm ones)"),
  tcpPoolMaxLifetime: v("DYN_TCP_POOL_MAX_LIFETIME_SECS", "3600", seconds, "Rotate a pooled connection this old: it drains its streams, then closes"),
  tcpPoolKeepalive: v("DYN_TCP_POOL_KEEPALIVE_SECS", "60", seconds, "TCP keepalive: idle time before the first probe on pooled connections, and on the router's one-shot call-home connections still open a second after their call-home"),
  tcpRequestHost: v("DYN_TCP_REQUEST_HOST", "0.0.0.0", host, "TCP request server bind address (worker)", "DYN_TCP_RPC_HOST"),
  tcpRequestPort: v("DYN_TCP_REQUEST_PORT", "9001", port, "TCP request server port (worker); both framings share it", "DYN_TCP_RPC_PORT"),
  tcpRequestAdvertiseHost: v(
    "DYN_TCP_REQUEST_ADVERTISE_HOST",
    "(auto)",
    host,
    "Host that routers dial for TCP requests; by default the bind address, or the first non-internal IPv4 when binding 0.0.0.0",
    "DYN_TCP_RPC_ADVERTISE_HOST"
  ),
  tcpRequestMaxConnections: v(
    "DYN_TCP_REQUEST_MAX_CONNECTIONS",
    "1000",
    positiveInt,
    "Max concurrent connections to the TCP request server; beyond it a connection is refused with the reason, then closed"
  ),
  tcpRequestHeartbeat: v("DYN_TCP_REQUEST_HEARTBEAT_INTERVAL_SECS", "30", seconds, "Full TCP mode: ping interval; a peer silent for two intervals is dead"),
  tcpRequestConnectionTimeout: v(
    "DYN_TCP_REQUEST_CONNECTION_TIMEOUT_SECS",
    "60",
    seconds,
    "The TCP request server drops a connection silent (nothing received) for longer than this, and one whose Dynamo-framed request frame, once begun, has not arrived whole within it (a byte-by-byte dribble)"
  ),
  tcpRequestTimeout: v("DYN_TCP_REQUEST_TIMEOUT", "5", seconds, "Router: how long a TCP request waits for the worker's ack"),
  tcpConnectTimeout: v("DYN_TCP_CONNECT_TIMEOUT", "5", seconds, "Router: bound on a TCP connect to a worker's request port"),
  tcpPoolSize: v("DYN_TCP_POOL_SIZE", "100", positiveInt, "Router: most TCP request connections per worker host:port"),
  tcpChannelBuffer: v(
    "DYN_TCP_CHANNEL_BUFFER",
    "1024",
    positiveInt,
    "Router: requests awaiting their ack on one TCP request connection before another is opened (and, with every connection full, before requests wait)"
  ),
  tcpFullMode: v(
    "DYN_TCP_FULL_MODE",
    "true",
    bool,
    "Full TCP mode (requests and responses multiplexed on one connection): a worker advertises it, a router uses it with workers that advertise it; false means Dynamo's framing + call-home only"
  ),
  ...tcpTlsVars,
  // ---- inactivity timeouts (issue 15 item 2) ----
  // Default 300 s: long enough for the longest prefill we expect (minutes, for contexts of a
  // million tokens) on the one plane that has no heartbeat (Dynamo's one-shot call-home, where a
  // prefill is pure silence); everywhere else heartbeats keep a slow but healthy stream alive, so
  // the default only bounds how long a frozen worker holds a call.
  streamIdleTimeout: v(
    "DYN_STREAM_IDLE_TIMEOUT_SECS",
    "300",
    secondsOrOff,
    "Router: a response stream that receives nothing (no item, no heartbeat) for this long fails with TransportTimeoutError StreamIdle, and its worker is told to stop; 0 turns it off. Heartbeats (HTTP/2 PING, SSE comments, pooled-mux and full-mode Ping/Pong) keep a slow but healthy stream alive; Dynamo's one-shot call-home has none, so there the value must exceed the longest prefill"
  ),
  // ---- first-request deadline of HTTP connections (issue 15 item 4) ----
  httpFirstRequestTimeout: v(
    "DYN_HTTP_FIRST_REQUEST_TIMEOUT_SECS",
    "10",
    seconds,
    "Every HTTP listener (the HTTP request server, the HTTP response server, the metrics server): a connection whose first complete request has not arrived this long after the accept is closed (slowloris defence; a session that has carried a request then stays open while idle), and on HTTP/1.1 each later request's headers must arrive within it too"
  ),
  // ---- connection caps (issue 15 item 7; docs/security.md) ----
  tcpResponseMaxConnections: v(
    "DYN_TCP_RESPONSE_MAX_CONNECTIONS",
    "50000",
    positiveInt,
    "Router: most connections the call-home server holds at once (one per one-shot stream, plus the pooled ones); one beyond is closed at once"
  ),
  httpRpcMaxConnections: v(
    "DYN_HTTP_RPC_MAX_CONNECTIONS",
    "10000",
    positiveInt,
    "Worker: most connections the HTTP request server holds at once (HTTP/1.1 and h2c); one beyond is closed at once"
  ),
  httpResponseMaxConnections: v(
    "DYN_HTTP_RESPONSE_MAX_CONNECTIONS",
    "10000",
    positiveInt,
    "Worker: most connections the HTTP response server (subject GETs) holds at once; one beyond is closed at once"
  ),
  // ---- HTTP/2 client sessions (issue 15 item 1; docs/transports.md, http request plane) ----
  httpClientMaxStreamsPerSession: v(
    "DYN_HTTP_CLIENT_MAX_STREAMS_PER_SESSION",
    "1000",
    positiveInt,
    "Router: HTTP/2 streams in flight on one session to a worker before the http request client opens another session to it (never more than the worker's SETTINGS allow)"
  ),
  httpClientMaxSessions: v(
    "DYN_HTTP_CLIENT_MAX_SESSIONS",
    "16",
    positiveInt,
    "Router: most HTTP/2 sessions the http request client opens to one worker; when all are full, the least loaded takes the request"
  ),
  httpClientSessionMemoryMb: v(
    "DYN_HTTP_CLIENT_SESSION_MEMORY_MB",
    "64",
    positiveInt,
    "Router: memory cap of each HTTP/2 client session, in MB (Node's default of 10 made a session with ~9,000 requests awaiting their 202 reset its own streams)"
  )
} as const

type Vars = typeof vars
type Parsed = { readonly [K in keyof Vars]: Vars[K] extends Variable<infer A> ? A : never }

/** Documentation of every variable, for docs/configuration.md and `--help`. */
export const variables: ReadonlyArray<VariableDoc> = Object.values(vars).map(({ parser: _, ...doc }) => doc)

/**
 * Validates raw variable text (absent = default). Returns the settings, or every problem at once.
 * Pure: this is where the rules live, and what `load` runs on the Config values.
 */
export const fromRecord = (
  raw: Readonly<Record<string, string | undefined>>
): { readonly _tag: "ok"; readonly settings: TransportSettings } | { readonly _tag: "error"; readonly error: TransportConfigError } => {
  const problems: Array<ConfigProblem> = []
  const out: Record<string, unknown> = {}
  for (const [key, variable] of Object.entries(vars) as Array<[keyof Vars, Variable<unknown>]>) {
    const own = raw[variable.name]
    const aliased = variable.alias === undefined ? undefined : raw[variable.alias]
    const ownSet = own !== undefined && own !== ""
    const aliasSet = aliased !== undefined && aliased !== ""
    if (!ownSet && !aliasSet) {
      out[key] = variable.default === "(auto)" || variable.default === "(unset)" ? undefined : variable.parser.parse(variable.default)
      continue
    }
    const name = ownSet ? variable.name : variable.alias!
    const given = ownSet ? own : aliased!
    const value = variable.parser.parse(given)
    if (value === undefined) {
      problems.push({ variable: name, got: given, expected: variable.parser.expected })
      continue
    }
    if (ownSet && aliasSet) {
      const other = variable.parser.parse(aliased!)
      if (other === undefined) {
        problems.push({ variable: variable.alias!, got: aliased!, expected: variable.parser.expected })
        continue
      }
      if (JSON.stringify(other) !== JSON.stringify(value)) {
        problems.push({
          variable: variable.name,
          got: given,
          expected: `the same value as its alias ${variable.alias} (set to ${JSON.stringify(aliased)}), or only one of the two set`
        })
        continue
      }
    }
    out[key] = value
  }
  const p = out as unknown as Parsed
  if (problems.length === 0 && p.tcpPoolMinIdle > p.tcpPoolMaxPerTarget) {
    problems.push({
      variable: vars.tcpPoolMinIdle.name,
      got: String(p.tcpPoolMinIdle),
      expected: `at most DYN_TCP_POOL_MAX_PER_TARGET (${p.tcpPoolMaxPerTarget})`
    })
  }
  if (problems.length === 0 && p.responsePlane === "http" && p.requestPlane !== "http") {
    // The http response plane streams in the request's own HTTP response: it needs the http request plane.
    problems.push({
      variable: vars.responsePlane.name,
      got: "http",
      expected: `a response plane that DYN_REQUEST_PLANE=${p.requestPlane} can carry (http streams in the request's own HTTP response, so it needs DYN_REQUEST_PLANE=http)`
    })
  }
  problems.push(...tcpTlsProblems(p))
  if (problems.length > 0) return { _tag: "error", error: new TransportConfigError({ problems }) }
  return {
    _tag: "ok",
    settings: {
      requestPlane: p.requestPlane,
      responsePlane: p.responsePlane,
      requestPlaneCodec: p.requestPlaneCodec,
      discoveryBackend: p.discoveryBackend,
      discoveryPath: p.discoveryPath,
      natsServer: p.natsServer,
      natsRequestTimeoutMs: p.natsRequestTimeout,
      etcdEndpoints: p.etcdEndpoints,
      etcdLeaseTtlSeconds: p.etcdLeaseTtl,
      metricsPort: p.metricsPort,
      log: p.log,
      logFormat: p.logFormat,
      tracing: p.tracing,
      metrics: p.metrics,
      otlpEndpoint: p.otlpEndpoint,
      serviceName: p.serviceName,
      tcpMaxMessageSize: p.tcpMaxMessageSize,
      cancelGraceMs: p.cancelGraceMs,
      routerMaxAttempts: p.routerMaxAttempts,
      routerQuarantineMs: p.routerQuarantineSecs,
      httpRpc: {
        host: p.httpRpcHost,
        port: p.httpRpcPort,
        rootPath: p.httpRpcRootPath,
        requestTimeoutMs: p.httpRequestTimeout,
        bodyTimeoutMs: p.httpRpcBodyTimeout
      },
      httpResponse: {
        host: p.httpResponseHost,
        port: p.httpResponsePort,
        rootPath: p.httpResponseRootPath,
        streamFormat: p.httpResponseStreamFormat,
        timeoutMs: p.httpResponseTimeout
      },
      tcpResponse: {
        host: p.tcpResponseHost,
        port: p.tcpResponsePort,
        advertiseHost: p.tcpResponseAdvertiseHost,
        callHomeTimeoutMs: p.callHomeTimeout
      },
      tcpPool: {
        enabled: p.tcpPoolEnabled,
        maxPerTarget: p.tcpPoolMaxPerTarget,
        minIdle: p.tcpPoolMinIdle,
        idleTimeoutMs: p.tcpPoolIdleTimeout,
        maxLifetimeMs: p.tcpPoolMaxLifetime,
        keepaliveMs: p.tcpPoolKeepalive
      },
      tcpRequest: {
        host: p.tcpRequestHost,
        port: p.tcpRequestPort,
        advertiseHost: p.tcpRequestAdvertiseHost,
        maxConnections: p.tcpRequestMaxConnections,
        heartbeatIntervalMs: p.tcpRequestHeartbeat,
        connectionTimeoutMs: p.tcpRequestConnectionTimeout,
        ackTimeoutMs: p.tcpRequestTimeout,
        connectTimeoutMs: p.tcpConnectTimeout,
        poolSize: p.tcpPoolSize,
        channelBuffer: p.tcpChannelBuffer,
        fullMode: p.tcpFullMode
      },
      tcpTls: {
        certPath: p.tcpTlsCertPath,
        keyPath: p.tcpTlsKeyPath,
        caCertPath: p.tcpTlsCaCertPath,
        serverName: p.tcpTlsServerName,
        handshakeTimeoutMs: p.tcpTlsHandshakeTimeout
      },
      streamIdleTimeoutMs: p.streamIdleTimeout,
      httpFirstRequestTimeoutMs: p.httpFirstRequestTimeout,
      connectionCaps: {
        tcpResponse: p.tcpResponseMaxConnections,
        httpRpc: p.httpRpcMaxConnections,
        httpResponse: p.httpResponseMaxConnections
      },
      httpClientSessions: {
        maxStreamsPerSession: p.httpClientMaxStreamsPerSession,
        maxSessionsPerOrigin: p.httpClientMaxSessions,
        maxSessionMemoryMb: p.httpClientSessionMemoryMb
      }
    }
  }
}

/** The raw text of every variable, read through Effect Config (the current ConfigProvider). */
const rawConfig: Config.Config<Record<string, string | undefined>> = Config.all(
  Object.fromEntries(
    Object.values(vars).flatMap((variable: Variable<unknown>) =>
      [variable.name, ...(variable.alias === undefined ? [] : [variable.alias])].map((name) => [name, Config.option(Config.String(name))])
    )
  )
).pipe(
  Config.map((record) =>
    Object.fromEntries(Object.entries(record).map(([k, o]) => [k, Option.getOrUndefined(o as Option.Option<string>)]))
  )
)

/** Reads and validates every variable from the current ConfigProvider. */
export const load: Effect.Effect<TransportSettings, TransportConfigError | Config.ConfigError> = Effect.flatMap(
  rawConfig,
  (raw: Record<string, string | undefined>) => {
    const result = fromRecord(raw)
    return result._tag === "ok" ? Effect.succeed(result.settings) : Effect.fail(result.error)
  }
)

/**
 * `DYN_LOG_FORMAT` alone, for reporting a start-up failure in the format asked for even when
 * other variables are bad: its value when valid, else "logfmt" (the full `load` reports it).
 */
export const loadLogFormat: Effect.Effect<LogFormat> = Config.option(Config.String(vars.logFormat.name)).pipe(
  Effect.map((text) => {
    const given = Option.getOrUndefined(text)
    return (given === undefined ? undefined : vars.logFormat.parser.parse(given)) ?? "logfmt"
  }),
  Effect.orElseSucceed(() => "logfmt" as const)
)

/** The validated settings as a service. */
export class TransportConfig extends Context.Service<TransportConfig, TransportSettings>()(
  "transport-registry/TransportConfig"
) {
  /** Reads the settings from the current ConfigProvider (the environment by default). */
  static readonly layer: Layer.Layer<TransportConfig, TransportConfigError | Config.ConfigError> = Layer.effect(
    TransportConfig,
    load
  )
  /** Settings from an explicit variable record, as tests and embedded programs use. */
  static readonly layerFromRecord = (
    record: Readonly<Record<string, string | undefined>>
  ): Layer.Layer<TransportConfig, TransportConfigError> => {
    const result = fromRecord(record)
    return result._tag === "ok" ? Layer.succeed(TransportConfig, result.settings) : Layer.effect(TransportConfig, Effect.fail(result.error))
  }
}

/** The defaults, validated: what a process gets with no variables set. */
export const defaults: TransportSettings = (() => {
  const result = fromRecord({})
  if (result._tag === "error") throw result.error
  return result.settings
})()

/** A ConfigProvider built from a record, for tests that exercise the Config path. */
export type { ConfigProvider }

// ---- the benchmark's child processes (issue 14, `transport-registry bench`) ----

/**
 * The environment for a child process that the benchmark configures on its own: this process's
 * environment without any DYN_*, OTEL_* or NATS_SERVER variable, plus `overrides`. A benchmark
 * row's worker gets its mode's variables and nothing the user happened to export.
 */
export const childEnvironment = (overrides: Readonly<Record<string, string>>): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !/^(DYN_|OTEL_)/.test(name) && name !== "NATS_SERVER") env[name] = value
  }
  return { ...env, ...overrides }
}
