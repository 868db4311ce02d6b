/**
 * The full TCP mode ("tcp_mux" v1; docs/protocol.md, "The full TCP mode") as a service: the
 * worker's `FullModeAcceptor` and the router's `FullModeSender`, which the TCP request plane
 * (`../request/TcpRequestTransport.ts`) plugs into its server and client.
 *
 * What it does: `make` builds both sides over the process's `FullModeHub` (shared with the TCP
 * response plane: the router's response streams, the worker's response writers), with the
 * settings of `optionsFromSettings` (`DYN_TCP_REQUEST_HEARTBEAT_INTERVAL_SECS`,
 * `DYN_TCP_CONNECT_TIMEOUT`, `DYN_TCP_REQUEST_TIMEOUT`, `DYN_TCP_CHANNEL_BUFFER`,
 * `DYN_TCP_POOL_SIZE`, `DYN_TCP_REQUEST_CONNECTION_TIMEOUT_SECS`, `DYN_TCP_MAX_MESSAGE_SIZE`).
 * Item pumps of streamed requests run in the context `make` ran in. When the scope closes, the router's connections close (their streams
 * fail "ConnectionClosed") and the worker's connections are told why and closed. `layer` builds
 * it from `TransportConfig`, providing `FullModeHub.layer` to itself.
 *
 * What it does not do: listen or register anything (the TCP request plane does), or decide which
 * targets speak it (`speaksFullMode`, from the instance record).
 */
import { Context, Effect, Layer } from "effect"
import type { Scope } from "effect"
import { DEFAULT_CONNECTION_WINDOW, DEFAULT_STREAM_WINDOW } from "../../../protocol/MuxHandshake.ts"
import { TransportConfig } from "../../../TransportConfig.ts"
import type { TransportSettings } from "../../../TransportConfig.ts"
import { makeDebugLog } from "../../../internal/debugLog.ts"
import { tcpTlsOf } from "../../../internal/Tls.ts"
import type { ClientTls } from "../../../internal/Tls.ts"
import type { FullModeAcceptor, FullModeSender } from "../request/FullModeHooks.ts"
import { DEFAULT_LINGER_MS } from "../worker/pool/PoolOptions.ts"
import { makeAcceptor } from "./Acceptor.ts"
import type { Acceptor } from "./Acceptor.ts"
import * as FullModeHub from "./FullModeHub.ts"
import { makeSender } from "./Sender.ts"
import type { Sender } from "./Sender.ts"

/** The full mode's two sides, as the TCP request plane plugs them in. */
export interface TcpFullModeShape {
  readonly acceptor: FullModeAcceptor
  readonly sender: FullModeSender
}

/** The process's full TCP mode. */
export class TcpFullMode extends Context.Service<TcpFullMode, TcpFullModeShape>()("transport-registry/TcpFullMode") {}

/** Settings of the full mode. */
export interface FullModeOptions {
  /** Largest frame sent or accepted, header included (`DYN_TCP_MAX_MESSAGE_SIZE`). */
  readonly maxMessageSize: number
  /** Ping interval; a peer silent for two is dead (`DYN_TCP_REQUEST_HEARTBEAT_INTERVAL_SECS`). */
  readonly heartbeatIntervalMs: number
  /** Router: bound on connect + hello answer (`DYN_TCP_CONNECT_TIMEOUT`). */
  readonly connectTimeoutMs: number
  /** Router: bound on a request's wait for its ack (`DYN_TCP_REQUEST_TIMEOUT`). */
  readonly ackTimeoutMs: number
  /** Router: streams per connection before another is dialled (`DYN_TCP_CHANNEL_BUFFER`). */
  readonly maxStreamsPerConnection: number
  /** Router: connections per worker host:port (`DYN_TCP_POOL_SIZE`). */
  readonly maxConnectionsPerTarget: number
  /** Worker: drop a router silent this long, when shorter than two heartbeat intervals (`DYN_TCP_REQUEST_CONNECTION_TIMEOUT_SECS`). */
  readonly idleTimeoutMs?: number | undefined
  /** Worker: how long the rest of a hello may take (default 10 s). */
  readonly helloTimeoutMs?: number | undefined
  /** Per-stream credit, both directions (default 256 KiB). */
  readonly streamWindow?: number | undefined
  /** Per-connection window, both directions (default 256 KiB). */
  readonly connectionWindow?: number | undefined
  /** Worker: how long a graceful close waits for the router's close (default 2 s). */
  readonly lingerMs?: number | undefined
  /** Router: TLS of its dials (`DYN_TCP_TLS_CA_CERT_PATH`); the worker's TLS is its TCP request server's. */
  readonly tls?: ClientTls | undefined
}

/** The full mode built by `make`: the service's shape plus both sides' handles (tests, drills). */
export interface FullMode extends TcpFullModeShape {
  readonly acceptor: Acceptor
  readonly sender: Sender
}

/** Default bound on the rest of a hello. */
export const DEFAULT_HELLO_TIMEOUT_MS = 10_000

/** The full mode's options from the settings. */
export const optionsFromSettings = (settings: TransportSettings): FullModeOptions => ({
  maxMessageSize: settings.tcpMaxMessageSize,
  heartbeatIntervalMs: settings.tcpRequest.heartbeatIntervalMs,
  connectTimeoutMs: settings.tcpRequest.connectTimeoutMs,
  ackTimeoutMs: settings.tcpRequest.ackTimeoutMs,
  maxStreamsPerConnection: settings.tcpRequest.channelBuffer,
  maxConnectionsPerTarget: settings.tcpRequest.poolSize,
  idleTimeoutMs: settings.tcpRequest.connectionTimeoutMs,
  tls: tcpTlsOf(settings.tcpTls).client
})

/** Builds both sides over `hub`; see the module comment. */
export const make = (options: FullModeOptions, hub: FullModeHub.FullModeHubShape): Effect.Effect<FullMode, never, Scope.Scope> =>
  Effect.gen(function*() {
    const context = yield* Effect.context<never>()
    const runFork = Effect.runForkWith(context)
    const log = yield* makeDebugLog("transport.tcp.full")
    const streamWindow = options.streamWindow ?? DEFAULT_STREAM_WINDOW
    const connectionWindow = options.connectionWindow ?? DEFAULT_CONNECTION_WINDOW
    const sender = makeSender({
      maxMessageSize: options.maxMessageSize,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      connectTimeoutMs: options.connectTimeoutMs,
      ackTimeoutMs: options.ackTimeoutMs,
      maxStreamsPerConnection: options.maxStreamsPerConnection,
      maxConnectionsPerTarget: options.maxConnectionsPerTarget,
      streamWindow,
      connectionWindow,
      streams: hub.streams,
      run: (effect) => runFork(effect),
      logDebug: log.now,
      tls: options.tls
    })
    const acceptor = makeAcceptor({
      maxMessageSize: options.maxMessageSize,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      idleTimeoutMs: options.idleTimeoutMs,
      helloTimeoutMs: options.helloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS,
      streamWindow,
      connectionWindow,
      lingerMs: options.lingerMs ?? DEFAULT_LINGER_MS,
      writers: hub.writers,
      logDebug: log.now
    })
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        sender.closeAll()
        acceptor.shutdown("the worker is shutting down")
      })
    )
    return { acceptor, sender }
  })

/** The full mode from `TransportConfig`, over the build's `FullModeHub` (shared with the TCP response plane). */
export const layer: Layer.Layer<TcpFullMode, never, TransportConfig> = Layer.effect(
  TcpFullMode,
  Effect.gen(function*() {
    const config = yield* TransportConfig
    const hub = yield* FullModeHub.FullModeHub
    return yield* make(optionsFromSettings(config), hub)
  })
).pipe(Layer.provide(FullModeHub.layer))
