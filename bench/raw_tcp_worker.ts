// The raw TCP baseline worker: node:net only, no framework, the framing of bench/rawTcpFrames.ts.
// Started by bench/rawTcpRouter.ts with one argument, the shape to serve; prints `{"port": n}`.
//
// - `corked` (the full mode's floor): the router's one persistent connection carries mux REQUEST
//   frames; the worker answers each on the same connection with its items + END corked into one
//   write. Many streams in flight, told apart by stream id.
// - `dynamo` (Dynamo's shipped shape): the router's persistent connection carries Dynamo request
//   frames; the worker acks each (u32 0, the acks of one chunk in one write, in request order),
//   then sends the items + END, corked per stream, on a persistent call-home connection to the
//   router's port named in the request (one per router port, opened on first use and reused).
import * as net from "node:net"
import { dynamoRequestLength, frameReader, HEADER, muxLength, parseDynamoRequest, responseFrames } from "./rawTcpFrames.ts"

const shape = process.argv[2]

const serveCorked = (socket: net.Socket) => {
  socket.on(
    "data",
    frameReader(muxLength, (frame) => {
      const id = frame.readUInt32BE(8)
      const req = JSON.parse(frame.toString("utf8", HEADER)) as { n: number; size: number }
      socket.write(responseFrames(id, req.n, req.size))
    })
  )
}

const callHome = new Map<number, net.Socket>()
const callHomeTo = (port: number): net.Socket => {
  let socket = callHome.get(port)
  if (socket === undefined || socket.destroyed) {
    socket = net.connect({ port, host: "127.0.0.1", noDelay: true })
    socket.on("error", () => callHome.delete(port))
    callHome.set(port, socket)
  }
  return socket
}

const ACK = Buffer.alloc(4)

const serveDynamo = (socket: net.Socket) => {
  const reader = frameReader(dynamoRequestLength, (frame) => {
    const { payload } = parseDynamoRequest(frame)
    const req = JSON.parse(payload.toString()) as { id: number; port: number; n: number; size: number }
    acks++
    responses.push([callHomeTo(req.port), responseFrames(req.id, req.n, req.size)])
  })
  let acks = 0
  let responses: Array<[net.Socket, Buffer]> = []
  socket.on("data", (chunk: Buffer) => {
    reader(chunk)
    // Acks first (Dynamo acks as soon as the request is dispatched), then each stream's frames.
    if (acks > 0) socket.write(acks === 1 ? ACK : Buffer.alloc(4 * acks))
    for (const [s, b] of responses) s.write(b)
    acks = 0
    responses = []
  })
}

const server = net.createServer({ noDelay: true }, (socket) => {
  socket.on("error", () => {})
  if (shape === "corked") serveCorked(socket)
  else serveDynamo(socket)
})
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: (server.address() as net.AddressInfo).port }) + "\n")
})
process.on("SIGTERM", () => process.exit(0))
