// The raw baseline worker: node:http2 + node:net only, the same exchange as the
// recommended mode (HTTP/2 POST -> 202 -> TCP call-home -> N items -> close), with no
// framework, no codec beyond length-prefixed JSON. Started by bench/transport_comparison.ts.
import * as http2 from "node:http2"
import * as net from "node:net"

const server = http2.createServer()
server.on("stream", (stream) => {
  const chunks: Array<Buffer> = []
  stream.on("data", (c: Buffer) => chunks.push(c))
  stream.on("end", () => {
    const req = JSON.parse(Buffer.concat(chunks).toString()) as { port: number; subject: string; n: number; size: number }
    stream.respond({ ":status": 202 })
    stream.end()
    const socket = net.connect({ port: req.port, host: "127.0.0.1", noDelay: true }, () => {
      const payload = "x".repeat(req.size)
      const parts: Array<Buffer> = []
      const frame = (obj: unknown) => {
        const body = Buffer.from(JSON.stringify(obj))
        const len = Buffer.alloc(4)
        len.writeUInt32BE(body.length)
        parts.push(len, body)
      }
      frame({ subject: req.subject })
      for (let i = 0; i < req.n; i++) frame({ data: { index: i, token: payload } })
      frame({ complete_final: true })
      socket.end(Buffer.concat(parts))
    })
    socket.on("error", () => {})
  })
})
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: (server.address() as net.AddressInfo).port }) + "\n")
})
process.on("SIGTERM", () => process.exit(0))
