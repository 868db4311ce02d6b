/**
 * Stream ids of the mux framing (docs/protocol.md sections 6 and 9): 16 bytes, the UUID of the
 * stream's subject. Converts between the UUID text and the bytes, and tells the nil id (the
 * connection's own frames) apart. Tables keyed by ids: `internal/StreamIdTable.ts`.
 *
 * Does not: frame, validate headers or allocate beyond the values it returns.
 */
import { latin1Text } from "./AsciiText.ts"

/** Size of a stream id: one UUID. */
export const STREAM_ID_SIZE = 16

/**
 * Copies the 16 stream id bytes at `src[s..]` to `dst[d..]`. Straight-line code: V8 checks the
 * arrays once, where a loop over a chunk or a prefix buffer (two array types at one site) cost
 * about 20 instructions a byte, and `TypedArray.set` about 175 whatever the size (callgrind).
 * Called by one writer only (`FrameBatcher`); the mux decoder writes the same copy out itself,
 * so that neither site's array types slow the other's.
 */
export const copyStreamId = (dst: Uint8Array, d: number, src: Uint8Array, s: number): void => {
  dst[d] = src[s]!
  dst[d + 1] = src[s + 1]!
  dst[d + 2] = src[s + 2]!
  dst[d + 3] = src[s + 3]!
  dst[d + 4] = src[s + 4]!
  dst[d + 5] = src[s + 5]!
  dst[d + 6] = src[s + 6]!
  dst[d + 7] = src[s + 7]!
  dst[d + 8] = src[s + 8]!
  dst[d + 9] = src[s + 9]!
  dst[d + 10] = src[s + 10]!
  dst[d + 11] = src[s + 11]!
  dst[d + 12] = src[s + 12]!
  dst[d + 13] = src[s + 13]!
  dst[d + 14] = src[s + 14]!
  dst[d + 15] = src[s + 15]!
}

/** True when the 16 stream id bytes of `a` and `b` are equal. */
export const sameStreamId = (a: Uint8Array, b: Uint8Array): boolean =>
  // Straight-line code, as `copyStreamId`: a loop cost about 20 instructions a byte (callgrind).
  ((a[0]! ^ b[0]!) | (a[1]! ^ b[1]!) | (a[2]! ^ b[2]!) | (a[3]! ^ b[3]!) | (a[4]! ^ b[4]!) | (a[5]! ^ b[5]!) |
    (a[6]! ^ b[6]!) | (a[7]! ^ b[7]!) | (a[8]! ^ b[8]!) | (a[9]! ^ b[9]!) | (a[10]! ^ b[10]!) | (a[11]! ^ b[11]!) |
    (a[12]! ^ b[12]!) | (a[13]! ^ b[13]!) | (a[14]! ^ b[14]!) | (a[15]! ^ b[15]!)) === 0

/** The nil UUID: the stream id of every ConnectionAck, and of nothing else. */
export const NIL_STREAM_ID: Uint8Array = new Uint8Array(STREAM_ID_SIZE)

/** True when the 16-byte stream id at `o` in `b` (default 0) is nil: the connection's own frames. */
export const isNil = (b: Uint8Array, o = 0): boolean => {
  // A loop that stops at the first byte that is not 0: a stream's random id has one first.
  for (let i = o; i < o + STREAM_ID_SIZE; i++) if (b[i] !== 0) return false
  return true
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"))

/** The value of one hex digit's char code, or -1. */
const hexDigit = (c: number): number =>
  c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1

/** True when `text` is a UUID in its text form (as `streamIdFromUuid` reads it), without making its bytes. */
export const isUuid = (text: string): boolean => {
  if (text.length !== 36) return false
  for (let i = 0; i < 36; i++) {
    const c = text.charCodeAt(i)
    if (i === 8 || i === 13 || i === 18 || i === 23 ? c !== 45 : hexDigit(c) < 0) return false
  }
  return true
}

/** The 16 bytes of a UUID in its text form (8-4-4-4-12 hex digits, any version, either case), or undefined if it is not one. */
export const streamIdFromUuid = (uuid: string): Uint8Array | undefined => {
  if (uuid.length !== 36) return undefined
  const out = new Uint8Array(STREAM_ID_SIZE)
  let o = 0
  for (let i = 0; i < 36;) {
    if (i === 8 || i === 13 || i === 18 || i === 23) {
      if (uuid.charCodeAt(i) !== 45) return undefined
      i++
      continue
    }
    const hi = hexDigit(uuid.charCodeAt(i))
    const lo = hexDigit(uuid.charCodeAt(i + 1))
    if (hi < 0 || lo < 0) return undefined
    out[o++] = (hi << 4) | lo
    i += 2
  }
  return out
}

/** Random bytes for `randomStreamId` and `randomUuid`, refilled 256 ids at a time. */
const RANDOM_POOL_IDS = 256
let randomPool = new Uint8Array(0)
let randomAt = 0

/** Takes 16 fresh random bytes from the pool (refilled by `crypto.getRandomValues` when used up); returns where they are in `randomPool`. */
const drawRandomId = (): number => {
  if (randomAt === randomPool.length) {
    randomPool = crypto.getRandomValues(new Uint8Array(RANDOM_POOL_IDS * STREAM_ID_SIZE))
    randomAt = 0
  }
  const at = randomAt
  randomAt += STREAM_ID_SIZE
  return at
}

/**
 * A fresh stream id: 16 random bytes with the version (4) and variant bits of a UUID v4, so that
 * its text form (`uuidFromStreamId`) is one. Cheaper than `crypto.randomUUID()` and parsing its
 * text back (`streamIdFromUuid`), which the router did per stream: the bytes come from a pool
 * filled by `crypto.getRandomValues` 256 ids at a time, and the text is only made if asked for.
 */
export const randomStreamId = (): Uint8Array => {
  const at = drawRandomId()
  const id = randomPool.slice(at, at + STREAM_ID_SIZE)
  id[6] = (id[6]! & 0x0f) | 0x40
  id[8] = (id[8]! & 0x3f) | 0x80
  return id
}

/** The two lowercase hex digits of each byte value, as char codes: `[2v]` and `[2v + 1]`. */
const HEX_CODES = Uint8Array.from({ length: 512 }, (_, i) => HEX[i >> 1]!.charCodeAt(i & 1))
/** Where `randomUuid` writes the text before it becomes a string. */
const uuidChars = new Uint8Array(36)

/**
 * A random UUID v4 in its text form, from the pool `randomStreamId` draws from (filled by
 * `crypto.getRandomValues`). The same distribution as `crypto.randomUUID()`, which builds its
 * text from twenty string concatenations that V8 later flattens: about 2,500 instructions a
 * call on the router, against one native copy of 36 chars here (callgrind).
 */
export const randomUuid = (): string => {
  const at = drawRandomId()
  const pool = randomPool
  const out = uuidChars
  let o = 0
  for (let i = 0; i < STREAM_ID_SIZE; i++) {
    let v = pool[at + i]!
    if (i === 6) v = (v & 0x0f) | 0x40
    else if (i === 8) v = (v & 0x3f) | 0x80
    out[o++] = HEX_CODES[2 * v]!
    out[o++] = HEX_CODES[2 * v + 1]!
    if (i === 3 || i === 5 || i === 7 || i === 9) out[o++] = 45 // "-"
  }
  return latin1Text(out, 0, 36)
}

/** The lowercase text form of 16 stream id bytes. */
export const uuidFromStreamId = (id: Uint8Array): string => {
  let s = ""
  for (let i = 0; i < STREAM_ID_SIZE; i++) {
    s += HEX[id[i]!]!
    if (i === 3 || i === 5 || i === 7 || i === 9) s += "-"
  }
  return s
}
