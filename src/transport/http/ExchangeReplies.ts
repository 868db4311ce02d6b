/**
 * How the HTTP request server answers an exchange itself (the 202, refusals, the body deadline's
 * 408), per HTTP version: a status and, when given, a JSON body.
 *
 * - HTTP/1.1 (`replyH1`): at once. A 408 (the body did not end in time) closes the connection
 *   after it, or at once when a refusal was already sent.
 * - HTTP/2 (`replyH2Exchange`): a reply after the body (the 202, late refusals) or a 413 goes at
 *   once; an early refusal once the request body has ended (`replyAfterBody`); a 408 goes at once
 *   (unless a refusal was already sent) and the stream is then reset with NO_ERROR.
 *
 * It does not decide the status: HttpRequestServer.ts does.
 */
import type * as http from "node:http"
import * as http2 from "node:http2"
import { listenUntilClose } from "./ClosedStream.ts"

/** A status, and the JSON body to send with it when given. */
type Json = Record<string, unknown> | undefined

/** How long an early HTTP/2 refusal waits for the rest of the request's body before it is sent anyway. */
export const REFUSAL_BODY_WAIT_MS = 2000

/** Answers an HTTP/1.1 exchange (see the module comment). */
export const replyH1 = (req: http.IncomingMessage, res: http.ServerResponse, status: number, json: Json): void => {
  if (status === 408 && (res.headersSent || json === undefined)) return void req.socket.destroy()
  if (json === undefined) {
    res.writeHead(status, { "content-length": 0 })
    res.end()
    return
  }
  const text = JSON.stringify(json)
  if (status === 408) {
    res.writeHead(408, { "content-type": "application/json", "content-length": Buffer.byteLength(text), connection: "close" })
    res.end(text, () => req.socket.destroy())
    return
  }
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
  res.end(text)
}

/** Answers an HTTP/2 exchange whose body may be up to `maxBytes` long (see the module comment). */
export const replyH2Exchange = (stream: http2.ServerHttp2Stream, maxBytes: number, status: number, json: Json): void =>
  status === 408
    ? replyAndClose(stream, status, json)
    : stream.readableEnded || status === 413
    ? replyH2(stream, status, json)
    : replyAfterBody(stream, maxBytes, status, json)

/** Answers `stream` with `status` and, when given, a JSON body. */
const replyH2 = (stream: http2.ServerHttp2Stream, status: number, json: Json): void => {
  if (stream.destroyed || stream.closed) return
  if (json === undefined) {
    stream.respond({ ":status": status }, { endStream: true })
  } else {
    stream.respond({ ":status": status, "content-type": "application/json" })
    stream.end(JSON.stringify(json))
  }
}

/**
 * `replyH2` unless a refusal already went, then the stream reset with NO_ERROR: the client is told
 * to stop sending, and the stream does not stay open however long it would have gone on.
 */
const replyAndClose = (stream: http2.ServerHttp2Stream, status: number, json: Json): void => {
  if (!stream.headersSent) replyH2(stream, status, json)
  if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_NO_ERROR)
}

/**
 * `replyH2` once the request body has ended, draining what is left of it, or at once when more
 * than `maxBytes` of it arrive or `REFUSAL_BODY_WAIT_MS` pass (a client that never ends its body
 * still gets its refusal). An HTTP/2 response that ends while the client is still sending its
 * body is followed by a RST_STREAM, and curl then reports a framing error (exit 92, no status)
 * instead of the refusal: 24 of 300 refused JSON posts on a loaded machine, none this way.
 */
const replyAfterBody = (stream: http2.ServerHttp2Stream, maxBytes: number, status: number, json: Json): void => {
  let seen = 0
  let sent = false
  const once = () => {
    if (sent) return
    sent = true
    clearTimeout(timer)
    replyH2(stream, status, json)
  }
  const timer = setTimeout(once, REFUSAL_BODY_WAIT_MS)
  listenUntilClose(stream, {
    data: (chunk: Buffer) => {
      seen += chunk.length
      if (seen > maxBytes) once()
    },
    end: once
  }, () => clearTimeout(timer))
}
