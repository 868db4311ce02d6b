/**
 * A stand-in for an OpenTelemetry collector, for the benchmark's `-traced` rows: an HTTP/1.1
 * server on a free loopback port that takes OTLP/HTTP exports (`POST /v1/traces`), counts them
 * and their bytes, and answers 200 with an empty JSON body, as a collector that accepted them
 * does. It reads each body whole, notes whether it held a router's span (`send ...`) and a
 * worker's (`handle ...`), and keeps nothing else. It runs in the benchmark's own process, so the
 * worker and the router pay for exporting their spans (serializing and sending them), and a
 * collector's own work is not measured.
 */
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"

/** What a sink has received. */
export interface Received {
  /** Requests to `/v1/traces`, and their bytes. */
  readonly exports: number
  readonly bytes: number
  /** Exports that held a router's `send` span, and a worker's `handle` span. */
  readonly withSend: number
  readonly withHandle: number
}

/** A running sink: the base URL to set as `OTEL_EXPORTER_OTLP_ENDPOINT`, what it received, and its stop. */
export interface OtlpSink {
  readonly url: string
  readonly received: () => Received
  readonly stop: () => void
}

// The OTLP/HTTP JSON exporter writes a span's name as `"name":"<name>"`.
const SEND = Buffer.from(`"name":"send `)
const HANDLE = Buffer.from(`"name":"handle `)

/** Starts a sink on 127.0.0.1 and a free port. */
export const startOtlpSink = (): Promise<OtlpSink> =>
  new Promise((resolve, reject) => {
    let exports = 0
    let bytes = 0
    let withSend = 0
    let withHandle = 0
    const server = createServer((req, res) => {
      const traces = req.method === "POST" && req.url === "/v1/traces"
      const chunks: Array<Buffer> = []
      req.on("data", (chunk: Buffer) => {
        if (!traces) return
        bytes += chunk.length
        chunks.push(chunk)
      })
      req.on("end", () => {
        if (traces) {
          exports++
          const body = Buffer.concat(chunks)
          if (body.includes(SEND)) withSend++
          if (body.includes(HANDLE)) withHandle++
        }
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
        received: () => ({ exports, bytes, withSend, withHandle }),
        stop: () => {
          server.closeAllConnections()
          server.close()
        }
      })
    })
  })
