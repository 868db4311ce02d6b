/**
 * Text of bytes that are all ASCII, without a UTF-8 decoder: the decoders' common case (control
 * headers, endpoint paths, JSON payloads of ASCII text). For ASCII bytes, Latin-1 and UTF-8 give
 * the same string, and no byte-order mark can be present, so a strict `TextDecoder` (with or
 * without `ignoreBOM`) would return exactly this text. Callers fall back to their own decoder
 * when it returns undefined.
 *
 * Why: at one call in flight each process runs cold, and a `TextDecoder.decode` (a view, a call
 * into C++, a validation pass) costs more there than this loop and one `latin1Slice`. It does not
 * decode anything that is not ASCII.
 */

const latin1Slice = Buffer.prototype.latin1Slice as (this: Uint8Array, start: number, end: number) => string

/** True when every byte of `bytes[start..end]` is below 0x80. */
export const isAsciiRange = (bytes: Uint8Array, start: number, end: number): boolean => {
  for (let i = start; i < end; i++) if (bytes[i]! > 0x7f) return false
  return true
}

/** `bytes[start..end]` as a string when every byte is ASCII, else undefined (decode it as UTF-8 yourself). */
export const asciiText = (bytes: Uint8Array, start: number, end: number): string | undefined =>
  isAsciiRange(bytes, start, end) ? latin1Slice.call(bytes, start, end) : undefined

/** `bytes[start..end]` as a string, for a range already known to be ASCII (no check). */
export const asciiSlice = (bytes: Uint8Array, start: number, end: number): string => latin1Slice.call(bytes, start, end)
