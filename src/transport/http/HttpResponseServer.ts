/**
 * The worker's HTTP response server (the seed's `HttpResponseServer`, issue 12 item 2).
 *
 * What it does:
 * - `createResponseStream()` opens a response stream under a fresh single-use subject (128
 *   random bits, hex) and returns `{ subject, address: { _tag: "Http", url }, writer }`, where
 *   `url` is `http://{host}:{port}{root}/{subject}` and `writer` is a `ResponseWriter`.
 * - A client attaches with `GET {root}/{subject}`; the format comes from its Accept header
 *   (`formatFromAccept`, falling back to the configured format). Answers: 200 and the stream;
 *   404 for an unknown subject (or a path outside the root, or a stream that timed out); 405
 *   for a method other than GET; 406 for an Accept it cannot serve; 409 for a subject that
 *   already has (or had) its client. Only the 200 uses up the subject. Over HTTP/1.1 a refused
 *   request's connection is closed after the answer.
 * - Each stream (`HttpResponseStream`) holds what is written before its client attaches (past
 *   `maxHeldBytes`, default 1 MiB, `whenWritable` says wait; past 16 x it is dropped with
 *   SendFailed), waits at most `timeoutMs` for its client (then StreamTimeout), reports a
 *   client that goes away (ConnectionClosed), and sends SSE heartbeats every `heartbeatMs`
 *   (15 s) of idleness. A stream that is over leaves the table: its subject is gone. Closing
 *   the server's scope shuts down every open stream and destroys every socket.
 * - HTTP/1.1 and h2c with prior knowledge on one port (`SniffingListener`, as
 *   `HttpRequestServer`). It listens on the first `createResponseStream`.
 *
 * What it does not do: write a stream (`HttpResponseStream` does), carry `stop`/`kill` (a GET
 * has no way back; `onControl` never fires, the client disconnecting is the only cancel), time
 * out a stream once attached, or read streams (`HttpResponseReader.attach` does).
 */
import { randomBytes } from "node:crypto"
import * as http from "node:http"
import * as http2 from "node:http2"
import { Context, Effect, Layer } from "effect"
import type { Scope } from "effect"
import { contentTypeOf, formatFromAccept, makeEncoder, STREAM_FORMATS } from "../../protocol/HttpStreamFormat.ts"
import { DEFAULT_MAX_MESSAGE_SIZE } from "../../protocol/TwoPartCodec.ts"
import type { StreamFormat } from "../../protocol/HttpStreamFormat.ts"
import type { ResponseWriter } from "../../ResponsePlane.ts"
import { TransportConfig } from "../../TransportConfig.ts"
import type { TransportConnectionError } from "../../TransportError.ts"
import { advertisedHost, hostPort, listenOnce } from "../../internal/net.ts"
import { openResponseStream } from "./HttpResponseStream.ts"
import type { ResponseExchange, ResponseStream } from "./HttpResponseStream.ts"
import { HEARTBEAT_MS } from "./InlineWriter.ts"
import { h1Timeouts, makeSniffingListener } from "./SniffingListener.ts"
import { recordError } from "../../observability/Metrics.ts"
import { EntryTable } from "../../internal/EntryTable.ts"

/** Options of the server. */
export interface HttpResponseServerOptions {
  readonly host: string
  readonly port: number
  readonly rootPath: string
  /** The format for a client whose Accept names none (or any). */
  readonly streamFormat: StreamFormat
  /** How long a stream waits for its client. */
  readonly timeoutMs: number
  readonly advertiseHost?: string | undefined
  /** Largest encoded item. Default 32 MiB. */
  readonly maxMessageSize?: number | undefined
  /** Bytes held before attach past which `whenWritable` says wait. Default 1 MiB. */
  readonly maxHeldBytes?: number | undefined
  /** Idle time after which an SSE stream gets a heartbeat. Default 15 s. */
  readonly heartbeatMs?: number | undefined
  /** Most connections at once (`DYN_HTTP_RESPONSE_MAX_CONNECTIONS`); absent: no cap. */
  readonly maxConnections?: number | undefined
  /**
   * How long a new connection may take to make its first request before it is closed, however
   * its bytes trickle in (default `SNIFF_TIMEOUT_MS`, 10 s; `SniffingListener.ts`).
   */
  readonly firstRequestTimeoutMs?: number | undefined
}

/** Where a client attaches: the seed's `TransportAddress::Http { url }`. */
export interface HttpAddress {
  readonly _tag: "Http"
  readonly url: string
}

/** A stream created by `createResponseStream`. */
export interface CreatedResponseStream {
  readonly subject: string
  readonly address: HttpAddress
  readonly writer: ResponseWriter
}

/** Per-stream options. */
export interface CreateResponseStreamOptions {
  /** Overrides the server's `timeoutMs` for this stream's wait for its client. */
  readonly timeoutMs?: number | undefined
}

/** The service. */
export interface HttpResponseServerShape {
  readonly createResponseStream: (
    options?: CreateResponseStreamOptions
  ) => Effect.Effect<CreatedResponseStream, TransportConnectionError>
}

export class HttpResponseServer extends Context.Service<HttpResponseServer, HttpResponseServerShape>()(
  "transport-registry/HttpResponseServer"
) {}

/** Subjects remembered after use, so that a second GET is a 409 rather than a 404. */
const USED_MEMORY = 10_000

/** Builds the server. It listens on the first `createResponseStream`; its scope closes it. */
export const make = (options: HttpResponseServerOptions): Effect.Effect<HttpResponseServerShape, never, Scope.Scope> =>
  Effect.gen(function*() {
    const maxMessageSize = options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE
    const maxHeldBytes = options.maxHeldBytes ?? 1024 * 1024
    const heartbeatMs = options.heartbeatMs ?? HEARTBEAT_MS
    const root = options.rootPath === "/" ? "" : options.rootPath.replace(/\/+$/, "")
    const prefix = `${root}/`
    const streams = new EntryTable<ResponseStream>()
    const used = new Set<string>()
    const defaultEncoder = makeEncoder(options.streamFormat)

    const markUsed = (subject: string) => {
      used.add(subject)
      if (used.size > USED_MEMORY) used.delete(used.values().next().value!)
    }

    const onExchange = (x: ResponseExchange) => {
      if (!x.path.startsWith(prefix)) return x.reply(404, { error: "not found", path: x.path })
      let subject: string
      try {
        subject = decodeURIComponent(x.path.slice(prefix.length))
      } catch {
        return x.reply(400, { error: "malformed percent-encoding in the path", path: x.path })
      }
      const entry = streams.get(subject)
      if (entry === undefined) {
        if (used.has(subject)) return x.reply(409, { error: "the response stream already has its client", subject })
        return x.reply(404, { error: "response stream not found", subject })
      }
      if (x.method !== "GET") return x.reply(405, { error: "method not allowed: use GET", subject }, { allow: "GET" })
      const format = formatFromAccept(x.accept, options.streamFormat)
      if (format === undefined) {
        return x.reply(406, { error: `cannot serve ${x.accept}; accepted: ${STREAM_FORMATS.map((f) => contentTypeOf(f)).join(", ")}`, subject })
      }
      streams.delete(subject)
      markUsed(subject)
      entry.attach(x, format)
    }

    const h1 = http.createServer({ keepAlive: true, noDelay: true, ...h1Timeouts(options.firstRequestTimeoutMs) }, (req, res) => {
      const url = req.url ?? "/"
      const q = url.indexOf("?")
      onExchange({
        method: req.method,
        path: q < 0 ? url : url.slice(0, q),
        accept: req.headers.accept,
        reply: (status, json, headers) => {
          const text = JSON.stringify(json)
          // A refused GET (unknown, used or malformed subject) also closes its connection.
          if (status >= 400) res.shouldKeepAlive = false
          if (status >= 400) recordError("http", "protocol", "client")
          res.writeHead(status, { ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(text) })
          res.end(text)
        },
        start: (contentType) => {
          res.writeHead(200, { "content-type": contentType, "cache-control": "no-cache", "x-accel-buffering": "no" })
          res.flushHeaders()
        },
        write: (chunk) => res.write(chunk),
        end: () => res.end(),
        destroy: () => res.destroy(),
        onClose: (f) => res.on("close", f), // after the end too: the stream is GONE by then
        onDrain: (f) => res.on("drain", f)
      })
    })
    // HTTP/2 through the stream API.
    const h2 = http2.createServer({})
    h2.on("stream", (stream, headers) => {
      stream.on("error", () => {})
      const url = String(headers[":path"] ?? "/")
      const q = url.indexOf("?")
      const accept = headers.accept
      onExchange({
        method: headers[":method"],
        path: q < 0 ? url : url.slice(0, q),
        accept: Array.isArray(accept) ? accept.join(", ") : accept,
        reply: (status, json, extra) => {
          if (stream.destroyed || stream.closed) return
          if (status >= 400) recordError("http", "protocol", "client")
          stream.respond({ ":status": status, ...extra, "content-type": "application/json" })
          stream.end(JSON.stringify(json))
        },
        start: (contentType) => stream.respond({ ":status": 200, "content-type": contentType, "cache-control": "no-cache" }),
        write: (chunk) => stream.write(chunk),
        end: () => stream.end(),
        destroy: () => stream.close(http2.constants.NGHTTP2_CANCEL),
        onClose: (f) => stream.on("close", f),
        onDrain: (f) => stream.on("drain", f)
      })
    })
    h2.on("sessionError", () => {})

    const front = makeSniffingListener(h1, h2, options.maxConnections, options.firstRequestTimeoutMs)

    // Listening starts on first use, once (a failed listen is tried again); `start` gives the port.
    const start = yield* listenOnce(front.server, options.host, options.port, "http")
    const open = new Set<ResponseStream>()
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const s of [...open]) s.shutdown()
        streams.clear()
        front.close()
      })
    )
    const host = advertisedHost(options.host, options.advertiseHost)

    /** Opens one stream and keeps it in `streams` (until attached) and `open` (until over). */
    const openStream = (subject: string, url: string, timeoutMs: number): ResponseWriter => {
      const stream: ResponseStream = openResponseStream({
        subject,
        url,
        timeoutMs,
        streamFormat: options.streamFormat,
        defaultEncoder,
        maxMessageSize,
        maxHeldBytes,
        heartbeatMs,
        onGone: () => {
          streams.delete(subject)
          open.delete(stream)
        }
      })
      streams.set(subject, stream)
      open.add(stream)
      return stream.writer
    }

    return {
      createResponseStream: (streamOptions) =>
        Effect.map(start, (boundPort) => {
          const subject = randomBytes(16).toString("hex")
          const url = `http://${hostPort(host, boundPort)}${root}/${subject}`
          const writer = openStream(subject, url, streamOptions?.timeoutMs ?? options.timeoutMs)
          return { subject, address: { _tag: "Http", url }, writer } satisfies CreatedResponseStream
        })
    }
  })

/** The server from `DYN_HTTP_RESPONSE_*`, closed with the layer's scope. */
export const layer: Layer.Layer<HttpResponseServer, never, TransportConfig> = Layer.effect(
  HttpResponseServer,
  Effect.gen(function*() {
    const config = yield* TransportConfig
    return yield* make({
      host: config.httpResponse.host,
      port: config.httpResponse.port,
      rootPath: config.httpResponse.rootPath,
      streamFormat: config.httpResponse.streamFormat,
      timeoutMs: config.httpResponse.timeoutMs,
      maxMessageSize: config.tcpMaxMessageSize,
      maxConnections: config.connectionCaps.httpResponse,
      firstRequestTimeoutMs: config.httpFirstRequestTimeoutMs
    })
  })
)
