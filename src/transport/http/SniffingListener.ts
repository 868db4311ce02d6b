/**
 * One TCP port for both HTTP versions: each new connection is sniffed for the HTTP/2
 * connection preface (h2c with prior knowledge) and handed to the given `node:http2` server,
 * anything else to the given `node:http` server. A connection whose first request (HTTP/1.1: its
 * headers; HTTP/2: its first stream) has not arrived within `firstRequestTimeoutMs` (default
 * `SNIFF_TIMEOUT_MS`) of the accept is closed, however its bytes trickle in (a slowloris client),
 * not held forever; one beyond `maxConnections` open ones is closed at once. Later requests on a
 * connection are the servers' business (an HTTP/2 session that carried a stream stays open while
 * idle; node:http's `headersTimeout` bounds each HTTP/1.1 request's headers). node:http checks its
 * `headersTimeout` and `requestTimeout` from an interval it starts when the server emits
 * `listening`, which a server fed its connections never does: this starts it (`h1.close()` stops it).
 *
 * It does not listen (the caller passes `server` to `internal/net.listen`), route requests, or
 * know any transport: the two node servers it feeds do that.
 */
import type * as http from "node:http"
import type * as http2 from "node:http2"
import * as net from "node:net"

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

/** How long a new connection may take to make its first request, by default. */
export const SNIFF_TIMEOUT_MS = 10_000

/**
 * node:http options for a server behind the sniffing listener: each request's headers within
 * `firstRequestTimeoutMs` (the first request's deadline, applied to every later one on a
 * kept-alive connection), the whole request within node's 300 s (or that, when longer), checked
 * a few times per deadline (at most every 30 s, node's default).
 */
export const h1Timeouts = (firstRequestTimeoutMs: number = SNIFF_TIMEOUT_MS) => ({
  headersTimeout: firstRequestTimeoutMs,
  requestTimeout: Math.max(300_000, firstRequestTimeoutMs),
  connectionsCheckingInterval: Math.min(30_000, Math.max(50, Math.floor(firstRequestTimeoutMs / 4)))
})

/** The sniffing front server and the way to close it with the servers behind it. */
export interface SniffingListener {
  /** The server to listen with. */
  readonly server: net.Server
  /** Destroys every connection and closes the front, HTTP/1.1 and HTTP/2 servers. */
  readonly close: () => void
}

/**
 * A front server handing each connection to `h1` or `h2` by its first bytes. With `maxConnections`,
 * a connection beyond that many open ones is destroyed at once (the port's connection cap).
 * `firstRequestTimeoutMs` bounds the wait for a connection's first request (see the module comment).
 */
export const makeSniffingListener = (
  h1: http.Server,
  h2: http2.Http2Server,
  maxConnections?: number,
  firstRequestTimeoutMs: number = SNIFF_TIMEOUT_MS
): SniffingListener => {
  const sockets = new Set<net.Socket>()
  // The deadline of each connection still waiting for its first request, by remote address and
  // port (an HTTP/2 session's socket is a proxy of the accepted one, not the same object).
  const deadlines = new Map<string, ReturnType<typeof setTimeout>>()
  const keyOf = (socket: { readonly remoteAddress?: string | undefined; readonly remotePort?: number | undefined }) =>
    `${socket.remoteAddress}|${socket.remotePort}`
  // The HTTP/2 session of such a connection: destroying the socket alone does not end a session.
  const sessions = new Map<string, http2.ServerHttp2Session>()
  const firstRequest = (key: string) => {
    const deadline = deadlines.get(key)
    if (deadline === undefined) return
    clearTimeout(deadline)
    deadlines.delete(key)
    sessions.delete(key)
  }
  h1.on("request", (req: http.IncomingMessage) => firstRequest(keyOf(req.socket)))
  // node:http's check of headersTimeout and requestTimeout (see the module comment); unref'd,
  // and cleared by h1.close().
  h1.emit("listening")
  h2.on("session", (session: http2.ServerHttp2Session) => {
    const key = keyOf(session.socket)
    if (!deadlines.has(key)) return
    sessions.set(key, session)
    session.once("stream", () => firstRequest(key))
  })
  const server = net.createServer({ noDelay: true }, (socket) => {
    if (maxConnections !== undefined && sockets.size >= maxConnections) return void socket.destroy()
    sockets.add(socket)
    const key = keyOf(socket)
    deadlines.set(key, setTimeout(() => {
      sessions.get(key)?.destroy()
      socket.destroy()
    }, firstRequestTimeoutMs))
    socket.once("close", () => {
      sockets.delete(socket)
      firstRequest(key)
    })
    socket.on("error", () => {})
    let head: Buffer = Buffer.alloc(0)
    const onData = (chunk: Buffer) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk])
      const n = Math.min(head.length, H2_PREFACE.length)
      const isH2 = head.subarray(0, n).equals(H2_PREFACE.subarray(0, n))
      if (isH2 && head.length < H2_PREFACE.length) return // need more bytes to decide
      socket.off("data", onData)
      socket.pause()
      socket.unshift(head)
      // node:http2 drains bytes already buffered in the socket, then reads the handle itself.
      if (isH2) h2.emit("connection", socket)
      else {
        h1.emit("connection", socket)
        socket.resume()
      }
    }
    socket.on("data", onData)
  })
  return {
    server,
    close: () => {
      for (const s of sockets) s.destroy()
      server.close()
      h1.close()
      h2.close()
    }
  }
}
