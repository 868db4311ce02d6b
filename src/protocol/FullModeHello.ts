/**
 * The opening of the full TCP mode ("tcp_mux" v1; docs/protocol.md, "The full TCP mode"): the
 * router's 12-byte hello and the worker's answer, after which both directions speak the compact
 * mux frames (MuxCodec.ts, with `fullMode: true`).
 *
 * ```
 * hello (router -> worker, 12 bytes)     answer (worker -> router, 12 + reason_len bytes)
 *   zero    : u16 BE = 0                   magic      : "DYNMUX" (6 bytes ASCII)
 *   magic   : "DYNMUX" (6 bytes ASCII)     version    : u16 BE
 *   version : u16 BE = 1                   status     : u16 BE (0 accepted, 1 version not supported, 2 refused)
 *   flags   : u16 BE = 0                   reason_len : u16 BE
 *                                          reason     : UTF-8 (empty when accepted)
 * ```
 *
 * The leading `u16 0` is where a Dynamo request frame has its path length, which is never 0:
 * one port tells the two framings apart from the first two bytes (`startsFullMode`).
 *
 * What it does: encode and read both messages from "everything read so far" (a reader says
 * `NeedMore` until the message is whole, and reports its size so the caller hands the rest to the
 * mux decoder). What it does not do: decide to accept, close sockets, time out, or use Effect.
 * No function here throws on any input bytes.
 */
import { ProtocolParseError } from "./ProtocolError.ts"

/** The protocol name in the hello and the answer. */
export const FULL_MODE_MAGIC = "DYNMUX"

/** The one version this module speaks. */
export const FULL_MODE_VERSION = 1

/** Size of the hello. */
export const HELLO_SIZE = 12

/** Size of an answer without its reason. */
export const HELLO_ANSWER_HEADER_SIZE = 12

/** The status of a hello's answer. */
export const HelloStatus = {
  Accepted: 0,
  VersionNotSupported: 1,
  Refused: 2
} as const

/** A hello answer status: 0, 1 or 2. */
export type HelloStatus = (typeof HelloStatus)[keyof typeof HelloStatus]

/** Not enough bytes yet. */
export interface NeedMore {
  readonly _tag: "NeedMore"
}

/** A whole hello. */
export interface Hello {
  readonly _tag: "Hello"
  readonly version: number
  /** Bytes it took (always `HELLO_SIZE`): the mux frames start after them. */
  readonly size: number
}

/** A whole answer. */
export interface HelloAnswer {
  readonly _tag: "Answer"
  readonly version: number
  readonly status: HelloStatus
  readonly reason: string
  /** Bytes it took: the mux frames start after them. */
  readonly size: number
}

const NEED_MORE: NeedMore = { _tag: "NeedMore" }

const MAGIC = Uint8Array.from(FULL_MODE_MAGIC, (c) => c.charCodeAt(0))

/** The largest reason an answer carries (its length is a u16). */
export const MAX_HELLO_REASON = 65535

const encoder = new TextEncoder()
const lossyUtf8 = new TextDecoder("utf-8", { ignoreBOM: true })

const u16 = (b: Uint8Array, o: number): number => (b[o]! << 8) | b[o + 1]!

const putU16 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = (v >>> 8) & 0xff
  b[o + 1] = v & 0xff
}

const badHandshake = (detail: string): ProtocolParseError => new ProtocolParseError("BadHandshake", detail)

/** Checks the magic at `b[o..o+6]` against what has arrived of it. */
const magicMatches = (b: Uint8Array, o: number): boolean => {
  const n = Math.min(6, b.length - o)
  for (let i = 0; i < n; i++) if (b[o + i] !== MAGIC[i]) return false
  return true
}

/** True when the first two bytes are 0 (a hello, not a Dynamo request frame); undefined with fewer than 2 bytes. */
export const startsFullMode = (bytes: Uint8Array): boolean | undefined =>
  bytes.length < 2 ? undefined : bytes[0] === 0 && bytes[1] === 0

/** The router's hello: u16 0, "DYNMUX", u16 version, u16 flags 0. */
export const encodeHello = (version: number = FULL_MODE_VERSION): Uint8Array => {
  const out = new Uint8Array(HELLO_SIZE)
  out.set(MAGIC, 2)
  putU16(out, 8, version)
  return out
}

/**
 * Reads a hello from everything read so far. "BadHandshake" as soon as a byte is wrong (not a
 * zero prefix, not the magic, non-zero flags); the version is the caller's to judge (answer
 * `VersionNotSupported` to anything but 1).
 */
export const readHello = (bytes: Uint8Array): NeedMore | Hello | ProtocolParseError => {
  if (bytes.length >= 1 && bytes[0] !== 0) return badHandshake("full-mode hello does not start with u16 0")
  if (bytes.length >= 2 && bytes[1] !== 0) return badHandshake("full-mode hello does not start with u16 0")
  if (bytes.length > 2 && !magicMatches(bytes, 2)) return badHandshake(`full-mode hello does not carry the magic ${FULL_MODE_MAGIC}`)
  if (bytes.length < HELLO_SIZE) return NEED_MORE
  const flags = u16(bytes, 10)
  if (flags !== 0) return badHandshake(`full-mode hello has flags ${flags}, expected 0`)
  return { _tag: "Hello", version: u16(bytes, 8), size: HELLO_SIZE }
}

/** The worker's answer: "DYNMUX", u16 version, u16 status, u16 reason_len, reason (cut to 65535 bytes). */
export const encodeHelloAnswer = (status: HelloStatus, reason: string = "", version: number = FULL_MODE_VERSION): Uint8Array => {
  let r = encoder.encode(reason)
  if (r.length > MAX_HELLO_REASON) r = r.subarray(0, MAX_HELLO_REASON)
  const out = new Uint8Array(HELLO_ANSWER_HEADER_SIZE + r.length)
  out.set(MAGIC, 0)
  putU16(out, 6, version)
  putU16(out, 8, status)
  putU16(out, 10, r.length)
  out.set(r, HELLO_ANSWER_HEADER_SIZE)
  return out
}

/**
 * Reads an answer from everything read so far. "BadHandshake" for a wrong magic or an unknown
 * status; `size` is the bytes the answer took (the mux frames follow it in the same bytes).
 */
export const readHelloAnswer = (bytes: Uint8Array): NeedMore | HelloAnswer | ProtocolParseError => {
  if (!magicMatches(bytes, 0)) return badHandshake(`full-mode hello answer does not start with the magic ${FULL_MODE_MAGIC}`)
  if (bytes.length < HELLO_ANSWER_HEADER_SIZE) return NEED_MORE
  const status = u16(bytes, 8)
  if (status > HelloStatus.Refused) return badHandshake(`full-mode hello answer has unknown status ${status}`)
  const size = HELLO_ANSWER_HEADER_SIZE + u16(bytes, 10)
  if (bytes.length < size) return NEED_MORE
  return {
    _tag: "Answer",
    version: u16(bytes, 6),
    status: status as HelloStatus,
    reason: lossyUtf8.decode(bytes.subarray(HELLO_ANSWER_HEADER_SIZE, size)),
    size
  }
}
