/**
 * What the two incremental decoders of Dynamo's TCP request plane share (TcpRequestFrame.ts and
 * TcpAck.ts): their options, the stop/counter/death bookkeeping of `IncrementalDecoder`, and a
 * buffer allocation that fails as a parse error instead of throwing.
 *
 * It does not decode anything itself.
 */
import { ProtocolParseError } from "./ProtocolError.ts"

/** Limits of a decoder. */
export interface TcpDecoderOptions {
  /** Largest accepted frame, every byte included (request: 8 + path + headers + payload; ack: 4 + text). */
  readonly maxMessageSize: number
}

/** What both decoders share: stop, counters, death. */
export abstract class DecoderBase {
  protected decoded = 0
  protected stopped = false
  protected stoppedAt = -1
  protected error: ProtocolParseError | undefined = undefined

  /** Called from a handler: `decode` returns after this frame and decodes nothing more. */
  stop(): void {
    this.stopped = true
  }
  /** After a `stop()`: the offset in the last chunk where the bytes after the stopping frame begin. */
  stopOffset(): number {
    return this.stoppedAt
  }
  /** Bytes of every complete frame so far. */
  bytesDecoded(): number {
    return this.decoded
  }
  /** The error that killed the decoder, if any. */
  failure(): ProtocolParseError | undefined {
    return this.error
  }
  protected stopAt(off: number): undefined {
    this.stoppedAt = off
    return undefined
  }
  protected fail(error: ProtocolParseError): ProtocolParseError {
    this.error = error
    this.release()
    return error
  }
  protected abstract release(): void
}

/** A zero-filled buffer of `size` bytes, or "MessageTooLarge" when it cannot be allocated. */
export const allocate = (size: number, max: number): Uint8Array | ProtocolParseError => {
  try {
    return new Uint8Array(size)
  } catch (cause) {
    return new ProtocolParseError("MessageTooLarge", `cannot allocate a ${size}-byte buffer (max message size ${max})`, cause)
  }
}
