/**
 * The router's reader of an HTTP response stream (the seed's `HttpResponseClient` side): `attach`
 * GETs the stream's URL over h2c (prior knowledge, one session per stream) and decodes its body
 * with `makeStreamDecoder`.
 *
 * What it does: items arrive in order; the end marker ends the Stream; the worker's in-band error
 * fails it with `HandlerError` (phase "prologue" for the tag "prologue", else "stream"); a body that
 * ends without its end marker, or a connection that dies, fails it with `TransportConnectionError`
 * (StreamEndedEarly / ConnectionClosed / ConnectFailed); bad bytes with `TransportProtocolError`;
 * a status other than 200 with `TransportProtocolError` (UnknownSubject for 404, else BadStatus).
 * Interrupting the Stream cancels the HTTP/2 stream, so the worker sees its client go.
 *
 * What it does not do: retry, pool sessions, or send stop/kill (the HTTP response plane has none).
 */
import * as http2 from "node:http2"
import * as net from "node:net"
import { Cause, Effect, Queue, Stream } from "effect"
import { STREAM_ENDED_EARLY } from "../../protocol/CallHome.ts"
import { DEFAULT_MAX_MESSAGE_SIZE } from "../../protocol/TwoPartCodec.ts"
import { contentTypeOf, makeStreamDecoder, STREAM_FORMATS } from "../../protocol/HttpStreamFormat.ts"
import type { StreamEvent, StreamFormat } from "../../protocol/HttpStreamFormat.ts"
import { toTransportProtocolError } from "../../internal/protocolError.ts"
import { HandlerError, TransportConnectionError, TransportProtocolError, TransportTimeoutError } from "../../TransportError.ts"
import type { TransportError } from "../../TransportError.ts"

/** Options of `attach`. */
export interface AttachOptions {
  /** Largest message the decoder accepts. Default 32 MiB. */
  readonly maxMessageSize?: number | undefined
  /** Bound on connecting and receiving the response headers, in ms. Default `DEFAULT_RESPONSE_TIMEOUT_MS`. */
  readonly responseTimeoutMs?: number | undefined
}

/** Default bound on connecting and receiving the response headers. */
export const DEFAULT_RESPONSE_TIMEOUT_MS = 5000

const formatOfContentType = (contentType: string | undefined): StreamFormat | undefined => {
  const base = (contentType ?? "").split(";")[0]!.trim().toLowerCase()
  return STREAM_FORMATS.find((f) => contentTypeOf(f).split(";")[0]!.trim().toLowerCase() === base)
}

/**
 * The items of the response stream at `url`, asking for `format` (by default any, and the
 * response's content type picks the decoder).
 */
export const attach = (
  url: string,
  format?: StreamFormat,
  options?: AttachOptions
): Stream.Stream<unknown, TransportError | HandlerError> =>
  Stream.callback<unknown, TransportError | HandlerError>((queue) =>
    Effect.acquireRelease(
      Effect.sync(() => {
        const maxMessageSize = options?.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE
        let over = false
        const failWith = (error: TransportError | HandlerError) => {
          if (over) return
          over = true
          Queue.failCauseUnsafe(queue, Cause.fail(error))
        }
        let parsed: URL
        try {
          parsed = new URL(url)
        } catch (cause) {
          failWith(new TransportConnectionError({ reason: "ConnectFailed", transport: "http", target: url, detail: "not a URL", cause }))
          return undefined
        }
        const subject = parsed.pathname.slice(parsed.pathname.lastIndexOf("/") + 1)
        // TCP_NODELAY from the start, as the request client: Nagle would hold small events back.
        const session = http2.connect(parsed.origin, {
          createConnection: () => net.connect({ host: parsed.hostname, port: Number(parsed.port || 80), noDelay: true })
        })
        // Connecting, the response headers (and an error answer's body) are bounded: a frozen
        // server fails the Stream typed.
        const timeoutMs = options?.responseTimeoutMs ?? DEFAULT_RESPONSE_TIMEOUT_MS
        const timer = setTimeout(() => {
          failWith(new TransportTimeoutError({ reason: "ConnectTimeout", transport: "http", target: url, detail: `no response (its headers, or an error answer's whole body) within ${timeoutMs} ms` }))
          session.destroy()
        }, timeoutMs)
        session.once("close", () => clearTimeout(timer))
        session.on("error", (cause) =>
          failWith(new TransportConnectionError({ reason: "ConnectFailed", transport: "http", target: url, detail: cause.message, cause })))
        const headers: http2.OutgoingHttpHeaders = { ":method": "GET", ":path": parsed.pathname + parsed.search }
        if (format !== undefined) headers.accept = contentTypeOf(format)
        const req = session.request(headers, { endStream: true })
        const onEvent = (event: StreamEvent) => {
          if (over) return
          if (event._tag === "Items") Queue.offerAllUnsafe(queue, event.items)
          else if (event._tag === "Done") {
            over = true
            Queue.endUnsafe(queue)
          } else {
            failWith(new HandlerError({ endpoint: url, requestId: subject, detail: event.message, phase: event.tag === "prologue" ? "prologue" : "stream" }))
          }
        }
        req.on("response", (headers) => {
          const status = Number(headers[":status"])
          if (status !== 200) {
            // The error body is read within the same bound, and at most its first 4 KiB are kept.
            let body = ""
            req.setEncoding("utf8")
            req.on("data", (t: string) => {
              if (body.length < 4096) body += t.slice(0, 4096 - body.length)
            })
            req.on("end", () =>
              failWith(new TransportProtocolError({ reason: status === 404 ? "UnknownSubject" : "BadStatus", transport: "http", target: url, detail: `HTTP ${status}: ${body}` })))
            return
          }
          clearTimeout(timer)
          const ct = headers["content-type"]
          const chosen = formatOfContentType(Array.isArray(ct) ? ct[0] : ct) ?? format
          if (chosen === undefined) {
            failWith(new TransportProtocolError({ reason: "BadPayload", transport: "http", target: url, detail: `unknown content type ${String(ct)}` }))
            req.close(http2.constants.NGHTTP2_CANCEL)
            return
          }
          const decoder = makeStreamDecoder(chosen, { maxMessageSize })
          req.on("data", (chunk: Buffer) => {
            if (over) return
            const error = decoder.decode(chunk, onEvent)
            if (error !== undefined && !over) {
              failWith(toTransportProtocolError(error, "http", url))
              req.close(http2.constants.NGHTTP2_CANCEL)
            }
          })
          req.on("end", () => {
            if (over) return
            const error = decoder.end()
            if (error !== undefined) {
              failWith(new TransportConnectionError({ reason: "StreamEndedEarly", transport: "http", target: url, detail: `${STREAM_ENDED_EARLY}: ${error.detail}`, cause: error }))
            } else if (!over) {
              over = true
              Queue.endUnsafe(queue)
            }
          })
        })
        req.on("error", (cause) =>
          failWith(new TransportConnectionError({ reason: "ConnectionClosed", transport: "http", target: url, detail: cause.message, cause })))
        req.on("close", () => {
          if (!over) {
            failWith(new TransportConnectionError({ reason: "StreamEndedEarly", transport: "http", target: url, detail: STREAM_ENDED_EARLY }))
          }
        })
        return session
      }),
      (session) =>
        Effect.sync(() => {
          if (session !== undefined && !session.destroyed) session.destroy()
        })
    )
  )
