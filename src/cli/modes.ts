/**
 * The transport modes that exist, as the `DYN_*` settings that select them. The demo and the
 * benchmarks run each one in a single process on loopback with ephemeral ports.
 */
import { Layer } from "effect"
import * as MemoryDiscovery from "../discovery/MemoryDiscovery.ts"
import { TransportConfig } from "../TransportConfig.ts"
import * as TransportRegistry from "../registry/index.ts"

/** A named mode and the variables that select it. */
export interface Mode {
  readonly name: string
  readonly description: string
  readonly env: Readonly<Record<string, string>>
}

/** Settings every embedded mode shares: loopback and ephemeral ports, so nothing clashes. */
export const embedded: Readonly<Record<string, string>> = {
  DYN_HTTP_RPC_HOST: "127.0.0.1",
  DYN_HTTP_RPC_PORT: "0",
  DYN_HTTP_RESPONSE_HOST: "127.0.0.1",
  DYN_HTTP_RESPONSE_PORT: "0",
  DYN_TCP_RESPONSE_HOST: "127.0.0.1",
  DYN_TCP_RESPONSE_PORT: "0",
  DYN_TCP_REQUEST_HOST: "127.0.0.1",
  DYN_TCP_REQUEST_PORT: "0",
  DYN_DISCOVERY_BACKEND: "mem"
}

/** Every mode that is built, the default first. */
export const modes: ReadonlyArray<Mode> = [
  {
    name: "http+tcp",
    description: "HTTP/2 request plane + TCP call-home response plane (the default, Dynamo wire-compatible)",
    env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp" }
  },
  {
    name: "http+tcp pooled",
    description: "HTTP/2 request plane + pooled, multiplexed TCP call-home (DYN_TCP_POOL_ENABLED=true)",
    env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_POOL_ENABLED: "true" }
  },
  {
    name: "memory",
    description: "in-memory request + in-memory response (one process)",
    env: { DYN_REQUEST_PLANE: "memory", DYN_RESPONSE_PLANE: "memory" }
  }
]

/** A one-process stack for a mode: config, registry with its transports, and mem discovery. */
export const layerFor = (mode: Mode, extra: Readonly<Record<string, string>> = {}) =>
  Layer.mergeAll(TransportRegistry.layerFromConfig, MemoryDiscovery.layer).pipe(
    Layer.provideMerge(TransportConfig.layerFromRecord({ ...embedded, ...mode.env, ...extra }))
  )
