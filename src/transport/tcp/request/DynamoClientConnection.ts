/**
 * One router-side connection of Dynamo's TCP request framing (PROTOCOL.md section 8): request
 * frames pipelined out, acks matched in order (FIFO: there is no request id on the wire).
 *
 * What it does:
 * - connects (TCP_NODELAY) within `connectTimeoutMs`; frames sent while connecting wait in the
 *   socket and leave on connect;
 * - writes the frames of one tick in one socket write (`WriteBatcher`);
 * - keeps the requests awaiting an ack in a FIFO queue and hands each ack, decoded synchronously in
 *   the 'data' handler, to the oldest one: empty is accepted; a rejection text becomes a typed error
 *   (`rejectionError`);
 * - times out acks: one timer per connection, armed for the oldest waiting request's deadline, fails
 *   every request past its deadline with `AckTimeout`. A timed-out (or cancelled) request keeps its
 *   place in the queue, so its late ack is consumed and dropped and the acks after it still match;
 * - when the connection fails or closes, fails every request still waiting, typed: `ConnectFailed`
 *   or `ConnectTimeout` before it connected, `ConnectionClosed` after; an ack that breaks the framing
 *   or that no request awaits closes it with a `TransportProtocolError`. Nothing waits forever.
 *
 * With `tls` (`DYN_TCP_TLS_CA_CERT_PATH`) it connects with TLS (internal/Tls.ts): it counts as
 * connected once the handshake completed, within the same connect timeout, and a failed handshake
 * is TransportConnectionError "TlsHandshakeFailed" naming the worker.
 *
 * What it does not do: choose connections, open more of them or back off (DynamoRequestClient.ts),
 * or encode requests.
 */
import type * as net from "node:net"
import { connect, handshakePending, readyEvent, tlsHandshakeError } from "../../../internal/Tls.ts"
import type { ClientTls } from "../../../internal/Tls.ts"
import { toTransportProtocolError } from "../../../internal/protocolError.ts"
import { ackRejectionError } from "../../../internal/ackRejection.ts"
import { WriteBatcher } from "../../../internal/WriteBatcher.ts"
import { makeTcpAckDecoder } from "../../../protocol/TcpAck.ts"
import type { TcpAckDecoder } from "../../../protocol/TcpAck.ts"
import { EndpointNotFound, TransportConnectionError, TransportProtocolError, TransportTimeoutError } from "../../../TransportError.ts"
import type { TransportError } from "../../../TransportError.ts"

/** A request awaiting its ack. */
export interface PendingAck {
  /** Called once: undefined at an empty ack, else the failure. */
  readonly onAck: (error: TransportError | EndpointNotFound | undefined) => void
  /** The instance's address, named in errors. */
  readonly address: string
  /** The endpoint's name, for `EndpointNotFound`. */
  readonly endpoint: string
  /** `performance.now()` after which the ack is late. */
  readonly deadline: number
  /** Set once `onAck` was called, or the caller cancelled: a late ack is then dropped. */
  done: boolean
}

/** Where and how a connection connects. */
export interface ClientConnectionOptions {
  readonly host: string
  readonly port: number
  /** "host:port", named in connection-level errors. */
  readonly hostPort: string
  readonly connectTimeoutMs: number
  readonly ackTimeoutMs: number
  readonly maxMessageSize: number
  /** TLS, verifying the worker (`DYN_TCP_TLS_CA_CERT_PATH`); plaintext when absent. */
  readonly tls?: ClientTls | undefined
}

/** What a connection tells its pool. */
export interface ClientConnectionEvents {
  /** The connect succeeded. */
  readonly onConnect: (connection: DynamoClientConnection) => void
  /** An ack freed a place (the pool may place waiting requests). */
  readonly onAckFreed: (connection: DynamoClientConnection) => void
  /** The connection is gone; `connectFailure` when it never connected. */
  readonly onClose: (connection: DynamoClientConnection, connectFailure: TransportError | undefined) => void
}

/** The typed failure of a rejection ack (see `internal/ackRejection.ts`). */
export const rejectionError = (text: string, address: string, endpoint: string): TransportError | EndpointNotFound =>
  ackRejectionError("tcp", text, address, endpoint)

const safely = (pending: PendingAck, error: TransportError | EndpointNotFound | undefined) => {
  pending.done = true
  try {
    pending.onAck(error)
  } catch {
    // a caller's callback must not break the connection
  }
}

/** A pipelined connection; see the module comment. */
export class DynamoClientConnection {
  private readonly options: ClientConnectionOptions
  private readonly events: ClientConnectionEvents
  private readonly socket: net.Socket
  private readonly batcher: WriteBatcher
  private readonly decoder: TcpAckDecoder
  private queue: Array<PendingAck | undefined> = []
  private head = 0
  /** Index of the first request whose deadline the timer has not passed yet. */
  private scan = 0
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  private expiring = false
  private connectTimer: ReturnType<typeof setTimeout> | undefined
  private state: "connecting" | "open" | "closed" = "connecting"
  /** Why it is closing, when it knows better than the socket. */
  private failure: TransportError | undefined = undefined
  private lastSocketError: Error | undefined = undefined

  constructor(options: ClientConnectionOptions, events: ClientConnectionEvents) {
    this.options = options
    this.events = events
    this.decoder = makeTcpAckDecoder({ maxMessageSize: options.maxMessageSize })
    const socket = connect({ host: options.host, port: options.port, tls: options.tls })
    this.socket = socket
    this.batcher = new WriteBatcher((chunk) => {
      if (!socket.destroyed) socket.write(chunk)
    })
    this.connectTimer = setTimeout(() => {
      this.failure = new TransportTimeoutError({
        reason: "ConnectTimeout",
        transport: "tcp",
        target: options.hostPort,
        detail: `no connection within ${options.connectTimeoutMs} ms${handshakePending(socket)}`
      })
      socket.destroy()
    }, options.connectTimeoutMs)
    socket.once(readyEvent(socket), this.onConnected)
    socket.on("data", this.onData)
    socket.on("error", (cause) => {
      this.lastSocketError = cause
    })
    socket.once("close", this.onClosed)
  }

  /** Requests sent and not yet acked (timed-out and cancelled ones included: their acks still come). */
  inFlight(): number {
    return this.queue.length - this.head
  }

  /** False once the connection is closing or closed. */
  usable(): boolean {
    return this.state !== "closed" && this.failure === undefined && !this.socket.destroyed
  }

  /** Sends one encoded frame; `pending` gets its ack, a timeout or the connection's failure. */
  send(frame: Uint8Array, pending: PendingAck): void {
    this.queue.push(pending)
    this.batcher.push(frame)
    if (this.timer === undefined && !this.expiring) this.arm(pending.deadline)
  }

  /** Closes the connection; every waiting request fails with `error`. */
  close(error: TransportError): void {
    if (this.state === "closed") return
    this.failure ??= error
    this.socket.destroy()
  }

  private readonly onConnected = () => {
    clearTimeout(this.connectTimer)
    this.connectTimer = undefined
    this.state = "open"
    this.socket.setNoDelay(true)
    this.events.onConnect(this)
  }

  private arm(deadline: number): void {
    this.timer = setTimeout(this.onTimer, Math.max(0, deadline - performance.now()))
    this.timer.unref()
  }

  private readonly onTimer = () => {
    this.timer = undefined
    // Callbacks below may send: the timer is re-armed once, after the loop, for the oldest deadline.
    this.expiring = true
    const now = performance.now()
    const queue = this.queue
    let i = Math.max(this.scan, this.head)
    while (i < queue.length) {
      const p = queue[i]!
      if (p.deadline > now) break
      if (!p.done) {
        safely(p, new TransportTimeoutError({ reason: "AckTimeout", transport: "tcp", target: p.address, detail: `no ack within ${this.options.ackTimeoutMs} ms` }))
      }
      i++
    }
    this.scan = i
    this.expiring = false
    if (i < this.queue.length && this.state !== "closed") this.arm(this.queue[i]!.deadline)
  }

  private readonly onAck = (text: string) => {
    const queue = this.queue
    if (this.head >= queue.length) {
      this.failure = new TransportProtocolError({
        reason: "UnexpectedMessage",
        transport: "tcp",
        target: this.options.hostPort,
        detail: `an ack that no request awaits: ${JSON.stringify(text.slice(0, 200))}`
      })
      this.decoder.stop()
      this.socket.destroy()
      return
    }
    const p = queue[this.head]!
    queue[this.head] = undefined
    this.head++
    if (this.head === queue.length) {
      this.queue = []
      this.head = 0
      this.scan = 0
    } else if (this.head >= 1024 && this.head * 2 >= queue.length) {
      this.queue = queue.slice(this.head)
      this.scan = Math.max(0, this.scan - this.head)
      this.head = 0
    }
    if (!p.done) safely(p, text.length === 0 ? undefined : rejectionError(text, p.address, p.endpoint))
    this.events.onAckFreed(this)
  }

  private readonly onData = (chunk: Buffer) => {
    if (this.state === "closed") return
    const error = this.decoder.decode(chunk, this.onAck)
    if (error !== undefined && this.failure === undefined) {
      this.failure = toTransportProtocolError(error, "tcp", this.options.hostPort)
      this.socket.destroy()
    }
  }

  private readonly onClosed = () => {
    const wasConnecting = this.state === "connecting"
    this.state = "closed"
    clearTimeout(this.connectTimer)
    clearTimeout(this.timer)
    this.timer = undefined
    this.batcher.clear()
    const cause = this.lastSocketError
    let connectFailure: TransportError | undefined
    let error: TransportError
    if (this.failure !== undefined) {
      error = this.failure
      if (wasConnecting) connectFailure = error
    } else if (wasConnecting) {
      connectFailure = tlsHandshakeError(this.socket, this.options.hostPort, cause) ?? new TransportConnectionError({
        reason: "ConnectFailed",
        transport: "tcp",
        target: this.options.hostPort,
        detail: cause?.message ?? "connection closed before it was established",
        cause
      })
      error = connectFailure
    } else {
      error = new TransportConnectionError({
        reason: "ConnectionClosed",
        transport: "tcp",
        target: this.options.hostPort,
        detail: `the connection to ${this.options.hostPort} closed before the ack${cause === undefined ? "" : `: ${cause.message}`}`,
        cause
      })
    }
    const queue = this.queue
    this.queue = []
    for (let i = this.head; i < queue.length; i++) {
      const p = queue[i]!
      if (!p.done) safely(p, error)
    }
    this.head = 0
    this.scan = 0
    this.events.onClose(this, connectFailure)
  }
}
