/**
 * The TCP request plane (docs/transports.md, "tcp") as a registry entry: the worker's
 * `TcpRequestServer` (Dynamo's framing and, when given, the full mode on one port) and the router's
 * client, registered in the `TransportRegistry` as transport "tcp" on the request plane.
 *
 * What it does: `make` builds both sides from the settings (`DYN_TCP_REQUEST_*`, `DYN_TCP_RPC_*`,
 * `DYN_TCP_*`, `DYN_TCP_FULL_MODE`) and an optional full mode; `layer` registers them for the
 * layer's life. The client sends a request through the full mode's `FullModeSender` when the full
 * mode is present and enabled (`DYN_TCP_FULL_MODE`) and the target's instance record advertised it
 * (`speaksFullMode`), else with Dynamo's framing (`DynamoRequestClient`), whose responses come back
 * on the response plane. The registration says `bidirectional` (and `streaming`: requests can be
 * streams) only with a full mode.
 *
 * What it does not do: implement the full mode (`../full/`), or pick itself (the registry selects;
 * priority 10, like the HTTP request plane).
 */
import { Effect, Layer } from "effect"
import type { Scope } from "effect"
import type { RequestPlaneClient } from "../../../RequestPlane.ts"
import type { TransportCapabilities, TransportRegistration } from "../../../Transport.ts"
import { TransportConfig } from "../../../TransportConfig.ts"
import type { TransportSettings } from "../../../TransportConfig.ts"
import type { EndpointNotFound, TransportError } from "../../../TransportError.ts"
import * as FullMode from "../full/FullMode.ts"
import { TcpFullMode } from "../full/FullMode.ts"
import { TransportRegistry } from "../../../TransportRegistry.ts"
import * as DynamoRequestClient from "./DynamoRequestClient.ts"
import { speaksFullMode } from "./FullModeHooks.ts"
import type { FullModeAcceptor, FullModeSender } from "./FullModeHooks.ts"
import * as TcpRequestServer from "./TcpRequestServer.ts"
import { sendFromCallback } from "../../../internal/sendFromCallback.ts"
import { tcpTlsOf } from "../../../internal/Tls.ts"


/**
 * The router's Dynamo-framed request client from `settings` (DYN_TCP_REQUEST_*, DYN_TCP_RPC_*,
 * TLS's client role): the client this layer uses, and the one a router registers call-only to
 * reach tcp workers when its own request plane is another (`registry/layerConfig.ts`).
 */
export const makeDynamoClient = (settings: TransportSettings) => {
  const t = settings.tcpRequest
  return DynamoRequestClient.make({
    ackTimeoutMs: t.ackTimeoutMs,
    connectTimeoutMs: t.connectTimeoutMs,
    poolSize: t.poolSize,
    channelBuffer: t.channelBuffer,
    maxMessageSize: settings.tcpMaxMessageSize,
    tls: tcpTlsOf(settings.tcpTls).client
  })
}
/** The default registration priority of the TCP request plane. */
export const DEFAULT_PRIORITY = 10

/** The full mode's two sides, as the TCP request plane plugs them in (`TcpFullMode`'s shape). */
export interface TcpFullModeParts {
  readonly acceptor: FullModeAcceptor
  readonly sender: FullModeSender
}

/** The TCP request plane's capabilities: bidirectional (and streamed requests) only with the full mode. */
export const capabilities = (maxMessageSize: number, fullMode: boolean): TransportCapabilities => ({
  streaming: fullMode,
  persistent_connections: true,
  bidirectional: fullMode,
  max_message_size: maxMessageSize
})

/** Both sides of the TCP request plane and its registration. */
export interface TcpRequestTransport {
  readonly registration: TransportRegistration
  readonly client: RequestPlaneClient
  readonly server: TcpRequestServer.TcpRequestServer
  /** The Dynamo-framed client, also used when the full mode is not. */
  readonly dynamo: DynamoRequestClient.DynamoRequestClient
}

/** Options of `make`, beyond the settings. */
export interface TcpRequestTransportOptions {
  /** Registration priority (default `DEFAULT_PRIORITY`). */
  readonly priority?: number | undefined
}

/**
 * Builds both sides from `settings` (tcpRequest.*, tcpMaxMessageSize) and `fullMode` (undefined:
 * Dynamo's framing only; a full-mode hello is refused), without a registry.
 */
export const make = (
  settings: TransportSettings,
  fullMode: TcpFullModeParts | undefined,
  options: TcpRequestTransportOptions = {}
): Effect.Effect<TcpRequestTransport, never, Scope.Scope> =>
  Effect.gen(function*() {
    const t = settings.tcpRequest
    const useFullMode = fullMode !== undefined && t.fullMode
    const tls = tcpTlsOf(settings.tcpTls)
    const server = yield* TcpRequestServer.make({
      tls: tls.server,
      host: t.host,
      port: t.port,
      advertiseHost: t.advertiseHost,
      maxMessageSize: settings.tcpMaxMessageSize,
      maxConnections: t.maxConnections,
      connectionTimeoutMs: t.connectionTimeoutMs,
      fullMode: fullMode?.acceptor,
      advertiseFullMode: t.fullMode
    })
    const dynamo = yield* makeDynamoClient(settings)
    let client: RequestPlaneClient = dynamo
    if (useFullMode) {
      const full = fullMode.sender
      const sendCallback = (
        target: Parameters<typeof dynamo.sendCallback>[0],
        message: Parameters<typeof dynamo.sendCallback>[1],
        onAck: (error: TransportError | EndpointNotFound | undefined) => void
      ) => (speaksFullMode(target) ? full.sendCallback(target, message, onAck) : dynamo.sendCallback(target, message, onAck))
      client = {
        transport: "tcp",
        sendCallback,
        send: sendFromCallback(sendCallback),
        // The full mode's responses come back on the request's connection (Sender reads
        // `responseStream`): streams of the tcp response plane only (they live in FullModeHub).
        carriesResponses: (target, response) => response === "tcp" && speaksFullMode(target)
      }
    }
    return {
      registration: {
        transport_id: "tcp",
        plane_type: "request",
        capabilities: capabilities(settings.tcpMaxMessageSize, useFullMode),
        priority: options.priority ?? DEFAULT_PRIORITY
      },
      client,
      server,
      dynamo
    }
  })

/**
 * Registers the TCP request plane, built from `TransportConfig`, for the layer's life, with the
 * full mode (`../full/FullMode.ts`), which shares its per-process hub with the tcp response plane's
 * layer (both provide `FullModeHub.layer`, so one build holds one hub).
 */
export const layer: Layer.Layer<never, never, TransportRegistry | TransportConfig> = Layer.effectDiscard(
  Effect.gen(function*() {
    const registry = yield* TransportRegistry
    const config = yield* TransportConfig
    const fullMode: TcpFullModeParts = yield* TcpFullMode
    const transport = yield* make(config, fullMode)
    yield* registry.registerRequest({ registration: transport.registration, client: transport.client, server: transport.server })
  })
).pipe(Layer.provide(FullMode.layer))
