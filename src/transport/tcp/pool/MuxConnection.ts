/**
 * The worker's end of one pooled, multiplexed call-home connection (response mux v1,
 * docs/protocol.md): the socket, the handshake, the streams it carries and their writers.
 *
 * What it does:
 * - `connectMux` connects with TCP_NODELAY and TCP keepalive, sends the TwoPartCodec handshake
 *   `{"kind": "response_mux", "version": 1, "frontend_server_id", "connection_id"}` and waits
 *   for the router's ConnectionAck(0), all within `connectTimeoutMs`. Failures are typed and name
 *   the target: TransportTimeoutError "ConnectTimeout", TransportConnectionError "ConnectFailed"
 *   (refused, unreachable) or "Refused" (the router closed during the handshake: it does not
 *   take mux connections, or the frontend_server_id is stale), TransportProtocolError
 *   "BadHandshake" (anything but a ConnectionAck(0) first).
 * - `openStream` returns a `ResponseWriter` with the one-shot writer's semantics over mux frames:
 *   prologue → Prologue (`{"error": null}` or `{"error": msg}`, which ends the stream), items →
 *   Data frames with the same codec-encoded bodies as one-shot data frames, `complete` → End,
 *   `fail` → a Data frame with the in-band error body, `close` → Reset. The router's Stop/Kill
 *   reach `onControl`; its Reset, a socket error or close, or a protocol error reach
 *   `onDisconnect` of every stream still open, at once.
 * - Write batching: every frame of every stream queued in one tick leaves in one socket write
 *   (`process.nextTick`, or `setImmediate` with the "immediate" flush). No write is awaited.
 * - Flow control: a Data frame goes out only within its stream's credit (initially
 *   `streamWindow`, topped up by WindowUpdate) and the connection's (`connectionWindow` bytes
 *   not yet covered by a ConnectionAck); otherwise it waits, in order, with the frames of its
 *   stream queued behind it. A frame larger than a window goes out alone once nothing is
 *   outstanding, so it never deadlocks.
 * - A stream ends (its `onDone` runs, once) when its last frame has been queued for the socket,
 *   or when the connection dies; the pool takes its lease back then (to keep as a spare or give back).
 * - When the connection dies, `onClose` also gets the ids of the streams the router may not have
 *   seen finish: `unfinished` (still open, or ended with their last frame never handed to the
 *   socket) and `unconfirmed` (last frame written, but no ConnectionAck covers it yet; none after
 *   a graceful `close`), so the pool can tell the router on another connection
 *   (`resetStream`: a Reset for a stream this connection does not carry). Otherwise a stream whose
 *   Prologue the router never read would stay pending there until its call-home timeout.
 *
 * What it does not do: pool, pick or replace connections (TcpResponseConnectionPool does), retry,
 * or time anything but the connect/handshake bound and the linger after a graceful close.
 */
import * as net from "node:net"
import { Effect, Exit } from "effect"
import type { PayloadCodec } from "../../../protocol/PayloadCodec.ts"
import {
  decodeConnectionAck,
  decodeWindowUpdate,
  encodeMuxHeader,
  makeMuxDecoder,
  MUX_HEADER_SIZE,
  MuxKind,
  streamKey
} from "../../../protocol/MuxCodec.ts"
import type { MuxDecoder } from "../../../protocol/MuxCodec.ts"
import { encodeStreamError } from "../../../protocol/RequestMessage.ts"
import type { ResponseWriter, WriteResult } from "../../../ResponsePlane.ts"
import { ResponseWriteError, TransportConnectionError, TransportProtocolError, TransportTimeoutError } from "../../../TransportError.ts"
import { encodeItem, encodeItems, tooLarge } from "../../../internal/writeFailure.ts"
import type { WriteTarget } from "../../../internal/writeFailure.ts"
import type { TransportError } from "../../../TransportError.ts"
import { encodeMuxHandshake, encodeProloguePayload, encodeResetPayload, PROLOGUE_OK_PAYLOAD } from "../../../protocol/MuxHandshake.ts"
import { Waiters } from "../../../internal/Waiters.ts"
import { WriteBatcher } from "../../../internal/WriteBatcher.ts"

/** Options of one mux connection. */
export interface MuxConnectionOptions {
  readonly host: string
  readonly port: number
  /** "host:port": the pool's target, named in errors. */
  readonly address: string
  /** The router's frontend_server_id, sent in the handshake. */
  readonly frontendServerId: string
  /** Largest frame sent or accepted, header included. */
  readonly maxMessageSize: number
  /** Bound on connect + handshake + ConnectionAck. */
  readonly connectTimeoutMs: number
  /** TCP keepalive initial delay. */
  readonly keepaliveMs: number
  /** After a graceful close, how long to wait for the router's close before destroying. */
  readonly lingerMs: number
  /** Initial credit of each stream, in Data payload bytes. */
  readonly streamWindow: number
  /** Frame bytes that may be sent before a ConnectionAck covers them. */
  readonly connectionWindow: number
  /** When queued frames are flushed: "tick" (`process.nextTick`) or "immediate" (`setImmediate`). */
  readonly flush: "tick" | "immediate"
  /** Creation time on the pool's clock (ms), for max-lifetime rotation. */
  readonly createdAt: number
}

/** What a connection tells its pool. */
export interface MuxConnectionEvents {
  /** The connection went from no stream to one (`busy`), or from one to none. */
  readonly onUsage: (conn: MuxConnection, busy: boolean) => void
  /**
   * The socket has closed, after a successful handshake. `byUs` is true when `close`/`destroy`
   * closed it; otherwise `error` says what happened (the router closed it, an error, bad bytes).
   * `unfinished` holds the 16-byte ids of the streams it carried that had not finished: still
   * open, or ended with their last frame never handed to the socket. `unconfirmed` holds those
   * that ended with their last frame written but not yet covered by the router's ConnectionAck
   * (the router may or may not have read it; empty after a graceful `close`). Both are empty in
   * the common case.
   */
  readonly onClose: (
    conn: MuxConnection,
    error: TransportError,
    byUs: boolean,
    unfinished: ReadonlyArray<Uint8Array>,
    unconfirmed: ReadonlyArray<Uint8Array>
  ) => void
}

// Connection states.
const HANDSHAKE = 0
const OPEN = 1
const CLOSING = 2 // close() called: no new streams, the socket is ending
const CLOSED = 3

// Stream states.
const S_OPEN = 0
const S_ENDING = 1 // its last frame is queued (or waiting for credit)
const S_DONE = 2

interface QueuedFrame {
  readonly kind: MuxKind
  readonly payload: Uint8Array | undefined
}

const textDecoder = new TextDecoder()

/** One stream's writer on a mux connection. */
class MuxStream implements ResponseWriter {
  state = S_OPEN
  credit: number
  /** Frames waiting for credit, in order; undefined when none wait. */
  pending: Array<QueuedFrame> | undefined = undefined
  /** `whenWritable` callbacks waiting for this stream's held-back frames to go out. */
  readonly waiters = new Waiters()
  private controlReceiver: ((message: "stop" | "kill") => void) | undefined = undefined
  private controls: Array<"stop" | "kill"> = []
  private disconnectReceiver: ((error: TransportError) => void) | undefined = undefined
  private disconnect: TransportError | undefined = undefined
  readonly conn: MuxConnection
  readonly key: string
  readonly id: Uint8Array
  readonly codec: PayloadCodec
  readonly onDone: () => void

  constructor(conn: MuxConnection, key: string, id: Uint8Array, codec: PayloadCodec, credit: number, onDone: () => void) {
    this.conn = conn
    this.key = key
    this.id = id
    this.codec = codec
    this.credit = credit
    this.onDone = onDone
  }

  prologue(error?: string): void {
    if (this.state !== S_OPEN) return
    if (error === undefined) this.conn.enqueue(this, MuxKind.Prologue, PROLOGUE_OK_PAYLOAD)
    else {
      this.conn.enqueue(this, MuxKind.Prologue, encodeProloguePayload(error))
      this.conn.finish(this)
    }
  }

  send(item: unknown): WriteResult {
    if (this.state !== S_OPEN) return Exit.void
    const body = encodeItem(this.codec, item, this.conn.where)
    if (body instanceof ResponseWriteError) return Exit.fail(body)
    const error = this.oversized(body)
    if (error !== undefined) return Exit.fail(error)
    this.conn.enqueue(this, MuxKind.Data, body)
    return Exit.void
  }

  sendAll(items: ReadonlyArray<unknown>): WriteResult {
    if (this.state !== S_OPEN) return Exit.void
    // Encode and check every item first, so a failure sends none of them.
    const bodies = encodeItems(this.codec, items, this.conn.where)
    if (bodies instanceof ResponseWriteError) return Exit.fail(bodies)
    for (let i = 0; i < bodies.length; i++) {
      const error = this.oversized(bodies[i]!)
      if (error !== undefined) return Exit.fail(error)
    }
    for (let i = 0; i < bodies.length; i++) this.conn.enqueue(this, MuxKind.Data, bodies[i]!)
    return Exit.void
  }

  private oversized(body: Uint8Array): ResponseWriteError | undefined {
    const size = MUX_HEADER_SIZE + body.length
    return size > this.conn.maxMessageSize ? tooLarge(this.conn.where, size, this.conn.maxMessageSize) : undefined
  }

  fail(message: string): void {
    if (this.state !== S_OPEN) return
    const body = encodeStreamError(this.codec, message)
    // An error text too large for a frame is replaced by one that fits: the stream still fails.
    const fits = this.oversized(body) === undefined ? body : encodeStreamError(this.codec, "handler failed; its error text exceeds the maximum message size")
    this.conn.enqueue(this, MuxKind.Data, fits)
    this.conn.finish(this)
  }

  complete(): void {
    if (this.state !== S_OPEN) return
    this.conn.enqueue(this, MuxKind.End, undefined)
    this.conn.finish(this)
  }

  close(): void {
    if (this.state !== S_OPEN) return
    this.conn.abort(this, RESET_CLOSED)
  }

  onControl(f: (message: "stop" | "kill") => void): void {
    this.controlReceiver = f
    if (this.controls.length > 0) {
      const queued = this.controls
      this.controls = []
      for (const m of queued) f(m)
    }
  }

  onDisconnect(f: (error: TransportError) => void): void {
    this.disconnectReceiver = f
    if (this.disconnect !== undefined) f(this.disconnect)
  }

  whenWritable(f: () => void): boolean {
    if (this.state !== S_OPEN) return true
    return this.conn.whenWritable(this, f)
  }

  /** Runs the `whenWritable` callbacks waiting on this stream (after the current frame's work). */
  wake(): void {
    this.waiters.wake()
  }

  /** A Stop or Kill from the router. */
  control(message: "stop" | "kill"): void {
    if (this.state === S_DONE) return
    if (this.controlReceiver !== undefined) this.controlReceiver(message)
    else this.controls.push(message)
  }

  /** The stream is over without our finishing it: reports `error()` if it was still open. */
  gone(error: () => TransportError): void {
    if (this.state === S_DONE) return
    const wasOpen = this.state === S_OPEN
    this.state = S_DONE
    this.pending = undefined
    this.wake()
    this.onDone()
    if (!wasOpen) return
    const e = error()
    this.disconnect = e
    const f = this.disconnectReceiver
    if (f !== undefined) f(e)
  }


}

const RESET_CLOSED = encodeResetPayload("closed by the worker")
const NONE: ReadonlyArray<Uint8Array> = []
/** Most ended streams remembered until a ConnectionAck covers them (the oldest are forgotten beyond). */
const MAX_ENDED = 65_536

/** One pooled call-home connection to a router; see the module comment. */
export class MuxConnection {
  /** The connection id sent in the handshake. */
  readonly id: string
  /** "host:port" of the router. */
  readonly address: string
  readonly frontendServerId: string
  /** Creation time on the pool's clock (ms). */
  readonly createdAt: number
  readonly maxMessageSize: number
  /** The router's address, for write failures. */
  readonly where: WriteTarget
  /** Streams opened on this connection, ever. */
  served = 0
  /** When the pool got it ready (`performance.now()`): a stream acquired later reuses it. */
  readyAt = Number.POSITIVE_INFINITY
  /** Set by the pool once it has retired this connection (rotation, idle, invalid). */
  retired = false
  /** Set by the pool once it has counted this connection as a validation failure. */
  counted = false
  /** When its last stream ended, on the pool's clock (ms); `createdAt` until then. Set by the pool. */
  idleSince: number
  private state = HANDSHAKE
  private byUs = false
  private readonly socket: net.Socket
  private readonly options: MuxConnectionOptions
  private readonly events: MuxConnectionEvents
  private readonly streams = new Map<string, MuxStream>()
  private readonly decoder: MuxDecoder
  private ready: ((error: TransportError | undefined) => void) | undefined
  private readonly writes: WriteBatcher
  /**
   * Frame bytes queued after the handshake, the part of them handed to the socket, and the
   * router's latest ConnectionAck offset.
   */
  private sent = 0
  private written = 0
  private acked = 0
  /** Streams with frames waiting for credit, in arrival order. */
  private blocked: Array<MuxStream> = []
  /** `whenWritable` callbacks waiting for the socket to drain. */
  private readonly drainWaiters = new Waiters()
  private lastError: Error | undefined = undefined
  private failure: TransportError | undefined = undefined
  private lingerTimer: ReturnType<typeof setTimeout> | undefined = undefined
  /**
   * Streams that ended, oldest first from `endedHead`: their ids and the offset (in `sent`) where
   * their last frame ends. Dropped once a ConnectionAck covers that offset (the router has read it).
   */
  private endedIds: Array<Uint8Array | undefined> = []
  private endedAt: Array<number> = []
  private endedHead = 0

  constructor(
    socket: net.Socket,
    id: string,
    options: MuxConnectionOptions,
    events: MuxConnectionEvents,
    ready: (error: TransportError | undefined) => void
  ) {
    this.socket = socket
    this.id = id
    this.address = options.address
    this.frontendServerId = options.frontendServerId
    this.createdAt = options.createdAt
    this.idleSince = options.createdAt
    this.maxMessageSize = options.maxMessageSize
    this.where = { transport: "tcp", target: options.address }
    this.options = options
    this.events = events
    this.ready = ready
    this.writes = new WriteBatcher((chunk) => {
      if (this.state !== CLOSED && !this.socket.destroyed) {
        this.socket.write(chunk)
        this.written += chunk.length
      }
    }, options.flush === "immediate" ? setImmediate : process.nextTick)
    this.decoder = makeMuxDecoder({ maxMessageSize: options.maxMessageSize, target: options.address, transport: "tcp" })
    socket.on("connect", () => {
      socket.setNoDelay(true)
      socket.setKeepAlive(true, options.keepaliveMs)
      socket.write(encodeMuxHandshake(options.frontendServerId, id))
    })
    socket.on("data", (chunk: Buffer) => this.onData(chunk))
    socket.on("error", (error) => {
      this.lastError ??= error
    })
    socket.on("close", () => this.onSocketClose())
    socket.on("drain", () => this.drainWaiters.wake())
  }

  /**
   * Backpressure for stream `s` (its `whenWritable`): false, and `f` runs later, while frames of
   * `s` wait for credit (the router has not granted more) or the socket's buffer is past its mark.
   */
  whenWritable(s: MuxStream, f: () => void): boolean {
    if (this.state === CLOSED || this.socket.destroyed) return true
    if (s.pending !== undefined) return s.waiters.add(f)
    this.writes.flushEarly()
    return !this.socket.writableNeedDrain || this.drainWaiters.add(f)
  }

  /** Streams open now. */
  streamCount(): number {
    return this.streams.size
  }

  /**
   * Why this connection cannot take a new stream, or undefined when it can: the pool's
   * validation before lending (not destroyed, not half-closed, not closing).
   */
  problem(): string | undefined {
    const socket = this.socket
    if (this.state === CLOSED || socket.destroyed) return "the socket is destroyed"
    if (socket.readableEnded) return "the router half-closed the connection"
    if (!socket.writable || socket.writableEnded) return "the socket is not writable"
    if (this.state !== OPEN) return "the connection is closing"
    return undefined
  }

  /**
   * Opens a stream with these 16 id bytes; `onDone` runs once when it ends. Returns a
   * TransportProtocolError (after running `onDone`) if the connection already carries that id.
   */
  openStream(id: Uint8Array, codec: PayloadCodec, onDone: () => void): ResponseWriter | TransportProtocolError {
    const key = streamKey(id)
    if (this.streams.has(key)) {
      onDone()
      return new TransportProtocolError({ reason: "BadHandshake", transport: "tcp", target: this.address, detail: "the stream id is already open on this connection" })
    }
    const stream = new MuxStream(this, key, id, codec, this.options.streamWindow, onDone)
    this.served++
    this.streams.set(key, stream)
    if (this.streams.size === 1) this.events.onUsage(this, true)
    return stream
  }

  /**
   * Queues a Reset with `payload` for a stream this connection does not carry (one of a
   * connection that died), unless the connection cannot take frames now. Returns whether it was
   * queued. Like every frame, it counts against the connection window, but never waits for it.
   */
  resetStream(id: Uint8Array, payload: Uint8Array): boolean {
    if (this.problem() !== undefined) return false
    this.push(encodeMuxHeader(MuxKind.Reset, id, payload.length))
    if (payload.length > 0) this.push(payload)
    this.sent += MUX_HEADER_SIZE + payload.length
    return true
  }

  /** Closes gracefully: flushes, ends our side, and destroys after `lingerMs` at the latest. */
  close(): void {
    if (this.state === CLOSED || this.state === CLOSING) return
    this.state = CLOSING
    this.byUs = true
    this.flush()
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
    this.flush()
    this.socket.destroy()
  }

  // ---- writing ---------------------------------------------------------------------------

  /** Queues a frame of `s`, or holds it back behind the stream's earlier frames or for credit. */
  enqueue(s: MuxStream, kind: MuxKind, payload: Uint8Array | undefined): void {
    if (s.pending !== undefined) {
      s.pending.push({ kind, payload })
      return
    }
    if (kind === MuxKind.Data && !this.canSend(s, payload!.length)) {
      s.pending = [{ kind, payload }]
      this.blocked.push(s)
      return
    }
    this.write(s, kind, payload)
  }

  /**
   * Aborts stream `s`: its frames still waiting for credit are dropped (the router fails the
   * stream on the Reset anyway) and the Reset goes out now, never behind them.
   */
  abort(s: MuxStream, payload: Uint8Array): void {
    this.removeBlocked(s)
    s.pending = undefined
    this.write(s, MuxKind.Reset, payload)
    this.finish(s)
  }

  /** The stream has queued its last frame: it is done once nothing of it waits for credit. */
  finish(s: MuxStream): void {
    s.state = S_ENDING
    s.wake() // nobody waits to write on a stream that is over
    if (s.pending === undefined) this.end(s)
  }

  private end(s: MuxStream): void {
    s.state = S_DONE
    s.wake()
    this.streams.delete(s.key)
    // Its last frame was just queued: the stream is whole for the router once an ack covers it.
    this.endedIds.push(s.id)
    this.endedAt.push(this.sent)
    if (this.endedAt.length - this.endedHead > MAX_ENDED) this.trimEnded(1)
    s.onDone()
    if (this.streams.size === 0 && this.state !== CLOSED) this.events.onUsage(this, false)
  }

  private canSend(s: MuxStream, len: number): boolean {
    const window = this.options.streamWindow
    if (len > s.credit && s.credit < window) return false
    const unacked = this.sent - this.acked
    return unacked === 0 || unacked + MUX_HEADER_SIZE + len <= this.options.connectionWindow
  }

  private write(s: MuxStream, kind: MuxKind, payload: Uint8Array | undefined): void {
    const len = payload === undefined ? 0 : payload.length
    if (kind === MuxKind.Data) s.credit -= len
    this.push(encodeMuxHeader(kind, s.id, len))
    if (len > 0) this.push(payload!)
    this.sent += MUX_HEADER_SIZE + len
  }

  /** Sends what credit now allows, stream by stream in the order they blocked. */
  private drain(): void {
    const blocked = this.blocked
    let i = 0
    while (i < blocked.length) {
      const s = blocked[i]!
      const pending = s.pending
      if (pending === undefined) {
        blocked.splice(i, 1)
        continue
      }
      let k = 0
      while (k < pending.length) {
        const f = pending[k]!
        if (f.kind === MuxKind.Data && !this.canSend(s, f.payload!.length)) break
        this.write(s, f.kind, f.payload)
        k++
      }
      if (k === pending.length) {
        s.pending = undefined
        blocked.splice(i, 1)
        if (s.state === S_ENDING) this.end(s)
        else s.wake()
      } else {
        if (k > 0) pending.splice(0, k)
        i++
      }
    }
  }

  private push(bytes: Uint8Array): void {
    this.writes.push(bytes)
  }

  private flush(): void {
    this.writes.flush()
  }

  // ---- reading ---------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    if (this.state === CLOSED) return
    const error = this.decoder.decode(chunk, this.onFrame)
    if (error !== undefined && this.state !== CLOSED) this.protocolFailure(error)
  }

  private readonly onFrame = (kind: MuxKind, streamId: Uint8Array, payload: Uint8Array): void => {
    if (this.state === HANDSHAKE) {
      if (kind !== MuxKind.ConnectionAck || decodeConnectionAck(payload) !== 0) {
        return this.protocolFailure(
          new TransportProtocolError({
            reason: "BadHandshake",
            transport: "tcp",
            target: this.address,
            detail: `expected ConnectionAck(0) after the mux handshake, got a ${kind === MuxKind.ConnectionAck ? "ConnectionAck with a non-zero offset" : `frame of kind ${kind}`}`
          })
        )
      }
      this.state = OPEN
      const ready = this.ready
      this.ready = undefined
      ready?.(undefined)
      return
    }
    switch (kind) {
      case MuxKind.ConnectionAck: {
        const offset = decodeConnectionAck(payload)
        if (offset > this.acked) this.acked = offset
        if (this.endedHead < this.endedAt.length) this.trimEnded()
        if (this.blocked.length > 0) this.drain()
        return
      }
      case MuxKind.WindowUpdate: {
        const s = this.streams.get(streamKey(streamId))
        if (s === undefined) return
        s.credit += decodeWindowUpdate(payload)
        if (this.blocked.length > 0) this.drain()
        return
      }
      case MuxKind.Stop:
      case MuxKind.Kill:
        this.streams.get(streamKey(streamId))?.control(kind === MuxKind.Stop ? "stop" : "kill")
        return
      case MuxKind.Reset: {
        const s = this.streams.get(streamKey(streamId))
        if (s === undefined) return
        const reason = textDecoder.decode(payload)
        this.removeBlocked(s)
        this.streams.delete(s.key)
        s.gone(() =>
          new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: this.address, detail: `the router reset the stream: ${reason}` })
        )
        if (this.streams.size === 0 && this.state !== CLOSED) this.events.onUsage(this, false)
        return
      }
      default:
        return this.protocolFailure(
          new TransportProtocolError({
            reason: "UnexpectedMessage",
            transport: "tcp",
            target: this.address,
            detail: `the router sent a frame of kind ${kind}, which only a worker may send`
          })
        )
    }
  }

  /**
   * Forgets the ended streams whose last frame the router's latest ConnectionAck covers, and at
   * least `drop` of the oldest (a router that does not ack keeps the list bounded).
   */
  private trimEnded(drop = 0): void {
    const at = this.endedAt
    const ids = this.endedIds
    let head = this.endedHead
    const min = head + drop
    while (head < at.length && (head < min || at[head]! <= this.acked)) ids[head++] = undefined
    if (head === at.length) {
      at.length = 0
      ids.length = 0
      head = 0
    } else if (head >= 1024 && head * 2 >= at.length) {
      at.splice(0, head)
      ids.splice(0, head)
      head = 0
    }
    this.endedHead = head
  }

  private removeBlocked(s: MuxStream): void {
    if (s.pending === undefined) return
    const i = this.blocked.indexOf(s)
    if (i >= 0) this.blocked.splice(i, 1)
  }

  private protocolFailure(error: TransportProtocolError): void {
    this.failure ??= error
    this.socket.destroy()
  }

  private onSocketClose(): void {
    const wasHandshaking = this.state === HANDSHAKE
    // After our graceful close the socket ended behind every queued byte: ended streams are whole.
    const graceful = this.state === CLOSING
    this.state = CLOSED
    clearTimeout(this.lingerTimer)
    this.writes.clear()
    this.blocked = []
    this.drainWaiters.wake()
    const error = this.failure ??
      new TransportConnectionError({
        reason: wasHandshaking ? "Refused" : "ConnectionClosed",
        transport: "tcp",
        target: this.address,
        detail: wasHandshaking
          ? `the router closed the connection during the mux handshake${this.lastError === undefined ? "" : `: ${this.lastError.message}`}`
          : this.byUs
          ? "the pooled call-home connection was closed"
          : `the router closed the pooled call-home connection${this.lastError === undefined ? "" : `: ${this.lastError.message}`}`,
        cause: this.lastError
      })
    if (wasHandshaking) {
      const ready = this.ready
      this.ready = undefined
      ready?.(error)
      return
    }
    const streams = [...this.streams.values()]
    this.streams.clear()
    // Every stream still in the map is unfinished (one whose last frame waits for credit too), and
    // so is an ended one whose last frame never reached the socket. One whose last frame was
    // written but is not covered by a ConnectionAck is unconfirmed: the router may not have it.
    let unfinished = NONE
    let unconfirmed = NONE
    if (streams.length > 0 || (!graceful && this.endedHead < this.endedIds.length)) {
      const lost = streams.map((s) => s.id)
      const maybe: Array<Uint8Array> = []
      if (!graceful) {
        for (let i = this.endedHead; i < this.endedIds.length; i++) (this.endedAt[i]! > this.written ? lost : maybe).push(this.endedIds[i]!)
      }
      unfinished = lost
      unconfirmed = maybe
    }
    this.endedIds = []
    this.endedAt = []
    this.endedHead = 0
    for (const s of streams) s.gone(() => error)
    this.events.onClose(this, error, this.byUs, unfinished, unconfirmed)
  }
}

/**
 * Connects a mux connection and completes its handshake, within `options.connectTimeoutMs`.
 * Interrupting it destroys the socket.
 */
export const connectMux = (options: MuxConnectionOptions, events: MuxConnectionEvents): Effect.Effect<MuxConnection, TransportError> =>
  Effect.callback<MuxConnection, TransportError>((resume) => {
    const socket = net.connect({
      host: options.host,
      port: options.port,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: options.keepaliveMs
    })
    let settled = false
    let connected = false
    socket.once("connect", () => {
      connected = true
    })
    const timer = setTimeout(() => {
      if (settled) return
      settled = true
      socket.destroy()
      resume(
        Effect.fail(
          new TransportTimeoutError({
            reason: "ConnectTimeout",
            transport: "tcp",
            target: options.address,
            detail: connected
              ? `no mux ConnectionAck within ${options.connectTimeoutMs} ms`
              : `no connection within ${options.connectTimeoutMs} ms`
          })
        )
      )
    }, options.connectTimeoutMs)
    const conn: MuxConnection = new MuxConnection(socket, crypto.randomUUID(), options, events, (error) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (error === undefined) return resume(Effect.succeed(conn))
      resume(
        Effect.fail(
          !connected && error._tag === "TransportConnectionError"
            ? new TransportConnectionError({
              reason: "ConnectFailed",
              transport: "tcp",
              target: options.address,
              detail: error.cause instanceof Error ? error.cause.message : "connect failed",
              cause: error.cause
            })
            : error
        )
      )
    })
    return Effect.sync(() => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
    })
  })
