// The raw TCP baseline router: node:net only, no framework. It drives bench/raw_tcp_worker.ts in a
// child process in one of two shapes, the floors of the project's two TCP request planes:
//
// - `corked` (the full mode's floor): one persistent connection to the worker; each call writes a
//   mux REQUEST frame and reads its items + END back on the same connection, many calls in flight.
// - `dynamo` (Dynamo's shipped shape): one persistent request connection carrying Dynamo request
//   frames, acked in order with u32 lengths, and a call-home server on which the worker's persistent
//   (pooled) connection brings each stream's items + END. A call completes when both its ack and
//   its END have come.
// Each item is JSON-parsed, as a transport's payload codec would; a stream with the wrong number
// of items, a rejection ack or a lost connection fails the call (so a bench never hangs on it).
import * as net from "node:net"
import { startChild } from "./crossProcess.ts"
import type { RawBaseline } from "./rawRouter.ts"
import { ackLength, dynamoRequest, frameReader, HEADER, KIND_DATA, KIND_END, KIND_REQUEST, muxLength, pushFrame } from "./rawTcpFrames.ts"

/** The two shapes of the raw TCP baseline. */
export type RawTcpShape = "corked" | "dynamo"

interface Pending {
  readonly resolve: () => void
  readonly reject: (e: Error) => void
  items: number
  acked: boolean
  ended: boolean
}

const connect = (port: number) =>
  new Promise<net.Socket>((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1", noDelay: true }, () => resolve(socket))
    socket.once("error", reject)
  })

/** Starts the raw TCP worker and router for `items` items of `size` bytes per call. */
export const startRawTcpBaseline = async (options: { readonly shape: RawTcpShape; readonly items: number; readonly size: number }): Promise<RawBaseline> => {
  const { child, firstLine } = await startChild("bench/raw_tcp_worker.ts", [options.shape], {})
  const workerPort = (JSON.parse(firstLine) as { port: number }).port
  const pending = new Map<number, Pending>()
  let nextId = 1
  const failAll = (why: string) => {
    for (const p of pending.values()) p.reject(new Error(why))
    pending.clear()
  }
  const finish = (id: number, p: Pending) => {
    pending.delete(id)
    if (p.items === options.items) p.resolve()
    else p.reject(new Error(`stream ${id}: ${p.items} items, expected ${options.items}`))
  }
  // Response frames, on the request connection (corked) or the call-home connection (dynamo).
  const onResponseFrame = (frame: Buffer) => {
    const id = frame.readUInt32BE(8)
    const p = pending.get(id)
    if (p === undefined) return
    if (frame[4] === KIND_DATA) {
      JSON.parse(frame.toString("utf8", HEADER))
      p.items++
    } else if (frame[4] === KIND_END) {
      p.ended = true
      if (p.acked) finish(id, p)
    }
  }

  let callHome: net.Server | undefined
  let callHomePort = 0
  if (options.shape === "dynamo") {
    callHome = net.createServer({ noDelay: true }, (socket) => {
      socket.on("data", frameReader(muxLength, onResponseFrame))
      socket.on("error", () => {})
      socket.on("close", () => failAll("call-home connection closed"))
    })
    await new Promise<void>((r) => callHome!.listen(0, "127.0.0.1", () => r()))
    callHomePort = (callHome.address() as net.AddressInfo).port
  }

  const socket = await connect(workerPort)
  socket.on("error", () => {})
  socket.on("close", () => failAll("request connection closed"))
  const ackQueue: Array<number> = []
  if (options.shape === "corked") {
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
  const body = Buffer.from(JSON.stringify({ n: options.items, size: options.size }))
  const once = () =>
    new Promise<void>((resolve, reject) => {
      const id = nextId++
      if (options.shape === "corked") {
        pending.set(id, { resolve, reject, items: 0, acked: true, ended: false })
        const parts: Array<Buffer> = []
        pushFrame(parts, KIND_REQUEST, id, body)
        socket.write(Buffer.concat(parts))
      } else {
        pending.set(id, { resolve, reject, items: 0, acked: false, ended: false })
        ackQueue.push(id)
        const payload = Buffer.from(JSON.stringify({ id, port: callHomePort, n: options.items, size: options.size }))
        socket.write(dynamoRequest(path, { "x-endpoint-path": path, "request-id": String(id) }, payload))
      }
    })
  return {
    once,
    close: () => {
      socket.destroy()
      callHome?.close()
      child.kill("SIGTERM")
    }
  }
}
