/**
 * The raw HTTP/2 baselines, node:http2 and node:net only. Variants:
 *
 * - `callhome` / `callhome-pooled` (the recommended mode's exchange): an HTTP/2 POST, a 202, and
 *   the items + end over the raw call-home of callHome.ts, a new connection per stream or one
 *   pooled connection; the worker connects right after it writes the 202.
 * - `sse` (the http+http mode's exchange): an HTTP/2 POST answered 200 with the items as server-sent
 *   events in the same response (`data: <json>\n\n`), then the end of the response.
 *
 * One HTTP/2 session from router to worker carries every request. Items are JSON-parsed on the
 * router; a stream with the wrong number of items fails its call.
 */
import * as http2 from "node:http2"
import type * as net from "node:net"
import { loadPromise } from "../load.ts"
import { callHome, callHomeServer } from "./callHome.ts"
import { itemJson, paced } from "./paced.ts"
import { portOf } from "./side.ts"
import type { Driver, ServerInfo, Served, SideOptions } from "./side.ts"

interface RawRequest {
  readonly port?: number
  readonly subject?: string
  readonly n: number
  readonly size: number
}

/** Serves the variant's worker on a free loopback port. */
export const serve = async (options: SideOptions): Promise<Served> => {
  const pooled = options.variant === "callhome-pooled"
  const sse = options.variant === "sse"
  const server = http2.createServer()
  server.on("stream", (stream) => {
    const chunks: Array<Buffer> = []
    stream.on("data", (c: Buffer) => chunks.push(c))
    stream.on("error", () => {})
    stream.on("end", () => {
      const req = JSON.parse(Buffer.concat(chunks).toString()) as RawRequest
      if (sse) {
        stream.respond({ ":status": 200, "content-type": "text/event-stream" })
        const token = "x".repeat(req.size)
        paced(req.n, options.delayMs, (i) => Buffer.from(`data: ${itemJson(i, token)}\n\n`), () => Buffer.alloc(0), (b, last) => {
          if (last) stream.end(b)
          else stream.write(b)
        })
        return
      }
      stream.respond({ ":status": 202 })
      stream.end()
      callHome(req.port!, req.subject!, pooled, req.n, req.size, options.delayMs)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()))
  return { info: { port: (server.address() as net.AddressInfo).port }, close: async () => void server.close() }
}

interface Pending {
  readonly resolve: () => void
  readonly reject: (e: Error) => void
  readonly onFirst: () => void
  items: number
}

/** Connects the variant's router to the worker of `server`. */
export const connect = async (options: SideOptions, server: ServerInfo): Promise<Driver> => {
  const session = http2.connect(`http://127.0.0.1:${portOf(server)}`)
  session.on("error", () => {})
  await new Promise<void>((resolve, reject) => {
    session.once("connect", () => resolve())
    session.once("error", reject)
  })
  const check = (p: Pending, what: string) => {
    if (p.items === options.items) p.resolve()
    else p.reject(new Error(`${what}: ${p.items} items, expected ${options.items}`))
  }

  if (options.variant === "sse") {
    const once = (onFirst: () => void) =>
      new Promise<void>((resolve, reject) => {
        const p: Pending = { resolve, reject, onFirst, items: 0 }
        const stream = session.request({ ":method": "POST", ":path": "/v1/rpc/raw", "content-type": "application/json" })
        let text = ""
        stream.setEncoding("utf8")
        stream.on("data", (chunk: string) => {
          text += chunk
          let end = text.indexOf("\n\n")
          while (end >= 0) {
            const event = text.slice(0, end)
            text = text.slice(end + 2)
            if (event.startsWith("data: ")) {
              JSON.parse(event.slice(6))
              if (p.items++ === 0) onFirst()
            }
            end = text.indexOf("\n\n")
          }
        })
        stream.on("end", () => check(p, "sse stream"))
        stream.on("error", reject)
        stream.end(JSON.stringify({ n: options.items, size: options.itemSize }))
      })
    return { run: (streams, concurrency, record) => loadPromise(streams, concurrency, once, record), close: async () => void session.close() }
  }

  const pooled = options.variant === "callhome-pooled"
  const pending = new Map<string, Pending>()
  const home = await callHomeServer(
    pooled,
    (subject) => {
      const p = pending.get(subject)
      if (p !== undefined && p.items++ === 0) p.onFirst()
    },
    (subject) => {
      const p = pending.get(subject)
      if (p === undefined) return
      pending.delete(subject)
      check(p, `stream ${subject}`)
    }
  )
  const once = (onFirst: () => void) =>
    new Promise<void>((resolve, reject) => {
      const subject = crypto.randomUUID()
      pending.set(subject, { resolve, reject, onFirst, items: 0 })
      const stream = session.request({ ":method": "POST", ":path": "/v1/rpc/raw", "content-type": "application/json" })
      stream.on("response", (h) => {
        if (h[":status"] !== 202) {
          pending.delete(subject)
          reject(new Error(`status ${h[":status"]}`))
        }
        stream.resume()
      })
      stream.on("error", (e) => {
        pending.delete(subject)
        reject(e)
      })
      stream.end(JSON.stringify({ port: home.port, subject, n: options.items, size: options.itemSize }))
    })
  return {
    run: (streams, concurrency, record) => loadPromise(streams, concurrency, once, record),
    close: async () => {
      session.close()
      home.close()
    }
  }
}
