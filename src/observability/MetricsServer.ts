/**
 * The observability HTTP server on `DYN_METRICS_PORT`: `/metrics` in Prometheus text format
 * (every Effect Metric in the default registry, through `effect/observability`'s
 * PrometheusMetrics, then the HELP and TYPE of every declared family that has no series yet:
 * `Metrics.declaredFamilies`), `/health` (liveness: 200 while the process runs) and `/ready`
 * (200 when it serves an endpoint registered in discovery, else 503).
 *
 * It does not record anything (`Metrics.ts` does) nor push metrics anywhere: Prometheus pulls.
 */
import * as http from "node:http"
import { Context, Effect, Layer } from "effect"
import type { Scope } from "effect"
import { PrometheusMetrics } from "effect/observability"
import { TransportConfig } from "../TransportConfig.ts"
import type { TransportConnectionError } from "../TransportError.ts"
import { hostPort, listen } from "../internal/net.ts"
import * as Health from "./Health.ts"
import * as Metrics from "./Metrics.ts"

const escapeHelp = (text: string) => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

/**
 * The /metrics text: every series in the registry of `context`, then the HELP and TYPE lines of
 * each declared family that has no series (so every family is listed from start-up).
 */
export const exposition = (context: Context.Context<never> = Context.empty()): string => {
  const text = PrometheusMetrics.formatUnsafe(context)
  const missing = Metrics.declaredFamilies().filter((f) => !text.includes(`# TYPE ${f.name} `))
  if (missing.length === 0) return text
  return text + missing.map((f) => `# HELP ${f.name} ${escapeHelp(f.help)}\n# TYPE ${f.name} ${f.type}\n`).join("")
}

/** A running metrics server. */
export interface MetricsServer {
  readonly port: number
  readonly url: string
}

/**
 * node:http's limits for `connectionTimeoutMs`: a request's headers and the whole request must
 * arrive within it, checked a few times per period (a slowloris client is closed in time).
 */
const timeoutOptions = (ms: number | undefined): http.ServerOptions =>
  ms === undefined ? {} : { headersTimeout: ms, requestTimeout: ms, connectionsCheckingInterval: Math.max(10, Math.min(30_000, Math.floor(ms / 4))) }

/**
 * Starts the server on `host:port` until the scope closes. `connectionTimeoutMs`: how long a
 * request (headers and body) may take to arrive, from the connection's start or the previous
 * response (default node:http's: 60 s for the headers, 300 s for the request).
 */
export const make = (options: {
  readonly host: string
  readonly port: number
  readonly connectionTimeoutMs?: number | undefined
}): Effect.Effect<MetricsServer, TransportConnectionError, Scope.Scope> =>
  Effect.gen(function*() {
    const context = Context.empty()
    const server = http.createServer(timeoutOptions(options.connectionTimeoutMs), (req, res) => {
      const path = (req.url ?? "/").split("?")[0]
      if (path === "/metrics") {
        const text = exposition(context)
        res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" })
        res.end(text)
      } else if (path === "/health") {
        res.writeHead(200, { "content-type": "application/json" })
        res.end(JSON.stringify({ status: "ok" }))
      } else if (path === "/ready") {
        const ready = Health.isReady()
        res.writeHead(ready ? 200 : 503, { "content-type": "application/json" })
        res.end(JSON.stringify({ ready, served_endpoints: Health.servedEndpoints() }))
      } else {
        res.writeHead(404, { "content-type": "application/json" })
        res.end(JSON.stringify({ error: "not found", paths: ["/metrics", "/health", "/ready"] }))
      }
    })
    const port = yield* listen(server, options.host, options.port, "http")
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        server.closeAllConnections()
        server.close()
      })
    )
    return { port, url: `http://${hostPort(options.host === "0.0.0.0" ? "127.0.0.1" : options.host, port)}` }
  })

/**
 * The server on `DYN_METRICS_PORT` (all interfaces). With `DYN_TCP_POOL_ENABLED=true` it lists
 * the pool's families from start-up too.
 */
export const layer: Layer.Layer<never, TransportConnectionError, TransportConfig> = Layer.effectDiscard(
  Effect.flatMap(TransportConfig, (config) => {
    if (config.tcpPool.enabled) Metrics.declarePool()
    return make({ host: "0.0.0.0", port: config.metricsPort, connectionTimeoutMs: config.httpFirstRequestTimeoutMs })
  })
)
