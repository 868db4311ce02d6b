/**
 * `InlineExchange` adapters over the two things the worker's request server can keep open: an
 * HTTP/2 server stream and an HTTP/1.1 response (chunked: no content-length is ever sent).
 *
 * They only translate calls; the writer (`InlineWriter.ts`) decides what to write and when.
 */
import type * as http from "node:http"
import * as http2 from "node:http2"
import type { StreamFormat } from "../../protocol/HttpStreamFormat.ts"
import { letGo } from "./ClosedStream.ts"
import type { InlineExchange } from "./HttpInlineHub.ts"
import { respondStreamed } from "./StreamedResponse.ts"

const { NGHTTP2_CANCEL } = http2.constants

interface Common {
  readonly requestId: string
  readonly format: StreamFormat
  readonly target: string
}

/**
 * The exchange's `onClose` and `onDrain`. Once the exchange has closed, its drain listeners are
 * let go: the closed stream outlives the exchange in the heap (ClosedStream.ts), and they hold
 * the writer.
 */
const closeAndDrain = (emitter: NodeJS.EventEmitter, isOver: () => boolean) => {
  let receivers: Array<(detail: string) => void> = []
  let drains: Array<() => void> = []
  let fired: string | undefined
  const fire = (detail: string) => {
    if (fired !== undefined) return
    fired = detail
    for (const f of drains) letGo(emitter, "drain", f)
    drains = []
    const r = receivers
    receivers = []
    for (const f of r) f(detail)
  }
  emitter.once("close", () => fire(isOver() ? "closed" : "the client closed the HTTP exchange"))
  return {
    onClose: (f: (detail: string) => void) => {
      if (fired !== undefined) f(fired)
      else receivers.push(f)
    },
    onDrain: (f: () => void) => {
      if (fired !== undefined) return
      drains.push(f)
      emitter.on("drain", f)
    }
  }
}

/** The exchange of an HTTP/2 server stream; a streamed response waits for trailers and sends none (`respondStreamed`). */
export const fromH2Stream = (stream: http2.ServerHttp2Stream, common: Common): InlineExchange => ({
  ...common,
  respond: (status, contentType, body) => {
    if (stream.destroyed || stream.closed || stream.headersSent) return
    if (body === undefined) respondStreamed(stream, { ":status": status, "content-type": contentType })
    else {
      stream.respond({ ":status": status, "content-type": contentType })
      stream.end(body)
    }
  },
  write: (chunk) => {
    if (!stream.destroyed && !stream.closed && !stream.writableEnded) stream.write(chunk)
  },
  end: () => {
    if (!stream.destroyed && !stream.closed && !stream.writableEnded) stream.end()
  },
  reset: () => {
    if (!stream.destroyed && !stream.closed) stream.close(NGHTTP2_CANCEL)
  },
  needsDrain: () => stream.writableNeedDrain,
  ...closeAndDrain(stream, () => stream.writableFinished),
  isClosed: () => stream.destroyed || stream.closed
})

/** The exchange of an HTTP/1.1 response (chunked transfer encoding). */
export const fromH1Response = (res: http.ServerResponse, common: Common): InlineExchange => ({
  ...common,
  respond: (status, contentType, body) => {
    if (res.destroyed || res.headersSent) return
    if (body === undefined) {
      res.writeHead(status, { "content-type": contentType, "cache-control": "no-cache" })
      res.flushHeaders()
    } else {
      res.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(body) })
      res.end(body)
    }
  },
  write: (chunk) => {
    if (!res.destroyed && !res.writableEnded) res.write(chunk)
  },
  end: () => {
    if (!res.destroyed && !res.writableEnded) res.end()
  },
  reset: () => {
    if (!res.destroyed) res.destroy()
  },
  needsDrain: () => res.writableNeedDrain,
  ...closeAndDrain(res, () => res.writableFinished),
  isClosed: () => res.destroyed || res.writableFinished
})
