/**
 * Frame assembly shared by the two incremental decoders (TwoPartCodec and response mux v1): both
 * formats start every frame with a fixed 24-byte prefix that tells how many bytes follow.
 *
 * What it does: take chunks of any size, find frame boundaries, validate each prefix through the
 * format's `restLength` before buffering a byte of the frame (so an oversized frame is refused
 * at once), and hand each whole frame to the format's `deliver` as offsets into the bytes that hold it. A
 * frame that sits whole inside one chunk is handed over where it lies (zero copy); only frames
 * that span chunks are copied, into one exact-size buffer each. It counts the bytes of complete
 * frames, and a frame handler may `stop()` the decoder after its frame (the rest of the chunk is
 * then the caller's: `stopOffset()`), which is how a connection switches framing mid-chunk.
 *
 * What it does not do: interpret prefixes or frames (each format's subclass does), throw on any
 * input bytes, use Effect, or do I/O. After a parse error the assembler is dead: every later call returns it.
 */
import { ProtocolParseError } from "./ProtocolError.ts"

/** Size of the fixed prefix of both formats. */
export const PREFIX_SIZE = 24

/** What the decoders of both formats offer; `H` is the format's frame handler. */
export interface IncrementalDecoder<H> {
  /**
   * Feeds one chunk; calls `onFrame` for every frame it completes, in order. Returns the first
   * parse error, after which the decoder is dead and every later call returns that error. If
   * `onFrame` throws, the exception propagates and the rest of that chunk is dropped.
   */
  decode(chunk: Uint8Array, onFrame: H): ProtocolParseError | undefined
  /** Bytes of every complete frame decoded so far, prefixes included (a mux ConnectionAck's offset). */
  bytesDecoded(): number
  /** Bytes of a partial frame held so far (prefix bytes included). */
  bufferedBytes(): number
  /** True when no partial frame is buffered: a connection closing now ends on a frame boundary. */
  isIdle(): boolean
  /** The error that killed the decoder, if any. */
  failure(): ProtocolParseError | undefined
  /** Called from `onFrame`: `decode` returns after this frame and decodes nothing more (a switch of framing). */
  stop(): void
  /** After a `stop()`: the offset in the last chunk where the bytes after the stopping frame begin. */
  stopOffset(): number
}

/**
 * An incremental decoder of one format; see the module comment. A format extends it with its
 * two methods, `restLength` and `deliver`.
 */
export abstract class FrameAssembler<H> implements IncrementalDecoder<H> {
  private readonly maxMessageSize: number
  /** The current prefix, when it spans chunks or its frame does. */
  private readonly prefix = new Uint8Array(PREFIX_SIZE)
  private prefixFill = 0
  /** The rest of the current frame, when it spans chunks. */
  private rest: Uint8Array | undefined = undefined
  private restFill = 0
  private decoded = 0
  private stopped = false
  private stoppedAt = -1
  private error: ProtocolParseError | undefined = undefined
  /** While `decode` runs: its chunk, and where the bytes after the frame being delivered begin. */
  protected decodingChunk: Uint8Array | undefined = undefined
  protected afterFrame = 0
  /** While a frame is delivered: `restOffset()`. */
  private frameRest = -1

  constructor(maxMessageSize: number) {
    this.maxMessageSize = maxMessageSize
  }

  /** The length of the frame after the prefix at `src[o..o+24]`, or why the prefix is refused. */
  protected abstract restLength(src: Uint8Array, o: number): number | ProtocolParseError

  /**
   * Hands one frame to `handler`: its prefix at `prefix[p..p+24]`, the rest at
   * `rest[start..end]`. Returns a parse error to refuse it (a checksum), which kills the decoder.
   */
  protected abstract deliver(prefix: Uint8Array, p: number, rest: Uint8Array, start: number, end: number, handler: H): ProtocolParseError | undefined

  /**
   * Feeds one chunk; delivers every frame it completes, in order. Returns the first parse error,
   * after which every call returns it. If a handler throws, the exception propagates and the rest
   * of that chunk is dropped.
   */
  decode(chunk: Uint8Array, handler: H): ProtocolParseError | undefined {
    if (this.error !== undefined) return this.error
    if (this.stopped) return undefined
    this.decodingChunk = chunk
    try {
      return this.decodeChunk(chunk, handler)
    } finally {
      this.decodingChunk = undefined
    }
  }

  private decodeChunk(chunk: Uint8Array, handler: H): ProtocolParseError | undefined {
    const len = chunk.length
    let off = 0
    while (off < len) {
      const rest = this.rest
      if (rest !== undefined) {
        // Continue a frame that spans chunks; its prefix is in this.prefix.
        const n = Math.min(rest.length - this.restFill, len - off)
        rest.set(chunk.subarray(off, off + n), this.restFill)
        this.restFill += n
        off += n
        if (this.restFill < rest.length) break
        this.rest = undefined
        this.restFill = 0
        this.decoded += PREFIX_SIZE + rest.length
        this.afterFrame = off
        this.frameRest = -1
        const bad = this.deliver(this.prefix, 0, rest, 0, rest.length, handler)
        if (bad !== undefined) return this.fail(bad)
        if (this.stopped) return this.stopAt(off)
        continue
      }
      // A prefix: read where it lies when it is whole in this chunk, else accumulate it.
      let src: Uint8Array
      let p: number
      if (this.prefixFill === 0 && len - off >= PREFIX_SIZE) {
        src = chunk
        p = off
        off += PREFIX_SIZE
      } else {
        const n = Math.min(PREFIX_SIZE - this.prefixFill, len - off)
        this.prefix.set(chunk.subarray(off, off + n), this.prefixFill)
        this.prefixFill += n
        off += n
        if (this.prefixFill < PREFIX_SIZE) break
        this.prefixFill = 0
        src = this.prefix
        p = 0
      }
      const restLen = this.restLength(src, p)
      if (typeof restLen !== "number") return this.fail(restLen)
      if (len - off >= restLen) {
        // Zero copy: the rest of the frame is in this chunk.
        this.decoded += PREFIX_SIZE + restLen
        this.afterFrame = off + restLen
        this.frameRest = off
        const bad = this.deliver(src, p, chunk, off, off + restLen, handler)
        off += restLen
        if (bad !== undefined) return this.fail(bad)
        if (this.stopped) return this.stopAt(off)
        continue
      }
      // The frame spans chunks: keep its prefix, and one buffer of exactly its size (already checked).
      if (src !== this.prefix) this.prefix.set(src.subarray(p, p + PREFIX_SIZE), 0)
      let buf: Uint8Array
      try {
        buf = new Uint8Array(restLen)
      } catch (cause) {
        return this.fail(
          new ProtocolParseError("MessageTooLarge", `cannot allocate a ${restLen}-byte frame buffer (max message size ${this.maxMessageSize})`, cause)
        )
      }
      buf.set(chunk.subarray(off, len), 0)
      this.rest = buf
      this.restFill = len - off
      off = len
    }
    return undefined
  }

  /** Called from a frame handler: `decode` returns after this frame and decodes nothing more. */
  stop(): void {
    this.stopped = true
  }

  /** After a `stop()`: the offset in the last chunk where the bytes after the stopping frame begin. */
  stopOffset(): number {
    return this.stoppedAt
  }

  /** Called from a frame handler: where the bytes after the frame's prefix begin in the chunk, or -1 (a copy). */
  restOffset(): number {
    return this.frameRest
  }

  /** Bytes of every complete frame so far, prefixes included. */
  bytesDecoded(): number {
    return this.decoded
  }

  /** Bytes of a partial frame held so far (prefix bytes included). */
  bufferedBytes(): number {
    return this.rest === undefined ? this.prefixFill : PREFIX_SIZE + this.restFill
  }

  /** True when no partial frame is buffered: a connection closing now ends on a frame boundary. */
  isIdle(): boolean {
    return this.rest === undefined && this.prefixFill === 0
  }

  /** The error that killed the decoder, if any. */
  failure(): ProtocolParseError | undefined {
    return this.error
  }

  private stopAt(off: number): undefined {
    this.stoppedAt = off
    return undefined
  }

  private fail(error: ProtocolParseError): ProtocolParseError {
    this.error = error
    this.rest = undefined
    return error
  }
}
