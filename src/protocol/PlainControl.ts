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

/** The control header `bytes` when it has exactly the plain shape above, else undefined (parse it as JSON). */
export const plainControl = (bytes: Uint8Array): RequestControlMessage | undefined => {
  // Latin-1: a byte above 0x7f becomes a character the pattern refuses.
  const m = SHAPE.exec(latin1Text(bytes, 0, bytes.length))
  if (m === null) return undefined
  const connection_info: ConnectionInfo = { transport: m[5]!, info: m[6]! }
  const control: { -readonly [K in keyof RequestControlMessage]: RequestControlMessage[K] } = {
    id: m[1]!,
    request_type: m[2] as RequestControlMessage["request_type"],
    response_type: m[3] as RequestControlMessage["response_type"],
    connection_info
  }
  if (m[4] !== undefined) control.payload_codec = m[4] as NonNullable<RequestControlMessage["payload_codec"]>
  return control
}
