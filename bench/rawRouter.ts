// The raw baseline router: a node:http2 client and a node:net call-home server, no
// framework. It drives bench/raw_worker.ts in a child process, unpooled (one connection per
// stream) or pooled (one persistent connection whose frames name their stream).
import * as http2 from "node:http2"
import * as net from "node:net"
import { startChild } from "./crossProcess.ts"

/** A started raw router and worker: `once` runs one call; `close` stops both. */
export interface RawBaseline {
  readonly once: () => Promise<void>
  readonly close: () => void
}

/** Reads length-prefixed JSON frames from `socket` and hands each to `onFrame`. */
const readFrames = (socket: net.Socket, onFrame: (msg: Record<string, unknown>) => void) => {
  let buf: Buffer = Buffer.alloc(0)
  socket.on("data", (chunk: Buffer) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
    while (buf.length >= 4) {
      const len = buf.readUInt32BE(0)
      if (buf.length < 4 + len) break
      const msg = JSON.parse(buf.subarray(4, 4 + len).toString()) as Record<string, unknown>
      buf = buf.subarray(4 + len)
      onFrame(msg)
    }
  })
  socket.on("error", () => {})
}

/** Starts the raw worker and a raw router for `items` items of `size` bytes per call. */
export const startRawBaseline = async (options: { readonly pooled: boolean; readonly items: number; readonly size: number }): Promise<RawBaseline> => {
  const { child, firstLine } = await startChild("bench/raw_worker.ts", [], {})
  const workerPort = (JSON.parse(firstLine) as { port: number }).port
  const pending = new Map<string, () => void>()
  const complete = (subject: unknown) => {
    if (typeof subject !== "string") return
    pending.get(subject)?.()
    pending.delete(subject)
  }
  const server = net.createServer({ noDelay: true }, (socket) => {
    if (options.pooled) {
      readFrames(socket, (msg) => {
        if (msg.complete_final === true) complete(msg.s)
      })
      return
    }
    let subject: unknown
    readFrames(socket, (msg) => {
      if (subject === undefined) subject = msg.subject
      else if (msg.complete_final === true) complete(subject)
    })
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()))
  const port = (server.address() as net.AddressInfo).port
  const session = http2.connect(`http://127.0.0.1:${workerPort}`)
  const once = () =>
    new Promise<void>((resolve, reject) => {
      const subject = crypto.randomUUID()
      pending.set(subject, resolve)
      const stream = session.request({ ":method": "POST", ":path": "/v1/rpc/raw", "content-type": "application/json" })
      stream.on("response", (h) => {
        if (h[":status"] !== 202) reject(new Error(`status ${h[":status"]}`))
        stream.resume()
      })
      stream.on("error", reject)
      stream.end(JSON.stringify({ port, subject, n: options.items, size: options.size, pooled: options.pooled }))
    })
  return {
    once,
    close: () => {
      session.close()
      server.close()
      child.kill("SIGTERM")
    }
  }
}
