/**
 * The TwoPartCodec frame (PROTOCOL.md section 1): encoder, one-shot decoder and incremental
 * decoder.
 *
 * ```
 * header_len : u64 BE
 * body_len   : u64 BE
 * checksum   : u64 BE   xxh3_64(header ‖ body), or 0 = unchecked
 * header     : header_len bytes
 * body       : body_len bytes
 * ```
 *
 * What it does:
 * - `encodeFrame` / `encodeFrameWithChecksum` / `encodeFramePrefix` / `encodeHeaderOnlyJson`
 *   write frames (checksum 0 unless asked, as Dynamo's release builds do).
 * - `makeDecoder` returns a synchronous incremental decoder (on the shared `FrameAssembler`) that takes any chunking, refuses
 *   an oversized frame as soon as its 24-byte prefix is read (before buffering a byte of it),
 *   verifies non-zero checksums, and hands out zero-copy `subarray` views whenever a frame
 *   sits whole inside one chunk (it copies only frames that span chunks).
 * - `decodeFrame` decodes exactly one frame from a complete buffer (HTTP body, NATS payload).
 *
 * What it does not do: interpret the header or body (see RequestMessage and PayloadCodec),
 * do I/O, or use Effect. Errors are returned as `ProtocolParseError` values, never thrown;
 * no function here throws on any input bytes.
 *
 * Views handed out alias the caller's chunk (or the decoder's per-frame buffer): a caller that
 * reuses its chunk buffers must copy what it keeps.
 */
import { xxh3_64 } from "./Checksum.ts"
import { FrameAssembler } from "./FrameAssembler.ts"
import type { IncrementalDecoder } from "./FrameAssembler.ts"
import { alloc, EMPTY, putU32, TWO_32, u32 } from "./Bytes.ts"
import { writeUtf8 } from "./AsciiText.ts"
import { ProtocolParseError } from "./ProtocolError.ts"

/** Size of the fixed frame prefix: header_len, body_len, checksum (3 × u64 BE). */
export const FRAME_PREFIX_SIZE = 24

/** Dynamo's DYN_TCP_MAX_MESSAGE_SIZE default: 32 MiB (prefix + header + body). */
export const DEFAULT_MAX_MESSAGE_SIZE = 32 * 1024 * 1024

/** A decoded frame. Either part may be empty (header-only, data-only, or both). */
export interface Frame {
  readonly header: Uint8Array
  readonly body: Uint8Array
}

/** Limits of a decoder. */
export interface FrameDecoderOptions {
  /** Largest accepted frame, prefix included (24 + header_len + body_len). */
  readonly maxMessageSize: number
}

/** Receives each decoded frame. The views are valid as long as the chunk they alias. */
export type FrameHandler = (header: Uint8Array, body: Uint8Array) => void

/** An incremental decoder of this format; see `makeDecoder`. */
export interface FrameDecoder extends IncrementalDecoder<FrameHandler> {
  /**
   * Called from a frame handler: where the frame's header (then its body) begins in the chunk
   * being decoded, or -1 when the frame spanned chunks (its parts are then views of a copy).
   */
  restOffset(): number
}

/** A u64 whose high word is at least this is >= 2^53: not a safe JS integer. */
const UNSAFE_HI = 0x200000


const putU64 = (b: Uint8Array, o: number, v: number): void => {
  putU32(b, o, Math.floor(v / TWO_32))
  putU32(b, o + 4, v >>> 0)
}

const putU64Big = (b: Uint8Array, o: number, v: bigint): void => {
  putU32(b, o, Number((v >> 32n) & 0xffffffffn))
  putU32(b, o + 4, Number(v & 0xffffffffn))
}

const u64Big = (b: Uint8Array, o: number): bigint => (BigInt(u32(b, o)) << 32n) | BigInt(u32(b, o + 4))

const hex64 = (v: bigint): string => `0x${v.toString(16).padStart(16, "0")}`

const protocolError = (
  reason: "MalformedFrame" | "MessageTooLarge" | "ChecksumMismatch",
  detail: string,
  cause?: unknown
): ProtocolParseError => new ProtocolParseError(reason, detail, cause)

/**
 * Validates the prefix at `src[o..o+24]` against `options`. Returns the error, or undefined
 * when the lengths are safe integers and the frame fits in `maxMessageSize`.
 */
const checkPrefix = (src: Uint8Array, o: number, options: FrameDecoderOptions): ProtocolParseError | undefined => {
  const hHi = u32(src, o)
  const bHi = u32(src, o + 8)
  if (hHi < UNSAFE_HI && bHi < UNSAFE_HI) {
    const total = FRAME_PREFIX_SIZE + (hHi * TWO_32 + u32(src, o + 4)) + (bHi * TWO_32 + u32(src, o + 12))
    if (total <= options.maxMessageSize) return undefined
  }
  // Error path only: exact arithmetic, whatever the lengths.
  const h = u64Big(src, o)
  const b = u64Big(src, o + 8)
  return protocolError("MessageTooLarge",
    `frame of ${24n + h + b} bytes (24-byte prefix + header_len ${h} + body_len ${b}) exceeds the maximum message size of ${options.maxMessageSize} bytes`
  )
}

/** Verifies a non-zero checksum over `region` (= header ‖ body). */
const checkChecksum = (region: Uint8Array, expected: bigint): ProtocolParseError | undefined => {
  let actual: bigint
  try {
    actual = xxh3_64(region)
  } catch (cause) {
    return protocolError("ChecksumMismatch", "cannot verify a non-zero checksum: xxh3 unavailable", cause)
  }
  return actual === expected
    ? undefined
    : protocolError("ChecksumMismatch",
      `frame checksum ${hex64(expected)} does not match xxh3_64 ${hex64(actual)} of its ${region.length} header+body bytes`
    )
}

const writePrefix = (out: Uint8Array, headerLen: number, bodyLen: number): void => {
  putU64(out, 0, headerLen)
  putU64(out, 8, bodyLen)
  // checksum bytes 16..24 are left 0 (fresh allocation)
}

/**
 * The 24-byte prefix of a frame with these part lengths and `checksum` (default 0), for
 * writers that send prefix, header and body as separate buffers (writev) without copying.
 */
export const encodeFramePrefix = (headerLen: number, bodyLen: number, checksum: bigint = 0n): Uint8Array => {
  const out = new Uint8Array(FRAME_PREFIX_SIZE)
  writePrefix(out, headerLen, bodyLen)
  if (checksum !== 0n) putU64Big(out, 16, checksum)
  return out
}

/** Encodes one frame with checksum 0 (unchecked). Absent parts are empty. */
export const encodeFrame = (header: Uint8Array | undefined, body: Uint8Array | undefined): Uint8Array => {
  const h = header === undefined ? 0 : header.length
  const b = body === undefined ? 0 : body.length
  const out = alloc(FRAME_PREFIX_SIZE + h + b)
  writePrefix(out, h, b)
  if (h > 0) out.set(header!, FRAME_PREFIX_SIZE)
  if (b > 0) out.set(body!, FRAME_PREFIX_SIZE + h)
  return out
}

/** Encodes one frame whose checksum is xxh3_64(header ‖ body), as Dynamo's debug builds do. */
export const encodeFrameWithChecksum = (header: Uint8Array | undefined, body: Uint8Array | undefined): Uint8Array => {
  const out = encodeFrame(header, body)
  putU64Big(out, 16, xxh3_64(out.subarray(FRAME_PREFIX_SIZE)))
  return out
}

/**
 * A header-only frame whose header is `JSON.stringify(value)`: the call-home handshake,
 * prologue and control frames. Throws a TypeError if `value` has no JSON form.
 */
export const encodeHeaderOnlyJson = (value: unknown): Uint8Array => {
  const json = JSON.stringify(value)
  if (json === undefined) throw new TypeError("encodeHeaderOnlyJson: value has no JSON representation")
  return encodeHeaderOnlyText(json)
}

/**
 * A header-only frame whose header is the UTF-8 of `text`, written straight into the frame (no
 * encoded copy of the header first: one a one-shot call-home's handshake, counted with callgrind).
 */
export const encodeHeaderOnlyText = (text: string): Uint8Array => {
  const h = Buffer.byteLength(text, "utf8")
  const out = alloc(FRAME_PREFIX_SIZE + h)
  writePrefix(out, h, 0)
  writeUtf8(out, text, FRAME_PREFIX_SIZE, h)
  return out
}

/**
 * Decodes exactly one complete frame from `bytes`. Truncation and trailing bytes are
 * "MalformedFrame"; an oversized frame is "MessageTooLarge"; a wrong non-zero checksum is
 * "ChecksumMismatch". The parts returned are views into `bytes`.
 */
export const decodeFrame = (bytes: Uint8Array, options: FrameDecoderOptions): Frame | ProtocolParseError => {
  if (bytes.length < FRAME_PREFIX_SIZE) {
    return protocolError("MalformedFrame",
      `truncated frame: ${bytes.length} bytes, shorter than the 24-byte prefix`
    )
  }
  const tooLarge = checkPrefix(bytes, 0, options)
  if (tooLarge !== undefined) return tooLarge
  const h = u32(bytes, 0) * TWO_32 + u32(bytes, 4)
  const b = u32(bytes, 8) * TWO_32 + u32(bytes, 12)
  const total = FRAME_PREFIX_SIZE + h + b
  if (bytes.length !== total) {
    return protocolError("MalformedFrame",
      bytes.length < total
        ? `truncated frame: ${bytes.length} of ${total} bytes (header_len ${h}, body_len ${b})`
        : `${bytes.length - total} trailing bytes after a ${total}-byte frame (header_len ${h}, body_len ${b})`
    )
  }
  if (u32(bytes, 16) !== 0 || u32(bytes, 20) !== 0) {
    const bad = checkChecksum(bytes.subarray(FRAME_PREFIX_SIZE), u64Big(bytes, 16))
    if (bad !== undefined) return bad
  }
  return {
    header: h === 0 ? EMPTY : bytes.subarray(FRAME_PREFIX_SIZE, FRAME_PREFIX_SIZE + h),
    body: b === 0 ? EMPTY : bytes.subarray(FRAME_PREFIX_SIZE + h, total)
  }
}

/** The TwoPartCodec format: rest = header ‖ body, checksum verified when non-zero. */
class TwoPartDecoder extends FrameAssembler<FrameHandler> implements FrameDecoder {
  private readonly options: FrameDecoderOptions
  constructor(options: FrameDecoderOptions) {
    super(options.maxMessageSize)
    this.options = options
  }
  protected restLength(src: Uint8Array, o: number): number | ProtocolParseError {
    const tooLarge = checkPrefix(src, o, this.options)
    if (tooLarge !== undefined) return tooLarge
    return u32(src, o) * TWO_32 + u32(src, o + 4) + u32(src, o + 8) * TWO_32 + u32(src, o + 12)
  }
  protected deliver(prefix: Uint8Array, p: number, rest: Uint8Array, start: number, end: number, onFrame: FrameHandler): ProtocolParseError | undefined {
    const hi = u32(prefix, p + 16)
    const lo = u32(prefix, p + 20)
    if (hi !== 0 || lo !== 0) {
      const bad = checkChecksum(rest.subarray(start, end), (BigInt(hi) << 32n) | BigInt(lo))
      if (bad !== undefined) return bad
    }
    const split = start + u32(prefix, p) * TWO_32 + u32(prefix, p + 4)
    onFrame(split === start ? EMPTY : rest.subarray(start, split), split === end ? EMPTY : rest.subarray(split, end))
    return undefined
  }
}

/**
 * A new incremental decoder. Synchronous and allocation-lean: one 24-byte prefix buffer for
 * its lifetime, one exact-size buffer per frame that spans chunks, nothing else per frame.
 */
export const makeDecoder = (options: FrameDecoderOptions): FrameDecoder => new TwoPartDecoder({ maxMessageSize: options.maxMessageSize })
