/**
 * A request control header read without `JSON.parse`, when its bytes are exactly what
 * `encodeRequestMessage` writes for a control without metadata and with plain strings:
 *
 *   {"id":"…","request_type":"…","response_type":"…"[,"payload_codec":"…"],"connection_info":{"transport":"…","info":"…"}}
 *
 * where every string is printable ASCII without `"` or `\` (JSON.stringify writes such a string
 * as it is, and JSON.parse reads it back as it is), and the literal fields hold one of their
 * allowed values. Anything else (other key orders or spacing, escapes, non-ASCII, metadata,
 * unknown keys, an unknown literal) is undefined, and the caller parses the JSON as before; so
 * this never accepts a header the JSON path would refuse, and returns what that path returns.
 *
 * Why: the worker decodes one control per request, and at one call in flight its `JSON.parse`
 * (nested objects, a validation pass after) was the largest single item of the worker's request
 * decoding in a CPU profile.
 */
import type { ConnectionInfo, RequestControlMessage } from "../ConnectionInfo.ts"
import { asciiSlice } from "./AsciiText.ts"

const bytesOf = (text: string): Uint8Array => Buffer.from(text, "latin1")

const ID = bytesOf(`{"id":"`)
const REQUEST_TYPE = bytesOf(`","request_type":"`)
const RESPONSE_TYPE = bytesOf(`","response_type":"`)
const PAYLOAD_CODEC = bytesOf(`","payload_codec":"`)
const CONNECTION_INFO = bytesOf(`","connection_info":{"transport":"`)
const INFO = bytesOf(`","info":"`)
const END = bytesOf(`"}}`)

const QUOTE = 0x22
const BACKSLASH = 0x5c

/** The offset after `literal` when `b[o..]` starts with it, else -1. */
const after = (b: Uint8Array, o: number, literal: Uint8Array): number => {
  if (o < 0 || o + literal.length > b.length) return -1
  for (let i = 0; i < literal.length; i++) if (b[o + i] !== literal[i]) return -1
  return o + literal.length
}

/** The offset of the quote that ends the plain string starting at `o`, else -1 (a byte that is not plain, or no quote). */
const plainEnd = (b: Uint8Array, o: number): number => {
  if (o < 0) return -1
  for (let i = o; i < b.length; i++) {
    const c = b[i]!
    if (c === QUOTE) return i
    if (c < 0x20 || c > 0x7e || c === BACKSLASH) return -1
  }
  return -1
}

/** The value of the literal field between `start` and `end` when it is one of `a` or `b`, else undefined. */
const oneOf = <A extends string, B extends string>(bytes: Uint8Array, start: number, end: number, a: A, b: B): A | B | undefined => {
  const text = asciiSlice(bytes, start, end)
  return text === a ? a : text === b ? b : undefined
}

/** The control header `bytes` when it has exactly the plain shape above, else undefined (parse it as JSON). */
export const plainControl = (bytes: Uint8Array): RequestControlMessage | undefined => {
  const idStart = after(bytes, 0, ID)
  const idEnd = plainEnd(bytes, idStart)
  const requestTypeStart = after(bytes, idEnd, REQUEST_TYPE)
  const requestTypeEnd = plainEnd(bytes, requestTypeStart)
  const responseTypeStart = after(bytes, requestTypeEnd, RESPONSE_TYPE)
  const responseTypeEnd = plainEnd(bytes, responseTypeStart)
  if (responseTypeEnd < 0) return undefined
  const request_type = oneOf(bytes, requestTypeStart, requestTypeEnd, "single_in", "many_in")
  const response_type = oneOf(bytes, responseTypeStart, responseTypeEnd, "single_out", "many_out")
  if (request_type === undefined || response_type === undefined) return undefined
  let payload_codec: "json" | "msgpack" | undefined
  let transportStart = after(bytes, responseTypeEnd, CONNECTION_INFO)
  if (transportStart < 0) {
    const codecStart = after(bytes, responseTypeEnd, PAYLOAD_CODEC)
    const codecEnd = plainEnd(bytes, codecStart)
    if (codecEnd < 0) return undefined
    payload_codec = oneOf(bytes, codecStart, codecEnd, "json", "msgpack")
    if (payload_codec === undefined) return undefined
    transportStart = after(bytes, codecEnd, CONNECTION_INFO)
  }
  const transportEnd = plainEnd(bytes, transportStart)
  const infoStart = after(bytes, transportEnd, INFO)
  const infoEnd = plainEnd(bytes, infoStart)
  if (after(bytes, infoEnd, END) !== bytes.length) return undefined
  const connection_info: ConnectionInfo = { transport: asciiSlice(bytes, transportStart, transportEnd), info: asciiSlice(bytes, infoStart, infoEnd) }
  const control: { -readonly [K in keyof RequestControlMessage]: RequestControlMessage[K] } = {
    id: asciiSlice(bytes, idStart, idEnd),
    request_type,
    response_type,
    connection_info
  }
  if (payload_codec !== undefined) control.payload_codec = payload_codec
  return control
}
