/**
 * The raw TCP baselines, node:net only, in the framing of rawTcpFrames.ts. Variants:
 *
 * - `corked` (the full mode's floor): one persistent connection; each call writes a mux REQUEST
 *   frame, and the worker answers on the same connection with the items + END (one corked write
 *   without a delay). Many calls in flight, told apart by stream id.
 * - `dynamo` / `dynamo-pooled` (Dynamo's shipped shape): a persistent request connection carrying
 *   Dynamo request frames, acked in order (u32 0; the acks of one read in one write), and the
 *   items + END on a call-home connection to the router's port: a new one per stream (`dynamo`)
 *   or one persistent connection per router port (`dynamo-pooled`). A call completes when both
 *   its ack and its END have come.
 *
 * Each item is JSON-parsed on the router. A stream with the wrong number of items, a rejection
 * ack or a lost connection fails the call, so a run never hangs on it.
 */
import * as net from "node:net"
import { loadPromise } from "../load.ts"
import {
  ackLength,
  dynamoRequest,
  dynamoRequestLength,
  frameReader,
  HEADER,
  KIND_DATA,
  KIND_END,
  KIND_REQUEST,
  muxFrame,
  muxLength,
  parseDynamoRequest,
  sendResponse
} from "./rawTcpFrames.ts"
import { portOf } from "./side.ts"
import type { Driver, PendingCall, ServerInfo, Served, SideOptions } from "./side.ts"

const listen = async (server: net.Server): Promise<number> => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()))
  return (server.address() as net.AddressInfo).port
}

// ---------------------------------------------------------------- worker

const serveCorked = (socket: net.Socket, delayMs: number) => {
  socket.on(
    "data",
    frameReader(muxLength, (frame) => {
      const id = frame.readUInt32BE(8)
      const req = JSON.parse(frame.toString("utf8", HEADER)) as { n: number; size: number }
      sendResponse(id, req.n, req.size, delayMs, (b) => socket.write(b))
    })
  )
}

const pool = new Map<number, net.Socket>()
const pooledTo = (port: number): net.Socket => {
  let socket = pool.get(port)
  if (socket === undefined || socket.destroyed) {
    socket = net.connect({ port, host: "127.0.0.1", noDelay: true })
    socket.on("error", () => pool.delete(port))
    pool.set(port, socket)
  }
  return socket
}

interface DynamoRequest {
  readonly id: number
  readonly port: number
  readonly n: number
  readonly size: number
}

const respondDynamo = (req: DynamoRequest, pooled: boolean, delayMs: number) => {
  if (pooled) {
    const socket = pooledTo(req.port)
    sendResponse(req.id, req.n, req.size, delayMs, (b) => socket.write(b))
    return
  }
  const socket = net.connect({ port: req.port, host: "127.0.0.1", noDelay: true }, () =>
    sendResponse(req.id, req.n, req.size, delayMs, (b, last) => (last ? socket.end(b) : socket.write(b))))
  socket.on("error", () => {})
}

const ACK = Buffer.alloc(4)

const serveDynamo = (socket: net.Socket, pooled: boolean, delayMs: number) => {
  let requests: Array<DynamoRequest> = []
  const reader = frameReader(dynamoRequestLength, (frame) => {
    requests.push(JSON.parse(parseDynamoRequest(frame).payload.toString()) as DynamoRequest)
  })
  socket.on("data", (chunk: Buffer) => {
    reader(chunk)
    // Acks first (Dynamo acks as soon as the request is dispatched), then each stream's frames.
    const batch = requests
    requests = []
    if (batch.length > 0) socket.write(batch.length === 1 ? ACK : Buffer.alloc(4 * batch.length))
    for (const req of batch) respondDynamo(req, pooled, delayMs)
  })
}

/** Serves the variant's worker on a free loopback port. */
export const serve = async (options: SideOptions): Promise<Served> => {
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on("error", () => {})
    if (options.variant === "corked") serveCorked(socket, options.delayMs)
    else serveDynamo(socket, options.variant === "dynamo-pooled", options.delayMs)
  })
  const port = await listen(server)
  return { info: { port }, close: async () => void server.close() }
}

// ---------------------------------------------------------------- router


const connectTo = (port: number) =>
  new Promise<net.Socket>((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1", noDelay: true }, () => resolve(socket))
    socket.once("error", reject)
  })

/** Connects the variant's router to the worker of `server`. */
export const connect = async (options: SideOptions, server: ServerInfo): Promise<Driver> => {
  const corked = options.variant === "corked"
  const pending = new Map<number, PendingCall>()
  let nextId = 1
  const failAll = (why: string) => {
    for (const p of pending.values()) p.reject(new Error(why))
    pending.clear()
  }
  const finish = (id: number, p: PendingCall) => {
    pending.delete(id)
    if (p.items === options.items) p.resolve()
    else p.reject(new Error(`stream ${id}: ${p.items} items, expected ${options.items}`))
  }
  const onResponseFrame = (frame: Buffer) => {
    const id = frame.readUInt32BE(8)
    const p = pending.get(id)
    if (p === undefined) return
    if (frame[4] === KIND_DATA) {
      JSON.parse(frame.toString("utf8", HEADER))
      if (p.items++ === 0) p.onFirst()
    } else if (frame[4] === KIND_END) {
      p.ended = true
      if (p.acked) finish(id, p)
    }
  }

  let callHome: net.Server | undefined
  let callHomePort = 0
  if (!corked) {
    callHome = net.createServer({ noDelay: true }, (socket) => {
      socket.on("data", frameReader(muxLength, onResponseFrame))
      socket.on("error", () => {})
      if (options.variant === "dynamo-pooled") socket.on("close", () => failAll("call-home connection closed"))
    })
    callHomePort = await listen(callHome)
  }

  const socket = await connectTo(portOf(server))
  socket.on("error", () => {})
  socket.on("close", () => failAll("request connection closed"))
  const ackQueue: Array<number> = []
  if (corked) {
    socket.on("data", frameReader(muxLength, onResponseFrame))
  } else {
    socket.on(
      "data",
      frameReader(ackLength, (ack) => {
        const id = ackQueue.shift()!
        const p = pending.get(id)
        if (p === undefined) return
        if (ack.length > 4) {
          pending.delete(id)
          p.reject(new Error(ack.toString("utf8", 4)))
          return
        }
        p.acked = true
        if (p.ended) finish(id, p)
      })
    )
  }

  const path = "bench.worker.generate"
  const body = Buffer.from(JSON.stringify({ n: options.items, size: options.itemSize }))
  const once = (onFirst: () => void) =>
    new Promise<void>((resolve, reject) => {
      const id = nextId++
      if (corked) {
        pending.set(id, { resolve, reject, onFirst, items: 0, acked: true, ended: false })
        socket.write(muxFrame(KIND_REQUEST, id, body))
      } else {
        pending.set(id, { resolve, reject, onFirst, items: 0, acked: false, ended: false })
        ackQueue.push(id)
        const payload = Buffer.from(JSON.stringify({ id, port: callHomePort, n: options.items, size: options.itemSize }))
        socket.write(dynamoRequest(path, { "x-endpoint-path": path, "request-id": String(id) }, payload))
      }
    })
  return {
    run: (streams, concurrency, record) => loadPromise(streams, concurrency, once, record),
    close: async () => {
      socket.destroy()
      callHome?.close()
    }
  }
}
