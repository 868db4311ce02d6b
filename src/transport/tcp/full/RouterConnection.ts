/**
 * The router's end of one full-mode connection (docs/protocol.md, "The full TCP mode"): requests
 * out, their response streams in, on one socket it dialled to a worker's TCP request port.
 *
 * What it does:
 * - `dial` connects (TCP_NODELAY) and writes the 12-byte hello at once. Requests submitted before
 *   the worker's answer are queued behind it (pipelined): an answer other than Accepted fails them
 *   with the worker's reason ("Refused", "BadHandshake"); no connection or no answer in time is
 *   "ConnectTimeout", a failed connect "ConnectFailed" (`RouterHandshake.ts` reads and judges).
 * - `submit` writes a request's Request frame (stream id = its response stream's subject) and
 *   starts its item pump when the request is a stream of items (`ItemPump.ts`); RequestData
 *   leaves under the stream's credit and the connection window (`SendWindow`, the mirror image of
 *   the worker's), granted by the worker's WindowUpdates and ConnectionAcks.
 * - The worker's first frame of a stream is the ack: a Prologue acks and claims the stream for the
 *   router's `CallHomeStream` (the response frames then feed it exactly as on a pooled call-home
 *   connection: this class extends `router/MuxConnection`); an Error frame (or a Reset) refuses
 *   it: the ack fails typed (`rejectionError`: "Overloaded", "ServerUnavailable", EndpointNotFound,
 *   "BadPayload", "Refused"). No answer within `ackTimeoutMs` of the Request frame's write fails
 *   the ack with TransportTimeoutError "AckTimeout" and resets the stream (`AckDeadlines.ts`
 *   keeps the deadlines); from the submit on, the ack timeout replaces the call-home timeout.
 * - Heartbeats (`Heartbeat.ts`): a Ping once nothing was heard for an interval; nothing heard for
 *   two intervals closes the connection with TransportTimeoutError "HeartbeatTimeout". Pings are
 *   answered with Pongs. A worker's Error with the nil id is its reason for closing.
 * - When the socket closes, every request still waiting for its ack fails with the connection's
 *   typed error, at once, and every claimed stream is disconnected (`CallHomeStream`).
 *
 * What it does not do: choose connections, queue beyond a connection, or reconnect (the sender's
 * targets do), or interpret response frames beyond the ack (`router/MuxConnection`,
 * `CallHomeStream`). Nothing runs per frame but synchronous code; every frame queued in one tick
 * leaves in one write.
 */
import type * as net from "node:net"
import { connect, readyEvent, tlsHandshakeError } from "../../../internal/Tls.ts"
import type { ClientTls } from "../../../internal/Tls.ts"
import { encodeHello } from "../../../protocol/FullModeHello.ts"
import {
  decodeConnectionAck,
  decodeErrorText,
  decodeWindowUpdate,
  encodeErrorFrame,
  encodePing,
  isNil,
  encodePong,
  MUX_HEADER_SIZE,
  MuxKind,
  NIL_STREAM_ID
} from "../../../protocol/MuxCodec.ts"
import { TransportConnectionError, TransportProtocolError, TransportTimeoutError } from "../../../TransportError.ts"
import type { EndpointNotFound, TransportError } from "../../../TransportError.ts"
import { Waiters } from "../../../internal/Waiters.ts"
import { rejectionError } from "../request/DynamoClientConnection.ts"
import { Phase } from "../router/StreamLink.ts"
import type { CallHomeStream } from "../router/CallHomeStream.ts"
import { MuxConnection } from "../router/MuxConnection.ts"
import type { LogDebug } from "../router/StreamLink.ts"
import { SendWindow } from "../worker/SendWindow.ts"
import type { FrameOutput } from "../worker/SendWindow.ts"
import { AckDeadlines } from "./AckDeadlines.ts"
import { FullRequest, RequestState } from "./FullRequest.ts"
import { Heartbeat } from "./Heartbeat.ts"
import { pumpItems } from "./ItemPump.ts"
import type { RunFork } from "./ItemPump.ts"
import { closedError, closeError, ConnectDeadline, HelloAnswerReader, peerClosingError } from "./RouterHandshake.ts"
import { StreamIdTable } from "../../../internal/StreamIdTable.ts"
import type { ReadonlyStreamIdTable } from "../../../internal/StreamIdTable.ts"

/** Settings of one router connection. */
export interface RouterConnectionOptions {
  /** The worker's "host:port" (named in errors). */
  readonly address: string
  readonly host: string
  readonly port: number
  /** Largest frame sent or accepted, header included. */
  readonly maxMessageSize: number
  readonly heartbeatIntervalMs: number
  /** Bound on connect + the hello's answer. */
  readonly connectTimeoutMs: number
  /** Bound on a request's wait for its first frame. */
  readonly ackTimeoutMs: number
  /** Initial credit of each stream's request items, in payload bytes. */
  readonly streamWindow: number
  /** Frame bytes that may be sent before a ConnectionAck covers them. */
  readonly connectionWindow: number
  /** Runs item pumps. */
  readonly run: RunFork
  readonly logDebug: LogDebug
  /** TLS of the dial (`DYN_TCP_TLS_CA_CERT_PATH`): connected means handshake done; plaintext when absent. */
  readonly tls?: ClientTls | undefined
}

/** What a connection tells its target. */
export interface RouterConnectionEvents {
  /** The worker accepted the hello. */
  readonly onOpen: (conn: RouterConnection) => void
  /** A request left the connection (a slot is free). */
  readonly onSlotFreed: (conn: RouterConnection) => void
  /** The socket closed; `opened` says whether the worker had accepted the hello. */
  readonly onClose: (conn: RouterConnection, error: TransportError, opened: boolean) => void
}

const HELLO = 0
const OPEN = 1
const CLOSED = 2

const NO_STREAMS: ReadonlyStreamIdTable<CallHomeStream> = new StreamIdTable()
const textEncoder = new TextEncoder()
let pingNonce = 0n

/** One dialled full-mode connection; see the module comment. */
export class RouterConnection extends MuxConnection implements FrameOutput<FullRequest> {
  private phase = HELLO
  private readonly settings: RouterConnectionOptions
  private readonly events: RouterConnectionEvents
  /** Requests on this connection (sent, started), by stream id. */
  private readonly requests = new StreamIdTable<FullRequest>()
  private readonly window: SendWindow<FullRequest>
  private readonly drainWaiters = new Waiters()
  private heartbeat: Heartbeat | undefined = undefined
  /** Bounds the connect, then the hello's answer. */
  private readonly connectDeadline: ConnectDeadline
  private connected = false
  /** The sent requests waiting for their ack, and the ack timer. */
  private readonly acks: AckDeadlines
  /** The worker's answer to the hello, gathered until whole. */
  private readonly hello: HelloAnswerReader
  private peerReason: string | undefined = undefined

  /** Dials `options.address`, writes the hello, and reads the answer. */
  static dial(options: RouterConnectionOptions, events: RouterConnectionEvents): RouterConnection {
    return new RouterConnection(connect({ host: options.host, port: options.port, tls: options.tls }), options, events)
  }

  private constructor(socket: net.Socket, options: RouterConnectionOptions, events: RouterConnectionEvents) {
    super({
      socket,
      remote: options.address,
      connectionId: "",
      maxMessageSize: options.maxMessageSize,
      streams: NO_STREAMS,
      logDebug: options.logDebug,
      onClose: () => {},
      fullMode: true
    })
    this.settings = options
    this.events = events
    this.window = new SendWindow<FullRequest>(options.streamWindow, options.connectionWindow, this, MuxKind.RequestData)
    this.hello = new HelloAnswerReader(options.address)
    this.connectDeadline = new ConnectDeadline(options.connectTimeoutMs, options.address, () => this.phase === HELLO && !this.closed, (error) => this.destroy(error))
    this.acks = new AckDeadlines(options.ackTimeoutMs, () => this.closed, (req) => this.timedOut(req))
    socket.write(encodeHello())
    socket.once(readyEvent(socket), () => {
      this.connected = true
      // The hello leaves now: the answer's wait starts here. A router busy for longer than the
      // timeout right after dialling (submitting thousands of requests in one synchronous
      // stretch) must not count its own busy time against the worker, which had no chance yet.
      this.connectDeadline.arm(true)
    })
    socket.on("data", this.onHelloData)
    socket.on("drain", () => this.drainWaiters.wake())
    this.connectDeadline.arm(false)
  }

  /** True while it takes requests (connecting or open). */
  get accepting(): boolean {
    return this.phase !== CLOSED && !this.closed
  }

  /** Requests on the connection now. */
  load(): number {
    return this.requests.size
  }

  /** Closes the connection (the router is shutting down): its streams fail with `error`. */
  close(error: TransportError): void {
    this.destroy(error)
  }

  /** Sends `req`'s Request frame (and starts its item pump); the ack comes later, or its failure. */
  submit(req: FullRequest): void {
    if (!this.accepting) return req.ack(closedError(this.remote))
    if (this.requests.has(req.id)) {
      return req.ack(new TransportProtocolError({ reason: "BadPayload", transport: "tcp", target: this.remote, detail: "the stream is already open on this connection" }))
    }
    req.state = RequestState.Sent
    req.credit = this.settings.streamWindow
    req.sentAt = 0 // stamped when this tick's frames are written (`AckDeadlines`)
    // From now on the ack timeout bounds the wait for the worker's Prologue, not the call-home timeout.
    req.stream.stopCallHomeTimer()
    this.requests.set(req.id, req)
    const head = req.head!
    const message = req.message!
    req.head = undefined
    req.message = undefined
    this.writes.frame2(MuxKind.Request, req.id, head, message)
    this.window.countForeign(MUX_HEADER_SIZE + head.length + message.length)
    this.acks.sent(req)
    // Sent from the handler of this connection's last frame in its chunk (the call that ended there
    // started the next): write now, not at the end of the tick, ahead of the call's own teardown.
    if (this.decoder.quietAfterCurrentFrame()) this.writes.flush()
    if (req.items !== undefined) {
      req.stopPump = pumpItems(this.settings.run, req.items, req.codec, {
        maxMessageSize: this.settings.maxMessageSize,
        send: (payload) => {
          if (req.state !== RequestState.Done) this.window.offer(req, MuxKind.RequestData, payload)
        },
        whenWritable: (f) => this.whenWritable(req, f),
        end: () => {
          if (req.state !== RequestState.Done) this.window.offer(req, MuxKind.RequestEnd, undefined)
        },
        fail: (text) => {
          if (req.state !== RequestState.Done) this.window.offer(req, MuxKind.Error, textEncoder.encode(text))
        }
      })
    }
  }

  // ---- FrameOutput: request items let out by the window --------------------------------------

  /** Queues one frame of `req` for this tick's write (the window has counted it). */
  writeFrame(req: FullRequest, kind: MuxKind, payload: Uint8Array | undefined): void {
    if (this.closed) return
    this.writes.frame(kind, req.id, payload)
  }

  /** Every frame held for `req` went out: its pump may go on. */
  framesReleased(req: FullRequest): void {
    req.wakeWriters()
  }

  // ---- MuxConnection hooks --------------------------------------------------------------------

  /** Every frame but the window's passes here: counted, for the worker's ConnectionAck. */
  protected override out(frame: Uint8Array): void {
    this.writes.bytes(frame)
    this.window.countForeign(frame.length)
  }

  /** The hello was the greeting. */
  protected override greet(): void {}

  protected override chunkArrived(): void {
    this.heartbeat?.heard()
  }

  protected override claimable(streamId: Uint8Array): CallHomeStream | undefined {
    const req = this.requests.get(streamId)
    if (req === undefined || req.state !== RequestState.Sent) return undefined
    req.state = RequestState.Started
    this.acks.answered(req)
    req.ack(undefined)
    if (req.stream.phase === Phase.Waiting) return req.stream
    // The caller closed the stream before the worker started it: the base answers with a Reset.
    this.finish(req, true)
    return undefined
  }

  protected override released(id: Uint8Array): void {
    const req = this.requests.get(id)
    if (req !== undefined) this.finish(req, true)
  }

  protected override creditFrame(kind: MuxKind, streamId: Uint8Array, payload: Uint8Array): void {
    if (kind === MuxKind.ConnectionAck) return this.window.acknowledge(decodeConnectionAck(payload))
    const req = this.requests.get(streamId)
    if (req !== undefined && req.state !== RequestState.Done) this.window.grant(req, decodeWindowUpdate(payload))
  }

  protected override otherFrame(kind: MuxKind, streamId: Uint8Array, payload: Uint8Array): void {
    switch (kind) {
      case MuxKind.Ping:
        return this.out(encodePong(payload))
      case MuxKind.Pong:
        return
      case MuxKind.Error:
        return this.errorFrame(streamId, decodeErrorText(payload))
      default:
        return this.unexpected(`a worker sent a frame of kind ${kind}, which only a router may send`)
    }
  }

  protected override resetUnclaimed(streamId: Uint8Array, payload: Uint8Array): void {
    const req = this.requests.get(streamId)
    if (req === undefined || req.state !== RequestState.Sent) return
    const detail = `the worker reset the stream before it started: ${decodeErrorText(payload)}`
    this.refuse(req, new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: this.remote, detail }))
  }

  protected override farewell(cause: Error): void {
    if (!(cause instanceof TransportProtocolError) || this.phase !== OPEN) return
    this.out(encodeErrorFrame(NIL_STREAM_ID, `protocol error: ${cause.detail ?? cause.reason}`))
  }

  protected override closedWith(cause: Error | undefined): void {
    const opened = this.phase === OPEN
    this.phase = CLOSED
    this.connectDeadline.clear()
    this.acks.stop()
    this.heartbeat?.stop()
    this.window.clear()
    this.drainWaiters.wake()
    const error = tlsHandshakeError(this.socket, this.remote, cause) ?? closeError(cause, this.remote, this.connected, opened, this.peerReason)
    const pending = this.requests.values()
    this.requests.clear()
    for (const req of pending) {
      this.finish(req, false)
      req.ack(error)
      req.stream.abandon(error)
    }
    this.events.onClose(this, error, opened)
  }

  // ---- internals ------------------------------------------------------------------------------

  private readonly onHelloData = (chunk: Buffer): void => {
    if (this.phase !== HELLO) return
    const outcome = this.hello.read(chunk)
    if (outcome === undefined) return
    if (!outcome.complete) return this.destroy(outcome.error!)
    this.socket.off("data", this.onHelloData)
    this.connectDeadline.clear()
    if (outcome.error !== undefined) return this.destroy(outcome.error)
    this.phase = OPEN
    this.heartbeat = new Heartbeat(
      this.settings.heartbeatIntervalMs,
      "whenSilent",
      () => this.out(encodePing(++pingNonce)),
      (silentMs) => this.heartbeatMissed(silentMs)
    )
    this.events.onOpen(this)
    this.start(outcome.rest)
  }

  private heartbeatMissed(silentMs: number): void {
    const detail = `nothing heard from the worker for ${Math.round(silentMs)} ms (two heartbeat intervals of ${this.settings.heartbeatIntervalMs} ms)`
    this.out(encodeErrorFrame(NIL_STREAM_ID, `missed heartbeats: ${detail}`))
    this.destroy(new TransportTimeoutError({ reason: "HeartbeatTimeout", transport: "tcp", target: this.remote, detail }))
  }

  /** An Error frame: a refusal of a request not yet started, or (nil id) the worker's reason for closing. */
  private errorFrame(streamId: Uint8Array, text: string): void {
    if (isNil(streamId)) {
      this.peerReason = text
      this.cause ??= peerClosingError(text, this.remote)
      return
    }
    const req = this.requests.get(streamId)
    if (req !== undefined && req.state === RequestState.Sent) return this.refuse(req, rejectionError(text, this.remote, req.endpoint))
    // An Error after the stream started has no place: the stream ends as cut short.
    this.links.get(streamId)?.stream.cutShort(new Error(`the worker failed the stream: ${text}`))
  }

  /** The worker refused `req` before starting it: the ack fails with `error`, the stream too. */
  private refuse(req: FullRequest, error: TransportError | EndpointNotFound): void {
    this.finish(req, true)
    req.ack(error)
    req.stream.abandon(
      error._tag === "EndpointNotFound"
        ? new TransportConnectionError({ reason: "ServerUnavailable", transport: "tcp", target: this.remote, detail: error.detail ?? error.message })
        : error
    )
  }

  /** `req` is over on this connection: its pump stops and its slot is free. */
  private finish(req: FullRequest, notify: boolean): void {
    if (req.state === RequestState.Done) return
    req.state = RequestState.Done
    this.acks.answered(req)
    this.requests.delete(req.id)
    this.window.drop(req)
    req.held = undefined
    req.wakeWriters()
    const stop = req.stopPump
    req.stopPump = undefined
    stop?.()
    if (notify && !this.closed) this.events.onSlotFreed(this)
  }

  /** Backpressure for `req`'s pump: false while its frames are held for credit or the socket is past its mark. */
  private whenWritable(req: FullRequest, f: () => void): boolean {
    if (req.state === RequestState.Done || this.closed) return true
    if (req.held !== undefined) return req.waitWritable(f)
    this.writes.flushEarly()
    return !this.socket.writableNeedDrain || this.drainWaiters.add(f)
  }

  /** `req`'s ack is overdue (`AckDeadlines`): the stream is reset and the ack fails with "AckTimeout". */
  private timedOut(req: FullRequest): void {
    const detail = `no answer from the worker within ${this.settings.ackTimeoutMs} ms`
    this.send(MuxKind.Reset, req.id, textEncoder.encode("no ack in time"))
    const error = new TransportTimeoutError({ reason: "AckTimeout", transport: "tcp", target: this.remote, detail })
    this.finish(req, true)
    req.ack(error)
    req.stream.abandon(error)
  }
}
