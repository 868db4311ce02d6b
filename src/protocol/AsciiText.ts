/**
 * Text of bytes that are all ASCII, without a UTF-8 decoder: the decoders' common case (control
 * headers, endpoint paths, JSON payloads of ASCII text). For ASCII bytes, Latin-1 and UTF-8 give
 * the same string, and no byte-order mark can be present, so a strict `TextDecoder` (with or
 * without `ignoreBOM`) would return exactly this text. Callers fall back to their own decoder
 * when it returns undefined.
 *
 * Why: the check (`buffer.isAscii`) and the copy (`latin1Slice`) are native code whatever tier
 * V8 runs the caller in; at one call in flight most of a request's code runs in V8's lower tiers,
 * where a JavaScript byte loop is slow. It does not decode anything that is not ASCII.
 *
 * Also the other way: `writeUtf8`, a string's UTF-8 written into bytes in place, shared by the
 * writers that put text straight into their buffers (frames, slabs, batches).
 */
import { isAscii } from "node:buffer"

const latin1Slice = Buffer.prototype.latin1Slice as (this: Uint8Array, start: number, end: number) => string

const utf8Write = Buffer.prototype.utf8Write as (this: Uint8Array, text: string, offset: number, length: number) => number

/**
 * Writes `text` as UTF-8 into `bytes` at `offset`, at most `length` bytes (Node's own native
 * write, on any Uint8Array, without a Buffer view of it); returns the bytes written.
 */
export const writeUtf8 = (bytes: Uint8Array, text: string, offset: number, length: number): number =>
  utf8Write.call(bytes, text, offset, length)

/** `bytes[start..end]` as Latin-1 text: one char per byte, the same as UTF-8 for ASCII (no check). */
export const latin1Text = (bytes: Uint8Array, start: number, end: number): string => latin1Slice.call(bytes, start, end)

/** `bytes[start..end]` as a string when every byte is ASCII, else undefined (decode it as UTF-8 yourself). */
export const asciiText = (bytes: Uint8Array, start: number, end: number): string | undefined =>
  isAscii(start === 0 && end === bytes.length ? bytes : bytes.subarray(start, end)) ? latin1Text(bytes, start, end) : undefined
