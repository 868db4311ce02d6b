/**
 * The worker's end of one full-mode connection (docs/protocol.md, "The full TCP mode"), once the
 * hello was accepted: requests in, their response streams out, on the socket the router dialled.
 *
 * What it does:
 * - A Request frame: the endpoint is looked up by the path it carries, the section 2 message
 *   decoded, and the endpoint asked whether it admits one more request. A refusal goes back as
 *   the stream's Error frame (`Server unavailable: unknown endpoint ...`, `Server unavailable: <draining>`,
 *   `Server overloaded: ...`, `Server unavailable: bad request message: ...`: the texts of the
 *   Dynamo framing) and nothing else of that stream follows. Otherwise the stream's response
 *   writer (`worker/MuxStream`, with the pooled call-home's credit flow control) is opened at
 *   once and kept in the `FullModeHub` under the request id, where the TCP response plane's
 *   client finds it when the handler calls home; then the endpoint's handler is called with the
 *   `RequestMessage`. The writer's first frame, the Prologue, is the request's ack.
 * - A streamed request (request_type "many_in") gets `items` (`RequestItems.ts`): its RequestData
 *   frames as a Stream, RequestEnd its end, the router's Error frame its failure; credit goes back
 *   as WindowUpdates as the handler consumes the items (a router beyond its credit is a protocol
 *   error), and ConnectionAcks report the bytes decoded.
 * - Stop, Kill and Reset reach the stream's writer (the handler sees them as on a pooled call-home
 *   stream); a Reset or the connection's end fails the items Stream too.
 * - Heartbeats (`Heartbeat.ts`): a Ping every interval; a router heard from not at all for two
 *   intervals is dropped, with an Error frame (nil id) saying so. A Ping is answered with a Pong.
 *   Garbage and oversized frames close this connection only, after an Error frame (nil id) naming
 *   the protocol error.
 *
 * What it does not do: read the hello (`Acceptor.ts`), run handlers beyond calling them (the
 * endpoint layer does), or write frames itself (its base class batches every frame of a tick
 * into one write).
 */
import type * as net from "node:net"
import { decodeErrorText, decodeFullRequestPayload, encodeErrorFrame, encodePing, encodePong, isNil, MuxKind, NIL_STREAM_ID } from "../../../protocol/MuxCodec.ts"
import { payloadCodec } from "../../../protocol/PayloadCodec.ts"
import { isParseError } from "../../../protocol/ProtocolError.ts"
import { decodeRequestMessage } from "../../../protocol/RequestMessage.ts"
import { overloadedAck, unavailableAck } from "../../../protocol/TcpAck.ts"
import type { RequestMessage } from "../../../RequestPlane.ts"
import type { ResponseWriter } from "../../../ResponsePlane.ts"
import { TransportConnectionError, TransportProtocolError, TransportTimeoutError } from "../../../TransportError.ts"
import { toTransportProtocolError } from "../../../internal/protocolError.ts"
import { recordError } from "../../../observability/Metrics.ts"
import { DRAINING_DETAIL, unknownEndpointText } from "../request/DynamoConnection.ts"
import { FULL_MODE_CONNECTION_INFO } from "../request/FullModeHooks.ts"
import type { TcpEndpointTable } from "../request/FullModeHooks.ts"
import { owedCredit, ReceiveCredit } from "../router/ReceiveCredit.ts"
import type { OwedCredit } from "../router/ReceiveCredit.ts"
import type { LogDebug } from "../router/StreamLink.ts"
import { MuxConnection } from "../worker/MuxConnection.ts"
import type { MuxConnectionEvents } from "../worker/MuxConnection.ts"
import type { MuxStream } from "../worker/MuxStream.ts"
import { Heartbeat } from "./Heartbeat.ts"
import { RequestItems } from "./RequestItems.ts"
import type { EntryTable } from "../../../internal/EntryTable.ts"
import { StreamIdTable } from "../../../internal/StreamIdTable.ts"


/** Settings of a worker connection. */
export interface WorkerConnectionOptions {
  /** The router's "host:port", named in errors and logs. */
  readonly remote: string
  /** Largest frame sent or accepted, header included. */
  readonly maxMessageSize: number
  readonly heartbeatIntervalMs: number
  /**
   * Drop a router heard from not at all for this long (`DYN_TCP_REQUEST_CONNECTION_TIMEOUT_SECS`),
   * when that is shorter than two heartbeat intervals.
   */
  readonly idleTimeoutMs?: number | undefined
  /** Initial credit of each response stream, and of each request's items, in payload bytes. */
  readonly streamWindow: number
  /** Response frame bytes in flight before a ConnectionAck. */
  readonly connectionWindow: number
  /** How long a graceful close waits for the router's close. */
  readonly lingerMs: number
  /** The endpoints served on this port. */
  readonly endpoints: TcpEndpointTable
  /** The process's full-mode writers by request id (`FullModeHub.writers`). */
  readonly writers: EntryTable<ResponseWriter>
  readonly logDebug: LogDebug
}

/** One stream of a request the connection accepted. */
interface Entry {
  readonly requestId: string
  readonly writer: MuxStream
  readonly items: RequestItems | undefined
  /** The request item credit owed to the router (a streamed request). */
  readonly credit: OwedCredit | undefined
}

/** How long a writer nobody took (its stream ended before the handler called home) stays in the hub. */
export const UNTAKEN_WRITER_MS = 10_000

let pingNonce = 0n
let connectionCount = 0

/** One accepted full-mode connection; see the module comment. */
export class WorkerConnection extends MuxConnection {
  private readonly settings: WorkerConnectionOptions
  private readonly entries = new StreamIdTable<Entry>()
  private readonly grants: ReceiveCredit
  private readonly heartbeat: Heartbeat
  private readonly onClosed: (conn: WorkerConnection) => void
  private peerReason: string | undefined = undefined

  /** Takes `socket`, whose hello was accepted; `onClosed` runs once it has closed. */
  constructor(socket: net.Socket, options: WorkerConnectionOptions, onClosed: (conn: WorkerConnection) => void) {
    const self: { conn?: WorkerConnection } = {}
    const events: MuxConnectionEvents = {
      onUsage: () => {},
      onClose: () => self.conn?.closedWith()
    }
    super(
      socket,
      `full-${++connectionCount}`,
      {
        address: options.remote,
        frontendServerId: "",
        maxMessageSize: options.maxMessageSize,
        lingerMs: options.lingerMs,
        streamWindow: options.streamWindow,
        connectionWindow: options.connectionWindow,
        flush: "tick",
        handshake: false,
        fullMode: true
      },
      events
    )
    self.conn = this
    this.settings = options
    this.onClosed = onClosed
    this.grants = new ReceiveCredit((frame) => this.pushControl(frame, false), () => this.decoder.bytesDecoded())
    this.heartbeat = new Heartbeat(
      options.heartbeatIntervalMs,
      "always",
      () => this.pushControl(encodePing(++pingNonce)),
      (silentMs) => this.heartbeatMissed(silentMs),
      options.idleTimeoutMs
    )
  }

  /** Requests on the connection now (accepted, stream not over). */
  load(): number {
    return this.entries.size
  }

  /** Closes the connection gracefully (the worker is shutting down), telling the router why. */
  shutdown(reason: string): void {
    this.pushControl(encodeErrorFrame(NIL_STREAM_ID, reason))
    this.close()
  }

  // ---- MuxConnection hooks --------------------------------------------------------------------

  protected override chunkArrived(): void {
    this.heartbeat.heard()
  }

  protected override chunkDecoded(): void {
    this.grants.chunkDecoded()
  }

  /** This tick's frames are about to be written: credit owed to the router rides in the same write. */
  protected override beforeFlush(): void {
    this.grants?.piggyback() // (undefined only while the base class is being constructed)
  }

  protected override creditFrameDecoded(bytes: number): void {
    this.grants.creditFrameDecoded(bytes)
  }

  protected override farewell(error: TransportProtocolError): void {
    this.pushControl(encodeErrorFrame(NIL_STREAM_ID, `protocol error: ${error.detail ?? error.reason}`))
  }

  protected override otherFrame(kind: MuxKind, streamId: Uint8Array, payload: Uint8Array): void {
    switch (kind) {
      case MuxKind.Request:
        return this.request(streamId, payload)
      case MuxKind.RequestData:
        return this.requestData(streamId, payload)
      case MuxKind.RequestEnd:
        return this.entries.get(streamId)?.items?.end()
      case MuxKind.Error:
        return this.errorFrame(streamId, decodeErrorText(payload))
      case MuxKind.Ping:
        return this.pushControl(encodePong(payload))
      case MuxKind.Pong:
        return
      default:
        return super.otherFrame(kind, streamId, payload)
    }
  }

  // ---- requests -------------------------------------------------------------------------------

  private request(streamId: Uint8Array, payload: Uint8Array): void {
    if (this.entries.has(streamId) || this.streams.has(streamId)) return this.protocolError("a Request for a stream already open on this connection")
    const head = decodeFullRequestPayload(payload)
    if (isParseError(head)) return this.refuse(streamId, unavailableAck(`bad request message: ${head.detail}`))
    const served = this.settings.endpoints.lookup(head.path)
    if (served === undefined) return this.refuse(streamId, unknownEndpointText(head.path))
    if (this.settings.endpoints.draining()) return this.refuse(streamId, unavailableAck(DRAINING_DETAIL))
    const decoded = decodeRequestMessage(head.message, { maxMessageSize: this.maxMessageSize, absentConnectionInfo: FULL_MODE_CONNECTION_INFO })
    if (isParseError(decoded)) return this.refuse(streamId, unavailableAck(`bad request message: ${decoded.detail}`))
    // Admission last, as the Dynamo framing asks it: a request refused for a bad message never counts.
    const refusal = served.admit?.()
    if (refusal !== undefined) {
      return this.refuse(streamId, refusal.refuse === "overloaded" ? overloadedAck(refusal.detail) : unavailableAck(refusal.detail))
    }
    const control = decoded.control
    const requestId = control.id
    const writers = this.settings.writers
    if (writers.has(requestId)) return this.refuse(streamId, unavailableAck(`bad request message: request id ${requestId} is already in progress`))
    const codec = payloadCodec(control.payload_codec)
    const id = streamId.slice() // the frame's bytes belong to the chunk
    let entry: Entry | undefined
    const opened = this.openStream(id, codec, () => this.streamDone(id, entry))
    if (opened instanceof TransportProtocolError) return this.protocolError(opened.detail ?? "a duplicate stream id")
    const writer = opened as MuxStream
    const credit = control.request_type === "many_in" ? owedCredit(id) : undefined
    const items = credit === undefined ? undefined : new RequestItems(codec, (n) => this.grants.grant(credit, n))
    entry = { requestId, writer, items, credit }
    this.entries.set(id, entry)
    writers.set(requestId, writer)
    // The router leaves out x-request-id when it is the control's id (Sender.wireHeaders).
    const headers = head.headers
    headers["x-request-id"] ??= requestId
    const message: RequestMessage = items === undefined
      ? { control, payload: decoded.payload, headers }
      : { control, payload: decoded.payload, headers, items: items.stream }
    try {
      served.handler(message)
    } catch (cause) {
      this.settings.logDebug("full-mode handler threw", { remote: this.address, error: cause instanceof Error ? cause.message : String(cause) })
      writer.prologue(`the handler failed to start: ${cause instanceof Error ? cause.message : String(cause)}`)
    }
  }

  private requestData(streamId: Uint8Array, payload: Uint8Array): void {
    const items = this.entries.get(streamId)?.items
    if (items === undefined || items.isOver) return // refused, over, or not a streamed request: dropped
    const outstanding = items.outstanding()
    if (outstanding > 0 && outstanding + payload.length > this.settings.streamWindow) {
      return this.protocolError(`RequestData beyond the stream's credit (${outstanding} bytes unconsumed, window ${this.settings.streamWindow})`)
    }
    const bad = items.push(payload)
    if (bad !== undefined) items.fail(toTransportProtocolError(bad, "tcp", this.address), true)
  }

  private errorFrame(streamId: Uint8Array, text: string): void {
    if (isNil(streamId)) {
      this.peerReason = text
      return
    }
    const items = this.entries.get(streamId)?.items
    items?.fail(new TransportConnectionError({ reason: "StreamEndedEarly", transport: "tcp", target: this.address, detail: `the router's request stream failed: ${text}` }))
  }

  /** Refuses a request before it starts: its Error frame, nothing more of that stream. */
  private refuse(streamId: Uint8Array, text: string): void {
    recordError("tcp", text.includes("bad request message") ? "protocol" : "connection", "server")
    this.pushControl(encodeErrorFrame(streamId, text))
  }

  private protocolError(detail: string): void {
    recordError("tcp", "protocol", "server")
    this.protocolFailure(new TransportProtocolError({ reason: "UnexpectedMessage", transport: "tcp", target: this.address, detail }))
  }

  /** The stream of `id` is over (ended, reset, or the connection gone). */
  private streamDone(id: Uint8Array, entry: Entry | undefined): void {
    if (entry === undefined) return
    this.entries.delete(id)
    if (entry.credit !== undefined) this.grants.forget(entry.credit)
    const error = this.closeError()
    entry.items?.fail(
      error ?? new TransportConnectionError({ reason: "StreamEndedEarly", transport: "tcp", target: this.address, detail: "the request's stream is over (its response ended, or the router reset it)" }),
      true
    )
    const writers = this.settings.writers
    if (writers.get(entry.requestId) !== entry.writer) return
    // Nobody called home yet: the handler may still, and must then see the stream as gone.
    const timer = setTimeout(() => {
      if (writers.get(entry.requestId) === entry.writer) writers.delete(entry.requestId)
    }, UNTAKEN_WRITER_MS)
    timer.unref?.()
  }

  private heartbeatMissed(silentMs: number): void {
    const interval = this.settings.heartbeatIntervalMs
    const idle = this.settings.idleTimeoutMs
    const byIdle = idle !== undefined && idle < 2 * interval
    const detail = `nothing heard from the router for ${Math.round(silentMs)} ms (${
      byIdle ? `the connection timeout of ${idle} ms` : `two heartbeat intervals of ${interval} ms`
    })`
    this.pushControl(encodeErrorFrame(NIL_STREAM_ID, `${byIdle ? "idle timeout" : "missed heartbeats"}: ${detail}`))
    recordError("tcp", "timeout", "server")
    this.destroy(new TransportTimeoutError({ reason: "HeartbeatTimeout", transport: "tcp", target: this.address, detail }))
  }

  /** The socket closed (its streams were told already, with the connection's error). */
  private closedWith(): void {
    this.heartbeat.stop()
    this.grants.stop()
    if (this.peerReason !== undefined) this.settings.logDebug("router closed the full-mode connection", { remote: this.address, reason: this.peerReason })
    this.onClosed(this)
  }
}
