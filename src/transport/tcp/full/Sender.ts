/**
 * The router's side of the full mode as the TCP request plane uses it (`FullModeSender`):
 * persistent connections per worker host:port, and `sendCallback` over them.
 *
 * What it does:
 * - `sendCallback(target, message, onAck)` takes the response stream the Endpoint layer handed
 *   over (`message.responseStream`; without one, the stream the request's ConnectionInfo names
 *   by subject or stream_id), which must be waiting in the TCP response plane's table (the
 *   process's `FullModeHub`), encodes the Request frame (stream id = the stream's subject; the
 *   endpoint path the target's address gives, `tcpWirePath`; a fixed `connection_info`,
 *   `FULL_MODE_CONNECTION_INFO`), and submits it on a connection to the
 *   address's host:port. The ack arrives through `onAck` (the worker's Prologue, or its typed
 *   refusal); the response frames feed the stream. A request that cannot be sent (a bad address,
 *   no such stream, an encoding failure, a frame above the maximum message size) fails at once.
 *   The returned function cancels the wait for the ack (a request still queued is then dropped).
 * - Per host:port: requests go to the first connection with fewer than `maxStreamsPerConnection`
 *   streams (`DYN_TCP_CHANNEL_BUFFER`); when every one is full a new one is dialled, up to
 *   `maxConnectionsPerTarget` (`DYN_TCP_POOL_SIZE`); beyond that, requests wait in order for a
 *   free slot, each at most the ack timeout from when it first queued (then `AckTimeout`).
 *   A connection lost is replaced on the next request. Failed connects back off
 *   (50 ms doubling to 2 s): while backing off, requests fail at once with the last connect
 *   error, naming when the next attempt is.
 * - `closeAll` closes every connection (streams fail "ConnectionClosed").
 *
 * What it does not do: speak the wire (`RouterConnection`), open response streams (the TCP
 * response plane does), or retry a request.
 */
import { Effect } from "effect"
import type { Stream } from "effect"
import { MUX_HEADER_SIZE } from "../../../protocol/MuxCodec.ts"
import { payloadCodec } from "../../../protocol/PayloadCodec.ts"
import { isParseError } from "../../../protocol/ProtocolError.ts"
import { encodeRequestMessage } from "../../../protocol/RequestMessage.ts"
import { parseTcpAddress, tcpWirePath } from "../../../protocol/TcpAddress.ts"
import { encodeTcpRequestHead } from "../../../protocol/TcpRequestFrame.ts"
import type { ConnectionInfo } from "../../../ConnectionInfo.ts"
import type { RequestMessage, RequestTarget } from "../../../RequestPlane.ts"
import { TransportConnectionError, TransportProtocolError, TransportTimeoutError } from "../../../TransportError.ts"
import type { TransportError } from "../../../TransportError.ts"
import { toTransportProtocolError } from "../../../internal/protocolError.ts"
import { FULL_MODE_CONNECTION_INFO } from "../request/FullModeHooks.ts"
import type { FullModeSender } from "../request/FullModeHooks.ts"
import { Phase } from "../router/StreamLink.ts"
import type { CallHomeStream } from "../router/CallHomeStream.ts"
import type { LogDebug } from "../router/StreamLink.ts"
import { parseAddress } from "../worker/CallHomeClient.ts"
import { FullRequest, RequestState } from "./FullRequest.ts"
import type { AckError } from "./FullRequest.ts"
import type { RunFork } from "./ItemPump.ts"
import { RouterConnection } from "./RouterConnection.ts"
import type { RouterConnectionEvents, RouterConnectionOptions } from "./RouterConnection.ts"
import type { ClientTls } from "../../../internal/Tls.ts"
import { valueOfSubject } from "../../../internal/StreamIdTable.ts"
import type { ReadonlyStreamIdTable } from "../../../internal/StreamIdTable.ts"

/** First delay after a failed connect. */
export const BACKOFF_BASE_MS = 50
/** Longest delay between connect attempts. */
export const BACKOFF_MAX_MS = 2000

/** Options of the sender. */
export interface SenderOptions {
  /** Largest frame sent or accepted, header included (`DYN_TCP_MAX_MESSAGE_SIZE`). */
  readonly maxMessageSize: number
  /** Ping interval; two silent intervals kill a connection (`DYN_TCP_REQUEST_HEARTBEAT_INTERVAL_SECS`). */
  readonly heartbeatIntervalMs: number
  /** Bound on connect + hello answer (`DYN_TCP_CONNECT_TIMEOUT`). */
  readonly connectTimeoutMs: number
  /** Bound on a request's wait for its ack (`DYN_TCP_REQUEST_TIMEOUT`). */
  readonly ackTimeoutMs: number
  /** Streams per connection before another is dialled (`DYN_TCP_CHANNEL_BUFFER`). */
  readonly maxStreamsPerConnection: number
  /** Connections per worker host:port (`DYN_TCP_POOL_SIZE`). */
  readonly maxConnectionsPerTarget: number
  /** Initial credit of each stream's request items (default 256 KiB). */
  readonly streamWindow: number
  /** Request frame bytes in flight before a ConnectionAck (default 256 KiB). */
  readonly connectionWindow: number
  /** The TCP response plane's open streams, by stream id (`FullModeHub.streams`). */
  readonly streams: ReadonlyStreamIdTable<CallHomeStream>
  /** Runs the item pumps of streamed requests (default: `Effect.runFork`). */
  readonly run?: RunFork | undefined
  readonly logDebug?: LogDebug | undefined
  /** TLS of every dial (`DYN_TCP_TLS_CA_CERT_PATH`); plaintext when absent. */
  readonly tls?: ClientTls | undefined
}

/** The sender, plus what its owner and tests need. */
export interface Sender extends FullModeSender {
  /** Closes every connection; their streams fail with TransportConnectionError "ConnectionClosed". */
  readonly closeAll: () => void
  /** The connections to `hostPort` ("host:port"), or to every worker. */
  readonly connections: (hostPort?: string) => ReadonlyArray<RouterConnection>
}

interface Route {
  readonly target: Target
  readonly wirePath: string
}

const ROUTE_CACHE_MAX = 4096
const noop = () => {}

/**
 * The response stream a request's responses feed: the Endpoint layer hands it over with the
 * message (`responseStream`), else the one its ConnectionInfo names; undefined unless it is a
 * stream of `streams` (the TCP response plane's table).
 */
const responseStreamOf = (message: RequestMessage, streams: ReadonlyStreamIdTable<CallHomeStream>): CallHomeStream | undefined => {
  const given = message.responseStream as Partial<CallHomeStream> | undefined
  if (given !== undefined) {
    const id = given.id
    const stream = id instanceof Uint8Array && id.length === 16 ? streams.get(id) : undefined
    return stream === given ? stream : undefined
  }
  const subject = streamSubjectOf(message.control.connection_info)
  return subject === undefined ? undefined : valueOfSubject(streams, subject)
}

const NO_HEADERS: Readonly<Record<string, string>> = {}

/**
 * The headers a full-mode Request carries: `x-request-id` is left out when it is the control
 * header's id (the worker gives it back from there), so the common request has no headers.
 */
export const wireHeaders = (headers: Readonly<Record<string, string>>, requestId: string): Readonly<Record<string, string>> => {
  if (headers["x-request-id"] !== requestId) return headers
  for (const k in headers) {
    if (k !== "x-request-id") {
      const { "x-request-id": _, ...rest } = headers
      return rest
    }
  }
  return NO_HEADERS
}

/** The subject (tcp_server) or stream_id (tcp_response_mux_v1) of a call-home ConnectionInfo. */
export const streamSubjectOf = (info: ConnectionInfo): string | undefined => {
  const text = info.info
  // Our own server writes these keys; look them up without parsing the whole text first.
  for (const key of ["\"subject\":\"", "\"stream_id\":\""]) {
    const at = text.indexOf(key)
    if (at >= 0) {
      const start = at + key.length
      if (text.charCodeAt(start + 36) === 34) return text.slice(start, start + 36)
    }
  }
  try {
    const parsed = JSON.parse(text) as { subject?: unknown; stream_id?: unknown }
    const value = parsed?.subject ?? parsed?.stream_id
    return typeof value === "string" ? value : undefined
  } catch {
    return undefined
  }
}

/** One worker host:port: its connections and the requests waiting for a slot. */
class Target {
  /** "host:port". */
  readonly address: string
  readonly conns: Array<RouterConnection> = []
  private waiting: Array<FullRequest> = []
  /** The timer for the oldest waiting request's deadline. */
  private waitTimer: ReturnType<typeof setTimeout> | undefined = undefined
  private failures = 0
  private retryAt = 0
  private lastError: TransportError | undefined = undefined
  private readonly options: RouterConnectionOptions
  private readonly sender: SenderOptions
  private readonly events: RouterConnectionEvents

  constructor(options: RouterConnectionOptions, sender: SenderOptions) {
    this.address = options.address
    this.options = options
    this.sender = sender
    this.events = {
      onOpen: () => {
        this.failures = 0
        this.lastError = undefined
      },
      onSlotFreed: (conn) => this.slotFreed(conn),
      onClose: (conn, error, opened) => this.closed(conn, error, opened)
    }
  }

  submit(req: FullRequest): void {
    const max = this.sender.maxStreamsPerConnection
    const conns = this.conns
    for (let i = 0; i < conns.length; i++) {
      const c = conns[i]!
      if (c.accepting && c.load() < max) return c.submit(req)
    }
    if (conns.length < this.sender.maxConnectionsPerTarget) {
      const wait = this.retryAt - performance.now()
      if (wait > 0 && this.lastError !== undefined) {
        const e = this.lastError
        return req.ack(
          new TransportConnectionError({
            reason: "ConnectFailed",
            transport: "tcp",
            target: this.options.address,
            detail: `${e.detail ?? e.reason} (backing off: next connect attempt in ${Math.ceil(wait)} ms)`,
            cause: e
          })
        )
      }
      const conn = RouterConnection.dial(this.options, this.events)
      conns.push(conn)
      return conn.submit(req)
    }
    // A request queued again (its connection was lost before it left) keeps its first time.
    if (req.queuedAt === 0) req.queuedAt = performance.now()
    this.waiting.push(req)
    this.armWaitTimer()
  }

  closeAll(error: TransportError): void {
    for (const c of [...this.conns]) c.close(error)
    const waiting = this.takeWaiting()
    for (const req of waiting) req.ack(error)
  }

  private slotFreed(conn: RouterConnection): void {
    if (this.waiting.length === 0) return
    const max = this.sender.maxStreamsPerConnection
    while (this.waiting.length > 0 && conn.accepting && conn.load() < max) {
      const req = this.waiting.shift()!
      if (req.state === RequestState.Queued && !req.ackDone) conn.submit(req)
    }
  }

  private takeWaiting(): Array<FullRequest> {
    const waiting = this.waiting
    this.waiting = []
    clearTimeout(this.waitTimer)
    this.waitTimer = undefined
    return waiting
  }

  /**
   * Bounds a request's wait for a stream slot by the ack timeout (the wait is part of its wait for
   * the ack; a stream the full mode carries has no call-home timeout). One timer, for the oldest.
   */
  private armWaitTimer(): void {
    if (this.waitTimer !== undefined || this.waiting.length === 0) return
    const due = this.waiting[0]!.queuedAt + this.sender.ackTimeoutMs - performance.now()
    this.waitTimer = setTimeout(this.expireWaiting, Math.max(1, Math.ceil(due)))
    this.waitTimer.unref?.()
  }

  private readonly expireWaiting = (): void => {
    this.waitTimer = undefined
    const now = performance.now()
    const limit = this.sender.ackTimeoutMs
    while (this.waiting.length > 0 && this.waiting[0]!.queuedAt + limit <= now) {
      const req = this.waiting.shift()!
      if (req.state !== RequestState.Queued || req.ackDone) continue
      const error = new TransportTimeoutError({
        reason: "AckTimeout",
        transport: "tcp",
        target: this.address,
        detail: `no stream slot on ${this.address} within ${limit} ms: its ${this.conns.length} connection(s) each carry ${this.sender.maxStreamsPerConnection} streams (DYN_TCP_CHANNEL_BUFFER, DYN_TCP_POOL_SIZE)`
      })
      req.ack(error)
      req.stream.abandon(error)
    }
    this.armWaitTimer()
  }

  private closed(conn: RouterConnection, error: TransportError, opened: boolean): void {
    const i = this.conns.indexOf(conn)
    if (i >= 0) this.conns.splice(i, 1)
    if (!opened) {
      this.failures++
      this.lastError = error
      this.retryAt = performance.now() + Math.min(BACKOFF_BASE_MS * 2 ** (this.failures - 1), BACKOFF_MAX_MS)
    }
    if (this.waiting.length === 0) return
    const waiting = this.takeWaiting()
    for (const req of waiting) {
      if (req.state !== RequestState.Queued || req.ackDone) continue
      if (opened) this.submit(req)
      else req.ack(error)
    }
  }
}

/** Builds the sender; see the module comment. */
export const makeSender = (options: SenderOptions): Sender => {
  const run: RunFork = options.run ?? ((effect) => Effect.runFork(effect))
  const logDebug: LogDebug = options.logDebug ?? noop
  const targets = new Map<string, Target>()
  const routes = new Map<string, Route | TransportProtocolError>()

  const routeOf = (address: string): Route | TransportProtocolError => {
    const known = routes.get(address)
    if (known !== undefined) return known
    const parsed = parseTcpAddress(address)
    let route: Route | TransportProtocolError
    if (isParseError(parsed)) route = toTransportProtocolError(parsed, "tcp", address)
    else {
      const hp = parseAddress(parsed.hostPort)
      if (hp === undefined) {
        route = new TransportProtocolError({ reason: "MalformedFrame", transport: "tcp", target: address, detail: `${JSON.stringify(parsed.hostPort)} is not host:port` })
      } else {
        let target = targets.get(parsed.hostPort)
        if (target === undefined) {
          target = new Target(
            {
              address: parsed.hostPort,
              host: hp.host,
              port: hp.port,
              maxMessageSize: options.maxMessageSize,
              heartbeatIntervalMs: options.heartbeatIntervalMs,
              connectTimeoutMs: options.connectTimeoutMs,
              ackTimeoutMs: options.ackTimeoutMs,
              streamWindow: options.streamWindow,
              connectionWindow: options.connectionWindow,
              run,
              logDebug,
              tls: options.tls
            },
            options
          )
          targets.set(parsed.hostPort, target)
        }
        route = { target, wirePath: tcpWirePath(parsed) }
      }
    }
    if (routes.size >= ROUTE_CACHE_MAX) routes.clear()
    routes.set(address, route)
    return route
  }

  const sendCallback = (target: RequestTarget, message: RequestMessage, onAck: (error: AckError | undefined) => void): (() => void) => {
    const route = routeOf(target.address)
    if (route instanceof TransportProtocolError) {
      onAck(route)
      return noop
    }
    const where = route.target.address
    const fail = (reason: TransportProtocolError["reason"], detail: string, stream?: CallHomeStream) => {
      const error = new TransportProtocolError({ reason, transport: "tcp", target: where, detail })
      onAck(error)
      stream?.abandon(error)
      return noop
    }
    const stream = responseStreamOf(message, options.streams)
    if (stream === undefined || stream.phase !== Phase.Waiting) {
      return fail(
        "BadHandshake",
        `the full TCP mode carries the response on its own connection, for a stream of this router's TCP response plane; the request's ConnectionInfo (${message.control.connection_info.transport}) names none waiting`
      )
    }
    let body: Uint8Array
    try {
      // A fixed connection_info, never a call-home address: the responses come back on this connection.
      body = encodeRequestMessage(message.control, message.payload, { connectionInfo: FULL_MODE_CONNECTION_INFO })
    } catch (cause) {
      return fail("BadPayload", `the request cannot be encoded: ${cause instanceof Error ? cause.message : String(cause)}`, stream)
    }
    // The Request payload is the Dynamo request head then the message (MuxCodec.encodeFullRequestPayload),
    // queued as two parts: the connection writes them into its batch without a frame of their own.
    const head = encodeTcpRequestHead(route.wirePath, wireHeaders(message.headers, message.control.id))
    if (isParseError(head)) return fail(head.reason === "MessageTooLarge" ? "MessageTooLarge" : "MalformedFrame", head.detail, stream)
    const size = MUX_HEADER_SIZE + head.length + body.length
    if (size > options.maxMessageSize) {
      return fail("MessageTooLarge", `a ${size}-byte Request frame exceeds the maximum message size of ${options.maxMessageSize} bytes`, stream)
    }
    const items: Stream.Stream<unknown, unknown> | undefined = message.items
    const req = new FullRequest(stream.id, stream, head, body, target.endpoint, items, payloadCodec(message.control.payload_codec), onAck)
    route.target.submit(req)
    return () => req.cancelAck()
  }

  return {
    sendCallback,
    closeAll: () => {
      const error = new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: "full mode", detail: "the router's full-mode connections were closed" })
      for (const target of targets.values()) target.closeAll(error)
      targets.clear()
      routes.clear()
    },
    connections: (hostPort) => {
      if (hostPort !== undefined) return [...(targets.get(hostPort)?.conns ?? [])]
      return [...targets.values()].flatMap((t) => t.conns)
    }
  }
}
