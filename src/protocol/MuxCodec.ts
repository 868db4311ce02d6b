/**
 * The compact frame of Dynamo's "response mux v1" (PROTOCOL.md section 7; docs/protocol.md
 * section 6): the framing of a pooled, multiplexed call-home connection once its handshake is
 * done, and of the full TCP mode (docs/protocol.md section 9) once its hello is answered. The full
 * mode adds kinds 9 Request, 10 RequestData, 11 RequestEnd, 12 Error, 13 Ping and 14 Pong, which
 * a decoder accepts only with `fullMode: true` (a pooled call-home decoder refuses them as
 * unknown kinds).
 *
 * ```
 * payload_len : u32 BE
 * kind        : u8     1 Prologue, 2 Data, 3 End, 4 Stop, 5 Kill, 6 WindowUpdate, 7 Reset, 8 ConnectionAck
 * flags       : u8     0
 * reserved    : u16    0
 * stream_id   : 16 bytes, the stream's UUID; the nil UUID only (and always) for ConnectionAck
 * payload     : payload_len bytes
 * ```
 *
 * What it does:
 * - `encodeMuxFrame` / `encodeMuxHeader` / `encodeWindowUpdate` / `encodeConnectionAck` write
 *   frames; the stream id helpers (`streamIdFromUuid`, `uuidFromStreamId`, `sameStreamId`, `isNil`) are
 *   StreamId.ts's, re-exported here.
 * - `makeMuxDecoder` returns a synchronous incremental decoder (on the shared `FrameAssembler`) that takes any chunking and
 *   validates every frame from its 24-byte header alone, before buffering a byte of its payload:
 *   header + payload above `maxMessageSize` ("MessageTooLarge"), non-zero flags or reserved
 *   bits, an unknown kind, a WindowUpdate payload that is not 4 bytes, a ConnectionAck payload
 *   that is not 8 bytes, a payload on Stop, Kill or End, the nil UUID on anything but a
 *   ConnectionAck and a non-nil UUID on a ConnectionAck (all "MalformedFrame"). Frames that sit
 *   whole in one chunk are handed out as views, without copying; it counts the bytes it has
 *   decoded (the offset a ConnectionAck reports).
 * - `decodeMuxFrame` decodes exactly one complete frame from a buffer.
 * - Full mode: the header rules above hold for kinds 1-8; Request, RequestData and RequestEnd
 *   need a non-nil id, RequestEnd no payload, a Request payload at least its 4 bytes of lengths;
 *   Ping and Pong the nil id and exactly 8 bytes; an Error any id and any payload. Encoders:
 *   `encodePing` / `encodePong` / `decodePingNonce`, `encodeErrorFrame` / `decodeErrorText`,
 *   `encodeFullRequestPayload` / `encodeRequestFrame` / `decodeFullRequestPayload` (the Request
 *   payload is Dynamo's request head, TcpRequestFrame.ts, then the request message).
 *
 * What it does not do: interpret payloads beyond the two fixed-size kinds (Prologue, Data and
 * Reset payloads are defined in docs/protocol.md and handled by the transport), the TwoPartCodec
 * handshake that precedes this framing, flow control, I/O, or Effect. Errors are returned as
 * `ProtocolParseError` values; no function here throws on any input bytes.
 *
 * Views handed out alias the caller's chunk (or the decoder's per-frame buffer): a caller that
 * reuses its chunk buffers must copy what it keeps.
 */
import { FrameAssembler } from "./FrameAssembler.ts"
import type { IncrementalDecoder } from "./FrameAssembler.ts"
import { alloc, EMPTY, putU32, TWO_32, u32 } from "./Bytes.ts"
import { ProtocolParseError } from "./ProtocolError.ts"
import { decodeTcpRequestHead, encodeTcpRequestHead } from "./TcpRequestFrame.ts"
import { isNil, NIL_STREAM_ID, STREAM_ID_SIZE } from "./StreamId.ts"

// The stream id helpers live in StreamId.ts; the codec's users import them from here too.
export { isNil, NIL_STREAM_ID, sameStreamId, STREAM_ID_SIZE, streamIdFromUuid, uuidFromStreamId } from "./StreamId.ts"

/** Size of the fixed mux frame header: payload_len, kind, flags, reserved, stream_id. */
export const MUX_HEADER_SIZE = 24

/** The frame kinds of response mux v1. */
export const MuxKind = {
  Prologue: 1,
  Data: 2,
  End: 3,
  Stop: 4,
  Kill: 5,
  WindowUpdate: 6,
  Reset: 7,
  ConnectionAck: 8,
  /** Full mode only: a request opens a stream (router -> worker). */
  Request: 9,
  /** Full mode only: one item of a streamed request (router -> worker). */
  RequestData: 10,
  /** Full mode only: the request's item stream is whole (router -> worker). */
  RequestEnd: 11,
  /** Full mode only: a stream refused or failed (stream id), or a connection's closing reason (nil id). */
  Error: 12,
  /** Full mode only: a heartbeat (nil id, 8 bytes). */
  Ping: 13,
  /** Full mode only: the answer to a Ping (its 8 bytes echoed). */
  Pong: 14
} as const

/** A frame kind: 1 to 8 (every mode), 9 to 14 (the full mode only). */
export type MuxKind = (typeof MuxKind)[keyof typeof MuxKind]

const KIND_NAMES = [
  "",
  "Prologue",
  "Data",
  "End",
  "Stop",
  "Kill",
  "WindowUpdate",
  "Reset",
  "ConnectionAck",
  "Request",
  "RequestData",
  "RequestEnd",
  "Error",
  "Ping",
  "Pong"
] as const

/** The highest kind of the pooled call-home framing (section 7). */
export const MAX_POOLED_KIND = 8

/** The highest kind of the full mode. */
export const MAX_FULL_MODE_KIND = 14

/** The name of a pooled-mode kind ("Data"), or "kind N" for a number that is not one (9-14 included: see `fullModeKindName`). */
export const kindName = (kind: number): string => (kind >= 1 && kind <= MAX_POOLED_KIND ? KIND_NAMES[kind]! : `kind ${kind}`)

/** The name of a full-mode kind ("Request"), or "kind N" for a number that is not one. */
export const fullModeKindName = (kind: number): string =>
  kind >= 1 && kind <= MAX_FULL_MODE_KIND ? KIND_NAMES[kind]! : `kind ${kind}`

/** Size of a Ping or Pong payload: an opaque u64. */
export const PING_PAYLOAD_SIZE = 8

/** A decoded mux frame. `streamId` and `payload` are views (see the module comment). */
export interface MuxFrame {
  readonly kind: MuxKind
  readonly streamId: Uint8Array
  readonly payload: Uint8Array
}

/** Limits of a decoder. */
export interface MuxDecoderOptions {
  /** Largest accepted frame, header included (24 + payload_len). */
  readonly maxMessageSize: number
  /**
   * Accept the full mode's kinds 9-14 (Request, RequestData, RequestEnd, Error, Ping, Pong).
   * Default false: a pooled call-home connection refuses them as unknown kinds.
   */
  readonly fullMode?: boolean | undefined
}

/**
 * Receives each decoded frame. `payload` is a view valid as long as the chunk it aliases;
 * `streamId` is the decoder's own 16 bytes, rewritten for the next frame: a handler that keeps
 * the id copies it (`slice()`).
 */
export type MuxFrameHandler = (kind: MuxKind, streamId: Uint8Array, payload: Uint8Array) => void

/** An incremental decoder of this format; see `makeMuxDecoder`. */
export interface MuxDecoder extends IncrementalDecoder<MuxFrameHandler> {
  /**
   * Called from a frame handler: true when nothing but credit frames (WindowUpdate,
   * ConnectionAck) or part of a frame follows this frame in the chunk being decoded, so that a
   * reply queued now has no other frame of this chunk to wait for. False outside a frame handler,
   * and while a credit frame is handled (it may let many streams' held frames go at once).
   */
  quietAfterCurrentFrame(): boolean
  /**
   * Called from a frame handler: where the frame's payload begins in the chunk being decoded, or
   * -1 when the payload was gathered from several chunks (a copy).
   */
  restOffset(): number
}



const malformed = (detail: string): ProtocolParseError =>
  new ProtocolParseError("MalformedFrame", detail)

/**
 * Validates the header at `src[o..o+24]`. Returns the error, or undefined when the frame is
 * well-formed as far as its header can tell (which is everything but the payload bytes).
 */
const checkHeader = (src: Uint8Array, o: number, options: MuxDecoderOptions): ProtocolParseError | undefined => {
  const len = u32(src, o)
  const kind = src[o + 4]!
  if (MUX_HEADER_SIZE + len > options.maxMessageSize) {
    return new ProtocolParseError(
      "MessageTooLarge",
      `mux frame of ${MUX_HEADER_SIZE + len} bytes (24-byte header + payload_len ${len}) exceeds the maximum message size of ${options.maxMessageSize} bytes`
    )
  }
  if (kind < 1 || kind > (options.fullMode === true ? MAX_FULL_MODE_KIND : MAX_POOLED_KIND)) {
    return malformed(`unknown mux frame kind ${kind}`)
  }
  if (src[o + 5] !== 0) return malformed(`mux ${fullModeKindName(kind)} frame has flags ${src[o + 5]}, expected 0`)
  if (src[o + 6] !== 0 || src[o + 7] !== 0) {
    return malformed(`mux ${fullModeKindName(kind)} frame has reserved bits ${(src[o + 6]! << 8) | src[o + 7]!}, expected 0`)
  }
  const nil = isNil(src, o + 8)
  switch (kind) {
    case MuxKind.ConnectionAck:
      if (len !== 8) return malformed(`mux ConnectionAck payload is ${len} bytes, expected 8`)
      if (!nil) return malformed("mux ConnectionAck carries a non-nil stream id")
      return undefined
    case MuxKind.WindowUpdate:
      if (len !== 4) return malformed(`mux WindowUpdate payload is ${len} bytes, expected 4`)
      break
    case MuxKind.Stop:
    case MuxKind.Kill:
    case MuxKind.End:
    case MuxKind.RequestEnd:
      if (len !== 0) return malformed(`mux ${fullModeKindName(kind)} frame carries a ${len}-byte payload, expected none`)
      break
    case MuxKind.Request:
      if (len < 4) return malformed(`mux Request payload is ${len} bytes, shorter than its 4 bytes of lengths`)
      break
    case MuxKind.Ping:
    case MuxKind.Pong:
      if (len !== PING_PAYLOAD_SIZE) return malformed(`mux ${fullModeKindName(kind)} payload is ${len} bytes, expected 8`)
      if (!nil) return malformed(`mux ${fullModeKindName(kind)} carries a non-nil stream id`)
      return undefined
    case MuxKind.Error:
      return undefined
  }
  if (nil) return malformed(`mux ${fullModeKindName(kind)} frame has the nil stream id, which only a ConnectionAck may carry`)
  return undefined
}

const writeHeader = (out: Uint8Array, kind: MuxKind, streamId: Uint8Array, payloadLen: number): void => {
  putU32(out, 0, payloadLen)
  out[4] = kind
  // flags and reserved (bytes 5..8) stay 0: fresh allocation
  out.set(streamId, 8)
}

/**
 * The 24-byte header of a frame with this kind, stream id and payload length, for writers that
 * send header and payload as separate buffers. The caller keeps the frame valid (see
 * `makeMuxDecoder` for the rules); `streamId` must be 16 bytes.
 */
export const encodeMuxHeader = (kind: MuxKind, streamId: Uint8Array, payloadLen: number): Uint8Array => {
  const out = new Uint8Array(MUX_HEADER_SIZE)
  writeHeader(out, kind, streamId, payloadLen)
  return out
}

/** Encodes one frame (header and payload in one buffer). An absent payload is empty. */
export const encodeMuxFrame = (kind: MuxKind, streamId: Uint8Array, payload?: Uint8Array | undefined): Uint8Array => {
  const len = payload === undefined ? 0 : payload.length
  const out = alloc(MUX_HEADER_SIZE + len)
  writeHeader(out, kind, streamId, len)
  if (len > 0) out.set(payload!, MUX_HEADER_SIZE)
  return out
}

/** A Ping carrying `nonce` (its low 64 bits, a u64). */
export const encodePing = (nonce: bigint): Uint8Array => {
  const out = new Uint8Array(MUX_HEADER_SIZE + PING_PAYLOAD_SIZE)
  writeHeader(out, MuxKind.Ping, NIL_STREAM_ID, PING_PAYLOAD_SIZE)
  const n = BigInt.asUintN(64, nonce)
  putU32(out, MUX_HEADER_SIZE, Number(n >> 32n))
  putU32(out, MUX_HEADER_SIZE + 4, Number(n & 0xffffffffn))
  return out
}

/** The Pong answering a Ping: its 8 payload bytes echoed (the caller passes the Ping's payload). */
export const encodePong = (pingPayload: Uint8Array): Uint8Array => {
  const out = new Uint8Array(MUX_HEADER_SIZE + PING_PAYLOAD_SIZE)
  writeHeader(out, MuxKind.Pong, NIL_STREAM_ID, PING_PAYLOAD_SIZE)
  out.set(pingPayload.subarray(0, PING_PAYLOAD_SIZE), MUX_HEADER_SIZE)
  return out
}

/** The u64 of a Ping or Pong payload (exactly 8 bytes, as the decoder guarantees). */
export const decodePingNonce = (payload: Uint8Array): bigint =>
  (BigInt(u32(payload, 0)) << 32n) | BigInt(u32(payload, 4))

const lossyUtf8 = new TextDecoder("utf-8", { ignoreBOM: true })

/**
 * An Error frame: `text` as UTF-8. With a stream id: that stream was refused (worker -> router)
 * or its request items failed (router -> worker). With `NIL_STREAM_ID`: the sender's reason for
 * closing the connection.
 */
export const encodeErrorFrame = (streamId: Uint8Array, text: string): Uint8Array =>
  encodeMuxFrame(MuxKind.Error, streamId, Buffer.from(text, "utf8"))

/** The text of an Error payload (UTF-8; bad bytes become U+FFFD: the text is for people). */
export const decodeErrorText = (payload: Uint8Array): string => (payload.length === 0 ? "" : lossyUtf8.decode(payload))

/**
 * A Request payload: the Dynamo request head (u16 path_len, path, u16 headers_len, headers JSON)
 * then the section 2 request message, without the u32 payload_len (the mux length covers it).
 * "MessageTooLarge" when the path or headers exceed 65535 bytes.
 */
export const encodeFullRequestPayload = (
  path: string,
  headers: Readonly<Record<string, string>>,
  requestMessage: Uint8Array
): Uint8Array | ProtocolParseError => {
  const head = encodeTcpRequestHead(path, headers)
  if (head instanceof ProtocolParseError) return head
  const out = alloc(head.length + requestMessage.length)
  out.set(head, 0)
  out.set(requestMessage, head.length)
  return out
}

/** A whole Request frame for `streamId`; errors as `encodeFullRequestPayload`. */
export const encodeRequestFrame = (
  streamId: Uint8Array,
  path: string,
  headers: Readonly<Record<string, string>>,
  requestMessage: Uint8Array
): Uint8Array | ProtocolParseError => {
  const head = encodeTcpRequestHead(path, headers)
  if (head instanceof ProtocolParseError) return head
  const len = head.length + requestMessage.length
  const out = alloc(MUX_HEADER_SIZE + len)
  writeHeader(out, MuxKind.Request, streamId, len)
  out.set(head, MUX_HEADER_SIZE)
  out.set(requestMessage, MUX_HEADER_SIZE + head.length)
  return out
}

/**
 * Reads a Request payload: path, headers, and `message` (a view of the rest: the section 2
 * request message, not decoded here). Errors as `decodeTcpRequestHead` ("MalformedFrame").
 */
export const decodeFullRequestPayload = (
  payload: Uint8Array
): { path: string; headers: Record<string, string>; message: Uint8Array } | ProtocolParseError => {
  const head = decodeTcpRequestHead(payload, 0)
  if (head instanceof ProtocolParseError) return head
  return { path: head.path, headers: head.headers, message: head.end === payload.length ? EMPTY : payload.subarray(head.end) }
}

/** A WindowUpdate granting `credits` (a u32) bytes to `streamId`. */
export const encodeWindowUpdate = (streamId: Uint8Array, credits: number): Uint8Array => {
  const out = new Uint8Array(MUX_HEADER_SIZE + 4)
  writeHeader(out, MuxKind.WindowUpdate, streamId, 4)
  putU32(out, MUX_HEADER_SIZE, credits >>> 0)
  return out
}

/** A ConnectionAck reporting `offset` (a safe integer) cumulative bytes decoded. */
export const encodeConnectionAck = (offset: number): Uint8Array => {
  const out = new Uint8Array(MUX_HEADER_SIZE + 8)
  writeHeader(out, MuxKind.ConnectionAck, NIL_STREAM_ID, 8)
  putU32(out, MUX_HEADER_SIZE, Math.floor(offset / TWO_32))
  putU32(out, MUX_HEADER_SIZE + 4, offset >>> 0)
  return out
}

/** The credits of a WindowUpdate payload (exactly 4 bytes, as the decoder guarantees). */
export const decodeWindowUpdate = (payload: Uint8Array): number => u32(payload, 0)

/**
 * The offset of a ConnectionAck payload (exactly 8 bytes, as the decoder guarantees). Offsets
 * at or above 2^53 lose precision; a connection does not live that long.
 */
export const decodeConnectionAck = (payload: Uint8Array): number => u32(payload, 0) * TWO_32 + u32(payload, 4)

/**
 * Decodes exactly one complete frame from `bytes`. Truncation and trailing bytes are
 * "MalformedFrame"; every header rule of `makeMuxDecoder` applies. The parts returned are views.
 */
export const decodeMuxFrame = (bytes: Uint8Array, options: MuxDecoderOptions): MuxFrame | ProtocolParseError => {
  if (bytes.length < MUX_HEADER_SIZE) {
    return malformed(`truncated mux frame: ${bytes.length} bytes, shorter than the 24-byte header`)
  }
  const bad = checkHeader(bytes, 0, options)
  if (bad !== undefined) return bad
  const total = MUX_HEADER_SIZE + u32(bytes, 0)
  if (bytes.length !== total) {
    return malformed(bytes.length < total
        ? `truncated mux frame: ${bytes.length} of ${total} bytes`
        : `${bytes.length - total} trailing bytes after a ${total}-byte mux frame`
    )
  }
  return {
    kind: bytes[4] as MuxKind,
    streamId: bytes.subarray(8, MUX_HEADER_SIZE),
    payload: total === MUX_HEADER_SIZE ? EMPTY : bytes.subarray(MUX_HEADER_SIZE, total)
  }
}

/** The mux format: rest = payload; the header alone is validated. */
class MuxFrameDecoder extends FrameAssembler<MuxFrameHandler> implements MuxDecoder {
  private readonly options: MuxDecoderOptions
  /** The stream id handed to the handler: copied here, not a fresh view per frame (a view is an allocation). */
  private readonly id = new Uint8Array(STREAM_ID_SIZE)
  /** The kind of the frame being delivered. */
  private kind = 0
  constructor(options: MuxDecoderOptions) {
    super(options.maxMessageSize)
    this.options = options
  }
  protected restLength(src: Uint8Array, o: number): number | ProtocolParseError {
    return checkHeader(src, o, this.options) ?? u32(src, o)
  }
  protected deliver(prefix: Uint8Array, p: number, rest: Uint8Array, start: number, end: number, onFrame: MuxFrameHandler): undefined {
    const id = this.id
    // `copyStreamId`'s straight-line copy, written out here rather than called: a function shared
    // with FrameBatcher's header write sees both callers' array types at its element accesses
    // (a chunk or this prefix buffer here, a batch buffer there), about 2,200 instructions a call
    // more on the router (callgrind).
    const o = p + 8
    id[0] = prefix[o]!
    id[1] = prefix[o + 1]!
    id[2] = prefix[o + 2]!
    id[3] = prefix[o + 3]!
    id[4] = prefix[o + 4]!
    id[5] = prefix[o + 5]!
    id[6] = prefix[o + 6]!
    id[7] = prefix[o + 7]!
    id[8] = prefix[o + 8]!
    id[9] = prefix[o + 9]!
    id[10] = prefix[o + 10]!
    id[11] = prefix[o + 11]!
    id[12] = prefix[o + 12]!
    id[13] = prefix[o + 13]!
    id[14] = prefix[o + 14]!
    id[15] = prefix[o + 15]!
    const kind = prefix[p + 4]!
    this.kind = kind
    onFrame(kind as MuxKind, id, start === end ? EMPTY : rest.subarray(start, end))
    return undefined
  }
  quietAfterCurrentFrame(): boolean {
    const chunk = this.decodingChunk
    // Credit frames may release many streams' frames at once: those share the write at the tick's end.
    if (chunk === undefined || this.kind === MuxKind.WindowUpdate || this.kind === MuxKind.ConnectionAck) return false
    let o = this.afterFrame
    while (o + MUX_HEADER_SIZE <= chunk.length) {
      const kind = chunk[o + 4]
      const end = o + MUX_HEADER_SIZE + u32(chunk, o)
      // Another frame whole in this chunk is decoded next; a partial one waits for more bytes.
      if (kind !== MuxKind.WindowUpdate && kind !== MuxKind.ConnectionAck) return end > chunk.length
      o = end
    }
    return true
  }
}

/**
 * A new incremental mux decoder. Synchronous and allocation-lean: one 24-byte header buffer and
 * one 16-byte stream id for its lifetime, one exact-size buffer per payload that spans chunks,
 * and per frame only the payload's view.
 */
export const makeMuxDecoder = (options: MuxDecoderOptions): MuxDecoder =>
  new MuxFrameDecoder({ maxMessageSize: options.maxMessageSize, fullMode: options.fullMode === true })
