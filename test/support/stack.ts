/**
 * One-process test stacks: chosen transport layers over a fresh registry, mem discovery, and the
 * config from a `DYN_*` record, on loopback with ephemeral ports. Every test file builds its stack
 * here (the contract suite's stacks, with their peer-death hooks, are in `stacks.ts`).
 */
import { Layer } from "effect"
import * as MemoryDiscovery from "../../src/discovery/MemoryDiscovery.ts"
import * as HttpRequestTransport from "../../src/transport/http/HttpRequestTransport.ts"
import * as MemoryTransport from "../../src/transport/memory/MemoryTransport.ts"
import * as TcpResponseTransport from "../../src/transport/tcp/TcpResponseTransport.ts"
import { TransportConfig } from "../../src/TransportConfig.ts"
import * as TransportRegistry from "../../src/registry/index.ts"

/** `transports` registered in a fresh registry, with mem discovery and the config of `env`. */
export const stackOf = <E>(transports: Layer.Layer<never, E, TransportRegistry.TransportRegistry | TransportConfig>, env: Record<string, string>) =>
  Layer.mergeAll(transports.pipe(Layer.provideMerge(TransportRegistry.layer)), MemoryDiscovery.layer).pipe(
    Layer.provideMerge(TransportConfig.layerFromRecord(env))
  )

/** A one-process stack over the in-memory transport. */
export const memoryStack = (env: Record<string, string> = {}, transport = MemoryTransport.layer) =>
  stackOf(transport, { DYN_CANCEL_GRACE_MS: "100", ...env })

/**
 * In-memory request plane + TCP call-home response plane (one-shot, or pooled with
 * `DYN_TCP_POOL_ENABLED: "true"`), on loopback.
 */
export const tcpStack = (env: Record<string, string> = {}, options: TcpResponseTransport.TcpResponseTransportOptions = {}) =>
  stackOf(
    Layer.mergeAll(MemoryTransport.layerWith({ planes: ["request"] }), TcpResponseTransport.layerWith(options)),
    { DYN_TCP_RESPONSE_HOST: "127.0.0.1", DYN_TCP_RESPONSE_PORT: "0", DYN_CANCEL_GRACE_MS: "100", ...env }
  )

/** HTTP request plane + in-memory response plane, on loopback. */
export const httpStack = (env: Record<string, string> = {}) =>
  stackOf(
    Layer.mergeAll(HttpRequestTransport.layer, MemoryTransport.layerWith({ planes: ["response"] })),
    { DYN_HTTP_RPC_HOST: "127.0.0.1", DYN_HTTP_RPC_PORT: "0", ...env }
  )

/** The transports `env` names, composed as users compose them (`TransportRegistry.layerFromConfig`), on loopback. */
export const configuredStack = (env: Record<string, string>) =>
  Layer.mergeAll(TransportRegistry.layerFromConfig, MemoryDiscovery.layer).pipe(
    Layer.provideMerge(
      TransportConfig.layerFromRecord({
        DYN_HTTP_RPC_HOST: "127.0.0.1",
        DYN_HTTP_RPC_PORT: "0",
        DYN_TCP_RESPONSE_HOST: "127.0.0.1",
        DYN_TCP_RESPONSE_PORT: "0",
        ...env
      })
    )
  )
