/**
 * The NATS request plane (`DYN_REQUEST_PLANE=nats`, Dynamo's legacy mode) as a registry entry: the
 * worker's `NatsRequestServer` and the router's `NatsRequestClient` over one shared, scoped
 * `NatsConnection` to `NATS_SERVER`, registered in the `TransportRegistry` as transport "nats" on
 * the request plane.
 *
 * What it does: `make` builds the three from the settings (`NATS_SERVER`,
 * `DYN_NATS_REQUEST_TIMEOUT`, `DYN_TCP_MAX_MESSAGE_SIZE`); `layer` registers client and server for
 * the layer's life. The connection is opened on first use (the first `register` or send), not when
 * the layer is built, and closed with the layer.
 *
 * What it does not do: carry responses (the response plane: TCP call-home, pooled or not), or pick
 * itself (the registry selects; priority 10, like the HTTP and TCP request planes).
 */
import { Effect, Layer } from "effect"
import type { Scope } from "effect"
import type { RequestPlaneServer } from "../../RequestPlane.ts"
import type { TransportCapabilities, TransportRegistration } from "../../Transport.ts"
import { TransportConfig } from "../../TransportConfig.ts"
import type { TransportSettings } from "../../TransportConfig.ts"
import { TransportRegistry } from "../../TransportRegistry.ts"
import * as NatsConnection from "./NatsConnection.ts"
import * as NatsRequestClient from "./NatsRequestClient.ts"
import * as NatsRequestServer from "./NatsRequestServer.ts"

/** The default registration priority of the NATS request plane. */
export const DEFAULT_PRIORITY = 10

/**
 * The NATS request plane's capabilities. `max_message_size` is `DYN_TCP_MAX_MESSAGE_SIZE`; the
 * client also refuses what exceeds nats-server's own `max_payload` (1 MiB by default), known once
 * connected.
 */
export const capabilities = (maxMessageSize: number): TransportCapabilities => ({
  streaming: false,
  persistent_connections: true,
  bidirectional: false,
  max_message_size: maxMessageSize
})

/** The three parts of the NATS request plane and its registration. */
export interface NatsRequestTransport {
  readonly registration: TransportRegistration
  readonly connection: NatsConnection.NatsConnectionHandle
  readonly client: NatsRequestClient.NatsRequestClient
  readonly server: RequestPlaneServer
}

/** Options of `make`, beyond the settings. */
export interface NatsRequestTransportOptions {
  /** Registration priority (default `DEFAULT_PRIORITY`). */
  readonly priority?: number | undefined
  /** Wait between reconnect attempts, in ms (default `NatsConnection.DEFAULT_RECONNECT_WAIT_MS`). */
  readonly reconnectWaitMs?: number | undefined
}

/** Builds connection, client and server from `settings`, without a registry. */
export const make = (
  settings: TransportSettings,
  options: NatsRequestTransportOptions = {}
): Effect.Effect<NatsRequestTransport, never, Scope.Scope> =>
  Effect.gen(function*() {
    const connection = yield* NatsConnection.make({
      servers: settings.natsServer,
      connectTimeoutMs: settings.natsRequestTimeoutMs,
      reconnectWaitMs: options.reconnectWaitMs
    })
    const client = yield* NatsRequestClient.make({
      connection,
      timeoutMs: settings.natsRequestTimeoutMs,
      maxMessageSize: settings.tcpMaxMessageSize
    })
    const server = yield* NatsRequestServer.make({
      connection,
      maxMessageSize: settings.tcpMaxMessageSize,
      flushTimeoutMs: settings.natsRequestTimeoutMs
    })
    return {
      registration: {
        transport_id: "nats",
        plane_type: "request",
        capabilities: capabilities(settings.tcpMaxMessageSize),
        priority: options.priority ?? DEFAULT_PRIORITY
      },
      connection,
      client,
      server
    }
  })

/** Registers the NATS request plane, built from `TransportConfig`, for the layer's life. */
export const layer: Layer.Layer<never, never, TransportRegistry | TransportConfig> = Layer.effectDiscard(
  Effect.gen(function*() {
    const registry = yield* TransportRegistry
    const config = yield* TransportConfig
    const transport = yield* make(config)
    yield* registry.registerRequest({ registration: transport.registration, client: transport.client, server: transport.server })
  })
)
