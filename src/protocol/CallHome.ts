/**
 * The TCP call-home conversation (PROTOCOL.md section 3, docs/protocol.md), as bytes: the
 * worker's handshake, its prologue, the `"sentinel"` after `complete_final`, and the router's
 * `"stop"` / `"kill"` control frames. Each is a header-only TwoPartCodec frame whose header is
 * JSON text. The prologue's JSON is also the payload of a mux Prologue frame.
 *
 * What it does: encode those frames once (shared, never rewritten) and read them back,
 * returning a `ProtocolParseError` for anything that is not as specified. Well-formed bytes that
 * a worker always sends (`{"error":null}`, `"sentinel"`) are recognised bytewise before any JSON
 * parsing.
 *
 * What it does not do: decide what a frame means for a stream (the call-home state machine in
 * `transport/tcp` does), frame data items (RequestMessage.ts), or do I/O. No Effect.
 */
import { encodeHeaderOnlyJson, encodeHeaderOnlyText } from "./TwoPartCodec.ts"
import { isMuxHandshake, parseMuxHandshake } from "./MuxHandshake.ts"
import type { MuxHandshake } from "./MuxHandshake.ts"
import { ProtocolParseError } from "./ProtocolError.ts"

const textEncoder = new TextEncoder()
const textDecoder = new TextDecoder()

/** The detail of every stream cut short (PROTOCOL.md section 3, item 8). */
export const STREAM_ENDED_EARLY = "stream ended before generation completed"

/** The prologue JSON of a handler that started: `{"error":null}` (a header, or a mux Prologue payload). */
export const PROLOGUE_OK_BYTES: Uint8Array = textEncoder.encode(`{"error":null}`)
/** The prologue JSON of a handler that could not start: `{"error":"<why>"}`. */
export const encodePrologueError = (error: string): Uint8Array => textEncoder.encode(JSON.stringify({ error }))
/** The one-shot prologue frame of a handler that started. */
export const PROLOGUE_OK_FRAME: Uint8Array = encodeHeaderOnlyJson({ error: null })
/** The one-shot prologue frame of a handler that could not start. */
export const encodePrologueErrorFrame = (error: string): Uint8Array => encodeHeaderOnlyJson({ error })

const SENTINEL_BYTES = textEncoder.encode(`"sentinel"`)
/** The worker's last frame, after `complete_final`: header `"sentinel"`. */
export const SENTINEL_FRAME: Uint8Array = encodeHeaderOnlyJson("sentinel")
/** The router's `"stop"` control frame (finish soon). */
export const STOP_FRAME: Uint8Array = encodeHeaderOnlyJson("stop")
/** The router's `"kill"` control frame (abandon now). */
export const KILL_FRAME: Uint8Array = encodeHeaderOnlyJson("kill")
/** The control frame of `message`. */
export const controlFrame = (message: "stop" | "kill"): Uint8Array => (message === "stop" ? STOP_FRAME : KILL_FRAME)

/**
 * The worker's first frame on a one-shot call-home connection: header
 * `{"subject":…,"stream_type":"response"}`, what `JSON.stringify` of that object writes, with only
 * the subject stringified (one a request on the worker).
 */
export const encodeCallHomeHandshake = (subject: string): Uint8Array =>
  encodeHeaderOnlyText(`{"subject":${JSON.stringify(subject)},"stream_type":"response"}`)

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

const NOT_JSON: unique symbol = Symbol("NOT_JSON")

const parseJson = (bytes: Uint8Array): unknown => {
  try {
    return JSON.parse(textDecoder.decode(bytes))
  } catch {
    return NOT_JSON
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)

/** Up to 64 characters of `bytes` as a JSON string, for error details. */
export const preview = (bytes: Uint8Array): string => {
  const text = textDecoder.decode(bytes.subarray(0, 64))
  return JSON.stringify(bytes.length > 64 ? `${text}...` : text)
}

/** A prologue that says the handler started. */
export const STARTED = { _tag: "Started" } as const
/** What a prologue says: the handler started, or why it could not. */
export type Prologue = typeof STARTED | { readonly _tag: "Refused"; readonly message: string }

/**
 * Reads a prologue's JSON (a one-shot header or a mux Prologue payload): `{"error":null}` or `{}`
 * mean the handler started; `{"error":"..."}` carries why it could not; anything else is a
 * "MalformedFrame" parse error.
 */
export const readPrologue = (bytes: Uint8Array): Prologue | ProtocolParseError => {
  if (sameBytes(bytes, PROLOGUE_OK_BYTES)) return STARTED
  const v = parseJson(bytes)
  if (!isRecord(v)) return new ProtocolParseError("MalformedFrame", `prologue is not a JSON object: ${preview(bytes)}`)
  const error = v.error
  if (error === undefined || error === null) return STARTED
  if (typeof error !== "string") return new ProtocolParseError("MalformedFrame", `prologue error is not a string: ${preview(bytes)}`)
  return { _tag: "Refused", message: error }
}

/** True when a header is the `"sentinel"` control message. */
export const isSentinel = (header: Uint8Array): boolean => sameBytes(header, SENTINEL_BYTES) || parseJson(header) === "sentinel"

/** The first frame of a call-home connection: a one-shot stream's subject, or a mux connection's handshake. */
export type CallHomeHandshake =
  | { readonly _tag: "OneShot"; readonly subject: string }
  | { readonly _tag: "Mux"; readonly handshake: MuxHandshake }

/**
 * Reads the first frame of an accepted call-home connection: `{"subject", "stream_type":
 * "response"}` (one-shot), or, when `acceptMux`, the response mux v1 handshake. Anything else is a
 * "BadHandshake" parse error naming it.
 */
export const readCallHomeHandshake = (
  header: Uint8Array,
  body: Uint8Array,
  acceptMux: boolean
): CallHomeHandshake | ProtocolParseError => {
  const v = header.length > 0 && body.length === 0 ? parseJson(header) : NOT_JSON
  if (acceptMux && isRecord(v) && isMuxHandshake(v)) {
    const h = parseMuxHandshake(v)
    return typeof h === "string" ? new ProtocolParseError("BadHandshake", `bad mux handshake: ${h}`) : { _tag: "Mux", handshake: h }
  }
  if (!isRecord(v) || typeof v.subject !== "string" || v.stream_type !== "response") {
    return new ProtocolParseError("BadHandshake", `bad handshake frame ${preview(header.length > 0 ? header : body)}`)
  }
  return { _tag: "OneShot", subject: v.subject }
}

/**
 * Reads a frame the router sends on a one-shot call-home connection: the header-only `"stop"` or
 * `"kill"`. Anything else is an "UnexpectedMessage" parse error.
 */
export const readControlFrame = (header: Uint8Array, body: Uint8Array): "stop" | "kill" | ProtocolParseError => {
  const message = header.length > 0 && body.length === 0 ? parseJson(header) : NOT_JSON
  if (message === "stop" || message === "kill") return message
  return new ProtocolParseError(
    "UnexpectedMessage",
    `expected a "stop" or "kill" control frame from the router, got ${header.length} header and ${body.length} body bytes`
  )
}
