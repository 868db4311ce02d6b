/**
 * One TCP port for both HTTP versions: each new connection is sniffed for the HTTP/2
 * connection preface (h2c with prior knowledge) and handed to the given `node:http2` server,
 * anything else to the given `node:http` server. A connection that sends nothing within
 * `SNIFF_TIMEOUT_MS` is closed, not held forever; one beyond `maxConnections` open ones is closed at once.
 *
 * It does not listen (the caller passes `server` to `internal/net.listen`), route requests, or
 * know any transport: the two node servers it feeds do that.
 */
import type * as http from "node:http"
import type * as http2 from "node:http2"
import * as net from "node:net"

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

/** How long a new connection may take to send its first bytes (the preface or a request line). */
export const SNIFF_TIMEOUT_MS = 10_000

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
 */
export const makeSniffingListener = (h1: http.Server, h2: http2.Http2Server, maxConnections?: number): SniffingListener => {
  const sockets = new Set<net.Socket>()
  const server = net.createServer({ noDelay: true }, (socket) => {
    if (maxConnections !== undefined && sockets.size >= maxConnections) return void socket.destroy()
    sockets.add(socket)
    socket.once("close", () => sockets.delete(socket))
    socket.on("error", () => {})
    let head: Buffer = Buffer.alloc(0)
    socket.setTimeout(SNIFF_TIMEOUT_MS, () => socket.destroy())
    const onData = (chunk: Buffer) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk])
      const n = Math.min(head.length, H2_PREFACE.length)
      const isH2 = head.subarray(0, n).equals(H2_PREFACE.subarray(0, n))
      if (isH2 && head.length < H2_PREFACE.length) return // need more bytes to decide
      socket.off("data", onData)
      socket.setTimeout(0)
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
