/**
 * The registry composed from configuration: the transports that `DYN_REQUEST_PLANE` and
 * `DYN_RESPONSE_PLANE` name, registered in a fresh `TransportRegistry`.
 *
 * The only module that imports every transport. It does not select transports per request;
 * the registry does.
 */
import { Effect, Layer } from "effect"
import type { Config } from "effect"
import * as HttpRequestTransport from "../transport/http/HttpRequestTransport.ts"
import * as HttpResponseTransport from "../transport/http/HttpResponseTransport.ts"
import * as MemoryTransport from "../transport/memory/MemoryTransport.ts"
import * as TcpRequestTransport from "../transport/tcp/request/TcpRequestTransport.ts"
import * as TcpResponseTransport from "../transport/tcp/TcpResponseTransport.ts"
import { noRequirements } from "../Transport.ts"
import type { TransportId } from "../Transport.ts"
import { TransportConfig } from "../TransportConfig.ts"
import type { TransportConfigError } from "../TransportConfig.ts"
import { NoTransportAvailable } from "../TransportError.ts"
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
  }
  return Layer.effectDiscard(
    Effect.fail(new NoTransportAvailable({ plane, required: noRequirements, transport: kind as TransportId }))
  )
}

/**
 * The registry with the transports that `TransportConfig` names (`DYN_REQUEST_PLANE`,
 * `DYN_RESPONSE_PLANE`), given the config.
 */
export const layerFromConfig: Layer.Layer<TransportRegistry, NoTransportAvailable, TransportConfig> = Layer.unwrap(
  Effect.gen(function*() {
    const config = yield* TransportConfig
    const transports = config.requestPlane === "memory" && config.responsePlane === "memory"
      ? MemoryTransport.layer
      : Layer.mergeAll(transportLayer("request", config.requestPlane), transportLayer("response", config.responsePlane))
    return transports.pipe(Layer.provideMerge(layer))
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
