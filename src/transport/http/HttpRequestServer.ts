/**
 * The worker's HTTP request-plane server (PROTOCOL.md section 4).
 *
 * One TCP port answers both HTTP/1.1 and h2c with prior knowledge (`SniffingListener`: each
 * new connection is sniffed for the HTTP/2 preface and handed to the matching node server).
 * `POST {root}/{subject}` with a request-plane message as body is answered 202 before the
 * handler runs; an unknown subject gets 404, a body that is not a valid message 400, a body
 * over the size limit 413, each with a JSON error. A request the endpoint's admission check
 * refuses (at its in-flight cap, or draining) gets 503 with Dynamo's texts in `error`
 * (`Server overloaded: ...`, `Server unavailable: ...`). A request whose body has not ended
 * `bodyTimeoutMs` after its headers gets 408 and is closed (HTTP/2: the stream, reset with
 * NO_ERROR after the response; HTTP/1.1: the connection). Other requests keep being served.
 *
 * Pure HTTP mode (`inline` given: the http response plane is served too): a POST whose message's
 * `connection_info.transport` is `http_inline`, or whose body is plain JSON (`Content-Type:
 * application/json`, or curl's default `application/x-www-form-urlencoded`: the request value
 * itself; the message gets a fresh id, the json codec, and the format the `Accept` header asks
 * for, or 406), is not answered 202: the exchange is kept in the `HttpInlineHub` by request id,
 * and the http response plane's writer answers it with the stream. A request whose id already has a
 * kept exchange is refused with 409 (it would take the other request's stream).
 *
 * It does not run handlers or write streams: it hands each decoded message to the registered
 * `RequestHandler`, and the response plane carries the stream.
 */
import * as http from "node:http"
import * as http2 from "node:http2"
import { Effect } from "effect"
import type { Scope } from "effect"
import { toTransportProtocolError } from "../../internal/protocolError.ts"
import { ProtocolParseError } from "../../protocol/ProtocolError.ts"
import { formatFromAccept } from "../../protocol/HttpStreamFormat.ts"
import type { StreamFormat } from "../../protocol/HttpStreamFormat.ts"
import { decodeRequestMessage } from "../../protocol/RequestMessage.ts"
import type { RequestControlMessage } from "../../ConnectionInfo.ts"
import type { TransportType } from "../../Instance.ts"
import { instanceSubject } from "../../RequestPlane.ts"
import type { Admission, RequestHandler, RequestPlaneServer } from "../../RequestPlane.ts"
import { advertisedHost, hostPort, listenOnce } from "../../internal/net.ts"
import { recordError } from "../../observability/Metrics.ts"
import { fromH1Response, fromH2Stream } from "./InlineExchange.ts"
import { formatOfInfo, HTTP_INLINE, inlineInfo } from "./HttpInlineHub.ts"
import type { HttpInlineHubShape, InlineExchange } from "./HttpInlineHub.ts"
import { h1Timeouts, makeSniffingListener } from "./SniffingListener.ts"
import { ignoreError, listenUntilClose } from "./ClosedStream.ts"
import { replyH1, replyH2Exchange } from "./ExchangeReplies.ts"
import { DeadlineList } from "../../internal/DeadlineList.ts"

/** Options of the server. */
export interface HttpRequestServerOptions {
  readonly host: string
  readonly port: number
  readonly rootPath: string
  readonly maxMessageSize: number
  readonly advertiseHost?: string | undefined
  /** Pure HTTP mode: keep exchanges for the http response plane (see the module comment). */
  readonly inline?: {
    readonly hub: HttpInlineHubShape
    /** The format of a plain JSON request whose Accept header names none. */
    readonly fallbackFormat: StreamFormat
  } | undefined
  /** The transport form to advertise for a served URL (default `{ http: url }`). */
  readonly advertise?: ((url: string) => TransportType) | undefined
  /** Most connections at once, HTTP/1.1 and h2c (`DYN_HTTP_RPC_MAX_CONNECTIONS`); absent: no cap. */
  readonly maxConnections?: number | undefined
  /**
   * How long a new connection may take to make its first request before it is closed, however
   * its bytes trickle in (default `SNIFF_TIMEOUT_MS`, 10 s; `SniffingListener.ts`).
   */
  readonly firstRequestTimeoutMs?: number | undefined
  /**
   * How long a request's body may take to end after its headers arrived (default
   * `BODY_TIMEOUT_MS`, 30 s); then it gets 408 and is closed, with what it sent dropped.
   */
  readonly bodyTimeoutMs?: number | undefined
}

export { REFUSAL_BODY_WAIT_MS } from "./ExchangeReplies.ts"

/** How long a request's body may take to end after its headers, by default. */
export const BODY_TIMEOUT_MS = 30_000

/** Request streams open now on each HTTP/2 session (the one a request arrived on is counted). */
const openStreams = new WeakMap<http2.Http2Session, { n: number }>()

const openStreamsOf = (session: http2.Http2Session): { n: number } => {
  let open = openStreams.get(session)
  if (open === undefined) {
    open = { n: 0 }
    openStreams.set(session, open)
  }
  return open
}

/** HTTP/1.1 requests are never taken as alone: their handlers start on the next turn. */
const notAlone = (): boolean => false

/** Keeps the exchange open for the response plane, in `format`. */
type Keep = (requestId: string, format: StreamFormat, target: string) => InlineExchange

const isPlainJson = (contentType: string | undefined): boolean => {
  const type = (contentType ?? "").split(";")[0]!.trim().toLowerCase()
  return type === "application/json" || type === "application/x-www-form-urlencoded"
}

/**
 * HTTP/2 session limits of the request server, each set on purpose (docs/transports.md, "Session
 * limits"):
 * - `streamResetBurst` / `streamResetRate`: a router resets a stream for every cancellation (in
 *   the pure HTTP mode, every consumer that stops early), and Node's reset-flood guard (a burst of
 *   1,000 resets, then 33 a second) closed the whole session at 1,000 cancellations, failing every
 *   call on it, cancelled or not. The guard stays on, far above what cancellations reach (a burst
 *   of 100,000, then 10,000 a second): this port serves routers, not the internet.
 * - `maxSessionMemory`: 64 MB rather than Node's 10 MB, for many streams in flight on a session.
 * - `settings.maxConcurrentStreams`: 8,192 streams per session (Node's default is unlimited). This
 *   project's router opens another session at 1,000 (`HttpRequestClient.DEFAULT_SESSION_LIMITS`);
 *   a router on one connection per worker (Dynamo's) waits on its side beyond 8,192, and no one
 *   connection makes the worker hold more.
 * - `maxSessionRejectedStreams`: 100 (Node's default, said here): a peer that keeps opening
 *   streams the session must refuse (over its memory or stream limit) loses the session.
 */
export const H2_SESSION_LIMITS: http2.ServerOptions = {
  streamResetBurst: 100_000,
  streamResetRate: 10_000,
  maxSessionMemory: 64,
  maxSessionRejectedStreams: 100,
  settings: { maxConcurrentStreams: 8_192 }
}

const TRACE_HEADERS = ["traceparent", "tracestate", "x-request-id"] as const

/** A served subject: its handler and admission check. */
interface Served {
  readonly handler: RequestHandler
  readonly admit: Admission | undefined
}

/** The 503 body of a request the admission check refused, or undefined when admitted (asked last, just before the handler). */
const refusalBody = (admit: Admission | undefined, endpoint: string): Record<string, unknown> | undefined => {
  const refused = admit?.()
  if (refused === undefined) return undefined
  const head = refused.refuse === "overloaded" ? "Server overloaded" : "Server unavailable"
  return { error: `${head}: ${refused.detail}`, reason: refused.refuse, endpoint }
}

const single = (value: string | ReadonlyArray<string> | undefined): string | undefined =>
  typeof value === "string" ? value : value?.[0]

/**
 * Builds the server. It listens on the first `register` and stops when the scope that
 * `make` ran in closes.
 */
export const make = (options: HttpRequestServerOptions): Effect.Effect<RequestPlaneServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const handlers = new Map<string, Served>()
    const bodyTimeoutMs = options.bodyTimeoutMs ?? BODY_TIMEOUT_MS
    // One timer for every request body still arriving.
    const bodyDeadlines = new DeadlineList<() => void>(bodyTimeoutMs, (expire) => expire(), false)
    yield* Effect.addFinalizer(() => Effect.sync(() => bodyDeadlines.stop()))
    const root = options.rootPath === "/" ? "" : options.rootPath
    const prefix = `${root}/`

    // An exchange waits in the hub until the response plane takes it; one whose client leaves
    // first is dropped.
    const keepExchange = (exchange: InlineExchange): InlineExchange => {
      const exchanges = options.inline!.hub.exchanges
      exchanges.set(exchange.requestId, exchange)
      exchange.onClose(() => {
        if (exchanges.get(exchange.requestId) === exchange) exchanges.delete(exchange.requestId)
      })
      return exchange
    }

    // One exchange, whichever HTTP version carries it. True when it listens to the body until the
    // stream closes, with `onClose` run then; false when it answered at once (a refusal), without
    // taking `onClose`.
    const onExchange = (
      method: string | undefined,
      url: string,
      header: (name: string) => string | undefined,
      body: NodeJS.ReadableStream,
      reply: (status: number, json?: Record<string, unknown>) => void,
      keep: Keep,
      alone: () => boolean,
      onClose?: () => void
    ): boolean => {
      // Every refusal counts in transport_errors_total (role server): 503 and 404 as connection (the
      // router's ServerUnavailable/Overloaded), any other 4xx as protocol.
      const respond: typeof reply = (status, json) => {
        if (status >= 400) recordError("http", status === 503 || status === 404 ? "connection" : "protocol", "server")
        reply(status, json)
      }
      const refuse = (status: number, json: Record<string, unknown>): false => {
        respond(status, json)
        return false
      }
      const q = url.indexOf("?")
      const path = q < 0 ? url : url.slice(0, q)
      if (!path.startsWith(prefix)) return refuse(404, { error: "not found", path })
      let subject = path.slice(prefix.length)
      // Most paths have no percent-encoding; decoding one costs about 1,000 instructions.
      if (subject.includes("%")) {
        try {
          subject = decodeURIComponent(subject)
        } catch {
          return refuse(400, { error: "malformed percent-encoding in the path", path })
        }
      }
      const served = handlers.get(subject)
      if (served === undefined) return refuse(404, { error: "endpoint not found", endpoint: subject })
      const handler = served.handler
      if (method !== "POST") return refuse(405, { error: "method not allowed: use POST", endpoint: subject })
      const inline = options.inline
      if (inline === undefined && isPlainJson(header("content-type"))) {
        // A plain JSON body (curl) needs the response to stream in this response: the pure HTTP mode.
        return refuse(415, {
          error: "this worker streams responses over its response plane, not in the HTTP response: plain JSON requests need DYN_RESPONSE_PLANE=http; send a TwoPartCodec request-plane message (application/octet-stream) otherwise",
          endpoint: subject
        })
      }
      const plainJson = inline !== undefined && isPlainJson(header("content-type"))
      let plainFormat: StreamFormat | undefined
      if (plainJson) {
        plainFormat = formatFromAccept(header("accept"), inline.fallbackFormat)
        if (plainFormat === undefined) {
          return refuse(406, {
            error: "the Accept header names no stream format served here (text/event-stream, application/x-ndjson, application/octet-stream)",
            endpoint: subject
          })
        }
      }
      const declared = Number(header("content-length") ?? "0")
      if (declared > options.maxMessageSize) {
        return refuse(413, { error: `request of ${declared} bytes exceeds ${options.maxMessageSize}`, endpoint: subject })
      }
      const chunks: Array<Buffer> = []
      let size = 0
      let refused = false
      const onData = (chunk: Buffer) => {
        if (refused) return
        size += chunk.length
        if (size > options.maxMessageSize) {
          refused = true
          respond(413, { error: `request exceeds ${options.maxMessageSize} bytes`, endpoint: subject })
          return
        }
        chunks.push(chunk)
      }
      // The body's deadline: 408 (or, after a refusal already sent, only the end of the stream).
      const deadline = bodyDeadlines.add(() => {
        const answered = refused
        refused = true
        chunks.length = 0
        if (answered) reply(408)
        else respond(408, { error: `the request body did not end within ${bodyTimeoutMs} ms of its headers`, endpoint: subject })
      })
      const onEnd = () => {
        bodyDeadlines.remove(deadline)
        if (refused) return
        const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)
        const headers: Record<string, string> = {}
        for (const name of TRACE_HEADERS) {
          const value = header(name)
          if (value !== undefined) headers[name] = value
        }
        if (plainFormat !== undefined) {
          // A plain JSON request (curl): the body is the request value.
          let payload: unknown
          try {
            payload = bytes.length === 0 ? null : JSON.parse(bytes.toString("utf8"))
          } catch (cause) {
            return respond(400, { error: `the body is not JSON: ${(cause as Error).message}`, endpoint: subject })
          }
          const id = crypto.randomUUID()
          const control: RequestControlMessage = {
            id,
            request_type: "single_in",
            response_type: "many_out",
            payload_codec: "json",
            connection_info: { transport: HTTP_INLINE, info: inlineInfo(plainFormat) }
          }
          headers["x-request-id"] ??= id
          const refusal = refusalBody(served.admit, subject)
          if (refusal !== undefined) return respond(503, refusal)
          keep(id, plainFormat, subject)
          return handler({ control, payload, headers })
        }
        const decoded = decodeRequestMessage(bytes, { maxMessageSize: options.maxMessageSize })
        if (decoded instanceof ProtocolParseError) {
          const error = toTransportProtocolError(decoded, "http", subject)
          return respond(400, { error: error.message, reason: error.reason, endpoint: subject })
        }
        const info = decoded.control.connection_info
        if (info.transport === HTTP_INLINE) {
          const format = formatOfInfo(info.info)
          if (inline === undefined || format === undefined) {
            return respond(400, {
              error: inline === undefined
                ? `this worker does not serve the ${HTTP_INLINE} response plane (DYN_RESPONSE_PLANE is not http)`
                : `bad ${HTTP_INLINE} connection info: ${info.info}`,
              endpoint: subject
            })
          }
          // A request id already kept is refused: the second would take the first one's stream.
          if (inline.hub.exchanges.has(decoded.control.id)) {
            return respond(409, { error: `request id ${decoded.control.id} already has a response stream on this worker`, endpoint: subject })
          }
          const refusal = refusalBody(served.admit, subject)
          if (refusal !== undefined) return respond(503, refusal)
          // No ack: the response itself, streamed by the response plane, is the answer.
          keep(decoded.control.id, format, subject)
          return handler({ control: decoded.control, payload: decoded.payload, headers })
        }
        const refusal = refusalBody(served.admit, subject)
        if (refusal !== undefined) return respond(503, refusal)
        respond(202)
        const request = { control: decoded.control, payload: decoded.payload, headers }
        // The handler starts after the 202 is queued. node:http2 writes it on a later turn, so a
        // handler started now can get its first frames out before it (a pooled call-home writes
        // in this tick). Alone on its session, that is best: the router's call ends with its
        // stream and reads the 202 later, about 30 µs sooner at 1 in flight. Among other
        // requests on the session, it starts on the next turn, after the 202 is written: at 64
        // in flight, frames first cost 10-20% of the req/s, and the router slept six times as
        // often (docs/performance.md, seventh session).
        if (alone()) handler(request)
        else setImmediate(handler, request)
      }
      // The body outlives the exchange in the heap (ClosedStream.ts): it must not hold the exchange.
      // (Its errors go to the shared no-op listener each server adds first, which stays.)
      listenUntilClose(body, { data: onData, end: onEnd }, () => {
        bodyDeadlines.remove(deadline)
        onClose?.()
      })
      return true
    }

    const h1 = http.createServer({ keepAlive: true, noDelay: true, ...h1Timeouts(options.firstRequestTimeoutMs) }, (req, res) => {
      req.on("error", ignoreError)
      onExchange(
        req.method,
        req.url ?? "/",
        (name) => single(req.headers[name]),
        req,
        (status, json) => replyH1(req, res, status, json),
        (requestId, format, target) => keepExchange(fromH1Response(res, { requestId, format, target })),
        notAlone
      )
    })
    // HTTP/2 through the stream API (lighter than the compatibility API), with the session
    // limits set on purpose (H2_SESSION_LIMITS).
    const h2 = http2.createServer(H2_SESSION_LIMITS)
    h2.on("stream", (stream, headers) => {
      stream.on("error", ignoreError)
      const open = openStreamsOf(stream.session!)
      open.n++
      const closed = () => void open.n--
      const listening = onExchange(
        single(headers[":method"]),
        single(headers[":path"]) ?? "/",
        (name) => single(headers[name]),
        stream,
        (status, json) => replyH2Exchange(stream, options.maxMessageSize, status, json),
        (requestId, format, target) => keepExchange(fromH2Stream(stream, { requestId, format, target })),
        () => open.n === 1,
        closed
      )
      // The count goes down with the body's own `close` listener, or with one of its own after a refusal.
      if (!listening) stream.once("close", closed)
    })
    h2.on("sessionError", () => {})

    // One port: the HTTP/2 preface goes to h2, anything else to HTTP/1.1.
    const front = makeSniffingListener(h1, h2, options.maxConnections, options.firstRequestTimeoutMs)

    // Listening starts on first use, once (a failed listen is tried again); `start` gives the port.
    const start = yield* listenOnce(front.server, options.host, options.port, "http")

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => front.close())
    )

    const host = advertisedHost(options.host, options.advertiseHost)
    const server: RequestPlaneServer = {
      transport: "http",
      register: (key, handler, registerOptions) =>
        Effect.gen(function*() {
          const boundPort = yield* start
          const subject = instanceSubject(key)
          yield* Effect.acquireRelease(
            Effect.sync(() => handlers.set(subject, { handler, admit: registerOptions?.admit })),
            () => Effect.sync(() => handlers.delete(subject))
          )
          const url = `http://${hostPort(host, boundPort)}${root}/${subject}`
          return options.advertise === undefined ? { http: url } : options.advertise(url)
        })
    }
    return server
  })

