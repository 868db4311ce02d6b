/**
 * Response mux v1 flow control on the worker's side (docs/protocol.md, "Flow control"), without
 * a socket: the per-stream and per-connection send windows of one pooled connection.
 *
 * What it does:
 * - `offer` passes a frame to the connection's output at once, or holds it back: a Data frame
 *   waits until its stream has credit for its payload and the connection's window (frame bytes
 *   not yet covered by a ConnectionAck) has room for the whole frame; a stream's frames queued
 *   behind a held frame wait with it, so each stream's order is kept. Other streams go on.
 * - A Data frame larger than a window goes out alone once nothing is outstanding (its stream's
 *   credit is whole and the connection fully acknowledged), so a large item never deadlocks.
 * - `grant` (WindowUpdate) and `acknowledge` (ConnectionAck) release what the new credit allows,
 *   stream by stream in the order they were blocked; `framesReleased` tells the connection when a
 *   stream has nothing held any more.
 * - `admit` counts a frame that may go at once and leaves its writing to the caller (a writer
 *   that encodes an item straight into the connection's buffer), or says to `offer` it.
 * - `sendNow` writes a frame ahead of the stream's held frames, which it drops (a worker's Reset);
 *   `countForeign` counts a frame of no stream here (a Reset for a dead connection's stream).
 *
 * The full mode's router uses the same window for request items (the mirror image): there the
 * credited kind is RequestData (`creditedKind`).
 *
 * What it does not do: encode bytes, write to a socket, or decide when a stream ends (the
 * connection does, in `FrameOutput`). Per frame it allocates nothing unless the frame is held.
 */
import { MUX_HEADER_SIZE, MuxKind } from "../../../protocol/MuxCodec.ts"

/** A frame held back for credit. */
export interface HeldFrame {
  readonly kind: MuxKind
  readonly payload: Uint8Array | undefined
}

/** What the window keeps on each stream (fields of the stream's writer, to avoid a second object). */
export interface WindowedStream {
  /** Data payload bytes the stream may still send. */
  credit: number
  /** Its frames held back for credit, in order; undefined when none are. */
  held: Array<HeldFrame> | undefined
}

/** Where frames go once the window lets them: the connection that owns it. */
export interface FrameOutput<S extends WindowedStream> {
  /** Writes one frame of `s` now (the window has already counted it). */
  writeFrame(s: S, kind: MuxKind, payload: Uint8Array | undefined): void
  /** Every frame held for `s` has now been written. */
  framesReleased(s: S): void
}

/** The send windows of one connection; see the module comment. */
export class SendWindow<S extends WindowedStream> {
  /** Frame bytes passed to the output since the handshake (what a ConnectionAck counts). */
  sent = 0
  /** The router's latest ConnectionAck offset. */
  acked = 0
  /** The initial credit of each stream, in Data payload bytes. */
  readonly streamWindow: number
  /** Frame bytes that may be outstanding (sent, not acknowledged). */
  readonly connectionWindow: number
  /** The kind whose payload spends stream credit: Data (responses), or RequestData (the full mode's request items). */
  readonly creditedKind: MuxKind
  private readonly out: FrameOutput<S>
  /** Streams with frames held, in the order they were blocked. */
  private blocked: Array<S> = []

  constructor(streamWindow: number, connectionWindow: number, out: FrameOutput<S>, creditedKind: MuxKind = MuxKind.Data) {
    this.streamWindow = streamWindow
    this.connectionWindow = connectionWindow
    this.out = out
    this.creditedKind = creditedKind
  }

  /** Sends a frame of `s` now, or holds it behind the stream's earlier frames or for credit. */
  offer(s: S, kind: MuxKind, payload: Uint8Array | undefined): void {
    if (s.held !== undefined) {
      s.held.push({ kind, payload })
      return
    }
    if (kind === this.creditedKind && !this.canSend(s, payload!.length)) {
      s.held = [{ kind, payload }]
      this.blocked.push(s)
      return
    }
    this.send(s, kind, payload)
  }

  /**
   * Whether a frame of `kind` with `len` payload bytes of `s` may be written now, without its
   * bytes in hand: nothing of `s` is held and credit allows it. True counts it as sent, and the
   * caller writes it itself; false counts nothing, and the caller `offer`s its bytes.
   */
  admit(s: S, kind: MuxKind, len: number): boolean {
    if (s.held !== undefined || (kind === this.creditedKind && !this.canSend(s, len))) return false
    this.count(s, kind, len)
    return true
  }

  /** Drops the frames held for `s`, then sends this one at once (never behind them). */
  sendNow(s: S, kind: MuxKind, payload: Uint8Array | undefined): void {
    this.drop(s)
    this.send(s, kind, payload)
  }

  /** Forgets the frames held for `s` (its stream is over). */
  drop(s: S): void {
    if (s.held === undefined) return
    s.held = undefined
    const i = this.blocked.indexOf(s)
    if (i >= 0) this.blocked.splice(i, 1)
  }

  /** Counts a frame of `bytes` (header included) written for a stream this window does not know. */
  countForeign(bytes: number): void {
    this.sent += bytes
  }

  /** A WindowUpdate: `s` may send `credits` more payload bytes. */
  grant(s: S, credits: number): void {
    s.credit += credits
    if (this.blocked.length > 0) this.release()
  }

  /** A ConnectionAck: the router has decoded `offset` bytes of this connection. */
  acknowledge(offset: number): void {
    if (offset > this.acked) this.acked = offset
    if (this.blocked.length > 0) this.release()
  }

  /** Forgets every held frame (the connection is gone). */
  clear(): void {
    this.blocked = []
  }

  private canSend(s: S, len: number): boolean {
    if (len > s.credit && s.credit < this.streamWindow) return false
    const unacked = this.sent - this.acked
    return unacked === 0 || unacked + MUX_HEADER_SIZE + len <= this.connectionWindow
  }

  private send(s: S, kind: MuxKind, payload: Uint8Array | undefined): void {
    this.count(s, kind, payload === undefined ? 0 : payload.length)
    this.out.writeFrame(s, kind, payload)
  }

  /** Counts a frame of `s` with `len` payload bytes as sent: its stream's credit, the connection's bytes. */
  private count(s: S, kind: MuxKind, len: number): void {
    if (kind === this.creditedKind) s.credit -= len
    this.sent += MUX_HEADER_SIZE + len
  }

  /** Sends what credit now allows, stream by stream in the order they blocked. */
  private release(): void {
    const blocked = this.blocked
    let i = 0
    while (i < blocked.length) {
      // No frame fits in the connection window now: the other streams wait too (no scan of them all).
      const unacked = this.sent - this.acked
      if (unacked > 0 && unacked + MUX_HEADER_SIZE > this.connectionWindow) break
      const s = blocked[i]!
      const held = s.held
      if (held === undefined) {
        blocked.splice(i, 1)
        continue
      }
      let k = 0
      while (k < held.length) {
        const f = held[k]!
        if (f.kind === this.creditedKind && !this.canSend(s, f.payload!.length)) break
        this.send(s, f.kind, f.payload)
        k++
      }
      if (k === held.length) {
        s.held = undefined
        blocked.splice(i, 1)
        this.out.framesReleased(s)
      } else {
        if (k > 0) held.splice(0, k)
        i++
      }
    }
  }
}
