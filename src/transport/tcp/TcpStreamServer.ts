/**
 * The router's side of the TCP call-home response plane (PROTOCOL.md section 3), wire-compatible
 * with Dynamo's `TcpStreamServer`: one `net.Server`, one connection per response stream.
 *
 * What it does:
 * - `open` registers a pending stream under a fresh uuid v4 subject (single use) and returns the
 *   `tcp_server` ConnectionInfo to send with the request. The listener starts lazily on the
 *   first `open` (concurrent first opens share one listen; a failed listen is retried by the
 *   next `open`) and closes, with every socket destroyed, when the scope of `make` closes.
 * - Per accepted socket (TCP_NODELAY): a synchronous incremental TwoPartCodec decoder in the
 *   'data' handler. First frame: the handshake `{"subject", "stream_type": "response"}`; an
 *   unknown or already-served subject, or a bad handshake, destroys that socket only (logged at
 *   debug). Then the prologue (`{"error": null}` or `{}` starts the stream; `{"error": msg}`
 *   fails it with a prologue HandlerError), then data frames, decoded with the request's payload
 *   codec and handed to the sink as ONE `onItems` batch per socket chunk; `complete_final` ends
 *   the stream (`onEnd`), our in-band `error` body fails it with a stream HandlerError, and the
 *   `"sentinel"` control frame that follows `complete_final` makes the router close the socket
 *   (so does a missing sentinel after `sentinelTimeoutMs`).
 * - Failures: a socket that closes before `complete_final` fails the stream with
 *   TransportConnectionError "StreamEndedEarly" ("stream ended before generation completed");
 *   garbage, oversized frames, bad bodies and unexpected control frames fail it with a
 *   TransportProtocolError and destroy the socket; no call-home within `callHomeTimeoutMs`
 *   fails it with TransportTimeoutError "CallHomeTimeout". Exactly one of `onEnd`/`onError` is
 *   called per stream, and none after `close()`.
 * - `control("stop" | "kill")` writes a header-only frame with that JSON string, queued until
 *   the worker has called home.
 *
 * - With `mux` enabled (`DYN_TCP_POOL_ENABLED=true`), `open` hands out a `tcp_response_mux_v1`
 *   ConnectionInfo instead (`{address, frontend_server_id, stream_id, context}`; the stream id
 *   is the subject), and the same port also accepts pooled, multiplexed connections (response
 *   mux v1, docs/protocol.md): the first frame tells them apart. A `{"kind": "response_mux",
 *   "version": 1, "frontend_server_id", "connection_id"}` handshake naming this server switches
 *   the socket to compact mux framing (`mux/MuxRouterConnection.ts`); many streams then share
 *   it. A stream is claimed by its first frame, a Prologue carrying its id, and from there keeps
 *   the one-shot semantics: the prologue's error, items as one `onItems` batch per chunk, End (or
 *   a `complete_final` body) ends it, the in-band error body fails it with a HandlerError, a
 *   worker's Reset fails it with "StreamEndedEarly", `control` sends Stop/Kill frames, and
 *   `close()` before the end sends a Reset. A bad body fails that stream only (TransportProtocolError,
 *   and a Reset to the worker); a Prologue for an unknown or already-served stream is answered
 *   with a Reset. When a mux connection closes or breaks the framing, every stream on it fails at
 *   once (TransportConnectionError "StreamEndedEarly", or the TransportProtocolError). A worker
 *   whose connection died resets that connection's unfinished streams on another one: a stream
 *   still waiting for its Prologue then fails at once with TransportConnectionError
 *   "ConnectionClosed" naming the worker's reason; a Reset for a stream the server no longer
 *   knows is ignored. Mux sockets get TCP keepalive (`muxKeepaliveMs`). A stream
 *   opened in mux mode may also be claimed by a one-shot handshake whose subject is its stream id.
 *
 * What it does not do: pooling (that is the worker's side: pool/TcpResponseConnectionPool.ts),
 * TLS, request-plane work, or backpressure towards the worker beyond the mux credits (the sink is
 * called synchronously; a slow consumer buffers in the sink). No Effect or fiber runs per frame or
 * per chunk; Effect is used only to start and stop the listener and to log refused connections.
 */
import * as net from "node:net"
import { Effect } from "effect"
import type { Scope } from "effect"
import { payloadCodec } from "../../protocol/PayloadCodec.ts"
import type { PayloadCodec } from "../../protocol/PayloadCodec.ts"
import { decodeStreamBody } from "../../protocol/RequestMessage.ts"
import { MuxKind, uuidFromStreamId } from "../../protocol/MuxCodec.ts"
import { encodeHeaderOnlyJson, FRAME_PREFIX_SIZE, makeDecoder } from "../../protocol/TwoPartCodec.ts"
import { tcpConnectionInfo } from "../../ConnectionInfo.ts"
import type { PendingStream, ResponsePlaneServer, ResponseSink } from "../../ResponsePlane.ts"
import {
  HandlerError,
  TransportConnectionError,
  TransportProtocolError,
  TransportTimeoutError
} from "../../TransportError.ts"
import type { TransportError } from "../../TransportError.ts"
import { advertisedHost, hostPort } from "../../internal/net.ts"
import { MuxRouterConnection } from "./mux/MuxRouterConnection.ts"
import { encodeResetPayload, isMuxHandshake, muxConnectionInfo, parseMuxHandshake } from "../../protocol/MuxHandshake.ts"

/** Options of the call-home stream server. */
export interface TcpStreamServerOptions {
  /** Bind address (`DYN_TCP_RESPONSE_HOST`). */
  readonly host: string
  /** Bind port; 0 picks a free one (`DYN_TCP_RESPONSE_PORT`). */
  readonly port: number
  /** Host advertised to workers; by default derived from `host` (see `advertisedHost`). */
  readonly advertiseHost?: string | undefined
  /** How long a pending stream waits for its worker to call home (`DYN_TCP_CALL_HOME_TIMEOUT_SECS`). */
  readonly callHomeTimeoutMs: number
  /** Largest frame accepted, prefix included (`DYN_TCP_MAX_MESSAGE_SIZE`). */
  readonly maxMessageSize: number
  /** How long after `complete_final` the router waits for the sentinel before closing (default 1000 ms). */
  readonly sentinelTimeoutMs?: number | undefined
  /** How long an accepted socket may take to send its handshake frame (default 10000 ms, as Dynamo). */
  readonly handshakeTimeoutMs?: number | undefined
  /**
   * Pooled, multiplexed call-home (`DYN_TCP_POOL_ENABLED`): hand out `tcp_response_mux_v1`
   * ConnectionInfo and accept mux connections too. Off by default: exactly the one-shot server.
   */
  readonly mux?: boolean | undefined
  /** This server's `frontend_server_id` in mux mode (default: a fresh uuid v4). */
  readonly frontendServerId?: string | undefined
  /**
   * TCP keepalive initial delay of accepted mux connections (`DYN_TCP_POOL_KEEPALIVE_SECS`,
   * default `DEFAULT_MUX_KEEPALIVE_MS`), so a worker that vanished without a FIN is noticed.
   * One-shot sockets are left as they are.
   */
  readonly muxKeepaliveMs?: number | undefined
}

/** The call-home server, with a view of its pooled (mux) connections. */
export interface TcpStreamServer extends ResponsePlaneServer {
  /** Accepted mux connections open now. */
  readonly muxConnectionCount: () => number
  /**
   * Resets every accepted mux connection, as a crashed router would (their streams fail with
   * "StreamEndedEarly"). For tests and failure drills.
   */
  readonly dropMuxConnections: () => void
}

/** Default bound on the wait for the sentinel after `complete_final`. */
export const DEFAULT_SENTINEL_TIMEOUT_MS = 1000
/** Default bound on the wait for the handshake frame of an accepted socket (Dynamo uses 10 s). */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000
/** Default TCP keepalive initial delay of accepted mux connections (`DYN_TCP_POOL_KEEPALIVE_SECS`' default, 60 s). */
export const DEFAULT_MUX_KEEPALIVE_MS = 60_000
/** How long `close()` lets queued control frames drain before destroying the socket. */
const CLOSE_DRAIN_MS = 1000

/** The detail of every "StreamEndedEarly" failure (PROTOCOL.md section 3, item 8). */
export const STREAM_ENDED_EARLY = "stream ended before generation completed"

const STOP_FRAME = encodeHeaderOnlyJson("stop")
const KILL_FRAME = encodeHeaderOnlyJson("kill")
const controlFrame = (m: "stop" | "kill"): Uint8Array => (m === "stop" ? STOP_FRAME : KILL_FRAME)

// Stream phases.
const WAITING = 0 // registered, no worker yet
const PROLOGUE = 1 // handshake done, waiting for the prologue
const STREAMING = 2 // prologue ok, data frames flowing
const SENTINEL = 3 // complete_final seen, waiting for the sentinel
const CLOSED = 4 // terminal: the socket is being (or has been) closed

interface Entry {
  readonly subject: string
  readonly requestId: string
  readonly endpoint: string
  readonly codec: PayloadCodec
  readonly sink: ResponseSink
  readonly errorContext: { readonly target: string; readonly transport: "tcp" }
  phase: number
  /** A terminal sink callback was delivered, or `close()` was called: no more callbacks. */
  settled: boolean
  /** `close()` was called. */
  closed: boolean
  socket: net.Socket | undefined
  /** The mux connection carrying the stream, once a Prologue claimed it (mux mode). */
  mux: MuxRouterConnection<Entry> | undefined
  /** The stream's key on `mux`, and its 16 id bytes (mux mode). */
  muxKey: string
  idBytes: Uint8Array | undefined
  /** The socket has closed. */
  gone: boolean
  batch: Array<unknown>
  controls: Array<"stop" | "kill">
  callHomeTimer: ReturnType<typeof setTimeout> | undefined
  sentinelTimer: ReturnType<typeof setTimeout> | undefined
  /** `pause()` was called: the socket is not read (one-shot), or no credit is granted (mux). */
  paused: boolean
  /** Data bytes delivered while paused, whose credit is granted on `resume()` (mux). */
  owedCredit: number
}

const textDecoder = new TextDecoder()
const NOT_JSON: unique symbol = Symbol("NOT_JSON")
const textEncoder = new TextEncoder()
/** The exact headers a well-behaved worker sends, compared bytewise before any JSON parsing. */
const PROLOGUE_OK_BYTES = textEncoder.encode(`{"error":null}`)
const SENTINEL_BYTES = textEncoder.encode(`"sentinel"`)

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

const isSentinel = (header: Uint8Array): boolean => sameBytes(header, SENTINEL_BYTES) || parseJson(header) === "sentinel"

const parseJson = (bytes: Uint8Array): unknown => {
  try {
    return JSON.parse(textDecoder.decode(bytes))
  } catch {
    return NOT_JSON
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)

/** Thrown out of the TwoPartCodec decoder's frame handler to stop it at a mux handshake. */
const MUX_SWITCH: unique symbol = Symbol("MUX_SWITCH")

const preview = (bytes: Uint8Array): string => {
  const text = textDecoder.decode(bytes.subarray(0, 64))
  return JSON.stringify(bytes.length > 64 ? `${text}...` : text)
}

const STARTED = { _tag: "Started" } as const

/**
 * Reads a prologue (one-shot header or mux Prologue payload): `{"error":null}` or `{}` mean the
 * handler started; `{"error":"..."}` carries why it could not; anything else is malformed.
 */
const readPrologue = (
  bytes: Uint8Array
): typeof STARTED | { readonly _tag: "Error"; readonly message: string } | { readonly _tag: "Malformed"; readonly detail: string } => {
  if (sameBytes(bytes, PROLOGUE_OK_BYTES)) return STARTED
  const v = parseJson(bytes)
  if (!isRecord(v)) return { _tag: "Malformed", detail: `prologue is not a JSON object: ${preview(bytes)}` }
  const error = v.error
  if (error === undefined || error === null) return STARTED
  if (typeof error !== "string") return { _tag: "Malformed", detail: `prologue error is not a string: ${preview(bytes)}` }
  return { _tag: "Error", message: error }
}

/**
 * Builds the call-home response server. The listener starts on the first `open` and is closed,
 * with all its sockets, when the scope closes; streams still open then fail with
 * TransportConnectionError "ConnectionClosed".
 */
export const make = (options: TcpStreamServerOptions): Effect.Effect<TcpStreamServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const context = yield* Effect.context<never>()
    const runSync = Effect.runSyncWith(context)
    const logDebug = (message: string, annotations: Record<string, unknown>) => {
      try {
        runSync(Effect.logDebug(message).pipe(Effect.annotateLogs(annotations)))
      } catch {
        // logging must never break the socket path
      }
    }

    const muxEnabled = options.mux === true
    const frontendServerId = options.frontendServerId ?? crypto.randomUUID()
    const sentinelTimeoutMs = options.sentinelTimeoutMs ?? DEFAULT_SENTINEL_TIMEOUT_MS
    const handshakeTimeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS
    const muxKeepaliveMs = options.muxKeepaliveMs ?? DEFAULT_MUX_KEEPALIVE_MS
    const bindTarget = hostPort(options.host, options.port)

    /** Unsettled streams by subject. */
    const entries = new Map<string, Entry>()
    const sockets = new Set<net.Socket>()
    let server: net.Server | undefined
    let address: string | undefined
    let starting: Array<(effect: Effect.Effect<string, TransportConnectionError>) => void> | undefined
    let shutDown = false

    // ---- terminal transitions -------------------------------------------------------------

    const settle = (e: Entry): boolean => {
      if (e.settled) return false
      e.settled = true
      clearTimeout(e.callHomeTimer)
      entries.delete(e.subject)
      return true
    }

    const fail = (e: Entry, error: TransportError | HandlerError) => {
      if (settle(e)) e.sink.onError(error)
    }

    const flush = (e: Entry) => {
      const items = e.batch
      if (items.length === 0) return
      e.batch = []
      if (!e.settled) e.sink.onItems(items)
    }

    const destroySocket = (e: Entry) => {
      e.phase = CLOSED
      e.socket?.destroy()
    }

    const protocolFailure = (e: Entry, error: TransportProtocolError) => {
      flush(e)
      e.phase = CLOSED
      fail(e, error)
      e.socket?.destroy()
    }

    const protocolError = (
      e: Entry,
      reason: "MalformedFrame" | "UnexpectedMessage" | "BadHandshake",
      detail: string
    ) => new TransportProtocolError({ reason, transport: "tcp", target: e.subject, detail })

    /** Ends a stream that was cut short: `TransportConnectionError(StreamEndedEarly)`, after the items already read. */
    const endEarly = (e: Entry, cause: unknown) => {
      flush(e)
      e.phase = CLOSED
      fail(e, new TransportConnectionError({ reason: "StreamEndedEarly", transport: "tcp", target: e.subject, detail: STREAM_ENDED_EARLY, cause }))
    }

    /** Takes a paused stream's data again: its socket is read (one-shot), its owed credit granted (mux). */
    const resumeEntry = (e: Entry) => {
      if (!e.paused) return
      e.paused = false
      if (e.socket !== undefined && !e.socket.destroyed) e.socket.resume()
      const owed = e.owedCredit
      e.owedCredit = 0
      if (owed > 0 && e.mux !== undefined && e.phase === STREAMING) e.mux.grant(e.muxKey, e.idBytes!, owed)
    }

    const complete = (e: Entry) => {
      flush(e)
      e.phase = SENTINEL
      if (settle(e)) e.sink.onEnd()
      if (e.phase === SENTINEL && !e.gone) {
        // The stream is whole: read on (a pause taken in onItems must not hide the sentinel).
        resumeEntry(e)
        // Bound the wait for the sentinel so no socket outlives its stream for long.
        e.sentinelTimer = setTimeout(() => destroySocket(e), sentinelTimeoutMs)
        e.sentinelTimer.unref?.()
      }
    }

    // ---- frames of a called-home stream ----------------------------------------------------

    const onStreamFrame = (e: Entry, header: Uint8Array, body: Uint8Array) => {
      switch (e.phase) {
        case STREAMING: {
          if (header.length === 0) {
            if (body.length === 0) return // an empty frame carries nothing
            const r = decodeStreamBody(e.codec, body, e.errorContext)
            if (r instanceof TransportProtocolError) return protocolFailure(e, r)
            if (r._tag === "Item") {
              e.batch.push(r.data)
              if (r.last) complete(e)
            } else if (r._tag === "Complete") {
              complete(e)
            } else {
              flush(e)
              e.phase = CLOSED
              fail(e, new HandlerError({ endpoint: e.endpoint, requestId: e.requestId, detail: r.message, phase: "stream" }))
              e.socket?.destroy()
            }
            return
          }
          // The only control frame a worker sends is the sentinel, and only after complete_final.
          if (body.length === 0 && isSentinel(header)) {
            endEarly(e, new Error("sentinel before complete_final"))
            e.socket?.destroy()
            return
          }
          return protocolFailure(e, protocolError(e, "UnexpectedMessage", `unexpected control frame ${preview(header)} in a response stream`))
        }
        case PROLOGUE: {
          if (header.length === 0 || body.length > 0) {
            return protocolFailure(e, protocolError(e, "UnexpectedMessage", "expected a header-only prologue frame"))
          }
          const prologue = readPrologue(header)
          if (prologue._tag === "Started") {
            e.phase = STREAMING
            if (!e.settled) e.sink.onStart?.()
            return
          }
          if (prologue._tag === "Malformed") return protocolFailure(e, protocolError(e, "MalformedFrame", prologue.detail))
          e.phase = CLOSED
          fail(e, new HandlerError({ endpoint: e.endpoint, requestId: e.requestId, detail: prologue.message, phase: "prologue" }))
          e.socket?.destroy()
          return
        }
        case SENTINEL: {
          // Normally the sentinel; anything else after complete_final is ignored. Either way
          // the stream is whole and the router closes the socket.
          if (!(header.length > 0 && body.length === 0 && isSentinel(header))) {
            logDebug("unexpected frame after complete_final; closing", { subject: e.subject })
          }
          clearTimeout(e.sentinelTimer)
          destroySocket(e)
          return
        }
        default:
          return // CLOSED: the rest of the chunk is dropped
      }
    }

    // ---- accepted sockets ------------------------------------------------------------------

    const onConnection = (socket: net.Socket) => {
      sockets.add(socket)
      socket.setNoDelay(true)
      const remote = hostPort(socket.remoteAddress ?? "?", socket.remotePort ?? 0)
      const decoder = makeDecoder({ maxMessageSize: options.maxMessageSize, target: remote, transport: "tcp" })
      let entry: Entry | undefined
      let refused = false
      let lastError: Error | undefined
      /** Bytes received before the current chunk, while no handshake has been accepted. */
      let received = 0
      let chunkStart = 0
      let muxHandshake: { readonly connectionId: string; readonly end: number } | undefined

      const refuse = (why: string) => {
        refused = true
        logDebug("refused call-home connection", { remote, reason: why })
        socket.destroy()
      }

      const onFrame = (header: Uint8Array, body: Uint8Array) => {
        if (entry !== undefined) return onStreamFrame(entry, header, body)
        if (refused) return
        // The handshake: header-only {"subject": "<uuid>", "stream_type": "response"}.
        const v = header.length > 0 && body.length === 0 ? parseJson(header) : NOT_JSON
        if (muxEnabled && isRecord(v) && isMuxHandshake(v)) {
          // Response mux v1: {"kind": "response_mux", "version": 1, "frontend_server_id", "connection_id"}.
          const h = parseMuxHandshake(v)
          if (typeof h === "string") return refuse(`bad mux handshake: ${h}`)
          if (h.frontendServerId !== frontendServerId) {
            return refuse(`mux handshake for frontend_server_id ${h.frontendServerId}, this server is ${frontendServerId}`)
          }
          // Stop the TwoPartCodec decoder here: the bytes after this frame are compact mux frames.
          muxHandshake = { connectionId: h.connectionId, end: FRAME_PREFIX_SIZE + header.length }
          throw MUX_SWITCH
        }
        if (!isRecord(v) || typeof v.subject !== "string" || v.stream_type !== "response") {
          return refuse(`bad handshake frame ${preview(header.length > 0 ? header : body)}`)
        }
        const e = entries.get(v.subject)
        if (e === undefined || e.phase !== WAITING) return refuse(`unknown or already-served subject ${v.subject}`)
        socket.setTimeout(0)
        clearTimeout(e.callHomeTimer)
        e.callHomeTimer = undefined
        e.socket = socket
        e.phase = PROLOGUE
        entry = e
        if (e.paused) socket.pause()
        if (e.controls.length > 0) {
          const queued = e.controls.splice(0)
          for (const m of queued) socket.write(controlFrame(m))
        }
      }

      socket.setTimeout(handshakeTimeoutMs)
      socket.on("timeout", () => {
        if (entry === undefined && !refused) refuse(`no handshake within ${handshakeTimeoutMs} ms`)
      })
      socket.on("data", (chunk: Buffer) => {
        if (refused) return
        let error: TransportProtocolError | undefined
        if (entry === undefined && muxEnabled) {
          chunkStart = received
          received += chunk.length
          try {
            error = decoder.decode(chunk, onFrame)
          } catch (thrown) {
            if (thrown !== MUX_SWITCH || muxHandshake === undefined) throw thrown
            return switchToMux(socket, remote, muxHandshake.connectionId, chunk.subarray(muxHandshake.end - chunkStart))
          }
        } else error = decoder.decode(chunk, onFrame)
        const e = entry
        if (e === undefined) {
          if (error !== undefined && !refused) refuse(error.message)
          return
        }
        flush(e)
        if (error !== undefined && e.phase !== CLOSED) {
          protocolFailure(e, new TransportProtocolError({ reason: error.reason, transport: "tcp", target: e.subject, detail: error.detail, cause: error }))
        }
      })
      socket.on("error", (error) => {
        lastError = error
      })
      socket.on("close", () => {
        sockets.delete(socket)
        const e = entry
        if (e === undefined) return
        e.gone = true
        e.socket = undefined
        clearTimeout(e.sentinelTimer)
        if (e.phase === PROLOGUE || e.phase === STREAMING) endEarly(e, lastError)
        e.phase = CLOSED
      })
    }

    // ---- mux connections (response mux v1) ---------------------------------------------------

    /** Streams of the current chunk with items to hand over. */
    let dirty: Array<Entry> = []

    const muxForget = (e: Entry) => {
      e.mux?.forget(e.muxKey)
    }

    /** Ends a claimed mux stream on our side and tells the worker (unless its connection is gone). */
    const muxReset = (e: Entry, reason: string) => {
      const conn = e.mux
      if (conn === undefined) return
      conn.send(MuxKind.Reset, e.idBytes!, encodeResetPayload(reason))
      conn.forget(e.muxKey)
    }

    const muxProtocolFailure = (e: Entry, error: TransportProtocolError) => {
      flush(e)
      e.phase = CLOSED
      fail(e, error)
      muxReset(e, `protocol error: ${error.detail ?? error.reason}`)
    }

    /** The worker reset a claimed stream: it ended early, and leaves its connection. */
    const muxWorkerReset = (e: Entry, payload: Uint8Array) => {
      endEarly(e, new Error(`the worker reset the stream: ${textDecoder.decode(payload)}`))
      muxForget(e)
    }

    const muxComplete = (e: Entry) => {
      flush(e)
      e.phase = CLOSED
      if (settle(e)) e.sink.onEnd()
      muxForget(e)
    }

    /** A Prologue for a stream this connection does not carry yet: claim it, then start or fail it. */
    const muxClaim = (conn: MuxRouterConnection<Entry>, key: string, streamId: Uint8Array, payload: Uint8Array) => {
      const subject = uuidFromStreamId(streamId)
      const e = entries.get(subject)
      if (e === undefined || e.phase !== WAITING) {
        logDebug("refused mux stream", { remote: conn.remote, stream: subject, reason: "unknown or already-served stream id" })
        conn.send(MuxKind.Reset, streamId.slice(), encodeResetPayload("unknown or already-served stream id"))
        return
      }
      clearTimeout(e.callHomeTimer)
      e.callHomeTimer = undefined
      e.mux = conn
      e.muxKey = key
      e.idBytes = streamId.slice()
      e.phase = PROLOGUE
      conn.streams.set(key, e)
      if (e.controls.length > 0) {
        const queued = e.controls.splice(0)
        for (const m of queued) conn.send(m === "stop" ? MuxKind.Stop : MuxKind.Kill, e.idBytes)
      }
      const prologue = readPrologue(payload)
      if (prologue._tag === "Started") {
        e.phase = STREAMING
        if (!e.settled) e.sink.onStart?.()
        return
      }
      if (prologue._tag === "Malformed") return muxProtocolFailure(e, protocolError(e, "MalformedFrame", prologue.detail))
      e.phase = CLOSED
      fail(e, new HandlerError({ endpoint: e.endpoint, requestId: e.requestId, detail: prologue.message, phase: "prologue" }))
      muxForget(e)
    }

    /**
     * A worker's Reset for a stream this connection does not carry: the worker lost the
     * connection that carried it (docs/protocol.md, "When a connection dies"). A stream still
     * waiting for its call-home (its Prologue never arrived) fails now rather than at the
     * call-home timeout; one claimed on another mux connection fails as if that one had closed.
     * Anything else (unknown, already failed or finished) is ignored: no Reset goes back.
     */
    const muxResetUnclaimed = (conn: MuxRouterConnection<Entry>, streamId: Uint8Array, payload: Uint8Array) => {
      const e = entries.get(uuidFromStreamId(streamId))
      if (e === undefined) return
      if (e.phase === WAITING) {
        const reason = textDecoder.decode(payload)
        logDebug("worker reset a stream before its prologue", { remote: conn.remote, stream: e.subject, reason })
        e.phase = CLOSED
        fail(
          e,
          new TransportConnectionError({
            reason: "ConnectionClosed",
            transport: "tcp",
            target: e.subject,
            detail: `the worker reset the stream before its prologue reached the router: ${reason}`
          })
        )
        return
      }
      if (e.mux === undefined || e.mux === conn || (e.phase !== PROLOGUE && e.phase !== STREAMING)) return
      muxWorkerReset(e, payload)
    }

    const onMuxFrame = (conn: MuxRouterConnection<Entry>, kind: MuxKind, key: string, streamId: Uint8Array, payload: Uint8Array) => {
      const e = conn.streams.get(key)
      if (e === undefined) {
        // A stream's first frame claims it; a Reset may end one this connection does not carry;
        // other frames of streams not on it (finished, or not claimed yet) are dropped.
        if (kind === MuxKind.Prologue) muxClaim(conn, key, streamId, payload)
        else if (kind === MuxKind.Reset) muxResetUnclaimed(conn, streamId, payload)
        return
      }
      switch (kind) {
        case MuxKind.Data: {
          if (e.phase !== STREAMING) return
          if (e.paused) e.owedCredit += payload.length
          else conn.grant(key, e.idBytes!, payload.length)
          if (payload.length === 0) return
          const r = decodeStreamBody(e.codec, payload, e.errorContext)
          if (r instanceof TransportProtocolError) return muxProtocolFailure(e, r)
          if (r._tag === "Item") {
            if (e.batch.length === 0) dirty.push(e)
            e.batch.push(r.data)
            if (r.last) muxComplete(e)
          } else if (r._tag === "Complete") {
            muxComplete(e)
          } else {
            flush(e)
            e.phase = CLOSED
            fail(e, new HandlerError({ endpoint: e.endpoint, requestId: e.requestId, detail: r.message, phase: "stream" }))
            muxForget(e)
          }
          return
        }
        case MuxKind.End:
          if (e.phase === STREAMING) return muxComplete(e)
          return muxProtocolFailure(e, protocolError(e, "UnexpectedMessage", "End before the stream's prologue"))
        case MuxKind.Reset: {
          // The worker abandoned the stream (after stop/kill, or shutting down).
          return muxWorkerReset(e, payload)
        }
        default:
          // A second Prologue for a live stream.
          return muxProtocolFailure(e, protocolError(e, "UnexpectedMessage", "a second prologue in a response stream"))
      }
    }

    const onMuxChunkEnd = () => {
      if (dirty.length === 0) return
      const batch = dirty
      dirty = []
      for (const e of batch) flush(e)
    }

    const onMuxClose = (conn: MuxRouterConnection<Entry>, cause: Error | undefined) => {
      sockets.delete(muxSockets.get(conn)!)
      muxSockets.delete(conn)
      const streams = [...conn.streams.values()]
      conn.streams.clear()
      if (streams.length > 0 || cause !== undefined) {
        logDebug("mux connection closed", { remote: conn.remote, connection: conn.connectionId, streams: streams.length, cause: cause?.message })
      }
      for (const e of streams) {
        e.gone = true
        if (e.phase !== PROLOGUE && e.phase !== STREAMING) continue
        flush(e)
        e.phase = CLOSED
        fail(
          e,
          cause instanceof TransportProtocolError
            ? new TransportProtocolError({ reason: cause.reason, transport: "tcp", target: e.subject, detail: cause.detail, cause })
            : new TransportConnectionError({ reason: "StreamEndedEarly", transport: "tcp", target: e.subject, detail: STREAM_ENDED_EARLY, cause })
        )
      }
    }

    const muxSockets = new Map<MuxRouterConnection<Entry>, net.Socket>()

    /** Hands an accepted socket whose first frame was a mux handshake to a MuxRouterConnection. */
    const switchToMux = (socket: net.Socket, remote: string, connectionId: string, rest: Uint8Array) => {
      for (const event of ["data", "timeout", "error", "close"]) socket.removeAllListeners(event)
      // Long-lived: keepalive notices a worker that vanished without a FIN (NODELAY is set on accept).
      socket.setKeepAlive(true, muxKeepaliveMs)
      const conn = new MuxRouterConnection<Entry>({
        socket,
        remote,
        connectionId,
        maxMessageSize: options.maxMessageSize,
        onFrame: onMuxFrame,
        onChunkEnd: onMuxChunkEnd,
        onClose: onMuxClose
      })
      muxSockets.set(conn, socket)
      logDebug("accepted mux connection", { remote, connection: connectionId })
      conn.start(rest)
    }

    // ---- the listener ----------------------------------------------------------------------

    const unavailable = () =>
      new TransportConnectionError({ reason: "ServerUnavailable", transport: "tcp", target: bindTarget, detail: "the call-home server has shut down" })

    /** The advertised "host:port", starting the listener on first use. */
    const ensureListening: Effect.Effect<string, TransportConnectionError> = Effect.callback((resume) => {
      if (shutDown) return resume(Effect.fail(unavailable()))
      if (address !== undefined) return resume(Effect.succeed(address))
      if (starting !== undefined) {
        starting.push(resume)
        return Effect.sync(() => {
          const i = starting?.indexOf(resume) ?? -1
          if (i >= 0) starting!.splice(i, 1)
        })
      }
      const waiters = [resume]
      starting = waiters
      const srv = net.createServer({ noDelay: true }, onConnection)
      server = srv
      const onError = (cause: Error) => {
        srv.off("listening", onListening)
        if (server === srv) server = undefined
        starting = undefined
        const error = new TransportConnectionError({ reason: "ListenFailed", transport: "tcp", target: bindTarget, detail: cause.message, cause })
        for (const w of waiters) w(Effect.fail(error))
      }
      const onListening = () => {
        srv.off("error", onError)
        starting = undefined
        if (shutDown) {
          // The scope closed while we were binding: close at once and refuse the waiters.
          srv.close()
          for (const w of waiters) w(Effect.fail(unavailable()))
          return
        }
        srv.on("error", (cause) => logDebug("call-home server error", { error: cause.message }))
        const bound = srv.address()
        const port = typeof bound === "object" && bound !== null ? bound.port : options.port
        address = hostPort(advertisedHost(options.host, options.advertiseHost), port)
        for (const w of waiters) w(Effect.succeed(address))
      }
      srv.once("error", onError)
      srv.once("listening", onListening)
      srv.listen(options.port, options.host)
      // Interrupting one waiter never cancels the shared listen.
      return Effect.sync(() => {
        const i = waiters.indexOf(resume)
        if (i >= 0) waiters.splice(i, 1)
      })
    })

    const shutdown = Effect.callback<void>((resume) => {
      shutDown = true
      const open = [...entries.values()]
      for (const e of open) {
        clearTimeout(e.callHomeTimer)
        clearTimeout(e.sentinelTimer)
        e.phase = CLOSED
        fail(e, new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: e.subject, detail: "the call-home server has shut down" }))
      }
      for (const socket of sockets) socket.destroy()
      const srv = server
      server = undefined
      if (srv === undefined || !srv.listening) return resume(Effect.void)
      const timer = setTimeout(() => resume(Effect.void), 2000)
      srv.close(() => {
        clearTimeout(timer)
        resume(Effect.void)
      })
    })
    yield* Effect.addFinalizer(() => shutdown)

    // ---- open ------------------------------------------------------------------------------

    const openNow = (advertised: string, { codec, endpoint, requestId, sink }: Parameters<ResponsePlaneServer["open"]>[0]): PendingStream => {
      const subject = crypto.randomUUID()
      const e: Entry = {
        subject,
        requestId,
        endpoint,
        codec: payloadCodec(codec),
        sink,
        errorContext: { target: subject, transport: "tcp" },
        phase: WAITING,
        settled: false,
        closed: false,
        socket: undefined,
        mux: undefined,
        muxKey: "",
        idBytes: undefined,
        gone: false,
        batch: [],
        controls: [],
        callHomeTimer: undefined,
        sentinelTimer: undefined,
        paused: false,
        owedCredit: 0
      }
      e.callHomeTimer = setTimeout(() => {
        if (e.phase !== WAITING) return
        e.phase = CLOSED
        fail(
          e,
          new TransportTimeoutError({
            reason: "CallHomeTimeout",
            transport: "tcp",
            target: subject,
            detail: `no worker called home to ${advertised} within ${options.callHomeTimeoutMs} ms`
          })
        )
      }, options.callHomeTimeoutMs)
      entries.set(subject, e)
      return {
        connectionInfo: muxEnabled
          ? muxConnectionInfo({ address: advertised, frontend_server_id: frontendServerId, stream_id: subject, context: requestId })
          : tcpConnectionInfo({ address: advertised, subject, context: requestId, stream_type: "response" }),
        isDone: () => e.settled || e.gone || e.phase === CLOSED,
        pause: () => {
          if (e.paused || e.closed) return
          e.paused = true
          e.socket?.pause()
        },
        resume: () => resumeEntry(e),
        control: (message) => {
          if (e.closed || e.phase >= SENTINEL) return
          if (e.mux !== undefined) e.mux.send(message === "stop" ? MuxKind.Stop : MuxKind.Kill, e.idBytes!)
          else if (e.socket !== undefined) {
            if (!e.socket.destroyed) e.socket.write(controlFrame(message))
          }
          else e.controls.push(message)
        },
        close: () => {
          if (e.closed) return
          e.closed = true
          e.settled = true
          clearTimeout(e.callHomeTimer)
          entries.delete(subject)
          if (e.mux !== undefined) {
            // A live mux stream is reset (the worker hears a disconnect); the connection stays.
            if (e.phase === PROLOGUE || e.phase === STREAMING) muxReset(e, "cancelled by the router")
            else muxForget(e)
            e.phase = CLOSED
            return
          }
          const socket = e.socket
          if (socket === undefined || e.phase === SENTINEL) {
            // Waiting: nothing to close. After complete_final: the sentinel (or its timer) closes it.
            if (e.phase !== SENTINEL) e.phase = CLOSED
            return
          }
          e.phase = CLOSED
          if (socket.writableLength > 0) {
            // Let a just-written stop/kill reach the worker, within a bound.
            socket.end()
            setTimeout(() => socket.destroy(), CLOSE_DRAIN_MS).unref?.()
          } else socket.destroy()
        }
      }
    }

    const server_: TcpStreamServer = {
      transport: "tcp",
      open: (openOptions) =>
        Effect.suspend(() =>
          address !== undefined && !shutDown
            ? Effect.succeed(openNow(address, openOptions))
            : Effect.flatMap(ensureListening, (advertised) => Effect.sync(() => openNow(advertised, openOptions)))
        ),
      muxConnectionCount: () => muxSockets.size,
      dropMuxConnections: () => {
        for (const socket of muxSockets.values()) socket.resetAndDestroy()
      }
    }
    return server_
  })
