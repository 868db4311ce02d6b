/**
 * The options of the worker's connection pool (`DYN_TCP_POOL_*`), their defaults, and the
 * resolved form the pool's modules share.
 *
 * It does not read the environment: `optionsFromSettings` takes the already parsed
 * `TransportSettings`.
 */
import { DEFAULT_CONNECTION_WINDOW, DEFAULT_STREAM_WINDOW } from "../../../../protocol/MuxHandshake.ts"
import type { TransportSettings } from "../../../../TransportConfig.ts"
import type { ClientTls } from "../../../../internal/Tls.ts"

/** Default bound on connect + handshake (section 7: 5 s). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5000
/** Default bound on waiting for a connection. */
export const DEFAULT_ACQUIRE_TIMEOUT_MS = 5000
/** Default number of streams one connection carries before the pool opens another. */
export const DEFAULT_MAX_STREAMS_PER_CONNECTION = 256
/** Default wait for the router's close after a graceful close. */
export const DEFAULT_LINGER_MS = 2000

/** Options of the pool. Durations in milliseconds. */
export interface ConnectionPoolOptions {
  /** Most connections per target (`DYN_TCP_POOL_MAX_PER_TARGET`). */
  readonly maxPerTarget: number
  /** Connections kept open per target in use, even with no stream (`DYN_TCP_POOL_MIN_IDLE`). */
  readonly minIdle: number
  /** Idle connections beyond `minIdle`, and unused targets, close after this (`DYN_TCP_POOL_IDLE_TIMEOUT_SECS`). */
  readonly idleTimeoutMs: number
  /** Connections older than this are rotated (`DYN_TCP_POOL_MAX_LIFETIME_SECS`). */
  readonly maxLifetimeMs: number
  /** TCP keepalive initial delay (`DYN_TCP_POOL_KEEPALIVE_SECS`). */
  readonly keepaliveMs: number
  /** Largest frame sent or accepted (`DYN_TCP_MAX_MESSAGE_SIZE`). */
  readonly maxMessageSize: number
  /** Bound on connect + handshake (default `DEFAULT_CONNECT_TIMEOUT_MS`). */
  readonly connectTimeoutMs?: number | undefined
  /** Bound on waiting for a connection (default `DEFAULT_ACQUIRE_TIMEOUT_MS`). */
  readonly acquireTimeoutMs?: number | undefined
  /** Streams one connection carries (default `DEFAULT_MAX_STREAMS_PER_CONNECTION`). */
  readonly maxStreamsPerConnection?: number | undefined
  /** Share of the streams capacity at which the pool grows (Effect Pool's `targetUtilization`, default 1). */
  readonly targetUtilization?: number | undefined
  /** Per-stream send window in bytes (default 256 KiB). */
  readonly streamWindow?: number | undefined
  /** Per-connection send window in bytes (default 256 KiB). */
  readonly connectionWindow?: number | undefined
  /** Wait for the router's close after a graceful close (default `DEFAULT_LINGER_MS`). */
  readonly lingerMs?: number | undefined
  /** A target with no stream for this long is evicted, with all its connections (default `idleTimeoutMs`). */
  readonly targetIdleTimeoutMs?: number | undefined
  /** How often idle and lifetime limits are checked (default: a quarter of the smaller one, 5 ms to 5 s). */
  readonly sweepIntervalMs?: number | undefined
  /** Write flushing: "tick" (default) or "immediate". */
  readonly flush?: "tick" | "immediate" | undefined
  /** TLS of the pooled dials (`DYN_TCP_TLS_CA_CERT_PATH`); plaintext when absent. */
  readonly tls?: ClientTls | undefined
  /** Record the `tcp_pool_*` metrics (`DYN_METRICS`; default true). Off, no series is made or updated. */
  readonly metrics?: boolean | undefined
}

/** The pool options that `DYN_TCP_POOL_*`, `DYN_TCP_MAX_MESSAGE_SIZE` and `DYN_TCP_CALL_HOME_TIMEOUT_SECS` (the acquisition bound) configure. */
export const optionsFromSettings = (settings: TransportSettings): ConnectionPoolOptions => ({
  maxPerTarget: settings.tcpPool.maxPerTarget,
  minIdle: settings.tcpPool.minIdle,
  idleTimeoutMs: settings.tcpPool.idleTimeoutMs,
  maxLifetimeMs: settings.tcpPool.maxLifetimeMs,
  keepaliveMs: settings.tcpPool.keepaliveMs,
  maxMessageSize: settings.tcpMaxMessageSize,
  // A stream waits for a pooled connection as long as a router waits for its call-home
  // (DYN_TCP_CALL_HOME_TIMEOUT_SECS): past that the router has given up, and before it a
  // failure here, after the ack, cannot reach the router (Dynamo's call-home has no way to).
  acquireTimeoutMs: Math.max(DEFAULT_ACQUIRE_TIMEOUT_MS, settings.tcpResponse.callHomeTimeoutMs),
  metrics: settings.metrics
})

/** Every option with its default applied (`maxStreamsPerConnection` as `maxStreams`, at least 1). */
export type ResolvedPoolOptions =
  & { readonly [K in Exclude<keyof ConnectionPoolOptions, "maxStreamsPerConnection" | "tls">]-?: Exclude<ConnectionPoolOptions[K], undefined> }
  & { readonly maxStreams: number; readonly tls: ClientTls | undefined }

/** Applies the defaults. */
export const resolveOptions = (options: ConnectionPoolOptions): ResolvedPoolOptions => {
  const targetIdleTimeoutMs = options.targetIdleTimeoutMs ?? options.idleTimeoutMs
  return {
    maxPerTarget: options.maxPerTarget,
    minIdle: options.minIdle,
    idleTimeoutMs: options.idleTimeoutMs,
    maxLifetimeMs: options.maxLifetimeMs,
    keepaliveMs: options.keepaliveMs,
    maxMessageSize: options.maxMessageSize,
    connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    acquireTimeoutMs: options.acquireTimeoutMs ?? DEFAULT_ACQUIRE_TIMEOUT_MS,
    maxStreams: Math.max(1, options.maxStreamsPerConnection ?? DEFAULT_MAX_STREAMS_PER_CONNECTION),
    targetUtilization: options.targetUtilization ?? 1,
    streamWindow: options.streamWindow ?? DEFAULT_STREAM_WINDOW,
    connectionWindow: options.connectionWindow ?? DEFAULT_CONNECTION_WINDOW,
    lingerMs: options.lingerMs ?? DEFAULT_LINGER_MS,
    targetIdleTimeoutMs,
    sweepIntervalMs: options.sweepIntervalMs ??
      Math.min(5000, Math.max(5, Math.floor(Math.min(options.idleTimeoutMs, options.maxLifetimeMs, targetIdleTimeoutMs) / 4))),
    flush: options.flush ?? "tick",
    tls: options.tls,
    metrics: options.metrics ?? true
  }
}
