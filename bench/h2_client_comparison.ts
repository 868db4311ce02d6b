// bench/h2_client_comparison.ts: the HTTP request plane's client choice. node:http2 against
// undici's H2CClient, both POSTing a 200-byte body to the same node:http2 server that answers
// 202 (the request plane's ack), sequential and at 64 in flight, in one run.
//   node bench/h2_client_comparison.ts [--requests 5000]
import * as http2 from "node:http2"
import type { AddressInfo } from "node:net"
import { H2CClient } from "undici"
import { concurrentPromise, table, us } from "../src/cli/latency.ts"

const i = process.argv.indexOf("--requests")
const N = i >= 0 ? Number(process.argv[i + 1]) : 5000
const body = Buffer.alloc(200, 120)

const server = http2.createServer()
server.on("stream", (stream) => {
  stream.resume()
  stream.on("end", () => {
    stream.respond({ ":status": 202 })
    stream.end()
  })
})
await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()))
const port = (server.address() as AddressInfo).port
const origin = `http://127.0.0.1:${port}`

const session = http2.connect(origin)
const viaNode = () =>
  new Promise<void>((resolve, reject) => {
    const s = session.request({ ":method": "POST", ":path": "/v1/rpc/x", "content-type": "application/octet-stream" })
    s.on("response", (h) => (h[":status"] === 202 ? resolve() : reject(new Error(String(h[":status"])))))
    s.on("error", reject)
    s.resume()
    s.end(body)
  })

const undici = new H2CClient(origin, { maxConcurrentStreams: 1000 })
const viaUndici = async () => {
  const res = await undici.request({ method: "POST", path: "/v1/rpc/x", body, headers: { "content-type": "application/octet-stream" } })
  await res.body.dump()
  if (res.statusCode !== 202) throw new Error(String(res.statusCode))
}

const measure = (once: () => Promise<void>, count: number, inFlight: number) => concurrentPromise(count, inFlight, once)

const rows: Array<Array<string>> = []
for (const [name, once] of [["node:http2", viaNode], ["undici H2CClient", viaUndici], ["node:http2 (again)", viaNode], ["undici H2CClient (again)", viaUndici]] as const) {
  await measure(once, 500, 8)
  const seq = await measure(once, N, 1)
  const c64 = await measure(once, N * 2, 64)
  rows.push([name, us(seq.stats.p50), us(seq.stats.p99), seq.rps.toFixed(0), c64.rps.toFixed(0), us(c64.stats.p99)])
}
console.log(table(["client", "p50", "p99", "req/s @1", "req/s @64", "p99 @64"], rows))
session.close()
await undici.close()
server.close()
