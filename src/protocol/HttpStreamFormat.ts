/**
 * The response stream formats of the pure HTTP mode (P1; docs/protocol.md "HTTP response stream
 * formats"): `sse` (text/event-stream, Sse.ts), `ndjson` (application/x-ndjson, Ndjson.ts) and
 * `binary` (application/octet-stream, here): the TwoPartCodec frames of the TCP call-home
 * stream, without handshake or prologue (the HTTP status does their work).
 *
 * ```
 * binary: data-only frames, JSON bodies
 *   {"data":<item>,"complete_final":false}   one item
 *   {"complete_final":true}, then the header-only "sentinel" frame   the end marker
 *   {"complete_final":false,"error":"<message>"}   a handler failure, the end (the tag is dropped:
 *                                                  the decoder reports tag "HandlerError")
 * ```
 *
 * What it does: choose a format from an Accept header, and give each format's encoder (bytes
 * for items, end, error, heartbeat) and incremental decoder (any chunking; events out; a
 * `ProtocolParseError` for bytes that break the format, for bytes after the end, for a line,
 * event or frame larger than `maxMessageSize` as soon as that is known, and from `end()` for a
 * body cut before its end marker).
 *
 * What it does not do: throw on any input bytes (only `encoder.item` throws, the codec's
 * `PayloadCodecError`, for a value with no JSON form), write sockets, keep timers (the writer
 * sends `heartbeat()` on its own clock), or use Effect.
 */
import type { StreamFormat } from "../TransportConfig.ts"
import { isSentinel, SENTINEL_FRAME } from "./CallHome.ts"
import { afterEnd, concatBytes, endedWithoutMarker, flushItems } from "./HttpStreamEvent.ts"
import type { StreamDecoder, StreamEncoder, StreamEvent } from "./HttpStreamEvent.ts"
import { makeNdjsonDecoder, ndjsonEncoder } from "./Ndjson.ts"
import { json } from "./PayloadCodec.ts"
import { ProtocolParseError } from "./ProtocolError.ts"
import { decodeStreamBody, encodeStreamComplete, encodeStreamError, encodeStreamItem, jsonStreamItem, NOT_A_PLAIN_ITEM } from "./RequestMessage.ts"
import { makeSseDecoder, sseEncoder } from "./Sse.ts"
import { encodeFrame, makeDecoder } from "./TwoPartCodec.ts"
import type { FrameDecoder } from "./TwoPartCodec.ts"

export type { StreamDecoder, StreamEncoder, StreamEvent } from "./HttpStreamEvent.ts"

/** The three formats (the type is the domain's: `DYN_HTTP_RESPONSE_STREAM_FORMAT` names one). */
export type { StreamFormat } from "../TransportConfig.ts"

/** Every format, in order of preference. */
export const STREAM_FORMATS: ReadonlyArray<StreamFormat> = ["sse", "ndjson", "binary"]

/** The tag a binary decoder reports for an in-band error (the binary format carries no tag). */
export const BINARY_ERROR_TAG = "HandlerError"

const CONTENT_TYPES: Record<StreamFormat, string> = {
  sse: "text/event-stream",
  ndjson: "application/x-ndjson",
  binary: "application/octet-stream"
}

/** text/event-stream, application/x-ndjson, application/octet-stream */
export const contentTypeOf = (format: StreamFormat): string => CONTENT_TYPES[format]

const MEDIA_TYPES: Record<string, StreamFormat | "fallback"> = {
  "text/event-stream": "sse",
  "text/*": "sse",
  "application/x-ndjson": "ndjson",
  "application/ndjson": "ndjson",
  "application/jsonl": "ndjson",
  "application/octet-stream": "binary",
  "application/json": "fallback",
  "*/*": "fallback"
}

/** A `q=0` parameter: the client refuses the type. */
const REFUSED = /;\s*q\s*=\s*0(\.0*)?\s*(;|$)/i

/**
 * The format an Accept header asks for: the first listed media range we speak (q-values are
 * ignored, except that `q=0` refuses a range). `fallback` for a missing or blank header, `*\/*`
 * or `application/json`; undefined when it names only types we do not speak (HTTP 406).
 */
export const formatFromAccept = (accept: string | undefined, fallback: StreamFormat): StreamFormat | undefined => {
  if (accept === undefined || accept.trim() === "") return fallback
  for (const range of accept.split(",")) {
    if (REFUSED.test(range)) continue
    const semi = range.indexOf(";")
    const type = (semi === -1 ? range : range.slice(0, semi)).trim().toLowerCase()
    const format = MEDIA_TYPES[type]
    if (format !== undefined && Object.prototype.hasOwnProperty.call(MEDIA_TYPES, type)) {
      return format === "fallback" ? fallback : format
    }
  }
  return undefined
}

const BINARY_DONE = concatBytes(encodeFrame(undefined, encodeStreamComplete(json)), SENTINEL_FRAME)

const binaryEncoder: StreamEncoder = {
  item: (value) => encodeFrame(undefined, encodeStreamItem(json, value)),
  done: () => BINARY_DONE.slice(),
  error: (_tag, message) => encodeFrame(undefined, encodeStreamError(json, message)),
  heartbeat: () => undefined
}

/** The encoder of `format`. */
export const makeEncoder = (format: StreamFormat): StreamEncoder =>
  format === "sse" ? sseEncoder : format === "ndjson" ? ndjsonEncoder : binaryEncoder

/** Where a binary stream is: items; after `complete_final` (awaiting the sentinel); ended. */
type BinaryState = "items" | "completing" | "ended"

class BinaryDecoder implements StreamDecoder {
  private readonly frames: FrameDecoder
  private state: BinaryState = "items"
  private failure: ProtocolParseError | undefined = undefined
  private items: Array<unknown> = []
  private event: StreamEvent | undefined = undefined
  private readonly onFrame = (header: Uint8Array, body: Uint8Array): void => {
    const bad = this.frame(header, body)
    if (bad !== undefined) this.failure = bad
    if (bad !== undefined || this.state === "ended") this.frames.stop()
  }

  constructor(maxMessageSize: number) {
    this.frames = makeDecoder({ maxMessageSize })
  }

  decode(chunk: Uint8Array, onEvent: (event: StreamEvent) => void): ProtocolParseError | undefined {
    if (this.failure !== undefined) return this.failure
    if (this.state === "ended") {
      if (chunk.length > 0) this.failure = afterEnd(`${chunk.length} bytes`)
      return this.failure
    }
    const frameError = this.frames.decode(chunk, this.onFrame)
    if (frameError !== undefined) this.failure = frameError
    else if (this.failure === undefined && (this.state as BinaryState) === "ended" && this.frames.stopOffset() < chunk.length) {
      this.failure = afterEnd(`${chunk.length - this.frames.stopOffset()} bytes`)
    }
    const items = this.items
    const event = this.event
    if (items.length > 0) this.items = []
    this.event = undefined
    flushItems(items, onEvent)
    if (event !== undefined) onEvent(event)
    return this.failure
  }

  end(): ProtocolParseError | undefined {
    if (this.failure !== undefined) return this.failure
    if (this.state === "ended") return undefined
    this.failure = this.frames.isIdle()
      ? endedWithoutMarker()
      : new ProtocolParseError("MalformedFrame", `stream ended inside a frame (${this.frames.bufferedBytes()} bytes held), without its end marker`)
    return this.failure
  }

  private frame(header: Uint8Array, body: Uint8Array): ProtocolParseError | undefined {
    if (header.length > 0) {
      if (body.length > 0 || !isSentinel(header)) {
        return new ProtocolParseError("UnexpectedMessage", `a frame with a ${header.length}-byte header that is not the "sentinel"`)
      }
      if (this.state !== "completing") {
        return new ProtocolParseError("UnexpectedMessage", `a "sentinel" frame before {"complete_final":true}`)
      }
      this.state = "ended"
      this.event = { _tag: "Done" }
      return undefined
    }
    if (this.state === "completing") {
      return new ProtocolParseError("UnexpectedMessage", `a data frame after {"complete_final":true}`)
    }
    // The common body, `{"data":<item>,"complete_final":false}`: only the item is parsed.
    const item = jsonStreamItem(body)
    if (item !== NOT_A_PLAIN_ITEM) {
      this.items.push(item)
      return undefined
    }
    const decoded = decodeStreamBody(json, body)
    if (decoded instanceof ProtocolParseError) return decoded
    switch (decoded._tag) {
      case "Item":
        this.items.push(decoded.data)
        if (decoded.last) this.state = "completing"
        return undefined
      case "Complete":
        this.state = "completing"
        return undefined
      case "Error":
        this.state = "ended"
        this.event = { _tag: "Error", tag: BINARY_ERROR_TAG, message: decoded.message }
        return undefined
    }
  }
}

/** A new incremental decoder of `format`; see the module comment. */
export const makeStreamDecoder = (format: StreamFormat, options: { readonly maxMessageSize: number }): StreamDecoder =>
  format === "sse"
    ? makeSseDecoder(options.maxMessageSize)
    : format === "ndjson"
    ? makeNdjsonDecoder(options.maxMessageSize)
    : new BinaryDecoder(options.maxMessageSize)
