/**
 * The worker's end of one pooled, multiplexed call-home connection (response mux v1,
 * docs/protocol.md): the handshake, the framing, and the streams it carries.
 *
 * What it does:
 * - On a connected socket (MuxConnect.ts dials), it sends the TwoPartCodec handshake
 *   `{"kind": "response_mux", "version": 1, "frontend_server_id", "connection_id"}` at once and
 *   reports the router's answer to `whenReady`: a ConnectionAck(0), else a typed error.
 * - `openStream` returns the stream's writer (MuxStream.ts). Its frames pass through the
 *   connection's `SendWindow` (credit) and leave batched: every frame of every stream queued in
 *   one tick goes out in one socket write. No write is awaited.
 * - Frames from the router: WindowUpdate and ConnectionAck feed the window (and the `AckLedger`);
 *   Stop/Kill reach the stream's `onControl`; a Reset, a socket error or close, or a protocol
 *   error reach `onDisconnect` of every stream concerned, at once. The handshake offers
 *   heartbeats (`"ping": 1`): a router's Ping is answered with a Pong (its idle timeout then
 *   tells this live worker from a frozen one); other full-mode kinds stay protocol errors.
 * - A stream ends (its `onDone` runs, once) when its last frame has been queued for the socket,
 *   or when the connection dies. `events.onUsage` says when the connection goes from no stream to
 *   one and back; `events.onClose` says that it died, with the ids of the streams the router may
 *   not have seen finish (MuxFailure.ts sorts them), so that its owner can reset them on another
 *   connection (`resetStream`).
 *
 * The full TCP mode's worker connection (`../full/WorkerConnection.ts`) extends it: no handshake
 * (`handshake: false`, the full mode's hello came before), the full mode's kinds decoded and
 * handed to `otherFrame`, its own frames sent with `pushControl`, and `farewell` before a
 * protocol error closes the socket.
 *
 * What it does not do: connect, pool, pick, count or replace connections (worker/pool/ does),
 * retry, or time anything but the linger after a graceful close.
 */
import type * as net from "node:net"
import { decodeConnectionAck, decodeWindowUpdate, encodePong, makeMuxDecoder, MUX_HEADER_SIZE, MuxKind } from "../../../protocol/MuxCodec.ts"
import type { MuxDecoder } from "../../../protocol/MuxCodec.ts"
import { encodeMuxHandshake } from "../../../protocol/MuxHandshake.ts"
import type { PayloadCodec } from "../../../protocol/PayloadCodec.ts"
import { STREAM_ITEM_JSON_OVERHEAD, STREAM_ITEM_JSON_PREFIX, STREAM_ITEM_JSON_SUFFIX } from "../../../protocol/RequestMessage.ts"
import type { ResponseWriter } from "../../../ResponsePlane.ts"
import type { TransportError, TransportProtocolError } from "../../../TransportError.ts"
import { toTransportProtocolError } from "../../../internal/protocolError.ts"
import { Waiters } from "../../../internal/Waiters.ts"
import { FrameBatcher, textPayload, writePieces } from "./FrameBatcher.ts"
import type { WriteTarget } from "../../../internal/writeFailure.ts"
import { AckLedger } from "./AckLedger.ts"
import { badHandshakeError, connectionProblem, duplicateStreamError, socketClosedError, streamResetError, takeUnfinished, unexpectedFrameError } from "./MuxFailure.ts"
import type { MuxConnectionEvents } from "./MuxFailure.ts"
import { MuxStream, StreamState } from "./MuxStream.ts"
import type { StreamHost } from "./MuxStream.ts"
import { SendWindow } from "./SendWindow.ts"
import type { FrameOutput } from "./SendWindow.ts"
import { StreamIdTable } from "../../../internal/StreamIdTable.ts"
import { onNextTick } from "../../../internal/SharedTick.ts"

import type { MuxConnectionOptions } from "./MuxConnectionOptions.ts"

export type { MuxConnectionEvents } from "./MuxFailure.ts"
export type { MuxConnectionOptions } from "./MuxConnectionOptions.ts"

// Connection states.
const HANDSHAKE = 0
const OPEN = 1
const CLOSING = 2 // close() called: no new streams, the socket is ending
const CLOSED = 3

const PENDING: unique symbol = Symbol("PENDING")

/**
 * Streams ended in one turn (a chunk of requests served at once: the full mode's, Dynamo's TCP
 * request plane's) that make a write of their own at once, so the router starts on them while
 * the rest are served: the full mode at 64 in flight, 0.59-0.74x raw's req/s with one write per
 * turn, 0.74-1.03x with this (docs/performance.md, twelfth session).
 */
const ENDED_STREAMS_PER_WRITE = 16

/** One pooled call-home connection to a router; see the module comment. */
export class MuxConnection implements StreamHost, FrameOutput<MuxStream> {
  /** The connection id sent in the handshake. */
  readonly id: string
  /** "host:port" of the router. */
  readonly address: string
  readonly frontendServerId: string
  readonly maxMessageSize: number
  /** The router's address, for write failures. */
  readonly where: WriteTarget
  private state = HANDSHAKE
  private byUs = false
  protected readonly socket: net.Socket
  private readonly options: MuxConnectionOptions
  private readonly events: MuxConnectionEvents
  /** The open streams, by stream id. */
  protected readonly streams = new StreamIdTable<MuxStream>()
  protected readonly decoder: MuxDecoder
  private readonly writes: FrameBatcher
  private readonly window: SendWindow<MuxStream>
  private readonly ledger = new AckLedger()
  /** Frame bytes handed to the socket since the handshake. */
  private written = 0
  /** `whenWritable` callbacks waiting for the socket to drain. */
  private readonly drainWaiters = new Waiters()
  private lastError: Error | undefined = undefined
  private failure: TransportError | undefined = undefined
  private lingerTimer: ReturnType<typeof setTimeout> | undefined = undefined
  /** Streams ended since this connection's last write (`ENDED_STREAMS_PER_WRITE`). */
  private endedUnwritten = 0
  /** The handshake's outcome (undefined: acknowledged), and who waits for it. */
  private handshake: TransportError | undefined | typeof PENDING = PENDING
  private onHandshake: ((error: TransportError | undefined) => void) | undefined = undefined

  /** Takes a connected `socket` and sends the handshake at once (unless `options.handshake` is false: then it is open). */
  constructor(socket: net.Socket, id: string, options: MuxConnectionOptions, events: MuxConnectionEvents) {
    this.socket = socket
    this.id = id
    this.address = options.address
    this.frontendServerId = options.frontendServerId
    this.maxMessageSize = options.maxMessageSize
    this.where = { transport: "tcp", target: options.address }
    this.options = options
    this.events = events
    this.window = new SendWindow<MuxStream>(options.streamWindow, options.connectionWindow, this)
    this.writes = new FrameBatcher((chunks) => {
      this.endedUnwritten = 0
      if (this.state !== CLOSED && !this.socket.destroyed) this.written += writePieces(this.socket, chunks)
    }, options.flush === "immediate" ? setImmediate : onNextTick, () => this.beforeFlush())
    // A pooled connection offers heartbeats: its decoder takes kinds 9-14, and `otherFrame` reads only Ping and Pong.
    this.decoder = makeMuxDecoder({ maxMessageSize: options.maxMessageSize, fullMode: options.fullMode === true || options.handshake !== false })
    socket.on("data", (chunk: Buffer) => this.onData(chunk))
    socket.on("error", (error) => {
      this.lastError ??= error
    })
    socket.on("close", () => this.onSocketClose())
    socket.on("drain", () => this.drainWaiters.wake())
    if (options.handshake === false) {
      this.state = OPEN
      this.handshake = undefined
    } else socket.write(encodeMuxHandshake(options.frontendServerId, id, true))
  }

  /**
   * Calls `f` once with the handshake's outcome (undefined: the router acknowledged it), now if
   * known; a connection that has closed since its handshake reports why it closed.
   */
  whenReady(f: (error: TransportError | undefined) => void): void {
    if (this.handshake === PENDING) this.onHandshake = f
    else f(this.handshake ?? (this.state === CLOSED ? this.failure : undefined))
  }

  /** Streams open now. */
  streamCount(): number {
    return this.streams.size
  }

  /**
   * Why this connection cannot take a new stream, or undefined when it can: not destroyed, not
   * half-closed, not closing (a pool's validation before lending).
   */
  problem(): string | undefined {
    return connectionProblem(this.socket, this.state === CLOSED, this.state === OPEN)
  }

  /**
   * Opens a stream with these 16 id bytes; `onDone` runs once when it ends. Returns a
   * TransportProtocolError (after running `onDone`) if the connection already carries that id.
   */
  openStream(id: Uint8Array, codec: PayloadCodec, onDone: () => void): ResponseWriter | TransportProtocolError {
    if (this.streams.has(id)) {
      onDone()
      return duplicateStreamError(this.address)
    }
    const stream = new MuxStream(this, id, codec, this.options.streamWindow, onDone)
    this.streams.set(id, stream)
    if (this.streams.size === 1) this.events.onUsage(true)
    return stream
  }

  /**
   * Queues a Reset with `payload` for a stream this connection does not carry (one of a
   * connection that died), unless the connection cannot take frames now. Returns whether it was
   * queued. It counts against the connection window, but never waits for it.
   */
  resetStream(id: Uint8Array, payload: Uint8Array): boolean {
    if (this.problem() !== undefined) return false
    this.writes.frame(MuxKind.Reset, id, payload)
    this.window.countForeign(MUX_HEADER_SIZE + payload.length)
    return true
  }

  /**
   * Queues a frame of no stream's window (a full-mode Ping, Pong, Error, WindowUpdate or
   * ConnectionAck) for this tick's write, unless the connection is closed. It counts against the
   * connection window (the router's ConnectionAck covers it) unless `counted` is false (credit
   * frames, which stay outside it), but never waits for it.
   */
  pushControl(frame: Uint8Array, counted = true): void {
    if (this.state === CLOSED || this.socket.destroyed) return
    this.writes.bytes(frame)
    if (counted) this.window.countForeign(frame.length)
  }

  /** True once the socket has closed. */
  isClosed(): boolean {
    return this.state === CLOSED
  }

  /** Why the connection closed, once it has (what its streams were told). */
  closeError(): TransportError | undefined {
    return this.state === CLOSED ? this.failure : undefined
  }

  /** Decodes bytes read from the socket before this connection took it over (the full mode's hello chunk). */
  feed(chunk: Uint8Array): void {
    if (chunk.length > 0) this.onData(chunk)
  }

  /** Closes gracefully: flushes, ends our side, and destroys after `lingerMs` at the latest. */
  close(): void {
    if (this.state === CLOSED || this.state === CLOSING) return
    this.state = CLOSING
    this.byUs = true
    this.writes.flush()
    if (this.socket.destroyed) return
    this.socket.end()
    this.lingerTimer = setTimeout(() => this.socket.destroy(), this.options.lingerMs)
    this.lingerTimer.unref?.()
  }

  /** Destroys the socket now; open streams report `error` (or a generic close) as a disconnect. */
  destroy(error?: TransportError | undefined): void {
    if (this.state === CLOSED) return
    this.byUs = true
    this.failure ??= error
    // Frames already queued (e.g. the End of a stream that just finished) still go out.
    this.writes.flush()
    this.socket.destroy()
  }

  // ---- StreamHost: what the writers call ---------------------------------------------------

  /** Queues a frame of `s`, or holds it back behind the stream's earlier frames or for credit. */
  enqueue(s: MuxStream, kind: MuxKind, payload: Uint8Array | undefined): void {
    this.window.offer(s, kind, payload)
  }

  /** Queues an item's Data frame, encoded straight into this tick's buffer when the window lets it go now. */
  enqueueItemJson(s: MuxStream, text: string, textBytes: number): void {
    if (this.window.admit(s, MuxKind.Data, STREAM_ITEM_JSON_OVERHEAD + textBytes)) {
      this.writes.frameText(MuxKind.Data, s.id, STREAM_ITEM_JSON_PREFIX, text, textBytes, STREAM_ITEM_JSON_SUFFIX)
    } else this.window.offer(s, MuxKind.Data, textPayload(STREAM_ITEM_JSON_PREFIX, text, textBytes, STREAM_ITEM_JSON_SUFFIX))
  }

  /**
   * `enqueueItemJson` without the text's UTF-8 length: the frame is encoded first and the window
   * asked with its length; a frame the window holds back is taken back out of the buffer and
   * held as bytes.
   */
  enqueueItemJsonUnmeasured(s: MuxStream, text: string): void {
    if (s.held === undefined) {
      const plen = this.writes.frameTextUnmeasured(MuxKind.Data, s.id, STREAM_ITEM_JSON_PREFIX, text, STREAM_ITEM_JSON_SUFFIX)
      if (this.window.admit(s, MuxKind.Data, plen)) return
      this.writes.takeBack(MUX_HEADER_SIZE + plen)
      return this.window.offer(s, MuxKind.Data, textPayload(STREAM_ITEM_JSON_PREFIX, text, plen - STREAM_ITEM_JSON_OVERHEAD, STREAM_ITEM_JSON_SUFFIX))
    }
    this.window.offer(s, MuxKind.Data, textPayload(STREAM_ITEM_JSON_PREFIX, text, Buffer.byteLength(text, "utf8"), STREAM_ITEM_JSON_SUFFIX))
  }

  /** Aborts `s`: its held frames are dropped (the router fails it on the Reset) and the Reset goes out now. */
  abort(s: MuxStream, payload: Uint8Array): void {
    this.window.sendNow(s, MuxKind.Reset, payload)
    this.finish(s)
  }

  /** `s` has queued its last frame: it is done once nothing of it is held for credit. */
  finish(s: MuxStream): void {
    s.state = StreamState.Ending
    s.waiters.wake() // nobody waits to write on a stream that is over
    if (s.held === undefined) this.end(s)
  }

  /**
   * Backpressure for `s`: false, and `f` runs later, while frames of `s` are held for credit
   * or the socket's buffer is past its mark.
   */
  whenWritable(s: MuxStream, f: () => void): boolean {
    if (this.state === CLOSED || this.socket.destroyed) return true
    if (s.held !== undefined) return s.waiters.add(f)
    this.writes.flushEarly()
    return !this.socket.writableNeedDrain || this.drainWaiters.add(f)
  }

  // ---- FrameOutput: what the window lets out -------------------------------------------------

  /** Queues the bytes of one frame for this tick's write. */
  writeFrame(s: MuxStream, kind: MuxKind, payload: Uint8Array | undefined): void {
    this.writes.frame(kind, s.id, payload)
  }

  /** Every frame held for `s` has gone out: it ends if it was ending, else its writers may go on. */
  framesReleased(s: MuxStream): void {
    if (s.state === StreamState.Ending) this.end(s)
    else s.waiters.wake()
  }

  private end(s: MuxStream): void {
    s.state = StreamState.Done
    s.waiters.wake()
    this.streams.delete(s.id)
    // Its last frame was just queued: the stream is whole for the router once an ack covers it.
    this.ledger.ended(s.id, this.window.sent)
    // Written now, not at the end of the tick: a stream ended by a handler that ran within the
    // decode of its chunk's last frame (ahead of the handler's own teardown), and every
    // ENDED_STREAMS_PER_WRITE streams ended in one turn.
    if (this.decoder.quietAfterCurrentFrame() || ++this.endedUnwritten >= ENDED_STREAMS_PER_WRITE) this.writes.flush()
    s.onDone()
    if (this.streams.size === 0 && this.state !== CLOSED) this.events.onUsage(false)
  }

  // ---- reading -------------------------------------------------------------------------------

  private onData(chunk: Uint8Array): void {
    if (this.state === CLOSED) return
    this.chunkArrived()
    const error = this.decoder.decode(chunk, this.onFrame)
    if (error !== undefined && this.state !== CLOSED) return this.protocolFailure(toTransportProtocolError(error, "tcp", this.address))
    this.chunkDecoded()
  }

  // ---- hooks (the full mode overrides them) -----------------------------------------------------

  /** A chunk arrived (before it is decoded). */
  protected chunkArrived(): void {}

  /** A chunk was decoded without error. */
  protected chunkDecoded(): void {}

  /** This tick's frames are about to be written (frames queued here join the write). */
  protected beforeFlush(): void {}

  /** A credit frame (ConnectionAck or WindowUpdate) of `bytes` was decoded (the full mode does not acknowledge them). */
  protected creditFrameDecoded(_bytes: number): void {}

  /** A frame the response framing does not read from a router (Prologue, Data, End, and the full mode's kinds): a protocol error. */
  protected otherFrame(kind: MuxKind, _streamId: Uint8Array, payload: Uint8Array): void {
    if (kind === MuxKind.Ping) return this.pushControl(encodePong(payload))
    if (kind === MuxKind.Pong) return
    this.protocolFailure(unexpectedFrameError(this.address, kind))
  }

  /** Before the socket is destroyed for a protocol error `error`. */
  protected farewell(_error: TransportProtocolError): void {}

  private readonly onFrame = (kind: MuxKind, streamId: Uint8Array, payload: Uint8Array): void => {
    if (this.state === HANDSHAKE) return this.handshakeFrame(kind, payload)
    switch (kind) {
      case MuxKind.ConnectionAck: {
        this.creditFrameDecoded(MUX_HEADER_SIZE + payload.length)
        const offset = decodeConnectionAck(payload)
        this.ledger.acknowledge(offset)
        this.window.acknowledge(offset)
        return
      }
      case MuxKind.WindowUpdate: {
        this.creditFrameDecoded(MUX_HEADER_SIZE + payload.length)
        const s = this.streams.get(streamId)
        if (s !== undefined) this.window.grant(s, decodeWindowUpdate(payload))
        return
      }
      case MuxKind.Stop:
      case MuxKind.Kill:
        this.streams.get(streamId)?.control(kind === MuxKind.Stop ? "stop" : "kill")
        return
      case MuxKind.Reset: {
        const s = this.streams.get(streamId)
        if (s === undefined) return
        const error = streamResetError(this.address, payload)
        this.window.drop(s)
        this.streams.delete(s.id)
        s.gone(error)
        if (this.streams.size === 0 && this.state !== CLOSED) this.events.onUsage(false)
        return
      }
      default:
        return this.otherFrame(kind, streamId, payload)
    }
  }

  /** The router's first frame: a ConnectionAck(0) opens the connection; anything else breaks it. */
  private handshakeFrame(kind: MuxKind, payload: Uint8Array): void {
    if (kind !== MuxKind.ConnectionAck || decodeConnectionAck(payload) !== 0) return this.protocolFailure(badHandshakeError(this.address, kind))
    this.state = OPEN
    this.settleHandshake(undefined)
  }

  private settleHandshake(error: TransportError | undefined): void {
    this.handshake = error
    const f = this.onHandshake
    this.onHandshake = undefined
    f?.(error)
  }

  /** Destroys the connection for a protocol error (after `farewell`); its streams report it. */
  protected protocolFailure(error: TransportProtocolError): void {
    if (this.state === CLOSED) return
    this.failure ??= error
    this.decoder.stop() // nothing after this frame is read
    this.farewell(error)
    this.writes.flush()
    this.socket.destroy()
  }

  private onSocketClose(): void {
    const wasHandshaking = this.state === HANDSHAKE
    // After our graceful close the socket ended behind every queued byte: ended streams are whole.
    const graceful = this.state === CLOSING
    this.state = CLOSED
    clearTimeout(this.lingerTimer)
    this.writes.clear()
    this.window.clear()
    this.drainWaiters.wake()
    const error = this.failure ?? socketClosedError(this.address, wasHandshaking, this.byUs, this.lastError)
    this.failure = error
    if (wasHandshaking) return this.settleHandshake(error)
    const { streams, unfinished, unconfirmed } = takeUnfinished(this.streams, this.ledger, this.written, graceful)
    for (const s of streams) s.gone(() => error)
    this.events.onClose(error, this.byUs, unfinished, unconfirmed)
  }
}
