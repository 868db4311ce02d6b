/**
 * The router's client of Dynamo's TCP request plane (PROTOCOL.md section 8; docs/transports.md,
 * "tcp"): requests to a worker's TCP request port, acked in order, with the responses on the
 * response plane (call-home).
 *
 * What it does:
 * - `sendCallback` (the lean form) and `send`: encode the section 2 message
 *   (`encodeRequestMessage`) in a request frame whose path is the address's wire path
 *   (`tcpWirePath`) and whose headers are Dynamo's (`x-endpoint-path`, `request-id`,
 *   `x-frontend-send-ts-ns`, plus `traceparent`, `tracestate`, `x-request-id` from the message);
 *   refuse, before sending, a frame above `maxMessageSize` ("MessageTooLarge"), a payload the codec
 *   cannot encode ("BadPayload"), a bad address, and a streamed request (`message.items`: Dynamo's
 *   framing is not bidirectional);
 * - keeps persistent, pipelined connections per worker host:port (`DynamoClientConnection`): one,
 *   and another (up to `poolSize`) only when every open one has `channelBuffer` requests awaiting
 *   their acks. With all of them full, requests wait in order for a place (their ack timeout runs);
 * - reconnects with backoff: after a failed connect, requests to that host:port fail at once with
 *   that failure for a delay that doubles per failure (50 ms up to 2 s); the next request after it
 *   tries again, and a connect that succeeds resets it;
 * - on scope close, fails every request still waiting (`ConnectionClosed`) and closes every
 *   connection.
 *
 * What it does not do: the full TCP mode (its `FullModeSender`; TcpRequestTransport.ts chooses),
 * or anything after the ack.
 */
import { Effect } from "effect"
import type { Scope } from "effect"
import { toTransportProtocolError } from "../../../internal/protocolError.ts"
import { ProtocolParseError } from "../../../protocol/ProtocolError.ts"
import { encodeRequestMessage } from "../../../protocol/RequestMessage.ts"
import { parseTcpAddress, tcpWirePath } from "../../../protocol/TcpAddress.ts"
import { encodeTcpRequestFrame } from "../../../protocol/TcpRequestFrame.ts"
import type { RequestMessage, RequestPlaneClient, RequestTarget } from "../../../RequestPlane.ts"
import { TransportConnectionError, TransportProtocolError, TransportTimeoutError } from "../../../TransportError.ts"
import type { EndpointNotFound, TransportError } from "../../../TransportError.ts"
import { DynamoClientConnection } from "./DynamoClientConnection.ts"
import type { ClientConnectionEvents, PendingAck } from "./DynamoClientConnection.ts"
import { sendFromCallback } from "../../../internal/sendFromCallback.ts"
import type { ClientTls } from "../../../internal/Tls.ts"

/** Options of the client. */
export interface DynamoRequestClientOptions {
  /** How long a request waits for its ack, in ms (`DYN_TCP_REQUEST_TIMEOUT`). */
  readonly ackTimeoutMs: number
  /** Bound on a connect, in ms (`DYN_TCP_CONNECT_TIMEOUT`). */
  readonly connectTimeoutMs: number
  /** Most connections per host:port (`DYN_TCP_POOL_SIZE`). */
  readonly poolSize: number
  /** Requests awaiting their ack on one connection before another is opened (`DYN_TCP_CHANNEL_BUFFER`). */
  readonly channelBuffer: number
  /** Frames larger than this are refused before they are sent (`DYN_TCP_MAX_MESSAGE_SIZE`). */
  readonly maxMessageSize: number
  /** TLS of every connection (`DYN_TCP_TLS_CA_CERT_PATH`, internal/Tls.ts); plaintext when absent. */
  readonly tls?: ClientTls | undefined
}

/** The client, with what tests read. */
export interface DynamoRequestClient extends RequestPlaneClient {
  readonly sendCallback: NonNullable<RequestPlaneClient["sendCallback"]>
  /** Open (or opening) connections to `hostPort`. */
  readonly connections: (hostPort: string) => number
}

/** The first delay after a failed connect, in ms; it doubles per failure. */
export const BACKOFF_BASE_MS = 50
/** The longest delay after failed connects, in ms. */
export const BACKOFF_MAX_MS = 2000

/** The transport headers copied from the message (PROTOCOL.md section 2). */
const TRACE_HEADERS = ["traceparent", "tracestate", "x-request-id"] as const

/** An address, parsed once. */
interface Route {
  readonly hostPort: string
  readonly host: string
  readonly port: number
  readonly wirePath: string
}

/** A request waiting for a place on a connection. */
interface Waiting {
  readonly frame: Uint8Array
  readonly pending: PendingAck
}

const noop = () => {}

/** "host:port" or "[v6]:port" split; undefined when it is not one. */
const splitHostPort = (hostPort: string): { host: string; port: number } | undefined => {
  const colon = hostPort.lastIndexOf(":")
  if (colon <= 0) return undefined
  const port = Number(hostPort.slice(colon + 1))
  if (!Number.isInteger(port) || port <= 0 || port > 65535) return undefined
  const raw = hostPort.slice(0, colon)
  return { host: raw.startsWith("[") && raw.endsWith("]") ? raw.slice(1, -1) : raw, port }
}

/** Builds the client; closing the scope closes every connection and fails what waits. */
export const make = (options: DynamoRequestClientOptions): Effect.Effect<DynamoRequestClient, never, Scope.Scope> =>
  Effect.gen(function*() {
    const routes = new Map<string, Route | TransportProtocolError>()
    const pools = new Map<string, HostPool>()
    let closed = false

    const routeOf = (address: string): Route | TransportProtocolError => {
      let route = routes.get(address)
      if (route !== undefined) return route
      const parsed = parseTcpAddress(address)
      if (parsed instanceof ProtocolParseError) {
        route = toTransportProtocolError(parsed, "tcp", address)
      } else {
        const hp = splitHostPort(parsed.hostPort)
        route = hp === undefined
          ? new TransportProtocolError({ reason: "BadPayload", transport: "tcp", target: address, detail: `TCP address ${JSON.stringify(address)}: "${parsed.hostPort}" is not host:port` })
          : { hostPort: parsed.hostPort, host: hp.host, port: hp.port, wirePath: tcpWirePath(parsed) }
      }
      if (routes.size > 10_000) routes.clear()
      routes.set(address, route)
      return route
    }

    const poolOf = (route: Route): HostPool => {
      let pool = pools.get(route.hostPort)
      if (pool === undefined) {
        pool = new HostPool(route, options)
        pools.set(route.hostPort, pool)
      }
      return pool
    }

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        for (const pool of pools.values()) pool.close()
        pools.clear()
      })
    )

    const sendCallback = (
      target: RequestTarget,
      message: RequestMessage,
      onAck: (error: TransportError | EndpointNotFound | undefined) => void
    ): (() => void) => {
      const address = target.address
      const failNow = (error: TransportError | EndpointNotFound) => {
        onAck(error)
        return noop
      }
      if (message.items !== undefined) {
        return failNow(
          new TransportProtocolError({
            reason: "BadPayload",
            transport: "tcp",
            target: address,
            detail: "a streamed request (items) needs the full TCP mode; Dynamo's TCP framing carries one request value (it is not bidirectional)"
          })
        )
      }
      const route = routeOf(address)
      if (route instanceof TransportProtocolError) return failNow(route)
      let body: Uint8Array
      try {
        body = encodeRequestMessage(message.control, message.payload)
      } catch (cause) {
        return failNow(
          new TransportProtocolError({ reason: "BadPayload", transport: "tcp", target: address, detail: cause instanceof Error ? cause.message : String(cause), cause })
        )
      }
      const headers: Record<string, string> = {
        "x-endpoint-path": route.wirePath,
        "request-id": message.control.id,
        "x-frontend-send-ts-ns": `${Date.now()}000000`
      }
      for (const name of TRACE_HEADERS) {
        const value = message.headers[name]
        if (value !== undefined) headers[name] = value
      }
      const frame = encodeTcpRequestFrame(route.wirePath, headers, body)
      if (frame instanceof ProtocolParseError) return failNow(toTransportProtocolError(frame, "tcp", address))
      if (frame.length > options.maxMessageSize) {
        return failNow(
          new TransportProtocolError({
            reason: "MessageTooLarge",
            transport: "tcp",
            target: address,
            detail: `request frame of ${frame.length} bytes exceeds the maximum message size of ${options.maxMessageSize} bytes`
          })
        )
      }
      if (closed) {
        return failNow(new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: address, detail: "client closed" }))
      }
      const pending: PendingAck = {
        onAck,
        address,
        endpoint: target.endpoint,
        deadline: performance.now() + options.ackTimeoutMs,
        done: false
      }
      poolOf(route).submit(frame, pending)
      return () => {
        pending.done = true
      }
    }

    const client: DynamoRequestClient = {
      transport: "tcp",
      sendCallback,
      send: sendFromCallback(sendCallback),
      connections: (hostPort) => pools.get(hostPort)?.size() ?? 0
    }
    return client
  })

/** The connections to one worker host:port, and the requests waiting for a place on them. */
class HostPool implements ClientConnectionEvents {
  private readonly route: Route
  private readonly options: DynamoRequestClientOptions
  private readonly connections: Array<DynamoClientConnection> = []
  private waiting: Array<Waiting> = []
  private waitTimer: ReturnType<typeof setTimeout> | undefined = undefined
  private failures = 0
  private retryAt = 0
  private lastFailure: TransportError | undefined = undefined
  private closed = false

  constructor(route: Route, options: DynamoRequestClientOptions) {
    this.route = route
    this.options = options
  }

  size(): number {
    return this.connections.length
  }

  /** Sends on the first connection with room, opens one more if none has, or waits. */
  submit(frame: Uint8Array, pending: PendingAck): void {
    const connection = this.withRoom()
    if (connection !== undefined) return connection.send(frame, pending)
    const now = performance.now()
    const backingOff = now < this.retryAt && this.lastFailure !== undefined
    if (backingOff && this.connections.length === 0) {
      pending.done = true
      pending.onAck(this.backingOff(pending.address, this.retryAt - now))
      return
    }
    if (!backingOff && this.connections.length < this.options.poolSize) return this.open().send(frame, pending)
    // Every connection is full (at the pool size, or no new one while the backoff lasts): wait for a place.
    this.waiting.push({ frame, pending })
    if (this.waitTimer === undefined) this.armWait(pending.deadline)
  }

  /** Fails every waiting request and closes every connection. */
  close(): void {
    this.closed = true
    clearTimeout(this.waitTimer)
    const waiting = this.waiting
    this.waiting = []
    for (const w of waiting) {
      if (w.pending.done) continue
      w.pending.done = true
      w.pending.onAck(new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: w.pending.address, detail: "client closed" }))
    }
    const closedError = new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: this.route.hostPort, detail: "client closed" })
    for (const c of [...this.connections]) c.close(closedError)
  }

  readonly onConnect = (_connection: DynamoClientConnection): void => {
    this.failures = 0
    this.retryAt = 0
    this.lastFailure = undefined
  }

  readonly onAckFreed = (connection: DynamoClientConnection): void => {
    if (this.waiting.length === 0) return
    while (this.waiting.length > 0 && connection.usable() && connection.inFlight() < this.options.channelBuffer) {
      const w = this.waiting.shift()!
      if (!w.pending.done) connection.send(w.frame, w.pending)
    }
  }

  readonly onClose = (connection: DynamoClientConnection, connectFailure: TransportError | undefined): void => {
    const i = this.connections.indexOf(connection)
    if (i >= 0) this.connections.splice(i, 1)
    if (connectFailure !== undefined) {
      this.failures++
      this.lastFailure = connectFailure
      this.retryAt = performance.now() + Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (this.failures - 1))
    }
    if (this.closed || this.waiting.length === 0) return
    // Requests that waited for a place: one more connection has room now.
    const waiting = this.waiting
    this.waiting = []
    clearTimeout(this.waitTimer)
    this.waitTimer = undefined
    for (const w of waiting) if (!w.pending.done) this.submit(w.frame, w.pending)
  }

  private withRoom(): DynamoClientConnection | undefined {
    const buffer = this.options.channelBuffer
    for (const c of this.connections) if (c.usable() && c.inFlight() < buffer) return c
    return undefined
  }

  private open(): DynamoClientConnection {
    const connection = new DynamoClientConnection(
      {
        host: this.route.host,
        port: this.route.port,
        hostPort: this.route.hostPort,
        connectTimeoutMs: this.options.connectTimeoutMs,
        ackTimeoutMs: this.options.ackTimeoutMs,
        maxMessageSize: this.options.maxMessageSize,
        tls: this.options.tls
      },
      this
    )
    this.connections.push(connection)
    return connection
  }

  /** The last connect failure, said again while the backoff lasts. */
  private backingOff(address: string, remainingMs: number): TransportError {
    const last = this.lastFailure!
    const detail = `${last.detail ?? last.reason}; not retried for another ${Math.ceil(remainingMs)} ms (backoff after ${this.failures} failed connect${this.failures === 1 ? "" : "s"})`
    return last._tag === "TransportTimeoutError"
      ? new TransportTimeoutError({ reason: last.reason, transport: "tcp", target: address, detail, cause: last })
      : new TransportConnectionError({ reason: last._tag === "TransportConnectionError" ? last.reason : "ConnectFailed", transport: "tcp", target: address, detail, cause: last })
  }

  private armWait(deadline: number): void {
    this.waitTimer = setTimeout(this.expireWaiting, Math.max(0, deadline - performance.now()))
    this.waitTimer.unref()
  }

  private readonly expireWaiting = () => {
    this.waitTimer = undefined
    const now = performance.now()
    const waiting = this.waiting
    let i = 0
    while (i < waiting.length && waiting[i]!.pending.deadline <= now) {
      const p = waiting[i]!.pending
      if (!p.done) {
        p.done = true
        p.onAck(new TransportTimeoutError({ reason: "AckTimeout", transport: "tcp", target: p.address, detail: `no ack within ${this.options.ackTimeoutMs} ms (waited for a place on a connection)` }))
      }
      i++
    }
    this.waiting = waiting.slice(i)
    if (this.waiting.length > 0 && this.waitTimer === undefined) this.armWait(this.waiting[0]!.pending.deadline)
  }
}
