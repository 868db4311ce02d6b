/**
 * The TCP call-home response transport (docs/protocol.md sections 4 and 6) as a registry entry:
 * the router's call-home server (`router/CallHomeServer.ts`) and the worker's client, built from
 * `TransportConfig` and registered in the `TransportRegistry` as transport "tcp" on the response
 * plane.
 *
 * What it does: `make` builds both sides from settings (scoped: the listener, the worker's
 * connection pool and every socket close with the scope); `layer` / `layerWith` register them for
 * the layer's life. `DYN_TCP_POOL_ENABLED=true` switches the router's server to handing out
 * pooled, multiplexed call-home info (response mux v1), and `DYN_TCP_POOL_KEEPALIVE_SECS` sets the
 * TCP keepalive of the pooled connections on both ends; the worker's client understands both
 * kinds whatever the flag says, and serves mux streams from its connection pool (`worker/pool/`)
 * (configured by `DYN_TCP_POOL_*`).
 *
 * The full TCP mode (`full/`) shares the process's `FullModeHub` with it: the router's server
 * keeps its streams in the hub's table (the full mode's connections feed them), and the worker's
 * client first looks for the request id among the hub's full-mode writers: a request that came
 * in on a full-mode connection streams its response back on that connection, without a dial.
 *
 * What it does not do: the request plane, or pick itself: selection is the registry's job
 * (priority 10 by default, above the in-memory transport's 0).
 */
import { Effect, Layer } from "effect"
import type { Scope } from "effect"
import type { ConnectOptions, ResponseWriter } from "../../ResponsePlane.ts"
import type { TransportError } from "../../TransportError.ts"
import type { TransportCapabilities, TransportRegistration } from "../../Transport.ts"
import { TransportConfig } from "../../TransportConfig.ts"
import type { TransportSettings } from "../../TransportConfig.ts"
import { TransportRegistry } from "../../TransportRegistry.ts"
import * as ConnectionPool from "./worker/pool/ConnectionPool.ts"
import * as CallHomeClient from "./worker/CallHomeClient.ts"
import * as CallHomeServer from "./router/CallHomeServer.ts"
import * as FullModeHub from "./full/FullModeHub.ts"
import { tcpTlsOf } from "../../internal/Tls.ts"

/** The default registration priority of the TCP response transport. */
export const DEFAULT_PRIORITY = 10

/**
 * The capabilities of the call-home plane: streaming, one way; one connection per stream, or
 * persistent pooled connections when `pooled`.
 */
export const capabilities = (maxMessageSize: number, pooled = false): TransportCapabilities => ({
  streaming: true,
  persistent_connections: pooled,
  bidirectional: false,
  max_message_size: maxMessageSize
})

/** Both sides of the TCP response transport and its registration. */
export interface TcpResponseTransport {
  readonly registration: TransportRegistration
  readonly client: CallHomeClient.CallHomeClient
  readonly server: CallHomeServer.CallHomeServer
}

/** Options of `make` and `layerWith`, beyond the settings. */
export interface TcpResponseTransportOptions {
  /** Registration priority (default `DEFAULT_PRIORITY`). */
  readonly priority?: number | undefined
  /** Client options that the settings do not cover (connect timeout, flush strategy, pool extras such as small test durations). */
  readonly client?: Omit<CallHomeClient.CallHomeClientOptions, "maxMessageSize"> | undefined
  /** Server options that the settings do not cover (sentinel and handshake timeouts). */
  readonly server?: Pick<CallHomeServer.CallHomeServerOptions, "sentinelTimeoutMs" | "handshakeTimeoutMs" | "frontendServerId"> | undefined
}

/**
 * `client`, but a request that arrived on a full-mode connection gets the writer the full mode
 * opened for it on that connection (taken from `hub` by request id) instead of a call-home.
 */
export const withFullModeWriters = (client: CallHomeClient.CallHomeClient, hub: FullModeHub.FullModeHubShape): CallHomeClient.CallHomeClient => {
  /** The full mode's writer of the request, taken from the hub, or undefined (a call-home). */
  const take = (options: ConnectOptions): ResponseWriter | undefined => {
    const writer = hub.writers.get(options.requestId)
    if (writer !== undefined) hub.writers.delete(options.requestId)
    return writer
  }
  const connect = (options: ConnectOptions): Effect.Effect<ResponseWriter, TransportError> => {
    const writer = take(options)
    return writer === undefined ? client.connect(options) : Effect.succeed(writer)
  }
  const connectNow = (options: ConnectOptions): ResponseWriter | TransportError | undefined =>
    take(options) ?? client.connectNow?.(options)
  return { ...client, connect, connectNow }
}

/**
 * Builds client and server from `settings` (tcpResponse.*, tcpMaxMessageSize) without a registry,
 * over the full mode's `hub` (default: tables of its own).
 */
export const make = (
  settings: TransportSettings,
  options: TcpResponseTransportOptions = {},
  hub: FullModeHub.FullModeHubShape = FullModeHub.makeHub()
): Effect.Effect<TcpResponseTransport, never, Scope.Scope> =>
  Effect.gen(function*() {
    const tls = tcpTlsOf(settings.tcpTls)
    const server = yield* CallHomeServer.make({
      tls: tls.server,
      streams: hub.streams,
      host: settings.tcpResponse.host,
      port: settings.tcpResponse.port,
      advertiseHost: settings.tcpResponse.advertiseHost,
      callHomeTimeoutMs: settings.tcpResponse.callHomeTimeoutMs,
      maxMessageSize: settings.tcpMaxMessageSize,
      mux: settings.tcpPool.enabled,
      muxKeepaliveMs: settings.tcpPool.keepaliveMs,
      idleTimeoutMs: settings.streamIdleTimeoutMs,
      maxConnections: settings.connectionCaps.tcpResponse,
      ...options.server
    })
    const { maxMessageSize: _, ...pool } = ConnectionPool.optionsFromSettings(settings)
    const callHome = yield* CallHomeClient.make({
      tls: tls.client,
      ...options.client,
      maxMessageSize: settings.tcpMaxMessageSize,
      pool: { ...pool, ...options.client?.pool }
    })
    const client = withFullModeWriters(callHome, hub)
    return {
      registration: {
        transport_id: "tcp",
        plane_type: "response",
        capabilities: capabilities(settings.tcpMaxMessageSize, settings.tcpPool.enabled),
        priority: options.priority ?? DEFAULT_PRIORITY
      },
      client,
      server
    }
  })

/**
 * Registers the TCP response transport, built from `TransportConfig`, for the layer's life, over
 * the build's `FullModeHub` (shared with the full TCP mode).
 */
export const layerWith = (options: TcpResponseTransportOptions = {}): Layer.Layer<never, never, TransportRegistry | TransportConfig> =>
  Layer.effectDiscard(
    Effect.gen(function*() {
      const registry = yield* TransportRegistry
      const config = yield* TransportConfig
      const hub = yield* FullModeHub.FullModeHub
      const transport = yield* make(config, options, hub)
      yield* registry.registerResponse(transport)
    })
  ).pipe(Layer.provide(FullModeHub.layer))

/** Registers the TCP response transport with the default options. */
export const layer: Layer.Layer<never, never, TransportRegistry | TransportConfig> = layerWith()
