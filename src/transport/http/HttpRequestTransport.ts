/**
 * The HTTP/2 request plane as a layer: the client and the server, registered in the
 * `TransportRegistry` as transport "http" on the request plane, configured from
 * `DYN_HTTP_RPC_*`, `DYN_HTTP_REQUEST_TIMEOUT` and `DYN_TCP_MAX_MESSAGE_SIZE`.
 *
 * With `DYN_RESPONSE_PLANE=http` (the pure HTTP mode) the server keeps `http_inline` exchanges
 * for the http response plane and advertises the seed's unified form, both sides "http"; client
 * and server share the process's `HttpInlineHub` with `HttpResponseTransport`.
 */
import { Effect, Layer } from "effect"
import type { TransportCapabilities } from "../../Transport.ts"
import { TransportConfig } from "../../TransportConfig.ts"
import type { TransportSettings } from "../../TransportConfig.ts"
import { TransportRegistry } from "../../TransportRegistry.ts"
import * as HttpInlineHub from "./HttpInlineHub.ts"
import * as HttpRequestClient from "./HttpRequestClient.ts"
import * as HttpRequestServer from "./HttpRequestServer.ts"
import * as HttpResponseTransport from "./HttpResponseTransport.ts"

/** The HTTP request plane's capabilities for a given size limit. */
export const capabilities = (maxMessageSize: number): TransportCapabilities => ({
  streaming: false,
  persistent_connections: true,
  bidirectional: false,
  max_message_size: maxMessageSize
})

/**
 * The router's HTTP request client from `config` (DYN_HTTP_REQUEST_TIMEOUT, the session set of
 * DYN_HTTP_CLIENT_*) over the process's inline `hub`; `inlineStreams`: it carries pure-HTTP-mode
 * responses, which get a 32 MB session window. Used by this layer and by a router's call-only
 * registration (`registry/layerConfig.ts`).
 */
export const makeClient = (config: TransportSettings, hub: HttpInlineHub.HttpInlineHubShape, inlineStreams: boolean) =>
  HttpRequestClient.make({
    timeoutMs: config.httpRpc.requestTimeoutMs,
    maxMessageSize: config.tcpMaxMessageSize,
    inline: hub,
    ...(inlineStreams ? { sessionWindowSize: 32 * 1024 * 1024 } : {}),
    ...config.httpClientSessions
  })

/** Registers the HTTP request plane for the layer's life. */
export const layer: Layer.Layer<never, never, TransportRegistry | TransportConfig> = Layer.effectDiscard(
  Effect.gen(function*() {
    const registry = yield* TransportRegistry
    const config = yield* TransportConfig
    const hub = yield* HttpInlineHub.HttpInlineHub
    const pureHttp = config.responsePlane === "http"
    const client = yield* makeClient(config, hub, pureHttp)
    const format = config.httpResponse.streamFormat
    const server = yield* HttpRequestServer.make({
      host: config.httpRpc.host,
      port: config.httpRpc.port,
      rootPath: config.httpRpc.rootPath,
      maxMessageSize: config.tcpMaxMessageSize,
      maxConnections: config.connectionCaps.httpRpc,
      firstRequestTimeoutMs: config.httpFirstRequestTimeoutMs,
      bodyTimeoutMs: config.httpRpc.bodyTimeoutMs,
      ...(pureHttp
        ? {
          inline: { hub, fallbackFormat: format },
          advertise: (url: string) => ({
            unified: {
              request_transport: { transport_id: "http", address: url, capabilities: capabilities(config.tcpMaxMessageSize), metadata: {} },
              response_transport: {
                transport_id: "http",
                address: url,
                capabilities: HttpResponseTransport.capabilities(config.tcpMaxMessageSize),
                metadata: { connection_transport: HttpInlineHub.HTTP_INLINE, format }
              }
            }
          })
        }
        : {})
    })
    yield* registry.registerRequest({
      registration: {
        transport_id: "http",
        plane_type: "request",
        capabilities: capabilities(config.tcpMaxMessageSize),
        priority: 10
      },
      client,
      server
    })
  })
).pipe(Layer.provide(HttpInlineHub.layer))
