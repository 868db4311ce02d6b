/**
 * The raw call-home response plane, node:net only, shared by the raw HTTP/2 and raw NATS
 * baselines: the worker connects back to the router's port and sends u32-length-prefixed JSON
 * frames. Unpooled: one new connection per stream, whose first frame names the stream, then the
 * items and `{"complete_final":true}`, then the connection closes (the Dynamo one-shot shape).
 * Pooled: one persistent connection per router port, every frame naming its stream (`"s"`).
 * Each item is JSON-parsed on the router, as a transport's codec would.
 */
import * as net from "node:net"
import { itemJson, paced } from "./paced.ts"

const frame = (json: string): Buffer => {
  const body = Buffer.from(json)
  const out = Buffer.allocUnsafe(4 + body.length)
  out.writeUInt32BE(body.length, 0)
  body.copy(out, 4)
  return out
}

const pool = new Map<number, net.Socket>()

/** Worker side: sends stream `subject`'s items and end to the router's call-home `port`. */
export const callHome = (port: number, subject: string, pooled: boolean, n: number, size: number, delayMs: number): void => {
  const token = "x".repeat(size)
  if (pooled) {
    let socket = pool.get(port)
    if (socket === undefined || socket.destroyed) {
      socket = net.connect({ port, host: "127.0.0.1", noDelay: true })
      socket.on("error", () => pool.delete(port))
      pool.set(port, socket)
    }
    const s = socket
    const tag = JSON.stringify(subject)
    paced(n, delayMs, (i) => frame(`{"s":${tag},"data":${itemJson(i, token)}}`), () => frame(`{"s":${tag},"complete_final":true}`), (b) => s.write(b))
    return
  }
  const socket = net.connect({ port, host: "127.0.0.1", noDelay: true }, () => {
    socket.write(frame(JSON.stringify({ subject })))
    paced(n, delayMs, (i) => frame(`{"data":${itemJson(i, token)}}`), () => frame(`{"complete_final":true}`), (b, last) => {
      if (last) socket.end(b)
      else socket.write(b)
    })
  })
  socket.on("error", () => {})
}

/** Router side: the call-home server; `onItem`/`onEnd` get each stream's subject. */
export const callHomeServer = async (
  pooled: boolean,
  onItem: (subject: string) => void,
  onEnd: (subject: string) => void
): Promise<{ readonly port: number; readonly close: () => void }> => {
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on("error", () => {})
    let buf: Buffer = Buffer.alloc(0)
    let subject: string | undefined
    socket.on("data", (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
      while (buf.length >= 4) {
        const len = buf.readUInt32BE(0)
        if (buf.length < 4 + len) break
        const msg = JSON.parse(buf.toString("utf8", 4, 4 + len)) as { s?: string; subject?: string; data?: unknown; complete_final?: boolean }
        buf = buf.subarray(4 + len)
        const s = pooled ? msg.s : subject
        if (!pooled && subject === undefined) subject = msg.subject
        else if (s === undefined) continue
        else if (msg.complete_final === true) onEnd(s)
        else onItem(s)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()))
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() }
}
