/**
 * The transport modes that exist, as the `DYN_*` settings that select them, and the stack of
 * one mode: the configuration as the current ConfigProvider gives it, with the mode's variables
 * on top. The demo runs each one in a single process.
 */
import { Layer } from "effect"
import * as Discovery from "../discovery/layerConfig.ts"
import { TransportConfig } from "../TransportConfig.ts"
import type { TransportSettings } from "../TransportConfig.ts"
import * as TransportRegistry from "../registry/index.ts"
import { layerOverrides } from "./defaults.ts"

/** A named mode and the variables that select it. */
export interface Mode {
  readonly name: string
  readonly description: string
  readonly env: Readonly<Record<string, string>>
}

/** Every mode that is built, the library's default first. */
export const modes: ReadonlyArray<Mode> = [
  {
    name: "http+tcp",
    description: "HTTP/2 request plane + TCP call-home response plane (the default, Dynamo wire-compatible)",
    env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_POOL_ENABLED: "false" }
  },
  {
    name: "http+tcp pooled",
    description: "HTTP/2 request plane + pooled, multiplexed TCP call-home (DYN_TCP_POOL_ENABLED=true)",
    env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_POOL_ENABLED: "true" }
  },
  {
    name: "http+http",
    description: "HTTP/2 request plane, each response streamed in its request's own HTTP/2 response (SSE by default, DYN_HTTP_RESPONSE_STREAM_FORMAT)",
    env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http" }
  },
  {
    name: "tcp+tcp",
    description: "the full TCP mode: requests and their response streams multiplexed on one persistent connection, with heartbeats, flow control and streamed requests (DYN_TCP_FULL_MODE=true)",
    env: { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "true", DYN_TCP_POOL_ENABLED: "false" }
  },
  {
    name: "tcp+tcp dynamo",
    description: "Dynamo's TCP request plane (pipelined frames, FIFO acks) + TCP call-home (DYN_TCP_FULL_MODE=false)",
    env: { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "false", DYN_TCP_POOL_ENABLED: "false" }
  },
  {
    name: "tcp+tcp dynamo pooled",
    description: "Dynamo's TCP request plane + pooled, multiplexed TCP call-home",
    env: { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "false", DYN_TCP_POOL_ENABLED: "true" }
  },
  {
    name: "memory",
    description: "in-memory request + in-memory response (one process)",
    env: { DYN_REQUEST_PLANE: "memory", DYN_RESPONSE_PLANE: "memory" }
  }
]

/**
 * The mode `settings` select: one of `modes`, or (for a combination not listed) a mode named
 * after its planes whose variables are the configuration itself.
 */
export const modeOf = (settings: TransportSettings): Mode => {
  const found = modes.find((m) =>
    m.env.DYN_REQUEST_PLANE === settings.requestPlane &&
    m.env.DYN_RESPONSE_PLANE === settings.responsePlane &&
    (settings.responsePlane !== "tcp" || (m.env.DYN_TCP_POOL_ENABLED === "true") === settings.tcpPool.enabled) &&
    (settings.requestPlane !== "tcp" || (m.env.DYN_TCP_FULL_MODE === "true") === settings.tcpRequest.fullMode)
  )
  if (found !== undefined) return found
  const pooled = settings.responsePlane === "tcp" && settings.tcpPool.enabled ? " pooled" : ""
  return {
    name: `${settings.requestPlane}+${settings.responsePlane}${pooled}`,
    description: `DYN_REQUEST_PLANE=${settings.requestPlane} DYN_RESPONSE_PLANE=${settings.responsePlane}${pooled}`,
    env: {}
  }
}

/** The configured stack: settings from the current ConfigProvider, its transports and discovery. */
export const configuredStack = Layer.mergeAll(Discovery.layerConfig, TransportRegistry.layerFromConfig).pipe(
  Layer.provideMerge(TransportConfig.layer)
)

/** The stack of `mode`: the configured one with the mode's variables winning over the environment. */
export const layerFor = (mode: Mode) => configuredStack.pipe(Layer.provide(layerOverrides(mode.env)))
