// What scripts/critical-path.ts and scripts/instruction-count.ts share: the full TCP mode's layer
// (file discovery in one folder, metrics and tracing off, loopback ports), the benchmark's
// endpoint and request, and raw Node's corked baseline with the same exchange.
import { Layer } from "effect"
import * as rawHttp from "../src/cli/bench/sides/rawHttp.ts"
import * as rawTcp from "../src/cli/bench/sides/rawTcp.ts"
import { Discovery } from "../src/Discovery.ts"
import * as FileDiscovery from "../src/discovery/FileDiscovery.ts"
import * as TransportRegistry from "../src/registry/index.ts"
import { TransportConfig } from "../src/TransportConfig.ts"

/** The endpoint both sides use (the benchmark's). */
export const ENDPOINT = "bench.worker.generate"
/** One request: 10 items of 50 bytes. */
export const request = { max_tokens: 10, token_size: 50 }
/** Raw Node's corked baseline of the same exchange (src/cli/bench/sides/rawTcp.ts). */
export const rawOptions = { variant: "corked", items: 10, itemSize: 50, delayMs: 0, env: {} } as const

/**
 * The modes scripts/instruction-count.sh counts: the full TCP mode, the HTTP/2 request plane
 * with TCP call-home (a connection per stream, or pooled), or with each response streamed as SSE
 * in its request's own HTTP/2 response; or Dynamo's TCP request plane with TCP call-home (a
 * connection per stream, or pooled).
 */
export type CountedMode = "full" | "http" | "http-pooled" | "http-sse" | "dynamo" | "dynamo-pooled"

const MODES: ReadonlyArray<CountedMode> = ["full", "http", "http-pooled", "http-sse", "dynamo", "dynamo-pooled"]

/** `mode` from a script's environment variable (`full` when unset), or an error naming the choices. */
export const countedMode = (text: string | undefined): CountedMode => {
  const mode = text === undefined || text === "" ? "full" : text
  if (MODES.includes(mode as CountedMode)) return mode as CountedMode
  throw new Error(`unknown mode ${JSON.stringify(mode)}: ${MODES.join(", ")}`)
}

/** The raw Node side that is `mode`'s baseline in the benchmark, and its options. */
export const rawSideOf = (mode: CountedMode) =>
  mode === "full" || mode === "dynamo" || mode === "dynamo-pooled"
    ? { side: rawTcp, options: { ...rawOptions, variant: mode === "full" ? "corked" : mode } as const }
    : { side: rawHttp, options: { ...rawOptions, variant: mode === "http" ? "callhome" : mode === "http-pooled" ? "callhome-pooled" : "sse" } as const }

/** The DYN_* settings of `mode`, discovering through files in `discovery`. */
const modeEnv = (mode: CountedMode, discovery: string): Record<string, string> => ({
  ...fullEnv(discovery),
  ...(mode === "full" ? {} : mode === "dynamo" || mode === "dynamo-pooled" ? {
    DYN_TCP_FULL_MODE: "false",
    DYN_TCP_POOL_ENABLED: mode === "dynamo-pooled" ? "true" : "false"
  } : {
    DYN_REQUEST_PLANE: "http",
    DYN_HTTP_RPC_HOST: "127.0.0.1",
    DYN_HTTP_RPC_PORT: "0",
    DYN_TCP_POOL_ENABLED: mode === "http-pooled" ? "true" : "false",
    ...(mode === "http-sse" ? { DYN_RESPONSE_PLANE: "http" } : {})
  })
})

/** The DYN_* settings of the full TCP mode, discovering through files in `discovery`. */
const fullEnv = (discovery: string): Record<string, string> => ({
  DYN_DISCOVERY_BACKEND: "file",
  DYN_DISCOVERY_PATH: discovery,
  DYN_METRICS: "off",
  DYN_TRACING: "off",
  DYN_METRICS_PORT: "0",
  DYN_LOG: "warn",
  DYN_REQUEST_PLANE: "tcp",
  DYN_RESPONSE_PLANE: "tcp",
  DYN_TCP_REQUEST_HOST: "127.0.0.1",
  DYN_TCP_REQUEST_PORT: "0",
  DYN_TCP_RESPONSE_HOST: "127.0.0.1",
  DYN_TCP_RESPONSE_PORT: "0"
})

/**
 * The registry and file discovery of the full TCP mode, as a router or worker process builds them.
 * `pollIntervalMs` sets how often the router re-reads the discovery folder (default 250 ms, as
 * the program): a count of instructions per call sets it long, so that a poll's work (which
 * depends on the time a run takes, tens of times longer under valgrind) is not counted per call.
 * `observed` turns metrics and tracing on (the library's defaults; off otherwise).
 */
export const fullModeLayer = (discovery: string, pollIntervalMs?: number, mode: CountedMode = "full", observed = false) =>
  Layer.mergeAll(
    TransportRegistry.layerFromConfig,
    pollIntervalMs === undefined
      ? FileDiscovery.layer
      : Layer.succeed(Discovery, FileDiscovery.make({ directory: discovery, pollIntervalMs }))
  ).pipe(
    Layer.provideMerge(TransportConfig.layerFromRecord({
      ...modeEnv(mode, discovery),
      ...(observed ? { DYN_METRICS: "on", DYN_TRACING: "on" } : {})
    }))
  )
