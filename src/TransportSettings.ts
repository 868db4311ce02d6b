/**
 * The shape of the validated configuration: the plane and backend kinds, and `TransportSettings`,
 * every `DYN_*` variable as a typed field (durations in milliseconds, sizes in bytes).
 *
 * Types only. `TransportConfig.ts` reads and validates the variables into this shape (and
 * re-exports these types); nothing here reads anything.
 */
/** The request planes a process can serve and call on. */
export type RequestPlaneKind = "http" | "nats" | "tcp" | "memory"
/** The response planes a router can receive streams on. */
export type ResponsePlaneKind = "tcp" | "http" | "memory"
/** The discovery backends. */
export type DiscoveryBackendKind = "mem" | "file" | "etcd"
/** The HTTP response plane's stream formats. */
export type StreamFormat = "sse" | "ndjson" | "binary"
/** The tracing modes. */
export type TracingMode = "off" | "on" | "sampled"
/** The log line formats (both on stderr): logfmt for people, json for log shippers. */
export type LogFormat = "logfmt" | "json"

/** The validated configuration. Durations are in milliseconds, sizes in bytes. */
export interface TransportSettings {
  readonly requestPlane: RequestPlaneKind
  readonly responsePlane: ResponsePlaneKind
  readonly requestPlaneCodec: "json" | "msgpack"
  readonly discoveryBackend: DiscoveryBackendKind
  readonly discoveryPath: string
  readonly natsServer: string
  /** Router: how long a NATS request waits for the worker's ack, the NATS reply (`DYN_NATS_REQUEST_TIMEOUT`). */
  readonly natsRequestTimeoutMs: number
  readonly etcdEndpoints: ReadonlyArray<string>
  /** TTL of the etcd discovery backend's process lease, in whole seconds (`ETCD_LEASE_TTL`). */
  readonly etcdLeaseTtlSeconds: number
  readonly metricsPort: number
  readonly log: string
  readonly logFormat: LogFormat
  readonly tracing: TracingMode
  readonly metrics: boolean
  readonly otlpEndpoint: string | undefined
  readonly serviceName: string
  readonly tcpMaxMessageSize: number
  readonly cancelGraceMs: number
  /** Router: most instances one call is sent to, failovers included (`DYN_ROUTER_MAX_ATTEMPTS`; 1 turns failover off). */
  readonly routerMaxAttempts: number
  /** Router: how long an instance that keeps failing before its ack is skipped (`DYN_ROUTER_QUARANTINE_SECS`). */
  readonly routerQuarantineMs: number
  readonly httpRpc: {
    readonly host: string
    readonly port: number
    readonly rootPath: string
    readonly requestTimeoutMs: number
    /** Worker: how long a request's body may take to end after its headers (`DYN_HTTP_RPC_BODY_TIMEOUT_SECS`). */
    readonly bodyTimeoutMs: number
  }
  readonly httpResponse: {
    readonly host: string
    readonly port: number
    readonly rootPath: string
    readonly streamFormat: StreamFormat
    readonly timeoutMs: number
  }
  readonly tcpResponse: {
    readonly host: string
    readonly port: number
    readonly advertiseHost: string | undefined
    readonly callHomeTimeoutMs: number
  }
  readonly tcpPool: {
    readonly enabled: boolean
    readonly maxPerTarget: number
    readonly minIdle: number
    readonly idleTimeoutMs: number
    readonly maxLifetimeMs: number
    readonly keepaliveMs: number
  }
  readonly tcpRequest: {
    /** Bind address of the worker's TCP request server (`DYN_TCP_REQUEST_HOST`, alias `DYN_TCP_RPC_HOST`). */
    readonly host: string
    /** Its port (`DYN_TCP_REQUEST_PORT`, alias `DYN_TCP_RPC_PORT`); 0 picks a free one. */
    readonly port: number
    /** The host routers dial (`DYN_TCP_REQUEST_ADVERTISE_HOST`, alias `DYN_TCP_RPC_ADVERTISE_HOST`); undefined: derived. */
    readonly advertiseHost: string | undefined
    readonly maxConnections: number
    readonly heartbeatIntervalMs: number
    readonly connectionTimeoutMs: number
    /** Router: how long a request waits for its ack (`DYN_TCP_REQUEST_TIMEOUT`). */
    readonly ackTimeoutMs: number
    /** Router: bound on a connect to a worker (`DYN_TCP_CONNECT_TIMEOUT`). */
    readonly connectTimeoutMs: number
    /** Router: most connections per worker host:port (`DYN_TCP_POOL_SIZE`). */
    readonly poolSize: number
    /** Router: requests awaiting their ack per connection before another is opened (`DYN_TCP_CHANNEL_BUFFER`). */
    readonly channelBuffer: number
    /** Whether a worker advertises, and a router uses, the full TCP mode (`DYN_TCP_FULL_MODE`). */
    readonly fullMode: boolean
  }
  /** TLS on the TCP planes (`DYN_TCP_TLS_*`); off when unset. See `TcpTlsSettings`. */
  readonly tcpTls: TcpTlsSettings
  // ---- inactivity timeouts (issue 15 item 2) ----
  /**
   * Router: a response stream that receives nothing (no item, no heartbeat) for this long fails
   * with TransportTimeoutError "StreamIdle" (`DYN_STREAM_IDLE_TIMEOUT_SECS`); 0 turns it off.
   */
  readonly streamIdleTimeoutMs: number
  // ---- first-request deadline of HTTP connections (issue 15 item 4, slowloris) ----
  /**
   * Worker and router: an HTTP connection (the HTTP request server, the HTTP response server, the
   * metrics server) whose first complete request has not arrived this long after the accept is
   * closed (`DYN_HTTP_FIRST_REQUEST_TIMEOUT_SECS`).
   */
  readonly httpFirstRequestTimeoutMs: number
  // ---- connection caps (issue 15 item 7; docs/security.md) ----
  /**
   * Most connections each listener holds at once, handshaking or not; one beyond is closed at once
   * (`DYN_TCP_RESPONSE_MAX_CONNECTIONS`, `DYN_HTTP_RPC_MAX_CONNECTIONS`,
   * `DYN_HTTP_RESPONSE_MAX_CONNECTIONS`). The TCP request server's is `tcpRequest.maxConnections`.
   */
  readonly connectionCaps: {
    /** Router: the call-home server (one-shot sockets and pooled connections together). */
    readonly tcpResponse: number
    /** Worker: the HTTP request server (HTTP/1.1 and h2c together). */
    readonly httpRpc: number
    /** Worker: the seed's HTTP response server (`HttpResponseServer`). */
    readonly httpResponse: number
  }  // ---- HTTP/2 client sessions (issue 15 item 1; docs/transports.md, http request plane) ----
  /**
   * Router: how the http request client spreads its requests over HTTP/2 sessions to one worker
   * (`DYN_HTTP_CLIENT_MAX_STREAMS_PER_SESSION`, `DYN_HTTP_CLIENT_MAX_SESSIONS`,
   * `DYN_HTTP_CLIENT_SESSION_MEMORY_MB`).
   */
  readonly httpClientSessions: {
    /** Streams in flight on one session before another is opened to the same worker. */
    readonly maxStreamsPerSession: number
    /** Most sessions per worker; beyond, the least loaded takes the request. */
    readonly maxSessionsPerOrigin: number
    /** Each session's memory cap, in MB (Node's `maxSessionMemory`). */
    readonly maxSessionMemoryMb: number
  }
}


/**
 * TLS on the TCP planes (call-home, the TCP request server, both framings, and their dialers), as
 * Dynamo configures it. Server role: every TCP listener speaks TLS when `certPath` and `keyPath`
 * are set, presenting that certificate (no client certificate is asked for). Client role: every
 * TCP dialer speaks TLS when `caCertPath` is set, and verifies the server against that CA and the
 * dialled host (or `serverName`). Paths are checked at start-up: readable, PEM, key matching cert.
 */
export interface TcpTlsSettings {
  /** PEM certificate (chain) the TCP listeners present (`DYN_TCP_TLS_CERT_PATH`). */
  readonly certPath: string | undefined
  /** PEM private key of that certificate (`DYN_TCP_TLS_KEY_PATH`). */
  readonly keyPath: string | undefined
  /** PEM CA(s) the TCP dialers verify servers against (`DYN_TCP_TLS_CA_CERT_PATH`); set, dialers speak TLS. */
  readonly caCertPath: string | undefined
  /** Name verified in the server's certificate, instead of the dialled host (`DYN_TCP_TLS_SERVER_NAME`). */
  readonly serverName: string | undefined
  /** A listener drops a connection whose TLS handshake is not done within this (`DYN_TCP_TLS_HANDSHAKE_TIMEOUT_SECS`). */
  readonly handshakeTimeoutMs: number
}
