/**
 * The two tables of the pure HTTP mode (`DYN_REQUEST_PLANE=http DYN_RESPONSE_PLANE=http`), in
 * which a response streams back in the body of the request's own HTTP response:
 * - on the router, the pending streams that `HttpResponseTransport`'s server opened, by request
 *   id: the request-plane client hands each one its HTTP/2 response once the 200 has arrived;
 * - on the worker, the HTTP exchanges the request-plane server kept open instead of answering
 *   202, by request id: the response-plane client takes one when the handler calls home.
 *
 * One instance per process, shared by the http request-plane and response-plane layers: both
 * provide `layer` to themselves, and a layer is built once per build (memoized by reference), so
 * `TransportRegistry.layerFromConfig` composing both gives them the same tables.
 *
 * It does not read or write anything: `InlineStream.ts` (router) and `InlineWriter.ts` (worker)
 * do, over the `InlineExchange` adapters of `InlineExchange.ts`.
 */
import type * as http2 from "node:http2"
import { Context, Layer } from "effect"
import type { StreamFormat } from "../../protocol/HttpStreamFormat.ts"
import { EntryTable } from "../../internal/EntryTable.ts"

/** The `ConnectionInfo.transport` of a response that streams in the request's own HTTP response. */
export const HTTP_INLINE = "http_inline"

/** The `ConnectionInfo.info` of an `http_inline` stream. */
export const inlineInfo = (format: StreamFormat): string => JSON.stringify({ format })

/** The format an `http_inline` ConnectionInfo names, or undefined when its info is not one. */
export const formatOfInfo = (info: string): StreamFormat | undefined => {
  try {
    const parsed = JSON.parse(info) as { format?: unknown }
    const f = parsed?.format
    return f === "sse" || f === "ndjson" || f === "binary" ? f : undefined
  } catch {
    return undefined
  }
}

/** The router's side of one inline stream, as the request-plane client sees it. */
export interface InlinePending {
  readonly format: StreamFormat
  /** The 200 arrived on `stream` (from `address`): read the response stream from it. */
  readonly attach: (stream: http2.ClientHttp2Stream, address: string) => void
  /** The worker refused the request in its prologue (422): fail with a prologue `HandlerError`. */
  readonly refuse: (detail: string) => void
}

/** The worker's side of one kept HTTP exchange (HTTP/2 stream or HTTP/1.1 response). */
export interface InlineExchange {
  readonly requestId: string
  readonly format: StreamFormat
  /** Who is at the other end, for errors. */
  readonly target: string
  /** Sends the status and content type; with `body`, sends it and ends the response. */
  readonly respond: (status: number, contentType: string, body?: string) => void
  readonly write: (chunk: Uint8Array) => void
  /** Ends the response normally. */
  readonly end: () => void
  /** Aborts the response (HTTP/2: RST_STREAM CANCEL; HTTP/1.1: destroys the connection). */
  readonly reset: () => void
  /** True while the response's buffer is past its mark (the peer or its window holds it back). */
  readonly needsDrain: () => boolean
  /** Registers `f` for every 'drain'. */
  readonly onDrain: (f: () => void) => void
  /** Registers `f` for the exchange closing, normally or not (once). */
  readonly onClose: (f: (detail: string) => void) => void
  /** True once the exchange is closed or destroyed. */
  readonly isClosed: () => boolean
}

/** The tables. */
export interface HttpInlineHubShape {
  /** Router: pending streams by request id. */
  readonly pending: EntryTable<InlinePending>
  /** Worker: kept exchanges by request id, until the response-plane client takes them. */
  readonly exchanges: EntryTable<InlineExchange>
}

/** The process's inline tables. */
export class HttpInlineHub extends Context.Service<HttpInlineHub, HttpInlineHubShape>()("transport-registry/HttpInlineHub") {}

/** Fresh tables; built once per layer build and shared by every layer that provides it. */
export const layer: Layer.Layer<HttpInlineHub> = Layer.sync(HttpInlineHub, () => ({ pending: new EntryTable<InlinePending>(), exchanges: new EntryTable<InlineExchange>() }))
