/**
 * The registry composed from configuration: the transports that `DYN_REQUEST_PLANE` and
 * `DYN_RESPONSE_PLANE` name, registered in a fresh `TransportRegistry`, plus the router's side
 * of every other wire transport (`callOnlyLayer`), so that one router calls instances of every
 * mode at once (mixed deployments, docs/transports.md).
 *
 * The only module that imports every transport. It does not select transports per request;
 * the registry does, and the router picks per instance (`endpoint/Route.ts`).
 */
import { Effect, Layer, Scope } from "effect"
import type { Config } from "effect"
import { formatEndpointPath } from "../Instance.ts"
import type { RequestPlaneClient, RequestPlaneServer } from "../RequestPlane.ts"
import type { ResponsePlaneClient, ResponsePlaneServer } from "../ResponsePlane.ts"
import * as HttpInlineHub from "../transport/http/HttpInlineHub.ts"
import * as HttpRequestTransport from "../transport/http/HttpRequestTransport.ts"
import * as HttpResponseTransport from "../transport/http/HttpResponseTransport.ts"
import * as MemoryTransport from "../transport/memory/MemoryTransport.ts"
import * as NatsRequestTransport from "../transport/nats/NatsRequestTransport.ts"
import * as TcpRequestTransport from "../transport/tcp/request/TcpRequestTransport.ts"
import * as TcpResponseTransport from "../transport/tcp/TcpResponseTransport.ts"
import { noRequirements } from "../Transport.ts"
import type { TransportCapabilities, TransportId } from "../Transport.ts"
import { TransportConfig } from "../TransportConfig.ts"
import type { TransportConfigError, TransportSettings } from "../TransportConfig.ts"
import { NoTransportAvailable, TransportConnectionError } from "../TransportError.ts"
import { layer, TransportRegistry } from "../TransportRegistry.ts"

/** The transport layers that exist, by the plane kinds `TransportConfig` names. */
const transportLayer = (
  plane: "request" | "response",
  kind: string
): Layer.Layer<never, NoTransportAvailable, TransportRegistry | TransportConfig> => {
  switch (kind) {
    case "memory":
      return MemoryTransport.layerWith({ planes: [plane] })
    case "http":
      return plane === "request" ? HttpRequestTransport.layer : HttpResponseTransport.layer
    case "tcp":
      return plane === "response" ? TcpResponseTransport.layer : TcpRequestTransport.layer
    case "nats":
      if (plane === "request") return NatsRequestTransport.layer
      break
  }
  return Layer.effectDiscard(
    Effect.fail(new NoTransportAvailable({ plane, required: noRequirements, transport: kind as TransportId }))
  )
}

/**
 * The registration priority of the call-only transports: below every configured one (memory's is
 * 0, the wire transports' 10), so `select` (what a worker serves on by default) never picks them.
 */
export const CALL_ONLY_PRIORITY = -10

/** The request "server" of a transport this process only calls on: serving on it fails typed. */
const callOnlyRequestServer = (transport: TransportId, settings: TransportSettings): RequestPlaneServer => ({
  transport,
  register: (key) =>
    Effect.fail(
      new TransportConnectionError({
        reason: "ListenFailed",
        transport,
        target: formatEndpointPath(key.path),
        detail: `this process calls instances on the ${transport} request plane but serves on DYN_REQUEST_PLANE=${settings.requestPlane} only`
      })
    )
})

/** The response "client" of a response plane this process only receives on: no worker calls home through it. */
const callOnlyResponseClient = (transport: TransportId, settings: TransportSettings): ResponsePlaneClient => ({
  transport,
  connectionTransports: [],
  connect: ({ requestId }) =>
    Effect.fail(
      new TransportConnectionError({
        reason: "ConnectFailed",
        transport,
        target: requestId,
        detail: `this process receives streams on the ${transport} response plane but its workers answer on DYN_RESPONSE_PLANE=${settings.responsePlane} only`
      })
    )
})

/**
 * A response server built on its first `open`, in `scope` (the layer's): a process that never
 * calls an instance needing it never binds its port.
 */
const lazyResponseServer = (
  transport: TransportId,
  scope: Scope.Scope,
  build: Effect.Effect<ResponsePlaneServer, never, Scope.Scope>
): Effect.Effect<ResponsePlaneServer> =>
  Effect.map(Effect.cached(Scope.provide(build, scope)), (get) => {
    let built: ResponsePlaneServer | undefined
    return {
      transport,
      open: (options) =>
        built !== undefined ? built.open(options) : Effect.flatMap(get, (server) => (built = server).open(options)),
      // Once built, the built server's (its first stream goes through `open`, which builds it).
      openNow: (options) => built?.openNow?.(options)
    } satisfies ResponsePlaneServer
  })

/**
 * The router's side of every wire transport the config does not name, registered at
 * `CALL_ONLY_PRIORITY`: the request-plane clients of http, tcp (Dynamo's framing) and nats, and
 * the response-plane servers of http (inline streams, sharing the build's `HttpInlineHub` with the
 * http request client) and tcp (call-home). Nothing is opened until a router uses it: the http and
 * tcp clients connect per target on first send, the nats client connects to `NATS_SERVER` on its
 * first send (a nats-server that cannot be reached fails that call typed, "ConnectFailed", and the
 * next send tries again), and the tcp call-home server binds `DYN_TCP_RESPONSE_*` on its first
 * stream. So a worker, which serves only on its configured planes, pays nothing for them: serving
 * on a call-only request plane fails typed, and no worker calls home through a call-only response
 * plane.
 */
export const callOnlyLayer: Layer.Layer<never, never, TransportRegistry | TransportConfig> = Layer.effectDiscard(
  Effect.gen(function*() {
    const registry = yield* TransportRegistry
    const settings = yield* TransportConfig
    const hub = yield* HttpInlineHub.HttpInlineHub
    const scope = yield* Scope.Scope
    const max = settings.tcpMaxMessageSize
    const request = (transport: TransportId, capabilities: TransportCapabilities, client: RequestPlaneClient) =>
      registry.registerRequest({
        registration: { transport_id: transport, plane_type: "request", capabilities, priority: CALL_ONLY_PRIORITY },
        client,
        server: callOnlyRequestServer(transport, settings)
      })
    const response = (transport: TransportId, capabilities: TransportCapabilities, server: ResponsePlaneServer) =>
      registry.registerResponse({
        registration: { transport_id: transport, plane_type: "response", capabilities, priority: CALL_ONLY_PRIORITY },
        client: callOnlyResponseClient(transport, settings),
        server
      })

    if (settings.requestPlane !== "http") {
      // It may carry inline (http+http) streams: the pure HTTP mode's window.
      const client = yield* HttpRequestTransport.makeClient(settings, hub, true)
      yield* request("http", HttpRequestTransport.capabilities(max), client)
    }
    if (settings.requestPlane !== "tcp") {
      const client = yield* TcpRequestTransport.makeDynamoClient(settings)
      yield* request("tcp", TcpRequestTransport.capabilities(max, false), client)
    }
    if (settings.requestPlane !== "nats") {
      // Its connection opens on the first send; its server part is never used here.
      const nats = yield* NatsRequestTransport.make(settings)
      yield* request("nats", NatsRequestTransport.capabilities(max), nats.client)
    }
    if (settings.responsePlane !== "http") {
      const http = HttpResponseTransport.make(hub, { format: settings.httpResponse.streamFormat, maxMessageSize: max, idleTimeoutMs: settings.streamIdleTimeoutMs })
      yield* response("http", HttpResponseTransport.capabilities(max), http.server)
    }
    if (settings.responsePlane !== "tcp") {
      const server = yield* lazyResponseServer(
        "tcp",
        scope,
        Effect.map(TcpResponseTransport.make(settings, { priority: CALL_ONLY_PRIORITY }), (t) => t.server)
      )
      yield* response("tcp", TcpResponseTransport.capabilities(max, settings.tcpPool.enabled), server)
    }
  })
).pipe(Layer.provide(HttpInlineHub.layer))

/**
 * The registry with the transports that `TransportConfig` names (`DYN_REQUEST_PLANE`,
 * `DYN_RESPONSE_PLANE`), and the router's side of the other wire transports (`callOnlyLayer`),
 * given the config.
 */
export const layerFromConfig: Layer.Layer<TransportRegistry, NoTransportAvailable, TransportConfig> = Layer.unwrap(
  Effect.gen(function*() {
    const config = yield* TransportConfig
    const transports = config.requestPlane === "memory" && config.responsePlane === "memory"
      ? MemoryTransport.layer
      : Layer.mergeAll(transportLayer("request", config.requestPlane), transportLayer("response", config.responsePlane))
    return Layer.mergeAll(transports, callOnlyLayer).pipe(Layer.provideMerge(layer))
  })
)

/**
 * One call: reads `DYN_*` from the current ConfigProvider (the environment by default) and
 * builds the registry with the configured transports. Provides the config too.
 */
export const layerConfig: Layer.Layer<
  TransportRegistry | TransportConfig,
  NoTransportAvailable | TransportConfigError | Config.ConfigError
> = layerFromConfig.pipe(Layer.provideMerge(TransportConfig.layer))
