/**
 * A stand-in for an OpenTelemetry collector, for the benchmark's `-traced` rows: an HTTP/1.1
 * server on a free loopback port that takes OTLP/HTTP exports (`POST /v1/traces`), counts them
 * and their bytes, and answers 200 with an empty JSON body, as a collector that accepted them
 * does. It reads each body whole and keeps none of it. It runs in the benchmark's own process, so
 * the worker and the router pay for exporting their spans (serializing and sending them), and a
 * collector's own work is not measured.
 */
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"

/** A running sink: the base URL to set as `OTEL_EXPORTER_OTLP_ENDPOINT`, what it received, and its stop. */
export interface OtlpSink {
  readonly url: string
  /** Exports received so far (requests to `/v1/traces`) and their bytes. */
  readonly received: () => { readonly exports: number; readonly bytes: number }
  readonly stop: () => void
}

/** Starts a sink on 127.0.0.1 and a free port. */
export const startOtlpSink = (): Promise<OtlpSink> =>
  new Promise((resolve, reject) => {
    let exports = 0
    let bytes = 0
    const server = createServer((req, res) => {
      const traces = req.method === "POST" && req.url === "/v1/traces"
      req.on("data", (chunk: Buffer) => {
        if (traces) bytes += chunk.length
      })
      req.on("end", () => {
        if (traces) exports++
        res.writeHead(traces ? 200 : 404, { "content-type": "application/json" })
        res.end(traces ? "{}" : `{"error":"only POST /v1/traces is served"}`)
      })
      req.on("error", () => res.destroy())
    })
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo
      resolve({
        url: `http://127.0.0.1:${port}`,
        received: () => ({ exports, bytes }),
        stop: () => {
          server.closeAllConnections()
          server.close()
        }
      })
    })
  })
