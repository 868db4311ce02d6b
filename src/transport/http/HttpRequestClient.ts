/**
 * The router's HTTP request-plane client (PROTOCOL.md section 4), on node:http2 (h2c).
 *
 * A small set of persistent HTTP/2 sessions per origin (`SessionSet`): a request goes on the
 * first open session with fewer than `maxStreamsPerSession` streams in flight; when every open
 * one has that many, another is opened, up to `maxSessionsPerOrigin`; past that, the least
 * loaded takes it. A session is dropped from the set after a GOAWAY, an error or a close. Each
 * session's memory cap is set on purpose (`maxSessionMemoryMb`): Node's default of 10 MB made a
 * router with ~9,000 requests waiting for their 202 on one session reset its own streams.
 * `send` POSTs the encoded request-plane message and resolves at the 202 ack; the timeout
 * (`DYN_HTTP_REQUEST_TIMEOUT`) covers the ack only. Non-2xx answers map to typed errors:
 * 404 `EndpointNotFound`, 413 `MessageTooLarge`, other 4xx `BadStatus`, 5xx
 * `ServerUnavailable`, except a 503 whose error text is Dynamo's `Server overloaded: ...` (the
 * worker's admission refusal at its in-flight cap): `Overloaded`.
 *
 * The response stream is not its business, except in the pure HTTP mode: for a message whose
 * `connection_info.transport` is `http_inline`, it asks for the stream's format (`accept`), takes
 * the 200 as the ack and hands the HTTP/2 response to the pending stream of the same request id
 * in the `HttpInlineHub` (`InlineStream.ts` reads it); a 422 is the worker's prologue refusal.
 */
import * as http2 from "node:http2"
import * as net from "node:net"
import { Effect } from "effect"
import type { Scope } from "effect"
import { contentTypeOf } from "../../protocol/HttpStreamFormat.ts"
import { encodeRequestMessage } from "../../protocol/RequestMessage.ts"
import type { RequestMessage, RequestPlaneClient, RequestTarget } from "../../RequestPlane.ts"
import { EndpointNotFound, TransportConnectionError, TransportProtocolError, TransportTimeoutError } from "../../TransportError.ts"
import type { TransportError } from "../../TransportError.ts"
import { DeadlineList } from "../../internal/DeadlineList.ts"
import { letGo } from "./ClosedStream.ts"
import { HTTP_INLINE } from "./HttpInlineHub.ts"
import type { HttpInlineHubShape, InlinePending } from "./HttpInlineHub.ts"
import { sendFromCallback } from "../../internal/sendFromCallback.ts"

/** Options of the client. */
export interface HttpRequestClientOptions {
  /** The ack timeout, in ms. */
  readonly timeoutMs: number
  /** Requests larger than this are refused before they are sent. */
  readonly maxMessageSize: number
  /** The process's inline tables (pure HTTP mode); without it, `http_inline` requests fail. */
  readonly inline?: HttpInlineHubShape | undefined
  /** The HTTP/2 session's receive window, in bytes (pure HTTP mode: paused streams keep theirs). */
  readonly sessionWindowSize?: number | undefined
  /**
   * Streams in flight on one session before another session to the same origin is opened
   * (default `DEFAULT_SESSION_LIMITS.maxStreamsPerSession`). Never above what the worker's
   * SETTINGS allow (its `maxConcurrentStreams`).
   */
  readonly maxStreamsPerSession?: number | undefined
  /** Most sessions per origin (default `DEFAULT_SESSION_LIMITS.maxSessionsPerOrigin`). */
  readonly maxSessionsPerOrigin?: number | undefined
  /** Memory cap of each session, in MB (Node's `maxSessionMemory`; default `DEFAULT_SESSION_LIMITS.maxSessionMemoryMb`). */
  readonly maxSessionMemoryMb?: number | undefined
}

/**
 * The client's HTTP/2 session limits by default. 1,000 streams per session keep each session
 * far below its memory cap (a request waiting for its 202 holds a few KB of it), and below the
 * worker's `maxConcurrentStreams` (`H2_SESSION_LIMITS`); 16 sessions carry 16,000 streams in
 * flight to one worker before sessions are shared beyond that; 64 MB per session.
 */
export const DEFAULT_SESSION_LIMITS = {
  maxStreamsPerSession: 1_000,
  maxSessionsPerOrigin: 16,
  maxSessionMemoryMb: 64
} as const

/** One session of an origin's set, with its streams in flight. */
interface Slot {
  readonly session: http2.ClientHttp2Session
  inFlight: number
}

interface Target {
  readonly origin: string
  readonly path: string
}

const { NGHTTP2_CANCEL } = http2.constants

const noop = () => {}

/** The transport headers that travel (PROTOCOL.md section 2); others are not sent. */
const transportHeaders = (headers: Readonly<Record<string, string>>): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const name of ["traceparent", "tracestate", "x-request-id"]) {
    const value = headers[name]
    if (value !== undefined && !/[\r\n\0]/.test(value)) out[name] = value
  }
  return out
}

/** Builds the client; closing the scope closes every session. */
export const make = (options: HttpRequestClientOptions): Effect.Effect<RequestPlaneClient, never, Scope.Scope> =>
  Effect.gen(function*() {
    // Every request's ack timeout, one timer for all (DeadlineList.ts): no setTimeout per request.
    const ackDeadlines = new DeadlineList<() => void>(options.timeoutMs, (expire) => expire())
    yield* Effect.addFinalizer(() => Effect.sync(() => ackDeadlines.stop()))
    const sessions = new Map<string, Array<Slot>>()
    const targets = new Map<string, Target>()
    let closed = false
    const perSession = Math.max(1, options.maxStreamsPerSession ?? DEFAULT_SESSION_LIMITS.maxStreamsPerSession)
    const maxSessions = Math.max(1, options.maxSessionsPerOrigin ?? DEFAULT_SESSION_LIMITS.maxSessionsPerOrigin)
    const sessionMemory = Math.max(1, options.maxSessionMemoryMb ?? DEFAULT_SESSION_LIMITS.maxSessionMemoryMb)

    const targetOf = (address: string): Target => {
      let t = targets.get(address)
      if (t === undefined) {
        const url = new URL(address)
        t = { origin: url.origin, path: url.pathname + url.search }
        if (targets.size > 10_000) targets.clear()
        targets.set(address, t)
      }
      return t
    }

    const open = (origin: string, slots: Array<Slot>): Slot => {
      const url = new URL(origin)
      const session = http2.connect(origin, {
        peerMaxConcurrentStreams: perSession,
        maxSessionMemory: sessionMemory,
        // TCP_NODELAY from the start: Nagle would add tens of ms per request.
        createConnection: () => net.connect({ host: url.hostname, port: Number(url.port || 80), noDelay: true })
      })
      const slot: Slot = { session, inFlight: 0 }
      const forget = () => {
        const i = slots.indexOf(slot)
        if (i >= 0) slots.splice(i, 1)
        if (slots.length === 0 && sessions.get(origin) === slots) sessions.delete(origin)
      }
      const window = options.sessionWindowSize
      if (window !== undefined) {
        session.once("connect", () => {
          try {
            session.setLocalWindowSize(window)
          } catch {
            // an older Node: keep the default
          }
        })
      }
      session.on("goaway", forget)
      session.on("close", forget)
      session.on("error", forget)
      slots.push(slot)
      return slot
    }

    /** The most streams a session may carry: ours, or fewer if the worker's SETTINGS say so. */
    const capOf = (slot: Slot): number => {
      const theirs = slot.session.remoteSettings?.maxConcurrentStreams
      return theirs !== undefined && theirs > 0 && theirs < perSession ? theirs : perSession
    }

    // The first open session with room; else a new one while there are fewer than maxSessions;
    // else the least loaded.
    const slotFor = (origin: string): Slot => {
      let slots = sessions.get(origin)
      if (slots === undefined) {
        slots = []
        sessions.set(origin, slots)
      }
      let least: Slot | undefined
      for (const slot of slots) {
        if (slot.session.closed || slot.session.destroyed) continue
        if (slot.inFlight < capOf(slot)) return slot
        if (least === undefined || slot.inFlight < least.inFlight) least = slot
      }
      if (least === undefined || slots.length < maxSessions) return open(origin, slots)
      return least
    }

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        for (const slots of sessions.values()) for (const slot of slots) slot.session.destroy()
        sessions.clear()
      })
    )

    const sendCallback = (
      target: RequestTarget,
      message: RequestMessage,
      onAck: (error: TransportError | EndpointNotFound | undefined) => void
    ): (() => void) => {
      // The only reference to the caller's callback, let go once the ack is delivered: the stream's
      // listeners (one closure context per call) outlive the call.
      let ack: typeof onAck | undefined = onAck
      const deliver = (error: TransportError | EndpointNotFound | undefined) => {
        const f = ack!
        ack = undefined
        f(error)
      }
      const failNow = (error: TransportError | EndpointNotFound) => {
        deliver(error)
        return noop
      }
      const address = target.address
      let body: Uint8Array
      let t: Target
      try {
        t = targetOf(address)
        body = encodeRequestMessage(message.control, message.payload)
      } catch (cause) {
        return failNow((
            new TransportProtocolError({
              reason: "BadPayload",
              transport: "http",
              target: address,
              detail: cause instanceof Error ? cause.message : String(cause),
              cause
            })
          )
        )
      }
      if (body.length > options.maxMessageSize) {
        return failNow((
            new TransportProtocolError({
              reason: "MessageTooLarge",
              transport: "http",
              target: address,
              detail: `request of ${body.length} bytes exceeds the maximum of ${options.maxMessageSize}`
            })
          )
        )
      }
      let inline: InlinePending | undefined
      if (message.control.connection_info.transport === HTTP_INLINE) {
        inline = options.inline?.pending.get(message.control.id)
        if (inline === undefined) {
          return failNow(
            new TransportProtocolError({
              reason: "BadPayload",
              transport: "http",
              target: address,
              detail: `no pending ${HTTP_INLINE} stream for request ${message.control.id} (the http response plane is not in this registry)`
            })
          )
        }
      }
      if (closed) {
        return failNow((new TransportConnectionError({ reason: "ConnectionClosed", transport: "http", target: address, detail: "client closed" })))
      }
      const slot = slotFor(t.origin)
      const session = slot.session
      let done = false
      let stream: http2.ClientHttp2Stream | undefined
      const finish = (error: TransportError | EndpointNotFound | undefined) => {
        if (done) return
        done = true
        ackDeadlines.remove(deadline)
        deliver(error)
      }
      const deadline = ackDeadlines.add(() => {
        finish((
            new TransportTimeoutError({
              reason: "AckTimeout",
              transport: "http",
              target: address,
              detail: `no ack within ${options.timeoutMs} ms`
            })
          )
        )
        stream?.close(NGHTTP2_CANCEL)
      })
      const connectionFailure = (cause: Error & { code?: string }) =>
        new TransportConnectionError({
          reason: session.connecting || cause.code === "ECONNREFUSED" ? "ConnectFailed" : "SendFailed",
          transport: "http",
          target: address,
          detail: cause.message,
          cause
        })
      try {
        stream = session.request(
          {
            ":method": "POST",
            ":path": t.path,
            "content-type": "application/octet-stream",
            "content-length": body.length,
            ...(inline === undefined ? {} : { accept: contentTypeOf(inline.format) }),
            ...transportHeaders(message.headers)
          },
          { endStream: false }
        )
      } catch (cause) {
        // Only a broken session is dropped; anything else fails this one request.
        const code = (cause as { code?: string }).code
        if (session.destroyed || code === "ERR_HTTP2_INVALID_SESSION" || code === "ERR_HTTP2_OUT_OF_STREAMS") {
          session.destroy()
          finish((connectionFailure(cause as Error)))
        } else {
          finish((
              new TransportProtocolError({
                reason: "BadPayload",
                transport: "http",
                target: address,
                detail: `request rejected before sending: ${(cause as Error).message}`,
                cause
              })
            )
          )
        }
        return noop
      }
      const s = stream
      slot.inFlight++
      // A non-2xx answer's body, read for its error text.
      let onBody: ((c: Buffer) => void) | undefined
      let onBodyEnd: (() => void) | undefined
      const onResponse = (headers: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader) => {
        const status = Number(headers[":status"])
        if (inline !== undefined && status === 200) {
          // The ack; the body is the response stream.
          finish(undefined)
          return inline.attach(s, address)
        }
        if (status === 202 || status === 200 || status === 204) {
          s.resume()
          return finish(undefined)
        }
        const chunks: Array<Buffer> = []
        onBody = (c: Buffer) => {
          if (chunks.length < 64) chunks.push(c)
        }
        s.on("data", onBody)
        onBodyEnd = () => {
          const text = Buffer.concat(chunks).toString("utf8")
          let detail = text
          try {
            const parsed = JSON.parse(text) as { error?: unknown }
            if (typeof parsed.error === "string") detail = parsed.error
            if (inline !== undefined && status === 422 && (parsed as { phase?: unknown }).phase === "prologue") {
              // The worker accepted the request, and its handler refused it.
              finish(undefined)
              return inline.refuse(detail)
            }
          } catch {
            // not JSON: keep the text
          }
          if (status === 404) return finish((new EndpointNotFound({ endpoint: target.endpoint, target: address, detail })))
          if (status === 413) {
            return finish((new TransportProtocolError({ reason: "MessageTooLarge", transport: "http", target: address, detail })))
          }
          if (status >= 500) {
            const reason = status === 503 && detail.startsWith("Server overloaded:") ? "Overloaded" : "ServerUnavailable"
            return finish(new TransportConnectionError({ reason, transport: "http", target: address, detail: `HTTP ${status}: ${detail}` }))
          }
          finish((new TransportProtocolError({ reason: "BadStatus", transport: "http", target: address, detail: `HTTP ${status}: ${detail}` })))
        }
        s.on("end", onBodyEnd)
      }
      const onError = (cause: Error) => finish(connectionFailure(cause))
      const onClose = () => {
        slot.inFlight--
        ackDeadlines.remove(deadline)
        // Built only when it is used: an Error per request would cost its stack capture.
        if (!done) {
          finish(new TransportConnectionError({ reason: "ConnectionClosed", transport: "http", target: address, detail: "HTTP/2 stream closed before the ack" }))
        }
        // The stream outlives the call in the heap (ClosedStream.ts): it must not hold the call.
        letGo(s, "response", onResponse)
        letGo(s, "close", onClose)
        if (onBody !== undefined) letGo(s, "data", onBody)
        if (onBodyEnd !== undefined) letGo(s, "end", onBodyEnd)
        letGo(s, "error", onError)
      }
      s.on("response", onResponse)
      s.on("error", onError)
      s.on("close", onClose)
      s.end(body)
      return () => {
        if (done) return
        done = true
        ack = undefined
        // Pure HTTP mode: the stream is the response; resetting it is the only way to stop it.
        if (inline !== undefined) {
          ackDeadlines.remove(deadline)
          return void s.close(NGHTTP2_CANCEL)
        }
        // Call-home modes: the request has left whole, and the worker will call home to a
        // subject the router no longer holds (refused, so its handler stops). Resetting the
        // stream would save nothing and count against the worker's reset-flood guard on a
        // session other calls share (issue 15): the stream is left to end with its ack,
        // which is read and dropped; reset only if none comes within the ack timeout. The
        // deadline armed at the send stays for that (`finish` does nothing once `done`), so a
        // call whose stream ended before its 202 arrived arms no timer of its own; `onClose`
        // removes it.
        s.resume()
      }
    }

    const client: RequestPlaneClient = {
      transport: "http",
      sendCallback,
      send: sendFromCallback(sendCallback)
    }
    return client
  })
