/**
 * Payload codecs of request bodies and response-stream items (PROTOCOL.md section 2):
 * `json` (UTF-8 JSON text) and `msgpack` (standard MessagePack, objects as maps with field
 * names, as Rust's rmp-serde `to_vec_named` writes them).
 *
 * Contract: `encode` and `decode` are synchronous and THROW a `PayloadCodecError` on failure
 * (a value with no encoding; bytes that are not one well-formed value). Callers on a
 * protocol path catch it and map it to a `TransportProtocolError` ("BadPayload"); see
 * RequestMessage.ts. Throwing keeps the success path free of result allocations.
 *
 * Value mapping:
 * - json: `JSON.stringify` / `JSON.parse`. A bigint encodes as a bare JSON number with its
 *   exact digits (Dynamo's u64 fields); decoding yields plain JS numbers, so integers above
 *   2^53 lose precision on the way back: parse those with a dedicated decoder if they matter.
 *   Bytes that are not valid UTF-8 are refused.
 * - msgpack (msgpackr, records extension off): plain objects encode as maps with string keys
 *   (fixmap/map16/map32 by size) and decode back to plain objects; `undefined` encodes as nil;
 *   Uint8Array as bin. A bigint within the 64-bit range encodes as int64/uint64 and decodes as
 *   a number when it is a safe integer, else as a bigint; a bigint outside the 64-bit range
 *   fails to encode. JS numbers that are integers beyond 32 bits encode as float64 (msgpackr's
 *   choice): pass a bigint to get a 64-bit integer on the wire.
 *
 * Does not: frame, validate shapes, or know about requests and streams.
 */
import { Packr } from "msgpackr"
import type { PayloadCodecName } from "../ConnectionInfo.ts"
import { asciiText } from "./AsciiText.ts"

/** A synchronous payload codec. `encode`/`decode` throw `PayloadCodecError`. */
export interface PayloadCodec {
  readonly name: PayloadCodecName
  /** Encodes one value. Throws `PayloadCodecError` if it has no encoding in this codec. */
  encode(value: unknown): Uint8Array
  /** Decodes exactly one value spanning all of `bytes`. Throws `PayloadCodecError` otherwise. */
  decode(bytes: Uint8Array): unknown
}

/** A payload that could not be encoded or decoded; `cause` holds the underlying error. */
export class PayloadCodecError extends Error {
  readonly codec: PayloadCodecName
  readonly operation: "encode" | "decode"
  constructor(codec: PayloadCodecName, operation: "encode" | "decode", cause: unknown) {
    const why = cause instanceof Error ? cause.message : String(cause)
    super(`${codec} ${operation} failed: ${why}`, { cause })
    this.name = "PayloadCodecError"
    this.codec = codec
    this.operation = operation
  }
}

const textDecoder = new TextDecoder("utf-8", { fatal: true })

/** `JSON.rawJSON` (Node >= 21; not yet in TypeScript's ES2023 lib). */
const rawJSON = (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON

const bigintAsRawJson = (_key: string, value: unknown): unknown =>
  typeof value === "bigint" ? rawJSON(value.toString()) : value

/**
 * `value` as JSON text (bigints as bare numbers); throws a PayloadCodecError when it has none.
 * For encoders that wrap the text in bytes of their own (SSE, NDJSON) and encode it once.
 */
export const jsonText = (value: unknown): string => {
  let text: string | undefined
  try {
    text = JSON.stringify(value)
  } catch (first) {
    // Rare path: retry with bigints as bare numbers (JSON.stringify refuses them natively).
    try {
      text = JSON.stringify(value, bigintAsRawJson)
    } catch {
      throw new PayloadCodecError("json", "encode", first)
    }
  }
  if (text === undefined) {
    throw new PayloadCodecError("json", "encode", new TypeError(`a ${typeof value} has no JSON representation`))
  }
  return text
}

// Buffer.from takes small results from Node's shared slab: about half the cost of TextEncoder.
const jsonEncode = (value: unknown): Uint8Array => Buffer.from(jsonText(value), "utf8")

const jsonDecode = (bytes: Uint8Array): unknown => {
  try {
    return JSON.parse(asciiText(bytes, 0, bytes.length) ?? textDecoder.decode(bytes))
  } catch (cause) {
    throw new PayloadCodecError("json", "decode", cause)
  }
}

/** The JSON payload codec. */
export const json: PayloadCodec = { name: "json", encode: jsonEncode, decode: jsonDecode }

const packr = new Packr({
  useRecords: false,
  mapsAsObjects: true,
  variableMapSize: true,
  encodeUndefinedAsNil: true,
  // "auto" (safe integers as numbers, the rest as bigints) is documented and implemented by
  // msgpackr but missing from its type declarations.
  int64AsType: "auto" as "bigint"
})

const msgpackEncode = (value: unknown): Uint8Array => {
  try {
    return packr.pack(value)
  } catch (cause) {
    throw new PayloadCodecError("msgpack", "encode", cause)
  }
}

const msgpackDecode = (bytes: Uint8Array): unknown => {
  if (bytes.length === 0) throw new PayloadCodecError("msgpack", "decode", new Error("empty input"))
  try {
    return packr.unpack(bytes)
  } catch (cause) {
    throw new PayloadCodecError("msgpack", "decode", cause)
  }
}

/** The MessagePack payload codec (maps with field names). */
export const msgpack: PayloadCodec = { name: "msgpack", encode: msgpackEncode, decode: msgpackDecode }

/** The codec of a wire `payload_codec` value; absent means json. */
export const payloadCodec = (name: PayloadCodecName | undefined): PayloadCodec => name === "msgpack" ? msgpack : json
