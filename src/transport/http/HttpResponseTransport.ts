/**
 * The `http` response plane of the pure HTTP mode (`DYN_RESPONSE_PLANE=http`, with the http
 * request plane): the response streams back in the body of the request's own HTTP response,
 * as SSE, NDJSON or binary frames (`DYN_HTTP_RESPONSE_STREAM_FORMAT`).
 *
 * - Router (`server.open`): a pending stream whose ConnectionInfo is
 *   `{ transport: "http_inline", info: {"format": …} }`, kept in the `HttpInlineHub` by request id
 *   until the http request-plane client attaches the HTTP/2 response to it (`InlineStream.ts`).
 * - Worker (`client.connect`, for `http_inline`): takes the exchange the http request-plane server
 *   kept for the request id and writes the stream into it (`InlineWriter.ts`).
 *
 * - Router, `DYN_STREAM_IDLE_TIMEOUT_SECS`: one `InlineIdle` sweep per server fails a stream that
 *   receives nothing, no chunk and no HTTP/2 PING answer on its session, for that long.
 *
 * It does not listen on a port of its own, and works only with the http request plane, which
 * carries the stream. Both layers provide `HttpInlineHub.layer` to themselves, so one build
 * shares one hub.
 */
import { Effect, Layer } from "effect"
import type { StreamFormat } from "../../protocol/HttpStreamFormat.ts"
import type { ConnectOptions, ResponsePlaneClient, ResponsePlaneServer, ResponseWriter } from "../../ResponsePlane.ts"
import type { TransportCapabilities, TransportRegistration } from "../../Transport.ts"
import { TransportConfig } from "../../TransportConfig.ts"
import { TransportConnectionError } from "../../TransportError.ts"
import { TransportRegistry } from "../../TransportRegistry.ts"
import * as HttpInlineHub from "./HttpInlineHub.ts"
import { makeInlineStream } from "./InlineStream.ts"
import { makeInlineWriter } from "./InlineWriter.ts"
import { InlineIdle } from "./InlineIdle.ts"
import { connectFromNow } from "../../internal/connectFromNow.ts"

/** The http response plane's capabilities: streaming on the request's persistent HTTP/2 session. */
export const capabilities = (maxMessageSize: number): TransportCapabilities => ({
  streaming: true,
  persistent_connections: true,
  bidirectional: false,
  max_message_size: maxMessageSize
})

/** Settings of `make`. */
export interface HttpResponseTransportOptions {
  readonly format: StreamFormat
  readonly maxMessageSize: number
  /** SSE heartbeat period while idle (default 15 s). */
  readonly heartbeatMs?: number | undefined
  /**
   * Router: a stream that receives nothing (no chunk, no PING answer on its session) for this long
   * fails with TransportTimeoutError "StreamIdle" (`DYN_STREAM_IDLE_TIMEOUT_SECS`); 0 or absent: off.
   * Worker: a stream held back by a reader that takes nothing for this long is reset, and its
   * handler interrupted (`InlineWriter`'s `stallTimeoutMs`).
   */
  readonly idleTimeoutMs?: number | undefined
  readonly priority?: number | undefined
}

/** Both sides and the registration, over `hub`. */
export const make = (hub: HttpInlineHub.HttpInlineHubShape, options: HttpResponseTransportOptions): {
  readonly registration: TransportRegistration
  readonly client: ResponsePlaneClient
  readonly server: ResponsePlaneServer
} => {
  const idle = options.idleTimeoutMs !== undefined && options.idleTimeoutMs > 0 ? new InlineIdle(options.idleTimeoutMs) : undefined
  const server: ResponsePlaneServer = {
    transport: "http",
    open: (open) =>
      Effect.sync(() => {
        const stream = makeInlineStream({
          requestId: open.requestId,
          endpoint: open.endpoint,
          format: options.format,
          sink: open.sink,
          maxMessageSize: options.maxMessageSize,
          idle,
          onClose: () => {
            if (hub.pending.get(open.requestId) === stream) hub.pending.delete(open.requestId)
          }
        })
        hub.pending.set(open.requestId, stream)
        return stream
      })
  }
  // The exchange is kept in the hub by the http request plane: taking it never waits.
  const connectNow = ({ connectionInfo, requestId }: ConnectOptions): ResponseWriter | TransportConnectionError => {
    const exchange = hub.exchanges.get(requestId)
    if (exchange === undefined || connectionInfo.transport !== HttpInlineHub.HTTP_INLINE) {
      return new TransportConnectionError({
        reason: "ConnectFailed",
        transport: "http",
        target: requestId,
        detail: "no HTTP exchange is kept for this request (it did not arrive on this worker's http request plane, or its client left)"
      })
    }
    hub.exchanges.delete(requestId)
    return makeInlineWriter(exchange, {
      maxMessageSize: options.maxMessageSize,
      heartbeatMs: options.heartbeatMs,
      stallTimeoutMs: options.idleTimeoutMs
    })
  }
  const client: ResponsePlaneClient = {
    transport: "http",
    connectionTransports: [HttpInlineHub.HTTP_INLINE],
    connect: connectFromNow(connectNow),
    connectNow
  }
  return {
    registration: {
      transport_id: "http",
      plane_type: "response",
      capabilities: capabilities(options.maxMessageSize),
      priority: options.priority ?? 10
    },
    client,
    server
  }
}

/** Registers the http response plane, configured from `TransportConfig`, for the layer's life. */
export const layerWith = (
  options: Partial<Omit<HttpResponseTransportOptions, "format" | "maxMessageSize">> = {}
): Layer.Layer<never, never, TransportRegistry | TransportConfig> =>
  Layer.effectDiscard(
    Effect.gen(function*() {
      const registry = yield* TransportRegistry
      const config = yield* TransportConfig
      const hub = yield* HttpInlineHub.HttpInlineHub
      yield* registry.registerResponse(
        make(hub, {
          idleTimeoutMs: config.streamIdleTimeoutMs,
          ...options,
          format: config.httpResponse.streamFormat,
          maxMessageSize: config.tcpMaxMessageSize
        })
      )
    })
  ).pipe(Layer.provide(HttpInlineHub.layer))

/** Registers the http response plane with the default options. */
export const layer: Layer.Layer<never, never, TransportRegistry | TransportConfig> = layerWith()
