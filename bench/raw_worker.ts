// The raw baseline worker: node:http2 + node:net only, the same exchange as the
// recommended mode (HTTP/2 POST -> 202 -> TCP call-home -> N items), with no framework and
// no codec beyond length-prefixed JSON. Started by bench/rawRouter.ts.
//
// Unpooled (the request's `pooled` is false): one new connection per response stream, which
// carries the subject, the items and `complete_final`, then closes; the worker connects right
// after it writes the 202, as this project's one-shot mode does. Pooled: one persistent
// connection per router port, created on first use; every frame names its stream
// (`{ s: subject, ... }`), so many streams share it.
import * as http2 from "node:http2"
import * as net from "node:net"

interface RawRequest {
  readonly port: number
  readonly subject: string
  readonly n: number
  readonly size: number
  readonly pooled?: boolean
}

const frame = (parts: Array<Buffer>, obj: unknown) => {
  const body = Buffer.from(JSON.stringify(obj))
  const len = Buffer.allocUnsafe(4)
  len.writeUInt32BE(body.length)
  parts.push(len, body)
}

const unpooled = (req: RawRequest) => {
  const socket = net.connect({ port: req.port, host: "127.0.0.1", noDelay: true }, () => {
    const payload = "x".repeat(req.size)
    const parts: Array<Buffer> = []
    frame(parts, { subject: req.subject })
    for (let i = 0; i < req.n; i++) frame(parts, { data: { index: i, token: payload } })
    frame(parts, { complete_final: true })
    socket.end(Buffer.concat(parts))
  })
  socket.on("error", () => {})
}

const connections = new Map<number, net.Socket>()
const pooled = (req: RawRequest) => {
  let socket = connections.get(req.port)
  if (socket === undefined || socket.destroyed) {
    socket = net.connect({ port: req.port, host: "127.0.0.1", noDelay: true })
    socket.on("error", () => connections.delete(req.port))
    connections.set(req.port, socket)
  }
  const payload = "x".repeat(req.size)
  const parts: Array<Buffer> = []
  for (let i = 0; i < req.n; i++) frame(parts, { s: req.subject, data: { index: i, token: payload } })
  frame(parts, { s: req.subject, complete_final: true })
  socket.write(Buffer.concat(parts))
}

const server = http2.createServer()
server.on("stream", (stream) => {
  const chunks: Array<Buffer> = []
  stream.on("data", (c: Buffer) => chunks.push(c))
  stream.on("end", () => {
    const req = JSON.parse(Buffer.concat(chunks).toString()) as RawRequest
    stream.respond({ ":status": 202 })
    stream.end()
    if (req.pooled === true) pooled(req)
    else unpooled(req)
  })
})
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: (server.address() as net.AddressInfo).port }) + "\n")
})
process.on("SIGTERM", () => process.exit(0))
