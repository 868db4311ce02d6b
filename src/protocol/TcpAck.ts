/**
 * The acks of Dynamo's shipped TCP request plane (PROTOCOL.md section 8; docs/protocol.md, "Dynamo's
 * TCP request plane"): `u32 len` + UTF-8 text, worker to router, in request order; empty means
 * accepted, and a non-empty text is a rejection whose prefix says why.
 *
 * What it does: encode an ack (`encodeTcpAck`, `ACCEPTED_ACK`), build Dynamo's rejection texts
 * (`overloadedAck`, `unavailableAck`, `unknownEndpointAck`), classify a text (`classifyAck`), and
 * decode acks incrementally (`makeTcpAckDecoder`: synchronous, any chunking, the size checked from
 * the length before the text is buffered). The full mode's Error frames carry the same texts.
 *
 * What it does not do: the request frame (TcpRequestFrame.ts), I/O, timers, or Effect. No function
 * here throws on any input bytes.
 */
import type { IncrementalDecoder } from "./FrameAssembler.ts"
import { putU32, u32 } from "./Bytes.ts"
import { ProtocolParseError } from "./ProtocolError.ts"
import { allocate, DecoderBase } from "./TcpDecoderBase.ts"
import type { TcpDecoderOptions } from "./TcpDecoderBase.ts"

export const SERVER_OVERLOADED = "Server overloaded"

/** Dynamo's rejection prefix for a worker that cannot take requests (draining, shutting down). */
export const SERVER_UNAVAILABLE = "Server unavailable"

/** The detail Dynamo's worker gives when its queue is full: `Server overloaded: worker at capacity`. */
export const AT_CAPACITY_DETAIL = "worker at capacity"

/** Dynamo's rejection prefix for a path no endpoint is registered under (see `unknownEndpointAck`). */
export const UNKNOWN_ENDPOINT = "Unknown endpoint"

/** Receives each decoded ack text ("" = accepted). */
export type TcpAckHandler = (text: string) => void

/** An incremental decoder of acks; see `makeTcpAckDecoder`. */
export type TcpAckDecoder = IncrementalDecoder<TcpAckHandler>

const encoder = new TextEncoder()
const lossyUtf8 = new TextDecoder("utf-8", { ignoreBOM: true })

/** An empty ack: the request was accepted. One shared buffer: never write to it. */
export const ACCEPTED_ACK: Uint8Array = new Uint8Array(4)

/** An ack: u32 length + UTF-8 text. No text (or "") = accepted. */
export const encodeTcpAck = (text?: string): Uint8Array => {
  if (text === undefined || text.length === 0) return new Uint8Array(4)
  const t = encoder.encode(text)
  const out = new Uint8Array(4 + t.length)
  putU32(out, 0, t.length)
  out.set(t, 4)
  return out
}

/** Dynamo's overload rejection text: `Server overloaded: <detail>`. */
export const overloadedAck = (detail: string): string => `${SERVER_OVERLOADED}: ${detail}`

/** Dynamo's unavailable rejection text: `Server unavailable: <detail>`. */
export const unavailableAck = (detail: string): string => `${SERVER_UNAVAILABLE}: ${detail}`

/** Dynamo's text for a path no endpoint serves: `Unknown endpoint: <path>` (the connection stays open). */
export const unknownEndpointAck = (path: string): string => `${UNKNOWN_ENDPOINT}: ${path}`

/**
 * What an ack text means: empty = accepted; `Server overloaded...` = overloaded; `Server
 * unavailable...` and Dynamo's `Unknown endpoint: <path>` (this worker does not serve that
 * path: try another) = unavailable; anything else (`Decode error: ...`, `Read error: ...`,
 * `Request too large`, `Invalid endpoint path`) = rejected.
 */
export const classifyAck = (text: string): "accepted" | "overloaded" | "unavailable" | "rejected" => {
  if (text.length === 0) return "accepted"
  if (text.startsWith(SERVER_OVERLOADED)) return "overloaded"
  if (text.startsWith(SERVER_UNAVAILABLE) || text.startsWith(UNKNOWN_ENDPOINT)) return "unavailable"
  return "rejected"
}

class AckDecoder extends DecoderBase implements TcpAckDecoder {
  private readonly max: number
  private readonly prefix = new Uint8Array(4)
  private prefixFill = 0
  private text: Uint8Array | undefined = undefined
  private textFill = 0

  constructor(options: TcpDecoderOptions) {
    super()
    this.max = options.maxMessageSize
  }

  protected release(): void {
    this.text = undefined
    this.textFill = 0
    this.prefixFill = 0
  }

  decode(chunk: Uint8Array, handler: TcpAckHandler): ProtocolParseError | undefined {
    if (this.error !== undefined) return this.error
    if (this.stopped) return undefined
    const len = chunk.length
    let off = 0
    while (off < len) {
      const text = this.text
      if (text !== undefined) {
        const n = Math.min(text.length - this.textFill, len - off)
        text.set(chunk.subarray(off, off + n), this.textFill)
        this.textFill += n
        off += n
        if (this.textFill < text.length) break
        this.text = undefined
        this.textFill = 0
        this.decoded += 4 + text.length
        handler(lossyUtf8.decode(text))
        if (this.stopped) return this.stopAt(off)
        continue
      }
      let textLen: number
      if (this.prefixFill === 0 && len - off >= 4) {
        textLen = u32(chunk, off)
        off += 4
      } else {
        const n = Math.min(4 - this.prefixFill, len - off)
        this.prefix.set(chunk.subarray(off, off + n), this.prefixFill)
        this.prefixFill += n
        off += n
        if (this.prefixFill < 4) break
        this.prefixFill = 0
        textLen = u32(this.prefix, 0)
      }
      if (4 + textLen > this.max) {
        return this.fail(new ProtocolParseError("MessageTooLarge", `TCP ack of ${4 + textLen} bytes exceeds the maximum message size of ${this.max} bytes`))
      }
      if (len - off >= textLen) {
        this.decoded += 4 + textLen
        const t = textLen === 0 ? "" : lossyUtf8.decode(chunk.subarray(off, off + textLen))
        off += textLen
        handler(t)
        if (this.stopped) return this.stopAt(off)
        continue
      }
      const buf = allocate(textLen, this.max)
      if (buf instanceof ProtocolParseError) return this.fail(buf)
      buf.set(chunk.subarray(off, len), 0)
      this.text = buf
      this.textFill = len - off
      off = len
    }
    return undefined
  }

  bufferedBytes(): number {
    return this.text === undefined ? this.prefixFill : 4 + this.textFill
  }

  isIdle(): boolean {
    return this.text === undefined && this.prefixFill === 0
  }
}

/**
 * A new incremental decoder of acks (u32 length + text, decoded as UTF-8 with replacement
 * characters for bad bytes: the text is for people). An ack above `maxMessageSize` (4 + its
 * length) is "MessageTooLarge", refused before its text is buffered.
 */
export const makeTcpAckDecoder = (options: TcpDecoderOptions): TcpAckDecoder => new AckDecoder(options)
