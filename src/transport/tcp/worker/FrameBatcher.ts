/**
 * Per-tick write batching of compact mux frames for one socket (DESIGN.md, "The hot path"): the
 * mux connections of both ends (pooled call-home and full mode) queue every frame here, and all
 * the frames of one tick leave in one write.
 *
 * What it does: `frame` writes a frame's 24-byte header (and copies its payload) straight into a
 * shared buffer, `frameText` encodes a text payload there, `bytes` copies an already-encoded
 * frame; nothing is allocated per frame. The
 * buffer is used like a bump allocator: a flush hands `write` a view of the bytes queued since
 * the last flush and the next frames go after them (a view handed to the socket is never
 * rewritten), and a fresh buffer is taken when it is full (the bytes before it then leave as a
 * piece of their own: nothing queued is ever copied twice). A tick that would not fit in the room
 * left starts on a fresh buffer twice its predecessor's size (64 KiB to 512 KiB), so a busy
 * connection's ticks each fit in one buffer and leave in one write without a join. A payload of
 * `BY_REFERENCE_BYTES` or more is not copied into the buffer: it is queued by reference, and the
 * tick's pieces are joined at the flush (`writePieces`). `flushEarly` writes at once past
 * `FLUSH_EARLY_BYTES`, so a producer that never yields is still held back by its socket.
 *
 * What it does not do: decide whether the socket can take the bytes (the `write` it is given
 * does), count credit, or validate frames (the caller keeps them valid, see MuxCodec.ts).
 */
import type * as net from "node:net"
import { MUX_HEADER_SIZE } from "../../../protocol/MuxCodec.ts"
import { copyStreamId } from "../../../protocol/StreamId.ts"
import { FLUSH_EARLY_BYTES } from "../../../internal/WriteBatcher.ts"
import type { FlushSchedule } from "../../../internal/WriteBatcher.ts"
import { writeUtf8 } from "../../../protocol/AsciiText.ts"
import { onNextTick } from "../../../internal/SharedTick.ts"

const latin1Write = Buffer.prototype.latin1Write as (this: Buffer, text: string, offset: number, length: number) => number

/** The most bytes the UTF-8 of `text` can take: 3 per UTF-16 code unit (a pair's 4 bytes are 2 per unit). */
export const mostUtf8Bytes = (text: string): number => 3 * text.length

/**
 * Writes the UTF-8 of `text` (`textBytes` long, as `Buffer.byteLength` counts it) at `offset`.
 * As many bytes as characters means all ASCII: Latin-1 then writes the same bytes, a copy
 * without UTF-8's conversion.
 */
const writeText = (b: Buffer, text: string, offset: number, textBytes: number): void => {
  if (textBytes === text.length) latin1Write.call(b, text, offset, textBytes)
  else b.write(text, offset, textBytes, "utf8")
}
/** Writes a frame's 24-byte header at `o`: payload length, kind, zero flags and reserved bytes, stream id. */
const putHeader = (b: Uint8Array, o: number, kind: number, streamId: Uint8Array, plen: number): void => {
  b[o] = plen >>> 24
  b[o + 1] = (plen >>> 16) & 0xff
  b[o + 2] = (plen >>> 8) & 0xff
  b[o + 3] = plen & 0xff
  b[o + 4] = kind
  b[o + 5] = 0
  b[o + 6] = 0
  b[o + 7] = 0
  copyStreamId(b, o + 8, streamId, 0)
}

/** Size of each buffer frames are encoded into. */
export const BATCH_BUFFER_BYTES = 64 * 1024
/** The largest buffer a busy connection's ticks are encoded into (twice its last tick's bytes). */
export const MAX_BATCH_BUFFER_BYTES = 512 * 1024
/** Payloads this large or larger are queued by reference instead of copied. */
export const BY_REFERENCE_BYTES = 16 * 1024

/** Above this many bytes a tick's pieces are written corked (one writev) instead of joined into one buffer. */
export const JOIN_LIMIT_BYTES = 4 * 1024 * 1024

/**
 * Writes one tick's pieces to `socket` in one write: joined into one buffer, or (past
 * `JOIN_LIMIT_BYTES`, where a copy costs more) corked into one writev. A single write that the
 * kernel takes at once leaves the socket without backpressure; corked writes always report it
 * until 'drain'. Returns the bytes written.
 */
export const writePieces = (socket: net.Socket, chunks: ReadonlyArray<Uint8Array>): number => {
  if (chunks.length === 1) {
    socket.write(chunks[0]!)
    return chunks[0]!.length
  }
  let n = 0
  for (const chunk of chunks) n += chunk.length
  if (n <= JOIN_LIMIT_BYTES) {
    socket.write(Buffer.concat(chunks, n))
    return n
  }
  socket.cork()
  for (const chunk of chunks) socket.write(chunk)
  socket.uncork()
  return n
}

/** `prefix`, the UTF-8 of `text` (`textBytes` long, as `Buffer.byteLength` counts it), then `suffix`, in one new buffer. */
export const textPayload = (prefix: Uint8Array, text: string, textBytes: number, suffix: Uint8Array): Buffer => {
  const payload = Buffer.allocUnsafe(prefix.length + textBytes + suffix.length)
  payload.set(prefix, 0)
  writeText(payload, text, prefix.length, textBytes)
  payload.set(suffix, prefix.length + textBytes)
  return payload
}

/** Queues frames and writes them once per tick; see the module comment. */
export class FrameBatcher {
  private buf: Buffer = Buffer.allocUnsafe(BATCH_BUFFER_BYTES)
  /** Where this tick's bytes start in `buf`. */
  private start = 0
  private len = 0
  /** This tick's earlier pieces, when a payload went by reference. */
  private pieces: Array<Uint8Array> | undefined = undefined
  private queued = 0
  /** Bytes this tick has put into buffers (its frames, without payloads queued by reference). */
  private tickBytes = 0
  private scheduled = false
  private readonly write: (chunks: ReadonlyArray<Uint8Array>) => void
  private readonly schedule: FlushSchedule
  private readonly beforeFlush: (() => void) | undefined

  /**
   * `write` receives each tick's bytes: one piece, or several to write corked, in order; it
   * decides whether the socket can still take them. `beforeFlush`, when given, runs at the start
   * of every flush that has something to write, and may queue more frames into it (credit owed
   * to the peer rides in the same write).
   */
  constructor(write: (chunks: ReadonlyArray<Uint8Array>) => void, schedule: FlushSchedule = onNextTick, beforeFlush?: () => void) {
    this.write = write
    this.schedule = schedule
    this.beforeFlush = beforeFlush
  }

  /** True while a flush is scheduled. */
  get pending(): boolean {
    return this.scheduled
  }

  /** Bytes queued and not yet written. */
  get queuedBytes(): number {
    return this.queued
  }

  /** Queues one frame: `kind`, the 16 `streamId` bytes, and `payload` (none when absent). */
  frame(kind: number, streamId: Uint8Array, payload: Uint8Array | undefined): void {
    const plen = payload === undefined ? 0 : payload.length
    const byReference = plen >= BY_REFERENCE_BYTES
    const o = this.reserve(byReference ? MUX_HEADER_SIZE : MUX_HEADER_SIZE + plen)
    const b = this.buf
    putHeader(b, o, kind, streamId, plen)
    if (byReference) this.piece(payload!)
    else if (plen > 0) b.set(payload!, o + MUX_HEADER_SIZE)
    this.queued += MUX_HEADER_SIZE + plen
    this.requestFlush()
  }

  /**
   * Queues one frame whose payload is `prefix`, the UTF-8 of `text` (`textBytes` long, as
   * `Buffer.byteLength` counts it), then `suffix`, encoded straight into the buffer: no bytes of
   * the text are made on their own. A payload of `BY_REFERENCE_BYTES` or more is encoded apart and
   * queued by reference, as `frame` does.
   */
  frameText(kind: number, streamId: Uint8Array, prefix: Uint8Array, text: string, textBytes: number, suffix: Uint8Array): void {
    const plen = prefix.length + textBytes + suffix.length
    if (plen >= BY_REFERENCE_BYTES) return this.frame(kind, streamId, textPayload(prefix, text, textBytes, suffix))
    this.frame(kind, streamId, undefined)
    this.patchLength(plen)
    const o = this.reserve(plen)
    const b = this.buf
    b.set(prefix, o)
    writeText(b, text, o + prefix.length, textBytes)
    b.set(suffix, o + prefix.length + textBytes)
    this.queued += plen
  }

  /**
   * `frameText` without the text's UTF-8 length in hand (measuring it is a walk of the text):
   * room for the most it can take (`mostUtf8Bytes`) is reserved, the text written, and the
   * frame's length set from what was written; the room left over is given back. The caller keeps
   * the payload's most under `BY_REFERENCE_BYTES`. Returns the payload's length. `takeBack`
   * undoes it while nothing else was queued after it.
   */
  frameTextUnmeasured(kind: number, streamId: Uint8Array, prefix: Uint8Array, text: string, suffix: Uint8Array): number {
    const room = mostUtf8Bytes(text)
    const most = MUX_HEADER_SIZE + prefix.length + room + suffix.length
    const o = this.reserve(most)
    const b = this.buf
    const p = o + MUX_HEADER_SIZE
    b.set(prefix, p)
    const textBytes = writeUtf8(b, text, p + prefix.length, room)
    b.set(suffix, p + prefix.length + textBytes)
    const plen = prefix.length + textBytes + suffix.length
    const unused = most - MUX_HEADER_SIZE - plen
    this.len -= unused
    this.tickBytes -= unused
    putHeader(b, o, kind, streamId, plen)
    this.queued += MUX_HEADER_SIZE + plen
    this.requestFlush()
    return plen
  }

  /** Takes back the last frame queued, `frameBytes` long (header included), when nothing was queued after it. */
  takeBack(frameBytes: number): void {
    this.len -= frameBytes
    this.tickBytes -= frameBytes
    this.queued -= frameBytes
  }

  /** Queues one frame whose payload is `a` then `b` (copied: each is under `BY_REFERENCE_BYTES`, or goes by reference). */
  frame2(kind: number, streamId: Uint8Array, a: Uint8Array, b: Uint8Array): void {
    const plen = a.length + b.length
    if (plen >= BY_REFERENCE_BYTES) {
      this.frame(kind, streamId, undefined) // header only, then the parts
      this.patchLength(plen)
      this.bytes(a)
      this.bytes(b)
      return
    }
    this.frame(kind, streamId, undefined)
    this.patchLength(plen)
    const o = this.reserve(plen)
    this.buf.set(a, o)
    this.buf.set(b, o + a.length)
    this.queued += plen
  }

  /** Queues bytes already encoded (a whole frame, or several). */
  bytes(chunk: Uint8Array): void {
    if (chunk.length >= BY_REFERENCE_BYTES) this.piece(chunk)
    else {
      const at = this.reserve(chunk.length) // first: it may replace the buffer
      this.buf.set(chunk, at)
    }
    this.queued += chunk.length
    this.requestFlush()
  }

  /** Writes what is queued now if it is `FLUSH_EARLY_BYTES` or more. */
  flushEarly(): void {
    if (this.queued >= FLUSH_EARLY_BYTES) this.flush()
  }

  /** Writes what is queued now (no-op when empty). */
  flush(): void {
    // Still "scheduled" while the hook queues frames: they join this flush, no other is scheduled.
    if (this.queued > 0) this.beforeFlush?.()
    this.scheduled = false
    if (this.queued === 0) return
    const tail = this.len > this.start ? this.buf.subarray(this.start, this.len) : undefined
    this.start = this.len
    let chunks: ReadonlyArray<Uint8Array>
    if (this.pieces === undefined) chunks = [tail!]
    else {
      if (tail !== undefined) this.pieces.push(tail)
      chunks = this.pieces
      this.pieces = undefined
    }
    this.queued = 0
    const tick = this.tickBytes
    this.tickBytes = 0
    // The next tick starts on a fresh buffer when this one would not have fitted in the room left:
    // a tick split over two buffers is joined by a copy (`writePieces`), about 2% of a worker's
    // CPU at 64 in flight when every tick straddled the end of a 64 KiB buffer. (Taken before the
    // write: `chunks` are views of the old buffer, and it keeps them.)
    if (this.buf.length - this.len < tick) this.fresh(Math.min(MAX_BATCH_BUFFER_BYTES, 2 * tick))
    this.write(chunks)
  }

  /** Drops what is queued (the socket is gone). */
  clear(): void {
    this.start = this.len
    this.pieces = undefined
    this.queued = 0
    this.tickBytes = 0
  }

  private requestFlush(): void {
    if (!this.scheduled) {
      this.scheduled = true
      this.schedule(this.flushBound)
    }
  }

  private readonly flushBound = (): void => this.flush()

  /** Room for `n` more bytes at the end of this tick's bytes; returns where they go. */
  private reserve(n: number): number {
    if (this.len + n > this.buf.length) {
      // This tick's bytes so far become a piece of their own (nothing is copied); the old buffer
      // stays with the views handed out, and the next bytes go to a fresh one.
      if (this.len > this.start) (this.pieces ??= []).push(this.buf.subarray(this.start, this.len))
      this.fresh(Math.max(n, Math.min(MAX_BATCH_BUFFER_BYTES, 2 * (this.tickBytes + n))))
    }
    const at = this.len
    this.len += n
    this.tickBytes += n
    return at
  }

  /** Takes a fresh buffer of at least `BATCH_BUFFER_BYTES` and `size` (the old one stays with the views handed out). */
  private fresh(size: number): void {
    this.buf = Buffer.allocUnsafe(Math.max(BATCH_BUFFER_BYTES, size))
    this.start = 0
    this.len = 0
  }

  /** Rewrites the payload length of the frame header just written (the last 24 bytes in `buf`). */
  private patchLength(plen: number): void {
    const b = this.buf
    const o = this.len - MUX_HEADER_SIZE
    b[o] = plen >>> 24
    b[o + 1] = (plen >>> 16) & 0xff
    b[o + 2] = (plen >>> 8) & 0xff
    b[o + 3] = plen & 0xff
  }

  /** Ends the current piece and queues `chunk` by reference after it. */
  private piece(chunk: Uint8Array): void {
    const pieces = (this.pieces ??= [])
    if (this.len > this.start) {
      pieces.push(this.buf.subarray(this.start, this.len))
      this.start = this.len
    }
    pieces.push(chunk)
  }
}
