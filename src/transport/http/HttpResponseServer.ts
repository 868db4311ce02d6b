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
 *   already has (or had) its client. Only the 200 uses up the subject.
 * - Before the client attaches, written items are held, encoded in the configured format to
 *   check them and count their size. Past `maxHeldBytes` (default 1 MiB) `whenWritable`
 *   reports not-writable until the client attaches (or the stream is over); `send` keeps
 *   holding what it is given (it never fails for this). Past 16 x `maxHeldBytes` the stream is
 *   dropped: `onDisconnect` fires with a `TransportConnectionError` (SendFailed) and the subject
 *   is gone. On attach, what is held is flushed in one write.
 * - The stream waits at most `timeoutMs` for its client; then `onDisconnect` fires with a
 *   `TransportTimeoutError` (StreamTimeout) and the subject is gone.
 * - A client that goes away before the stream ends fires `onDisconnect` (ConnectionClosed),
 *   and later writes are dropped. Closing the server's scope does the same for every open
 *   stream and destroys every socket.
 * - Frames of one tick leave in one write (`WriteBatcher`); `whenWritable` waits for the
 *   response's drain. An SSE stream idle for `heartbeatMs` (15 s) gets a heartbeat comment.
 * - HTTP/1.1 and h2c with prior knowledge on one port, by sniffing each connection's first
 *   bytes (as `HttpRequestServer` does). It listens on the first `createResponseStream`.
 *
 * What it does not do: carry `stop`/`kill` (a GET has no way back; `onControl` never fires,
 * the client disconnecting is the only cancel), time out a stream once attached, or read
 * streams (`HttpResponseReader.attach` does).
 */
import { randomBytes } from "node:crypto"
import * as http from "node:http"
import * as http2 from "node:http2"
import * as net from "node:net"
import { Context, Effect, Exit, Layer, Semaphore } from "effect"
import type { Scope } from "effect"
import { contentTypeOf, formatFromAccept, makeEncoder } from "../../protocol/HttpStreamFormat.ts"
import type { StreamEncoder, StreamFormat } from "../../protocol/HttpStreamFormat.ts"
import type { ResponseWriter } from "../../ResponsePlane.ts"
import { TransportConfig } from "../../TransportConfig.ts"
import type { TransportError } from "../../TransportError.ts"
import { ResponseWriteError, TransportConnectionError, TransportTimeoutError } from "../../TransportError.ts"
import { advertisedHost, hostPort, listen } from "../../internal/net.ts"
import { Waiters } from "../../internal/Waiters.ts"
import { WriteBatcher } from "../../internal/WriteBatcher.ts"
import { tooLarge } from "../../internal/writeFailure.ts"
import type { WriteTarget } from "../../internal/writeFailure.ts"

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

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
const SNIFF_TIMEOUT_MS = 10_000
/** Subjects remembered after use, so that a second GET is a 409 rather than a 404. */
const USED_MEMORY = 10_000
const HARD_FACTOR = 16

/** The response side of one exchange, whichever HTTP version carries it. */
interface Exchange {
  readonly method: string | undefined
  readonly path: string
  readonly accept: string | undefined
  readonly reply: (status: number, json: Record<string, unknown>, headers?: Record<string, string>) => void
  readonly start: (contentType: string) => void
  /** Writes; false when the response's buffer is past its mark (then "drain" follows). */
  readonly write: (chunk: Uint8Array) => boolean
  readonly end: () => void
  readonly destroy: () => void
  readonly onClose: (f: () => void) => void
  readonly onDrain: (f: () => void) => void
}

type Held =
  | { readonly _tag: "Item"; readonly value: unknown; readonly bytes: Uint8Array }
  | { readonly _tag: "Done" }
  | { readonly _tag: "Error"; readonly tag: string; readonly message: string }

// Stream states.
const PENDING = 0 // no client yet: writes are held
const ATTACHED = 1 // a client reads
const GONE = 2 // ended, timed out, disconnected or dropped

interface Entry {
  attach: (exchange: Exchange, format: StreamFormat) => void
  shutdown: () => void
}

/** Builds the server. It listens on the first `createResponseStream`; its scope closes it. */
export const make = (options: HttpResponseServerOptions): Effect.Effect<HttpResponseServerShape, never, Scope.Scope> =>
  Effect.gen(function*() {
    const maxMessageSize = options.maxMessageSize ?? 32 * 1024 * 1024
    const maxHeldBytes = options.maxHeldBytes ?? 1024 * 1024
    const heartbeatMs = options.heartbeatMs ?? 15_000
    const root = options.rootPath === "/" ? "" : options.rootPath.replace(/\/+$/, "")
    const prefix = `${root}/`
    const streams = new Map<string, Entry>()
    const used = new Set<string>()
    const sockets = new Set<net.Socket>()
    const defaultEncoder = makeEncoder(options.streamFormat)

    const markUsed = (subject: string) => {
      used.add(subject)
      if (used.size > USED_MEMORY) used.delete(used.values().next().value!)
    }

    const onExchange = (x: Exchange) => {
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
        return x.reply(406, { error: `cannot serve ${x.accept}; accepted: ${(["sse", "ndjson", "binary"] as const).map((f) => contentTypeOf(f)).join(", ")}`, subject })
      }
      streams.delete(subject)
      markUsed(subject)
      entry.attach(x, format)
    }

    const h1 = http.createServer({ keepAlive: true, noDelay: true }, (req, res) => {
      const url = req.url ?? "/"
      const q = url.indexOf("?")
      onExchange({
        method: req.method,
        path: q < 0 ? url : url.slice(0, q),
        accept: req.headers.accept,
        reply: (status, json, headers) => {
          const text = JSON.stringify(json)
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

    const front = net.createServer({ noDelay: true }, (socket) => {
      sockets.add(socket)
      socket.once("close", () => sockets.delete(socket))
      socket.on("error", () => {})
      let head: Buffer = Buffer.alloc(0)
      socket.setTimeout(SNIFF_TIMEOUT_MS, () => socket.destroy())
      const onData = (chunk: Buffer) => {
        head = head.length === 0 ? chunk : Buffer.concat([head, chunk])
        const n = Math.min(head.length, H2_PREFACE.length)
        const isH2 = head.subarray(0, n).equals(H2_PREFACE.subarray(0, n))
        if (isH2 && head.length < H2_PREFACE.length) return
        socket.off("data", onData)
        socket.setTimeout(0)
        socket.pause()
        socket.unshift(head)
        if (isH2) h2.emit("connection", socket)
        else {
          h1.emit("connection", socket)
          socket.resume()
        }
      }
      socket.on("data", onData)
    })

    let listening = false
    let boundPort = options.port
    const startLock = yield* Semaphore.make(1)
    const start = startLock.withPermits(1)(
      Effect.suspend(() =>
        listening
          ? Effect.void
          : Effect.map(listen(front, options.host, options.port, "http"), (port) => {
            boundPort = port
            listening = true
          })
      )
    )
    const open = new Set<Entry>()
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const e of [...open]) e.shutdown()
        streams.clear()
        for (const s of sockets) s.destroy()
        front.close()
        h1.close()
        h2.close()
      })
    )
    const host = advertisedHost(options.host, options.advertiseHost)

    /** One stream's writer and its entry in `streams`. */
    const openStream = (subject: string, url: string, timeoutMs: number): ResponseWriter => {
      const where: WriteTarget = { transport: "http", target: url }
      let state = PENDING
      let ending = false // complete/fail/close/error-prologue called
      let held: Array<Held> = []
      let heldBytes = 0
      let exchange: Exchange | undefined
      let encoder: StreamEncoder = defaultEncoder
      let sameFormat = true
      let needDrain = false
      let wroteSinceBeat = false
      let heartbeat: ReturnType<typeof setInterval> | undefined
      let disconnectReceiver: ((error: TransportError) => void) | undefined
      let disconnect: TransportError | undefined
      const waiters = new Waiters()

      const writes = new WriteBatcher(
        (chunk) => {
          if (state === ATTACHED && exchange !== undefined) {
            wroteSinceBeat = true
            if (!exchange.write(chunk)) needDrain = true
          }
        },
        process.nextTick,
        () => {
          if (ending && state === ATTACHED) {
            state = GONE
            cleanup()
            exchange!.end()
          }
        }
      )

      const cleanup = () => {
        clearTimeout(timer)
        clearInterval(heartbeat)
        streams.delete(subject)
        open.delete(entry)
        waiters.wake()
      }

      /** The stream is over before its end: reports `error` (if it was still being written). */
      const gone = (error: () => TransportError) => {
        if (state === GONE) return
        state = GONE
        held = []
        writes.clear()
        cleanup()
        if (ending) return
        const e = error()
        disconnect = e
        disconnectReceiver?.(e)
      }

      const timer = setTimeout(() =>
        gone(() =>
          new TransportTimeoutError({
            reason: "StreamTimeout",
            transport: "http",
            target: url,
            detail: `no client attached within ${timeoutMs} ms`
          })
        ), timeoutMs)
      timer.unref?.()

      const encode = (item: unknown): Uint8Array | ResponseWriteError => {
        let bytes: Uint8Array
        try {
          bytes = encoder.item(item)
        } catch (cause) {
          return new ResponseWriteError({
            reason: "EncodeFailed",
            transport: "http",
            target: url,
            detail: cause instanceof Error ? cause.message : String(cause),
            cause
          })
        }
        return bytes.length > maxMessageSize ? tooLarge(where, bytes.length, maxMessageSize) : bytes
      }

      const terminal = (event: Exclude<Held, { _tag: "Item" }>) => {
        ending = true
        if (state === PENDING) held.push(event)
        else if (state === ATTACHED) writes.push(event._tag === "Error" ? encoder.error(event.tag, event.message) : encoder.done())
        waiters.wake()
      }

      const attach = (x: Exchange, format: StreamFormat) => {
        if (state !== PENDING) return x.reply(409, { error: "the response stream is over", subject })
        clearTimeout(timer)
        state = ATTACHED
        exchange = x
        if (format !== options.streamFormat) {
          encoder = makeEncoder(format)
          sameFormat = false
        }
        x.onClose(() =>
          gone(() =>
            new TransportConnectionError({
              reason: "ConnectionClosed",
              transport: "http",
              target: url,
              detail: "the client closed the response stream"
            })
          )
        )
        x.onDrain(() => {
          needDrain = false
          waiters.wake()
        })
        x.start(contentTypeOf(format))
        const pending = held
        held = []
        heldBytes = 0
        for (const h of pending) {
          if (h._tag === "Item") {
            const bytes = sameFormat ? h.bytes : encode(h.value)
            if (bytes instanceof ResponseWriteError) {
              writes.push(encoder.error("stream", bytes.message))
              break
            }
            writes.push(bytes)
          } else if (h._tag === "Done") writes.push(encoder.done())
          else writes.push(encoder.error(h.tag, h.message))
        }
        writes.requestFlush()
        waiters.wake()
        if (heartbeatMs > 0 && encoder.heartbeat() !== undefined) {
          heartbeat = setInterval(() => {
            if (state !== ATTACHED) return
            if (!wroteSinceBeat) {
              const beat = encoder.heartbeat()
              if (beat !== undefined) writes.push(beat)
            }
            wroteSinceBeat = false
          }, heartbeatMs)
          heartbeat.unref?.()
        }
      }

      const entry: Entry = {
        attach,
        shutdown: () => {
          exchange?.destroy()
          gone(() =>
            new TransportConnectionError({
              reason: "ConnectionClosed",
              transport: "http",
              target: url,
              detail: "the HTTP response server closed"
            })
          )
        }
      }
      streams.set(subject, entry)
      open.add(entry)

      const writer: ResponseWriter = {
        prologue: (error) => {
          if (state === GONE || ending || error === undefined) return
          terminal({ _tag: "Error", tag: "prologue", message: error })
        },
        send: (item) => {
          if (state === GONE || ending) return Exit.void
          const bytes = encode(item)
          if (bytes instanceof ResponseWriteError) return Exit.fail(bytes)
          if (state === ATTACHED) {
            writes.push(bytes)
            return Exit.void
          }
          held.push({ _tag: "Item", value: item, bytes })
          heldBytes += bytes.length
          if (heldBytes > maxHeldBytes * HARD_FACTOR) {
            gone(() =>
              new TransportConnectionError({
                reason: "SendFailed",
                transport: "http",
                target: url,
                detail: `more than ${maxHeldBytes * HARD_FACTOR} bytes written before a client attached`
              })
            )
          }
          return Exit.void
        },
        sendAll: (items) => {
          for (let i = 0; i < items.length; i++) {
            const r = writer.send(items[i])
            if (r !== Exit.void) return r
          }
          return Exit.void
        },
        fail: (message) => {
          if (state === GONE || ending) return
          terminal({ _tag: "Error", tag: "stream", message })
        },
        complete: () => {
          if (state === GONE || ending) return
          terminal({ _tag: "Done" })
        },
        close: () => {
          if (state === GONE || ending) return
          // Ends without the end marker: a reader fails with StreamEndedEarly.
          if (state === PENDING) {
            state = GONE
            ending = true
            held = []
            cleanup()
          } else {
            ending = true
            writes.requestFlush()
            waiters.wake()
          }
        },
        onControl: () => {},
        onDisconnect: (f) => {
          disconnectReceiver = f
          if (disconnect !== undefined) f(disconnect)
        },
        whenWritable: (f) => {
          if (state === GONE || ending) return true
          if (state === PENDING) return heldBytes <= maxHeldBytes || waiters.add(f)
          writes.flushEarly()
          return !needDrain || waiters.add(f)
        }
      }
      return writer
    }

    return {
      createResponseStream: (streamOptions) =>
        Effect.map(start, () => {
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
      maxMessageSize: config.tcpMaxMessageSize
    })
  })
)
