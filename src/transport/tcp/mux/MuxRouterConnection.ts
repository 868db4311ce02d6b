/**
 * The router's end of one pooled, multiplexed call-home connection (response mux v1), below the
 * level of streams: compact-frame decoding, write batching, and the credits the router grants.
 *
 * What it does:
 * - `start(rest)` answers the handshake with ConnectionAck(0) and decodes `rest` (bytes that
 *   followed the handshake frame in the same read) and every later chunk synchronously in the
 *   socket's 'data' handler with the incremental MuxCodec decoder. Prologue, Data, End and Reset
 *   frames go to `onFrame` with their stream key; `onChunkEnd` runs once per chunk, so the owner
 *   can hand each stream's items to its sink as one batch.
 * - Credits (docs/protocol.md, "Flow control"): `grant(key, id, n)` records Data bytes delivered
 *   for a stream; the connection sends that stream a WindowUpdate once 64 KiB are owed, and a
 *   ConnectionAck with the cumulative bytes decoded once 64 KiB are unacknowledged; whatever is
 *   still owed goes out 1 ms after it was first owed. `forget(key)` drops a finished stream.
 * - `send` queues a frame; everything queued in one tick leaves in one socket write.
 * - Frames a worker must not send (Stop, Kill) and framing errors are protocol errors of the
 *   whole connection: it is destroyed and `onClose` receives the error. WindowUpdate and
 *   ConnectionAck from a worker are ignored (the router→worker direction has no flow control).
 * - `onClose` runs once, when the socket has closed, with the cause if there was one.
 *
 * What it does not do: know streams' state (the stream server does), or time anything but the
 * 1 ms credit timer.
 */
import type * as net from "node:net"
import {
  encodeConnectionAck,
  encodeMuxFrame,
  encodeWindowUpdate,
  makeMuxDecoder,
  MuxKind,
  streamKey
} from "../../../protocol/MuxCodec.ts"
import type { MuxDecoder } from "../../../protocol/MuxCodec.ts"
import { TransportProtocolError } from "../../../TransportError.ts"
import { CREDIT_UPDATE_BYTES, CREDIT_UPDATE_MS } from "../../../protocol/MuxHandshake.ts"
import { WriteBatcher } from "../../../internal/WriteBatcher.ts"

/** Options of a router-side mux connection. */
export interface MuxRouterConnectionOptions<S> {
  readonly socket: net.Socket
  /** The worker's "host:port", named in errors and logs. */
  readonly remote: string
  /** The worker's connection id, from the handshake. */
  readonly connectionId: string
  /** Largest frame accepted, header included. */
  readonly maxMessageSize: number
  /** A stream frame (Prologue, Data, End or Reset). `streamId` and `payload` are views. */
  readonly onFrame: (conn: MuxRouterConnection<S>, kind: MuxKind, key: string, streamId: Uint8Array, payload: Uint8Array) => void
  /** Runs after every chunk's frames. */
  readonly onChunkEnd: () => void
  /** The socket closed; `cause` is the protocol error or socket error that closed it, if any. */
  readonly onClose: (conn: MuxRouterConnection<S>, cause: Error | undefined) => void
  /** Bytes owed before a credit update is sent at once (default 64 KiB). */
  readonly creditUpdateBytes?: number | undefined
  /** Longest delay of an owed credit update (default 1 ms). */
  readonly creditUpdateMs?: number | undefined
}

interface Owed {
  readonly id: Uint8Array
  n: number
}

/** One accepted mux connection; see the module comment. */
export class MuxRouterConnection<S> {
  /** The streams this connection carries, by stream key. Owned by the stream server. */
  readonly streams = new Map<string, S>()
  readonly remote: string
  readonly connectionId: string
  private readonly socket: net.Socket
  private readonly options: MuxRouterConnectionOptions<S>
  private readonly decoder: MuxDecoder
  private readonly updateBytes: number
  private readonly updateMs: number
  private readonly owed = new Map<string, Owed>()
  private readonly writes = new WriteBatcher((chunk) => {
    if (!this.socket.destroyed) this.socket.write(chunk)
  })
  private acked = 0
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  private cause: Error | undefined = undefined
  private closed = false

  constructor(options: MuxRouterConnectionOptions<S>) {
    this.options = options
    this.socket = options.socket
    this.remote = options.remote
    this.connectionId = options.connectionId
    this.updateBytes = options.creditUpdateBytes ?? CREDIT_UPDATE_BYTES
    this.updateMs = options.creditUpdateMs ?? CREDIT_UPDATE_MS
    this.decoder = makeMuxDecoder({ maxMessageSize: options.maxMessageSize, target: options.remote, transport: "tcp" })
  }

  /** Acks the handshake, takes over the socket's events, and decodes `rest`. */
  start(rest: Uint8Array): void {
    const socket = this.socket
    socket.setTimeout(0)
    this.push(encodeConnectionAck(0))
    socket.on("data", (chunk: Buffer) => this.onData(chunk))
    socket.on("error", (error) => {
      this.cause ??= error
    })
    socket.on("close", () => this.onSocketClose())
    if (rest.length > 0) this.onData(rest)
  }

  /** True once the socket is closing or closed. */
  isClosed(): boolean {
    return this.closed || this.socket.destroyed
  }

  /** Queues a frame to the worker. */
  send(kind: MuxKind, streamId: Uint8Array, payload?: Uint8Array | undefined): void {
    if (this.isClosed()) return
    this.push(encodeMuxFrame(kind, streamId, payload))
  }

  /** Records `n` Data payload bytes delivered for a stream: credit owed to the worker. */
  grant(key: string, streamId: Uint8Array, n: number): void {
    let owed = this.owed.get(key)
    if (owed === undefined) {
      owed = { id: streamId, n: 0 }
      this.owed.set(key, owed)
    }
    owed.n += n
    if (owed.n >= this.updateBytes) {
      this.owed.delete(key)
      this.push(encodeWindowUpdate(owed.id, owed.n))
    } else this.arm()
  }

  /** Drops a finished stream and any credit owed to it. */
  forget(key: string): void {
    this.streams.delete(key)
    this.owed.delete(key)
  }

  /** Destroys the connection; `onClose` follows with `cause`. */
  destroy(cause?: Error | undefined): void {
    this.cause ??= cause
    this.closed = true
    this.flush()
    this.socket.destroy()
  }

  private onData(chunk: Uint8Array): void {
    if (this.closed) return
    const error = this.decoder.decode(chunk, this.onFrame)
    this.options.onChunkEnd()
    if (error !== undefined) return this.destroy(error)
    const unacked = this.decoder.bytesDecoded() - this.acked
    if (unacked >= this.updateBytes) this.ack()
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
      default:
        this.options.onFrame(this, kind, streamKey(streamId), streamId, payload)
    }
  }

  private ack(): void {
    this.acked = this.decoder.bytesDecoded()
    this.push(encodeConnectionAck(this.acked))
  }

  private arm(): void {
    if (this.timer !== undefined || this.closed) return
    this.timer = setTimeout(this.onTimer, this.updateMs)
  }

  private readonly onTimer = (): void => {
    this.timer = undefined
    if (this.isClosed()) return
    for (const owed of this.owed.values()) this.push(encodeWindowUpdate(owed.id, owed.n))
    this.owed.clear()
    if (this.decoder.bytesDecoded() > this.acked) this.ack()
  }

  private push(frame: Uint8Array): void {
    this.writes.push(frame)
  }

  private flush(): void {
    this.writes.flush()
  }

  private onSocketClose(): void {
    this.closed = true
    clearTimeout(this.timer)
    this.timer = undefined
    this.writes.clear()
    this.owed.clear()
    this.options.onClose(this, this.cause)
  }
}
