/**
 * One worker-side connection that speaks Dynamo's TCP request framing (PROTOCOL.md section 8;
 * docs/transports.md, "tcp"): requests pipelined by a router, acked in arrival order.
 *
 * What it does, synchronously in the socket's 'data' handler and without an Effect per frame:
 * - decodes request frames (`makeTcpRequestDecoder`), in any chunking;
 * - for each, in order: refuses it while the worker is draining (`Server unavailable: ...`), when
 *   no endpoint is served under its path (`Server unavailable: unknown endpoint <path>`, Dynamo's
 *   text), when the endpoint's `admit` says no (`Server overloaded: ...` / `Server unavailable:
 *   ...`), or when its payload is not a section 2 request message (`Server unavailable: bad
 *   request message: ...`); else it queues the empty ack and calls the endpoint's handler;
 * - writes the acks of one tick in one socket write (`WriteBatcher`), so they leave in request
 *   order, and pauses reading while the router does not read its acks;
 * - on bytes that break the framing (garbage, an oversized frame), writes one last rejection ack
 *   that says why, ends the connection and reports it (`onProtocolError`): only this connection
 *   closes.
 *
 * Every rejection text starts with one of Dynamo's two prefixes, because Dynamo's router reads any
 * other non-empty ack as an acceptance (and would wait for a stream that never comes).
 *
 * What it does not do: accept or count connections, time out idle ones (TcpRequestServer.ts), run
 * handlers (the endpoint layer does, after the ack), or carry responses (the response plane).
 */
import type * as net from "node:net"
import { ProtocolParseError } from "../../../protocol/ProtocolError.ts"
import { decodeRequestMessage } from "../../../protocol/RequestMessage.ts"
import { ACCEPTED_ACK, encodeTcpAck, overloadedAck, unavailableAck } from "../../../protocol/TcpAck.ts"
import { makeTcpRequestDecoder } from "../../../protocol/TcpRequestFrame.ts"
import { recordError } from "../../../observability/Metrics.ts"
import type { ErrorType } from "../../../observability/Metrics.ts"
import type { TcpRequestDecoder } from "../../../protocol/TcpRequestFrame.ts"
import type { RequestHeaders } from "../../../RequestPlane.ts"
import { WriteBatcher } from "../../../internal/WriteBatcher.ts"
import type { TcpEndpointTable } from "./FullModeHooks.ts"

/** What a connection needs from its server. */
export interface DynamoConnectionOptions {
  readonly maxMessageSize: number
  readonly endpoints: TcpEndpointTable
  /** Called once when the framing breaks, with the problem; the connection is already ending. */
  readonly onProtocolError: (error: ProtocolParseError) => void
  /**
   * A request frame begun must arrive whole within this long, however its bytes trickle in (a
   * slowloris client); past it the connection is destroyed after `onFrameTimeout`. Absent: no bound.
   */
  readonly frameTimeoutMs?: number | undefined
  /** Called once when `frameTimeoutMs` cut the connection. */
  readonly onFrameTimeout?: (() => void) | undefined
}

/** The rejection while the worker drains. */
export const DRAINING_DETAIL = "the worker is shutting down"

/** The rejection text of a path no endpoint is served under (Dynamo's). */
export const unknownEndpointText = (path: string): string => unavailableAck(`unknown endpoint ${path}`)

/**
 * The headers a handler sees: the frame's headers, with Dynamo's `request-id` also given as
 * `x-request-id` when that is absent (the name the other request planes use).
 */
const handlerHeaders = (headers: Record<string, string>): RequestHeaders => {
  const id = headers["request-id"]
  if (id !== undefined && headers["x-request-id"] === undefined) headers["x-request-id"] = id
  return headers
}

/** A Dynamo-framed connection; see the module comment. */
export class DynamoConnection {
  private readonly socket: net.Socket
  private readonly options: DynamoConnectionOptions
  private readonly decoder: TcpRequestDecoder
  private readonly batcher: WriteBatcher
  private closing = false
  private paused = false
  /** Armed while a partial frame is buffered (`frameTimeoutMs`). */
  private frameDeadline: ReturnType<typeof setTimeout> | undefined

  constructor(socket: net.Socket, options: DynamoConnectionOptions) {
    this.socket = socket
    this.options = options
    this.decoder = makeTcpRequestDecoder({ maxMessageSize: options.maxMessageSize })
    this.batcher = new WriteBatcher(this.write)
    socket.on("data", this.onData)
    socket.once("close", () => {
      this.closing = true
      this.batcher.clear()
      clearTimeout(this.frameDeadline)
    })
  }

  /** Feeds bytes already read from the socket (the server's sniffing read them first). */
  readonly onData = (chunk: Uint8Array): void => {
    if (this.closing) return
    const error = this.decoder.decode(chunk, this.onFrame)
    if (error !== undefined) return this.fail(error)
    if (this.options.frameTimeoutMs === undefined) return
    if (this.decoder.isIdle()) {
      if (this.frameDeadline !== undefined) this.frameDeadline = void clearTimeout(this.frameDeadline)
    } else if (this.frameDeadline === undefined) {
      this.frameDeadline = setTimeout(this.onFrameDeadline, this.options.frameTimeoutMs)
    }
  }

  private readonly onFrameDeadline = (): void => {
    if (this.closing) return
    this.closing = true
    this.options.onFrameTimeout?.()
    this.socket.destroy()
  }

  /** Flushes the queued acks and closes the socket (scope close). */
  close(): void {
    if (!this.closing) this.batcher.flush()
    this.closing = true
    this.socket.destroy()
  }

  private readonly write = (chunk: Uint8Array): void => {
    const socket = this.socket
    if (socket.destroyed) return
    if (!socket.write(chunk) && !this.paused) {
      // The router is not reading its acks: stop reading its requests until it does.
      this.paused = true
      socket.pause()
      socket.once("drain", () => {
        this.paused = false
        if (!socket.destroyed) socket.resume()
      })
    }
  }

  private reject(text: string, type: ErrorType = "connection"): void {
    recordError("tcp", type, "server")
    this.batcher.push(encodeTcpAck(text))
  }

  private readonly onFrame = (path: string, headers: Record<string, string>, payload: Uint8Array): void => {
    if (this.closing) return
    const endpoints = this.options.endpoints
    if (endpoints.draining()) return this.reject(unavailableAck(DRAINING_DETAIL))
    const endpoint = endpoints.lookup(path)
    if (endpoint === undefined) return this.reject(unknownEndpointText(path))
    const decoded = decodeRequestMessage(payload, { maxMessageSize: this.options.maxMessageSize })
    if (decoded instanceof ProtocolParseError) return this.reject(unavailableAck(`bad request message: ${decoded.detail}`), "protocol")
    // Admission reserves a slot for the handler: ask last, right before the ack.
    const refusal = endpoint.admit?.()
    if (refusal !== undefined) {
      return this.reject(refusal.refuse === "overloaded" ? overloadedAck(refusal.detail) : unavailableAck(refusal.detail))
    }
    this.batcher.push(ACCEPTED_ACK)
    // The ack is queued ahead of anything the handler's call-home sends; the handler must not throw.
    try {
      endpoint.handler({ control: decoded.control, payload: decoded.payload, headers: handlerHeaders(headers) })
    } catch {
      // a handler that throws breaks its own request only
    }
  }

  private fail(error: ProtocolParseError): void {
    this.closing = true
    this.reject(unavailableAck(`closing the connection: ${error.detail}`), "protocol")
    this.batcher.flush()
    this.socket.end()
    this.options.onProtocolError(error)
  }
}
