/**
 * The router's end of one pooled, multiplexed call-home connection (response mux v1,
 * docs/protocol.md section 6): compact frames in, streams' events out.
 *
 * What it does:
 * - `start(rest)` answers the handshake with ConnectionAck(0), then decodes `rest` (the bytes that
 *   followed the handshake in its chunk) and every later chunk synchronously in the socket's
 *   'data' handler with the incremental MuxCodec decoder; the streams that got items are flushed
 *   once at the end of each chunk (one `onItems` per stream per chunk).
 * - Dispatch: a Prologue for a stream this connection does not carry claims it from the server's
 *   table (one still waiting), else is answered with a Reset. Data, End, a second Prologue and
 *   the worker's Reset go to the claimed stream's state machine. A Reset for a stream not on this
 *   connection (the worker lost the one that carried it) fails a stream still waiting at once,
 *   or ends one claimed on another mux connection; any other is ignored (no Reset goes back).
 *   Other frames of streams it does not carry are dropped.
 * - As each stream's `StreamLink`: Stop/Kill frames, credits (a Data payload spends credit the
 *   router grants back once delivered, withheld while the stream is paused), a Reset when the
 *   router ends a live stream abnormally.
 * - Credits (docs/protocol.md, "Flow control"): a WindowUpdate once 64 KiB are owed to a stream,
 *   a ConnectionAck of the cumulative bytes decoded once 64 KiB are unacknowledged, and whatever
 *   is owed 1 ms after it was first owed. Everything queued in one tick leaves in one write.
 * - Stop or Kill from a worker and framing errors are protocol errors of the whole connection:
 *   it is destroyed. When the socket closes, every stream it carries is `disconnected` with the
 *   cause (socket error or TransportProtocolError), then `onClose` runs. Keepalive is set by the
 *   server. A worker's WindowUpdate and ConnectionAck are ignored.
 *
 * What it does not do: read the handshake (CallHomeListener), hold streams' state
 * (CallHomeStream), or time anything but the 1 ms credit timer.
 */
import type * as net from "node:net"
import {
  encodeConnectionAck,
  encodeMuxFrame,
  encodeWindowUpdate,
  makeMuxDecoder,
  MuxKind,
  streamKey,
  uuidFromStreamId
} from "../../../protocol/MuxCodec.ts"
import type { MuxDecoder } from "../../../protocol/MuxCodec.ts"
import { CREDIT_UPDATE_BYTES, CREDIT_UPDATE_MS, encodeResetPayload } from "../../../protocol/MuxHandshake.ts"
import { toTransportProtocolError } from "../../../internal/protocolError.ts"
import { WriteBatcher } from "../../../internal/WriteBatcher.ts"
import { TransportProtocolError } from "../../../TransportError.ts"
import { Phase } from "./CallHomeStream.ts"
import type { CallHomeStream } from "./CallHomeStream.ts"
import type { LogDebug, StreamLink } from "./StreamLink.ts"

/** Options of a router-side mux connection. */
export interface MuxConnectionOptions {
  readonly socket: net.Socket
  /** The worker's "host:port", named in errors and logs. */
  readonly remote: string
  /** The worker's connection id, from the handshake. */
  readonly connectionId: string
  /** Largest frame accepted, header included. */
  readonly maxMessageSize: number
  /** The server's open streams by subject (= stream id): a Prologue claims one, a worker's Reset may end one. */
  readonly streams: ReadonlyMap<string, CallHomeStream>
  readonly logDebug: LogDebug
  /** The socket closed (after its streams were disconnected). */
  readonly onClose: (conn: MuxConnection) => void
}

const textDecoder = new TextDecoder()

/** A stream claimed on a mux connection: its key, id and the credit it is owed. */
class MuxStreamLink implements StreamLink {
  readonly awaitsSentinel = false
  readonly conn: MuxConnection
  readonly key: string
  readonly id: Uint8Array
  readonly stream: CallHomeStream
  private paused = false
  /** Data bytes delivered while paused, granted on resume. */
  private owed = 0

  constructor(conn: MuxConnection, key: string, id: Uint8Array, stream: CallHomeStream) {
    this.conn = conn
    this.key = key
    this.id = id
    this.stream = stream
  }

  control(message: "stop" | "kill"): void {
    this.conn.send(message === "stop" ? MuxKind.Stop : MuxKind.Kill, this.id)
  }

  pause(): void {
    this.paused = true
  }

  resume(): void {
    this.paused = false
    const owed = this.owed
    this.owed = 0
    if (owed > 0 && this.stream.phase === Phase.Streaming) this.conn.grant(this.key, this.id, owed)
  }

  /** `n` Data payload bytes were delivered: credit owed to the worker, granted unless paused. */
  delivered(n: number): void {
    if (this.paused) this.owed += n
    else this.conn.grant(this.key, this.id, n)
  }

  batchStarted(): void {
    this.conn.flushAtChunkEnd(this.stream)
  }

  release(reset: string | undefined): void {
    if (reset !== undefined) this.conn.send(MuxKind.Reset, this.id, encodeResetPayload(reset))
    this.conn.forget(this.key)
  }

  cancel(): void {
    this.release("cancelled by the router")
  }
}

interface Owed {
  readonly id: Uint8Array
  n: number
}

/** One accepted mux connection; see the module comment. */
export class MuxConnection {
  /** The worker's "host:port". */
  readonly remote: string
  /** The worker's connection id. */
  readonly connectionId: string
  private readonly socket: net.Socket
  private readonly options: MuxConnectionOptions
  private readonly decoder: MuxDecoder
  /** The streams this connection carries, by stream key. */
  private readonly links = new Map<string, MuxStreamLink>()
  /** Streams with items batched in the current chunk. */
  private dirty: Array<CallHomeStream> = []
  private readonly owed = new Map<string, Owed>()
  private readonly writes = new WriteBatcher((chunk) => {
    if (!this.socket.destroyed) this.socket.write(chunk)
  })
  private acked = 0
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  private cause: Error | undefined = undefined
  private closed = false

  /** A driver for `options.socket`, whose handshake was accepted. */
  constructor(options: MuxConnectionOptions) {
    this.options = options
    this.socket = options.socket
    this.remote = options.remote
    this.connectionId = options.connectionId
    this.decoder = makeMuxDecoder({ maxMessageSize: options.maxMessageSize })
  }

  /** Acks the handshake, takes over the socket's events, and decodes `rest`. */
  start(rest: Uint8Array): void {
    const socket = this.socket
    this.writes.push(encodeConnectionAck(0))
    socket.on("data", this.onData)
    socket.on("error", (error) => {
      this.cause ??= error
    })
    socket.on("close", () => this.onSocketClose())
    if (rest.length > 0) this.onData(rest)
  }

  /** Resets the socket, as a crashed router would: its streams fail with "StreamEndedEarly". */
  resetAndDestroy(): void {
    this.socket.resetAndDestroy()
  }

  /** Queues a frame to the worker (dropped once the connection is closing). */
  send(kind: MuxKind, streamId: Uint8Array, payload?: Uint8Array | undefined): void {
    if (this.closed || this.socket.destroyed) return
    this.writes.push(encodeMuxFrame(kind, streamId, payload))
  }

  /** Records `n` Data payload bytes delivered to a stream: credit owed to the worker. */
  grant(key: string, streamId: Uint8Array, n: number): void {
    let owed = this.owed.get(key)
    if (owed === undefined) {
      owed = { id: streamId, n: 0 }
      this.owed.set(key, owed)
    }
    owed.n += n
    if (owed.n >= CREDIT_UPDATE_BYTES) {
      this.owed.delete(key)
      this.writes.push(encodeWindowUpdate(owed.id, owed.n))
    } else this.arm()
  }

  /** Drops a stream that is over and any credit owed to it. */
  forget(key: string): void {
    this.links.delete(key)
    this.owed.delete(key)
  }

  /** Flushes `stream`'s items once this chunk is decoded. */
  flushAtChunkEnd(stream: CallHomeStream): void {
    this.dirty.push(stream)
  }

  private destroy(cause: Error): void {
    this.cause ??= cause
    this.closed = true
    this.writes.flush()
    this.socket.destroy()
  }

  private readonly onData = (chunk: Uint8Array): void => {
    if (this.closed) return
    const error = this.decoder.decode(chunk, this.onFrame)
    if (this.dirty.length > 0) {
      const streams = this.dirty
      this.dirty = []
      for (const stream of streams) stream.flush()
    }
    if (error !== undefined) return this.destroy(toTransportProtocolError(error, "tcp", this.remote))
    const unacked = this.decoder.bytesDecoded() - this.acked
    if (unacked >= CREDIT_UPDATE_BYTES) this.ack()
    else if (unacked > 0) this.arm()
  }

  private readonly onFrame = (kind: MuxKind, streamId: Uint8Array, payload: Uint8Array): void => {
    if (this.closed) return
    switch (kind) {
      case MuxKind.WindowUpdate:
      case MuxKind.ConnectionAck:
        return
      case MuxKind.Stop:
      case MuxKind.Kill:
        return this.destroy(
          new TransportProtocolError({
            reason: "UnexpectedMessage",
            transport: "tcp",
            target: this.remote,
            detail: `a worker sent a ${kind === MuxKind.Stop ? "Stop" : "Kill"} frame, which only a router may send`
          })
        )
    }
    const key = streamKey(streamId)
    const link = this.links.get(key)
    if (link === undefined) {
      if (kind === MuxKind.Prologue) this.claim(key, streamId, payload)
      else if (kind === MuxKind.Reset) this.resetElsewhere(streamId, payload)
      return
    }
    const stream = link.stream
    switch (kind) {
      case MuxKind.Data:
        if (stream.phase !== Phase.Streaming) return
        link.delivered(payload.length)
        if (payload.length > 0) stream.data(payload)
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
  private claim(key: string, streamId: Uint8Array, payload: Uint8Array): void {
    const subject = uuidFromStreamId(streamId)
    const stream = this.options.streams.get(subject)
    if (stream === undefined || stream.phase !== Phase.Waiting) {
      this.options.logDebug("refused mux stream", { remote: this.remote, stream: subject, reason: "unknown or already-served stream id" })
      this.send(MuxKind.Reset, streamId, encodeResetPayload("unknown or already-served stream id"))
      return
    }
    const link = new MuxStreamLink(this, key, streamId.slice(), stream)
    this.links.set(key, link)
    stream.claim(link)
    stream.prologue(payload)
  }

  /**
   * A worker's Reset for a stream this connection does not carry: the worker lost the connection
   * that carried it. A stream still waiting fails now rather than at the call-home timeout; one
   * claimed on another mux connection ends as if that one had closed; anything else is ignored.
   */
  private resetElsewhere(streamId: Uint8Array, payload: Uint8Array): void {
    const stream = this.options.streams.get(uuidFromStreamId(streamId))
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

  private ack(): void {
    this.acked = this.decoder.bytesDecoded()
    this.writes.push(encodeConnectionAck(this.acked))
  }

  private arm(): void {
    if (this.timer !== undefined || this.closed) return
    this.timer = setTimeout(this.onTimer, CREDIT_UPDATE_MS)
  }

  private readonly onTimer = (): void => {
    this.timer = undefined
    if (this.closed || this.socket.destroyed) return
    for (const owed of this.owed.values()) this.writes.push(encodeWindowUpdate(owed.id, owed.n))
    this.owed.clear()
    if (this.decoder.bytesDecoded() > this.acked) this.ack()
  }

  private onSocketClose(): void {
    this.closed = true
    clearTimeout(this.timer)
    this.timer = undefined
    this.writes.clear()
    this.owed.clear()
    const links = [...this.links.values()]
    this.links.clear()
    this.options.onClose(this)
    const cause = this.cause
    if (links.length > 0 || cause !== undefined) {
      this.options.logDebug("mux connection closed", { remote: this.remote, connection: this.connectionId, streams: links.length, cause: cause?.message })
    }
    for (const link of links) link.stream.disconnected(cause)
  }
}
