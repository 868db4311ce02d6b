/**
 * The request-plane message (PROTOCOL.md section 2) and the body of call-home data frames
 * (section 3, items 5 and 6).
 *
 * A request-plane message is one TwoPartCodec frame: header = JSON `RequestControlMessage`,
 * body = the request encoded with its `payload_codec` (absent = json). `encodeRequestMessage`
 * writes it with Dynamo's key order; `decodeRequestMessage` validates the header with the
 * `RequestControlMessage` shape (unknown keys, such as Dynamo's `frontend_send_ts_ns`, are
 * dropped) and decodes the body.
 *
 * A call-home data frame body is `{"data": item, "complete_final": false}`, then a final
 * `{"complete_final": true}`; our extension `{"complete_final": false, "error": "..."}`
 * reports an in-band handler failure.
 *
 * Does not: parse the double-encoded `connection_info.info` (see ConnectionInfo.ts), frame
 * call-home control messages (see CallHome.ts), use Effect, or do I/O. Every decode failure is
 * returned as a `ProtocolParseError`, never thrown.
 */
import type { ConnectionInfo, RequestControlMessage } from "../ConnectionInfo.ts"
import { isAscii } from "node:buffer"
import { asciiText } from "./AsciiText.ts"
import { u32 } from "./Bytes.ts"
import type { ChunkText } from "./ChunkText.ts"
import { jsonText, type PayloadCodec, payloadCodec, PayloadCodecError } from "./PayloadCodec.ts"
import { plainControl } from "./PlainControl.ts"
import { ProtocolParseError } from "./ProtocolError.ts"
import { decodeFrame, encodeFrame, type FrameDecoderOptions } from "./TwoPartCodec.ts"

/** A decoded request-plane message. */
export interface RequestMessage {
  readonly control: RequestControlMessage
  readonly payload: unknown
}

const textDecoder = new TextDecoder("utf-8", { fatal: true })

const causeMessage = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)

/** How `encodeRequestMessage` writes the control header. */
export interface EncodeRequestOptions {
  /**
   * What to write as `connection_info` instead of the control's own (the full TCP mode writes a
   * fixed one: its responses come back on the request's own connection, docs/protocol.md
   * section 9).
   */
  readonly connectionInfo?: ConnectionInfo | undefined
}

/** The control header as JSON text, keys in Dynamo's order, metadata only when non-empty. */
const controlJson = (control: RequestControlMessage, connectionInfo: ConnectionInfo): string => {
  const out: Record<string, unknown> = {
    id: control.id,
    request_type: control.request_type,
    response_type: control.response_type
  }
  if (control.payload_codec !== undefined) out.payload_codec = control.payload_codec
  out.connection_info = { transport: connectionInfo.transport, info: connectionInfo.info }
  const metadata = control.metadata
  if (metadata !== undefined) {
    for (const _ in metadata) {
      out.metadata = metadata
      break
    }
  }
  return JSON.stringify(out)
}

/**
 * Encodes a request-plane message: a frame whose header is the JSON control message and
 * whose body is `payload` encoded with `control.payload_codec` (absent = json).
 * Throws `PayloadCodecError` if the payload has no encoding in that codec.
 */
export const encodeRequestMessage = (control: RequestControlMessage, payload: unknown, options?: EncodeRequestOptions): Uint8Array =>
  encodeFrame(Buffer.from(controlJson(control, options?.connectionInfo ?? control.connection_info), "utf8"), payloadCodec(control.payload_codec).encode(payload))

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)

/**
 * Checks a parsed control header against the `RequestControlMessage` shape and returns a copy
 * with only its keys, or the text of the first problem.
 */
const decodeControl = (raw: unknown, absentConnectionInfo: ConnectionInfo | undefined): RequestControlMessage | string => {
  if (!isObject(raw)) return `expected an object, got ${describeValue(raw)}`
  const { id, request_type, response_type, payload_codec, connection_info, metadata } = raw
  if (typeof id !== "string") return `["id"]: expected a string, got ${describeValue(id)}`
  if (request_type !== "single_in" && request_type !== "many_in") {
    return `["request_type"]: expected "single_in" or "many_in", got ${JSON.stringify(request_type) ?? "nothing"}`
  }
  if (response_type !== "single_out" && response_type !== "many_out") {
    return `["response_type"]: expected "single_out" or "many_out", got ${JSON.stringify(response_type) ?? "nothing"}`
  }
  if (payload_codec !== undefined && payload_codec !== "json" && payload_codec !== "msgpack") {
    return `["payload_codec"]: expected "json" or "msgpack", got ${JSON.stringify(payload_codec)}`
  }
  let connectionInfo: ConnectionInfo
  if (connection_info === undefined && absentConnectionInfo !== undefined) connectionInfo = absentConnectionInfo
  else {
    if (!isObject(connection_info)) return `["connection_info"]: expected an object, got ${describeValue(connection_info)}`
    const { transport, info } = connection_info
    if (typeof transport !== "string") return `["connection_info"]["transport"]: expected a string, got ${describeValue(transport)}`
    if (typeof info !== "string") return `["connection_info"]["info"]: expected a string, got ${describeValue(info)}`
    connectionInfo = { transport, info }
  }
  if (metadata !== undefined && !isObject(metadata)) return `["metadata"]: expected an object, got ${describeValue(metadata)}`
  const control: { -readonly [K in keyof RequestControlMessage]: RequestControlMessage[K] } = {
    id,
    request_type,
    response_type,
    connection_info: connectionInfo
  }
  if (payload_codec !== undefined) control.payload_codec = payload_codec
  if (metadata !== undefined) control.metadata = metadata as RequestControlMessage["metadata"]
  return control
}

/** Options of `decodeRequestMessage`, beyond the frame limits. */
export interface DecodeRequestOptions extends FrameDecoderOptions {
  /**
   * What a control header without `connection_info` gets instead. Absent (the default), such a
   * header is refused; the full TCP mode, whose router leaves it out, gives one.
   */
  readonly absentConnectionInfo?: ConnectionInfo | undefined
}

/**
 * Decodes a whole request-plane message (HTTP body, NATS payload). Frame errors keep their
 * reason; a header that is absent, not JSON, or not a valid `RequestControlMessage` is
 * "MalformedFrame"; a body its codec cannot decode is "BadPayload". The detail names the
 * problem.
 */
export const decodeRequestMessage = (
  bytes: Uint8Array,
  options: DecodeRequestOptions
): RequestMessage | ProtocolParseError => {
  const frame = decodeFrame(bytes, options)
  if (frame instanceof ProtocolParseError) return frame
  const fail = (reason: "MalformedFrame" | "BadPayload", detail: string, cause?: unknown) =>
    new ProtocolParseError(reason, detail, cause)
  if (frame.header.length === 0) return fail("MalformedFrame", "request message has no control header")
  // Our routers' headers, read without JSON.parse (PlainControl.ts); any other goes through JSON.
  let control: RequestControlMessage | string | undefined = plainControl(frame.header)
  if (control === undefined) {
    const header = frame.header
    let raw: unknown
    try {
      raw = JSON.parse(asciiText(header, 0, header.length) ?? textDecoder.decode(header))
    } catch (cause) {
      return fail("MalformedFrame", `request control header is not valid JSON: ${causeMessage(cause)}`, cause)
    }
    control = decodeControl(raw, options.absentConnectionInfo)
    if (typeof control === "string") return fail("MalformedFrame", `invalid request control header: ${control}`)
  }
  const codec = payloadCodec(control.payload_codec)
  let payload: unknown
  try {
    payload = codec.decode(frame.body)
  } catch (cause) {
    return fail("BadPayload", `request ${control.id}: body is not valid ${codec.name}: ${causeMessage(cause)}`, cause)
  }
  return { control, payload }
}

/**
 * Body of a call-home data frame carrying one item: `{"data": item, "complete_final": false}`.
 * Throws `PayloadCodecError` if the item has no encoding in `codec` (undefined, a function or a
 * symbol included).
 */
export const encodeStreamItem = (codec: PayloadCodec, item: unknown): Uint8Array => {
  checkStreamItem(codec.name, item)
  return codec.encode({ data: item, complete_final: false })
}

/** Throws for an item that no codec encodes as a stream item: JSON would drop such a `data` key without a word, and the router would refuse the body. */
const checkStreamItem = (codec: PayloadCodec["name"], item: unknown): void => {
  if (item === undefined || typeof item === "function" || typeof item === "symbol") {
    throw new PayloadCodecError(codec, "encode", new TypeError(`a ${typeof item} has no encoding as a stream item`))
  }
}

/**
 * The JSON text of one item inside a JSON stream item body: the body is
 * `STREAM_ITEM_JSON_PREFIX + text + STREAM_ITEM_JSON_SUFFIX`, byte for byte what
 * `encodeStreamItem(json, item)` makes. For writers that put the body straight into their own
 * buffer (no wrapper object, no intermediate bytes). Throws `PayloadCodecError` as
 * `encodeStreamItem` does, and also when the item's JSON is nothing (a `toJSON` that returns
 * undefined), where the wrapper would have dropped `data` without a word. (An item's `toJSON`
 * is called with the key "" here, "data" in the wrapper.)
 */
export const streamItemJson = (item: unknown): string => {
  checkStreamItem("json", item)
  return jsonText(item)
}

const PREFIX_TEXT = `{"data":`
const SUFFIX_TEXT = `,"complete_final":false}`
/** What comes before an item's JSON in a JSON stream item body (`streamItemJson`). */
export const STREAM_ITEM_JSON_PREFIX: Uint8Array = Buffer.from(PREFIX_TEXT)
/** What comes after an item's JSON in a JSON stream item body (`streamItemJson`). */
export const STREAM_ITEM_JSON_SUFFIX: Uint8Array = Buffer.from(SUFFIX_TEXT)
/** Bytes a JSON stream item body adds around the item's JSON. */
export const STREAM_ITEM_JSON_OVERHEAD = STREAM_ITEM_JSON_PREFIX.length + STREAM_ITEM_JSON_SUFFIX.length

/** What `jsonStreamItem` returns for a body it does not take: `decodeStreamBody` decides it. */
export const NOT_A_PLAIN_ITEM: unique symbol = Symbol("NOT_A_PLAIN_ITEM")

const PREFIX_0 = u32(STREAM_ITEM_JSON_PREFIX, 0)
const PREFIX_1 = u32(STREAM_ITEM_JSON_PREFIX, 4)
const SUFFIX_WORDS = [0, 4, 8, 12, 16, 20].map((o) => u32(STREAM_ITEM_JSON_SUFFIX, o))
const [SUFFIX_0, SUFFIX_1, SUFFIX_2, SUFFIX_3, SUFFIX_4, SUFFIX_5] = SUFFIX_WORDS as [number, number, number, number, number, number]
const PREFIX_LENGTH = PREFIX_TEXT.length
const SUFFIX_LENGTH = SUFFIX_TEXT.length

/**
 * True when `bytes` starts with `STREAM_ITEM_JSON_PREFIX`, ends with `STREAM_ITEM_JSON_SUFFIX`,
 * and has something between. Compared four bytes at a time (measured with callgrind: about a
 * third of the instructions of string `startsWith`/`endsWith` with positions, per item).
 */
const wrapsPlainItem = (bytes: Uint8Array): boolean => {
  const n = bytes.length
  if (n <= STREAM_ITEM_JSON_OVERHEAD) return false
  const t = n - SUFFIX_LENGTH
  return u32(bytes, 0) === PREFIX_0 && u32(bytes, 4) === PREFIX_1 &&
    u32(bytes, t) === SUFFIX_0 && u32(bytes, t + 4) === SUFFIX_1 && u32(bytes, t + 8) === SUFFIX_2 &&
    u32(bytes, t + 12) === SUFFIX_3 && u32(bytes, t + 16) === SUFFIX_4 && u32(bytes, t + 20) === SUFFIX_5
}

/** `JSON.parse(text)`, or `NOT_A_PLAIN_ITEM` when it is not one JSON value. */
const parsedItem = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return NOT_A_PLAIN_ITEM
  }
}

/**
 * The item of a JSON stream item body as this project's workers write it,
 * `{"data":<item>,"complete_final":false}` byte for byte (`STREAM_ITEM_JSON_PREFIX`, the item's
 * JSON, `STREAM_ITEM_JSON_SUFFIX`): only the item's JSON is parsed (ASCII text without a UTF-8
 * decoder), not the wrapper. Any other body, or one whose middle is not one JSON value, is
 * `NOT_A_PLAIN_ITEM`, and `decodeStreamBody` decides it. Where it returns an item,
 * `decodeStreamBody` returns the same one (the body is then exactly that object), so the router
 * takes it on its hot path without a result object.
 */
export const jsonStreamItem = (bytes: Uint8Array): unknown => {
  if (!wrapsPlainItem(bytes)) return NOT_A_PLAIN_ITEM
  const start = PREFIX_LENGTH
  const end = bytes.length - SUFFIX_LENGTH
  const text = asciiText(bytes, start, end)
  if (text !== undefined) return parsedItem(text)
  try {
    return parsedItem(textDecoder.decode(bytes.subarray(start, end)))
  } catch {
    return NOT_A_PLAIN_ITEM // not UTF-8
  }
}

/**
 * `jsonStreamItem(body)` for a body that lies in the chunk being read, at `offset`: an ASCII
 * body's item is parsed from a slice of the chunk's one text (`ChunkText`) rather than from a
 * string of its own (measured with callgrind: about 1,300 fewer instructions per item of 50
 * bytes). A body not in the chunk (`chunk` absent, or `offset` -1: it was copied from several
 * chunks) or not ASCII takes `jsonStreamItem`.
 */
export const jsonStreamItemIn = (body: Uint8Array, chunk: ChunkText | undefined, offset: number): unknown => {
  if (chunk === undefined || offset < 0) return jsonStreamItem(body)
  if (!wrapsPlainItem(body)) return NOT_A_PLAIN_ITEM
  if (!isAscii(body)) return jsonStreamItem(body)
  return parsedItem(chunk.text().slice(offset + PREFIX_LENGTH, offset + body.length - SUFFIX_LENGTH))
}

/** Body of the last call-home data frame: `{"complete_final": true}`. */
export const encodeStreamComplete = (codec: PayloadCodec): Uint8Array => codec.encode({ complete_final: true })

/**
 * Body of a data frame reporting an in-band handler failure (our extension):
 * `{"complete_final": false, "error": message}`. The router fails the stream with it.
 */
export const encodeStreamError = (codec: PayloadCodec, message: string): Uint8Array =>
  codec.encode({ complete_final: false, error: message })

/**
 * A decoded call-home data frame body. `Item.last` is true when the frame carried both data
 * and `complete_final: true` (Dynamo yields the data, then ends): the stream is complete
 * after this item.
 */
export type StreamBody =
  | { readonly _tag: "Item"; readonly data: unknown; readonly last: boolean }
  | { readonly _tag: "Complete" }
  | { readonly _tag: "Error"; readonly message: string }

const COMPLETE: StreamBody = { _tag: "Complete" }

/**
 * Decodes a call-home data frame body. An `error` string wins; then `data` (present, even
 * null) is an Item; then `complete_final: true` is Complete. Anything else — undecodable
 * bytes, not an object, `complete_final` not a boolean, a non-string `error`, or neither data
 * nor completion — is a "BadPayload" ProtocolParseError.
 */
export const decodeStreamBody = (codec: PayloadCodec, bytes: Uint8Array): StreamBody | ProtocolParseError => {
  let value: unknown
  try {
    value = codec.decode(bytes)
  } catch (cause) {
    return streamError(`stream item is not valid ${codec.name}: ${causeMessage(cause)}`, cause)
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return streamError(`stream item is not an object with complete_final (got ${describeValue(value)})`)
  }
  const body = value as { readonly data?: unknown; readonly complete_final?: unknown; readonly error?: unknown }
  const final = body.complete_final
  if (typeof final !== "boolean") {
    return streamError(`stream item has no boolean complete_final (got ${describeValue(final)})`)
  }
  const error = body.error
  if (error !== undefined && error !== null) {
    if (typeof error !== "string") return streamError(`stream item error is not a string (got ${describeValue(error)})`)
    return { _tag: "Error", message: error }
  }
  if ("data" in body && body.data !== undefined) return { _tag: "Item", data: body.data, last: final }
  if (final) return COMPLETE
  return streamError("stream item has neither data nor complete_final: true")
}

const streamError = (detail: string, cause?: unknown): ProtocolParseError => new ProtocolParseError("BadPayload", detail, cause)

const describeValue = (v: unknown): string =>
  v === null ? "null" : Array.isArray(v) ? "an array" : v === undefined ? "nothing" : `a ${typeof v}`
