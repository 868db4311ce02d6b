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
 * Why: the worker decodes one control per request; `JSON.parse` builds nested objects and a
 * validation pass follows. One regular expression (compiled to native code by V8, whatever tier
 * runs this function) checks the shape and captures the fields.
 */
import type { ConnectionInfo, RequestControlMessage } from "../ConnectionInfo.ts"
import { latin1Text } from "./AsciiText.ts"

/** A plain string's characters: printable ASCII without `"` (0x22) or `\` (0x5c). */
const PLAIN = String.raw`[ !#-\[\]-~]*`
const SHAPE = new RegExp(
  String.raw`^\{"id":"(${PLAIN})","request_type":"(single_in|many_in)","response_type":"(single_out|many_out)"` +
    String.raw`(?:,"payload_codec":"(json|msgpack)")?,"connection_info":\{"transport":"(${PLAIN})","info":"(${PLAIN})"\}\}$`
)

const BACKSLASH = 0x5c

/** Where the id starts (after `{"id":"`), and the lengths of `","info":"` and `"}}`. */
const ID_START = `{"id":"`.length
const INFO_LENGTH = `","info":"`.length
const END_LENGTH = `"}}`.length

/** The control header `bytes` when it has exactly the plain shape above, else undefined (parse it as JSON). */
export const plainControl = (bytes: Uint8Array): RequestControlMessage | undefined => {
  // A `\` cannot match, and a call-home request's header always has one: its `info` is JSON text
  // whose quotes are escaped. Looking for the byte first spares those headers the pattern (about
  // 2,000 instructions a request, counted on a worker of http+tcp-pooled).
  if (bytes.includes(BACKSLASH)) return undefined
  const n = bytes.length
  // Latin-1: a byte above 0x7f becomes a character the pattern refuses.
  const m = SHAPE.exec(latin1Text(bytes, 0, n))
  if (m === null) return undefined
  // The strings are copied from the bytes where the match puts them, not taken from the match:
  // those would be slices of the header's text (kept alive with it, and slower to hash and
  // compare as table keys); the literals are the constants themselves.
  const idEnd = ID_START + m[1]!.length
  const infoEnd = n - END_LENGTH
  const infoStart = infoEnd - m[6]!.length
  const transportEnd = infoStart - INFO_LENGTH
  const connection_info: ConnectionInfo = {
    transport: latin1Text(bytes, transportEnd - m[5]!.length, transportEnd),
    info: latin1Text(bytes, infoStart, infoEnd)
  }
  const control: { -readonly [K in keyof RequestControlMessage]: RequestControlMessage[K] } = {
    id: latin1Text(bytes, ID_START, idEnd),
    request_type: m[2] === "single_in" ? "single_in" : "many_in",
    response_type: m[3] === "single_out" ? "single_out" : "many_out",
    connection_info
  }
  if (m[4] !== undefined) control.payload_codec = m[4] === "json" ? "json" : "msgpack"
  return control
}
