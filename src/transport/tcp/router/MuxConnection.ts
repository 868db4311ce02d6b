/**
 * The router's end of one pooled, multiplexed call-home connection (response mux v1,
 * docs/protocol.md section 6): compact frames in, streams' events out. The full TCP mode's router
 * connection (`../full/RouterConnection.ts`) extends it: same streams, same credits, over a socket
 * it dialled itself.
 *
 * What it does:
 * - `start(rest)` answers the handshake with ConnectionAck(0) (`greet`; the full mode has its own
 *   hello), then decodes `rest` (the bytes that followed the handshake in its chunk) and every
 *   later chunk synchronously in the socket's 'data' handler with the incremental MuxCodec
 *   decoder; the streams that got items are flushed once at the end of each chunk (one `onItems`
 *   per stream per chunk).
 * - Dispatch: a Prologue for a stream this connection does not carry claims it (`claimable`: from
 *   the server's table, one still waiting), else is answered with a Reset. Data, End, a second
 *   Prologue and the worker's Reset go to the claimed stream's state machine. A Reset for a stream
 *   not on this connection (`resetUnclaimed`: the worker lost the one that carried it) fails a
 *   stream still waiting at once, or ends one claimed on another mux connection; any other is
 *   ignored (no Reset goes back). Other frames of streams it does not carry are dropped.
 * - As each stream's `StreamLink`: Stop/Kill frames, credits (a Data payload spends credit the
 *   router grants back once delivered, withheld while the stream is paused), a Reset when the
 *   router ends a live stream abnormally.
 * - Credits (`ReceiveCredit`): a WindowUpdate once 64 KiB are owed to a stream, a ConnectionAck of
 *   the cumulative bytes decoded once 64 KiB are unacknowledged, and whatever is owed 50 ms after it
 *   was first owed, or with the next write if that comes first. Everything queued in one tick
 *   leaves in one write (`out`).
 * - Stop or Kill from a worker and framing errors are protocol errors of the whole connection:
 *   it is destroyed (after `farewell`, which the full mode uses to send its closing Error frame).
 *   When the socket closes, every stream it carries is `disconnected` with the cause (socket error
 *   or the typed error it was destroyed with), then `closed` and `onClose` run. Keepalive is set
 *   by the server. A worker's WindowUpdate and ConnectionAck are ignored (`creditFrame`); kinds
 *   beyond 8 are refused (`otherFrame`) unless a subclass reads them.
 *
 * - Heartbeats (docs/protocol.md section 6, "Heartbeats"): when the worker's handshake offered
 *   them (`heartbeats`), the decoder also takes kinds 9-14, of which only Ping (answered with a
 *   Pong) and Pong are read; the server's idle sweep calls `keepAlive`, which sends a Ping once the
 *   connection carrying streams has been silent for the ping interval. On such a connection (and
 *   on every full-mode one) any frame shows that the worker is alive for every stream it carries
 *   (`heardAt`): a slow stream is not idle while its connection answers.
 *
 * What it does not do: read the handshake (CallHomeListener), hold streams' state
 * (CallHomeStream), or time anything but the credit timer (the server's sweep drives pings).
 */
import type * as net from "node:net"
import {
  encodeConnectionAck,
  encodeMuxFrame,
  encodePing,
  encodePong,
  makeMuxDecoder,
  MUX_HEADER_SIZE,
  MuxKind,
  sameStreamId,
  uuidFromStreamId
} from "../../../protocol/MuxCodec.ts"
import { ChunkText } from "../../../protocol/ChunkText.ts"
import type { MuxDecoder } from "../../../protocol/MuxCodec.ts"
import { encodeResetPayload } from "../../../protocol/MuxHandshake.ts"
import { toTransportProtocolError } from "../../../internal/protocolError.ts"
import { FrameBatcher, writePieces } from "../worker/FrameBatcher.ts"
import { TransportProtocolError } from "../../../TransportError.ts"
import { Phase } from "./StreamLink.ts"
import type { CallHomeStream } from "./CallHomeStream.ts"
import { owedCredit, ReceiveCredit } from "./ReceiveCredit.ts"
import type { OwedCredit } from "./ReceiveCredit.ts"
import type { LogDebug, StreamLink } from "./StreamLink.ts"
import { ConnectionLiveness } from "../../../internal/IdleSweep.ts"
import { StreamIdTable } from "../../../internal/StreamIdTable.ts"
import type { ReadonlyStreamIdTable } from "../../../internal/StreamIdTable.ts"
import { onNextTick } from "../../../internal/SharedTick.ts"

/** Options of a router-side mux connection. */
export interface MuxConnectionOptions {
  readonly socket: net.Socket
  /** The worker's "host:port", named in errors and logs. */
  readonly remote: string
  /** The worker's connection id, from the handshake. */
  readonly connectionId: string
  /** Largest frame accepted, header included. */
  readonly maxMessageSize: number
  /** The server's open streams by stream id (= subject): a Prologue claims one, a worker's Reset may end one. */
  readonly streams: ReadonlyStreamIdTable<CallHomeStream>
  readonly logDebug: LogDebug
  /** The socket closed (after its streams were disconnected). */
  readonly onClose: (conn: MuxConnection) => void
  /** Decode the full mode's kinds 9-14 too (a full-mode connection reads them in `otherFrame`); default false. */
  readonly fullMode?: boolean | undefined
  /**
   * The worker's handshake offered heartbeats (`"ping": 1`): it answers a Ping with a Pong, and
   * any frame counts as a sign of life for every stream (the full mode always has them). Default false.
   */
  readonly heartbeats?: boolean | undefined
}

const textDecoder = new TextDecoder()
let pingNonce = 0n

/** A stream claimed on a mux connection: its id and the credit it is owed. */
export class MuxStreamLink implements StreamLink {
  readonly awaitsSentinel = false
  readonly conn: MuxConnection
  readonly id: Uint8Array
  readonly stream: CallHomeStream
  /** The credit owed to the worker for this stream's Data. */
  readonly credit: OwedCredit
  private paused = false
  /** Data bytes delivered while paused, granted on resume. */
  private withheld = 0

  constructor(conn: MuxConnection, id: Uint8Array, stream: CallHomeStream) {
    this.conn = conn
    this.id = id
    this.stream = stream
    this.credit = owedCredit(id)
  }

  control(message: "stop" | "kill"): void {
    this.conn.send(message === "stop" ? MuxKind.Stop : MuxKind.Kill, this.id)
  }

  pause(): void {
    this.paused = true
  }

  resume(): void {
    this.paused = false
    const withheld = this.withheld
    this.withheld = 0
    if (withheld > 0 && this.stream.phase === Phase.Streaming) this.conn.grant(this.credit, withheld)
  }

  /** `n` Data payload bytes were delivered: credit owed to the worker, granted unless paused. */
  delivered(n: number): void {
    if (this.paused) this.withheld += n
    else this.conn.grant(this.credit, n)
  }

  batchStarted(): void {
    this.conn.flushAtChunkEnd(this.stream)
  }

  release(reset: string | undefined): void {
    if (reset !== undefined) this.conn.send(MuxKind.Reset, this.id, encodeResetPayload(reset))
    this.conn.forget(this.id)
  }

  cancel(): void {
    this.release("cancelled by the router")
  }

  get peer(): string {
    return this.conn.remote
  }

  heardAt(now: number): number | undefined {
    return this.conn.heardAt(now)
  }
}

/** One accepted mux connection; see the module comment. */
export class MuxConnection {
  /** The worker's "host:port". */
  readonly remote: string
  /** The worker's connection id. */
  readonly connectionId: string
  protected readonly socket: net.Socket
  protected readonly options: MuxConnectionOptions
  protected readonly decoder: MuxDecoder
  /** The streams this connection carries, by stream id. */
  protected readonly links = new StreamIdTable<MuxStreamLink>()
  /** The chunk being decoded, as text for its items (`jsonStreamItemIn`). */
  private readonly chunkText = new ChunkText()
  /** Streams with items batched in the current chunk. */
  private dirty: Array<CallHomeStream> = []
  /** The stream of the last frame dispatched (while it is on the connection). */
  private lastLink: MuxStreamLink | undefined = undefined
  protected readonly credit: ReceiveCredit
  protected readonly writes: FrameBatcher
  /** Why the connection closed (the first error seen or given). */
  protected cause: Error | undefined = undefined
  /** The socket is closing or closed: no frame is read or written any more. */
  protected closed = false
  /** Set by every chunk; read by the idle sweep (heartbeats offered, or the full mode: it counts for every stream). */
  private readonly liveness: ConnectionLiveness

  /** A driver for `options.socket`; it listens for the socket's error and close at once, and reads from `start`. */
  constructor(options: MuxConnectionOptions) {
    this.options = options
    this.socket = options.socket
    this.remote = options.remote
    this.connectionId = options.connectionId
    this.liveness = new ConnectionLiveness(options.fullMode === true || options.heartbeats === true)
    this.decoder = makeMuxDecoder({ maxMessageSize: options.maxMessageSize, fullMode: this.liveness.heartbeats })
    // Credit owed to the worker rides in every write (`piggyback` once per flush).
    this.writes = new FrameBatcher((chunks) => {
      if (!this.socket.destroyed) writePieces(this.socket, chunks)
    }, onNextTick, () => this.credit.piggyback())
    // Credit frames stay outside the connection window (ReceiveCredit.ts): not through `out`.
    this.credit = new ReceiveCredit((frame) => this.writes.bytes(frame), () => this.decoder.bytesDecoded())
    const socket = this.socket
    socket.on("error", (error) => {
      this.cause ??= error
    })
    socket.on("close", () => this.onSocketClose())
  }

  /** Greets the worker (`greet`), takes over the socket's data, and decodes `rest`. */
  start(rest: Uint8Array): void {
    this.greet()
    this.socket.on("data", this.onData)
    if (rest.length > 0) this.onData(rest)
  }

  /** Resets the socket, as a crashed router would: its streams fail with "StreamEndedEarly". */
  resetAndDestroy(): void {
    this.socket.resetAndDestroy()
  }

  /** Queues a frame to the worker (dropped once the connection is closing). */
  send(kind: MuxKind, streamId: Uint8Array, payload?: Uint8Array | undefined): void {
    if (this.closed || this.socket.destroyed) return
    this.out(encodeMuxFrame(kind, streamId, payload))
  }

  /** Records `n` Data payload bytes delivered to a stream (`credit` is its record): credit owed to the worker. */
  grant(credit: OwedCredit, n: number): void {
    this.credit.grant(credit, n)
  }

  /** Drops a stream that is over and any credit owed to it. */
  forget(id: Uint8Array): void {
    const link = this.links.get(id)
    if (link === undefined) return
    this.links.delete(id)
    if (this.lastLink === link) this.lastLink = undefined
    this.credit.forget(link.credit)
    this.released(id)
  }

  /** Flushes `stream`'s items once this chunk is decoded. */
  flushAtChunkEnd(stream: CallHomeStream): void {
    this.dirty.push(stream)
  }

  /** Streams this connection carries now. */
  streamCount(): number {
    return this.links.size
  }

  /** For the idle sweep: when the worker last showed life here, if that counts for every stream on it. */
  heardAt(now: number): number | undefined {
    return this.liveness.heardAt(now)
  }

  /** For the idle sweep: a Ping when streams are open and heartbeats due (`ConnectionLiveness.pingDue`). */
  keepAlive(now: number, pingMs: number): void {
    if (!this.closed && this.links.size > 0 && this.liveness.pingDue(now, pingMs)) this.out(encodePing(++pingNonce))
  }

  // ---- hooks (the full mode overrides them) -----------------------------------------------------

  /**
   * Queues one frame (or part of one) for this tick's write: every frame the connection sends
   * passes here (credit owed to the worker goes with it).
   */
  protected out(frame: Uint8Array): void {
    this.writes.bytes(frame)
  }

  /** The first frame on the connection: the mux handshake's ConnectionAck(0). */
  protected greet(): void {
    this.out(encodeConnectionAck(0))
  }

  /** A chunk arrived (before it is decoded). */
  protected chunkArrived(): void {}

  /** A WindowUpdate or ConnectionAck from the worker: ignored (nothing flows router to worker under credit). */
  protected creditFrame(_kind: MuxKind, _streamId: Uint8Array, _payload: Uint8Array): void {}

  /**
   * A frame of a kind beyond the pooled framing (only a full-mode decoder lets them through): with
   * heartbeats, a Ping is answered and a Pong read (it counted as a chunk); anything else is a protocol error.
   */
  protected otherFrame(kind: MuxKind, _streamId: Uint8Array, payload: Uint8Array): void {
    if (kind === MuxKind.Pong) return
    if (kind === MuxKind.Ping) return this.out(encodePong(payload))
    this.unexpected(`a worker sent a frame of kind ${kind}, which this connection does not read`)
  }

  /** The stream a Prologue for `streamId` claims: one waiting in the server's table, else undefined (answered with a Reset). */
  protected claimable(streamId: Uint8Array): CallHomeStream | undefined {
    const stream = this.options.streams.get(streamId)
    return stream !== undefined && stream.phase === Phase.Waiting ? stream : undefined
  }

  /** A stream this connection carried is over on the router's side (its link was released). */
  protected released(_id: Uint8Array): void {}

  /** Before the socket is destroyed for `cause` (a protocol error, or the owner's reason). */
  protected farewell(_cause: Error): void {}

  /** After the socket closed and every claimed stream was disconnected with `cause`. */
  protected closedWith(_cause: Error | undefined): void {}

  /** Destroys the connection for `cause`: queued frames (after `farewell`) still go out first. */
  destroy(cause: Error): void {
    if (this.closed) return
    this.cause ??= cause
    this.farewell(cause)
    this.closed = true
    this.writes.flush()
    this.socket.destroy()
  }

  /** The worker sent something that has no place here: a protocol error of the connection. */
  protected unexpected(detail: string): void {
    this.destroy(new TransportProtocolError({ reason: "UnexpectedMessage", transport: "tcp", target: this.remote, detail }))
  }

  // ---- reading -----------------------------------------------------------------------------------

  protected readonly onData = (chunk: Uint8Array): void => {
    if (this.closed) return
    this.liveness.active = true
    this.chunkArrived()
    this.chunkText.reading(chunk)
    const error = this.decoder.decode(chunk, this.onFrame)
    this.chunkText.release()
    if (this.dirty.length > 0) {
      const streams = this.dirty
      this.dirty = []
      for (const stream of streams) stream.flush()
    }
    if (error !== undefined) return this.destroy(toTransportProtocolError(error, "tcp", this.remote))
    this.credit.chunkDecoded()
  }

  private readonly onFrame = (kind: MuxKind, streamId: Uint8Array, payload: Uint8Array): void => {
    if (this.closed) return
    switch (kind) {
      case MuxKind.Prologue:
      case MuxKind.Data:
      case MuxKind.End:
      case MuxKind.Reset:
        break
      case MuxKind.WindowUpdate:
      case MuxKind.ConnectionAck:
        this.credit.creditFrameDecoded(MUX_HEADER_SIZE + payload.length)
        return this.creditFrame(kind, streamId, payload)
      case MuxKind.Stop:
      case MuxKind.Kill:
        return this.unexpected(`a worker sent a ${kind === MuxKind.Stop ? "Stop" : "Kill"} frame, which only a router may send`)
      default:
        return this.otherFrame(kind, streamId, payload)
    }
    // A stream's frames tend to come together (Prologue, Data..., End in one chunk): the last
    // stream is found by comparing id bytes, without a table lookup per frame.
    let link = this.lastLink
    if (link === undefined || !sameStreamId(link.id, streamId)) {
      link = this.links.get(streamId)
      if (link === undefined) {
        if (kind === MuxKind.Prologue) this.claim(streamId, payload)
        else if (kind === MuxKind.Reset) this.resetUnclaimed(streamId, payload)
        return
      }
      this.lastLink = link
    }
    const stream = link.stream
    switch (kind) {
      case MuxKind.Data:
        if (stream.phase !== Phase.Streaming) return
        link.delivered(payload.length)
        if (payload.length > 0) stream.data(payload, this.chunkText, this.decoder.restOffset())
        return
      case MuxKind.End:
        return stream.end()
      case MuxKind.Reset:
        // The worker abandoned the stream (after stop/kill, or shutting down).
        return stream.cutShort(new Error(`the worker reset the stream: ${textDecoder.decode(payload)}`))
      default:
        return stream.prologue(payload) // a second Prologue: the stream's protocol error
    }
  }

  /** A Prologue for a stream this connection does not carry: claim it if it is waiting, else answer with a Reset. */
  private claim(streamId: Uint8Array, payload: Uint8Array): void {
    const stream = this.claimable(streamId)
    if (stream === undefined) {
      this.options.logDebug("refused mux stream", { remote: this.remote, stream: uuidFromStreamId(streamId), reason: "unknown or already-served stream id" })
      this.send(MuxKind.Reset, streamId, encodeResetPayload("unknown or already-served stream id"))
      return
    }
    // The stream's own id: equal to the frame's (the lookup matched it), and not a view of the chunk.
    const link = new MuxStreamLink(this, stream.id, stream)
    this.links.set(link.id, link)
    stream.claim(link)
    stream.prologue(payload)
  }

  /**
   * A worker's Reset for a stream this connection does not carry: the worker lost the connection
   * that carried it. A stream still waiting fails now rather than at the call-home timeout; one
   * claimed on another mux connection ends as if that one had closed; anything else is ignored.
   */
  protected resetUnclaimed(streamId: Uint8Array, payload: Uint8Array): void {
    const stream = this.options.streams.get(streamId)
    if (stream === undefined) return
    if (stream.phase === Phase.Waiting) {
      const reason = textDecoder.decode(payload)
      this.options.logDebug("worker reset a stream before its prologue", { remote: this.remote, stream: stream.subject, reason })
      return stream.resetBeforeClaim(reason)
    }
    const link = stream.link
    if (!(link instanceof MuxStreamLink) || link.conn === this) return
    stream.cutShort(new Error(`the worker reset the stream: ${textDecoder.decode(payload)}`))
  }

  private onSocketClose(): void {
    this.closed = true
    this.credit.stop()
    this.writes.clear()
    const links = this.links.values()
    this.links.clear()
    this.lastLink = undefined
    this.options.onClose(this)
    const cause = this.cause
    if (links.length > 0 || cause !== undefined) {
      this.options.logDebug("mux connection closed", { remote: this.remote, connection: this.connectionId, streams: links.length, cause: cause?.message })
    }
    for (const link of links) {
      link.stream.disconnected(cause)
      this.released(link.id)
    }
    this.closedWith(cause)
  }
}
