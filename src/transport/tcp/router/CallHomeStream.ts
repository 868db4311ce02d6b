/**
 * One call-home response stream on the router, as a state machine without a socket: the part of
 * docs/protocol.md section 4 (one-shot call-home) and section 6 (response mux v1) that both
 * framings share.
 *
 * What it does:
 * - Phases: waiting (opened, no worker yet) → prologue (the worker called home) → streaming (the
 *   prologue said the handler started) → sentinel (complete_final read, one-shot only: waiting for
 *   the `"sentinel"` frame) → closed. A mux stream goes from streaming straight to closed.
 * - Settles exactly once: `onEnd` or `onError`, and nothing after `close()`. A prologue error is
 *   a HandlerError (phase "prologue"), the in-band error body a HandlerError (phase "stream"), a
 *   bad body or an out-of-place frame a TransportProtocolError, a stream cut short (its link
 *   closed, a mux Reset, a sentinel before complete_final) TransportConnectionError
 *   "StreamEndedEarly", no call-home within `callHomeTimeoutMs` TransportTimeoutError
 *   "CallHomeTimeout", nothing received for the idle timeout TransportTimeoutError "StreamIdle".
 * - Inactivity (`DYN_STREAM_IDLE_TIMEOUT_SECS`): every frame of the stream sets `active` (an
 *   `Activity`: one store, no clock). The server's sweep asks `quietFor(now)`, which also counts
 *   the link's connection-level heartbeats (`StreamLink.heardAt`), and calls `idleOut` when it ran
 *   out: the stream fails, the worker gets a Kill and the link is released (the one-shot socket is
 *   destroyed, the mux stream gets a Reset). A paused stream is not idle: the router holds it back.
 * - Items are decoded synchronously and batched until `flush()`: the driver flushes once per
 *   socket chunk, so the sink gets one `onItems` per stream per chunk.
 * - `control` queues stop/kill until the worker has called home; `pause`/`resume` reach the link
 *   (not reading the socket, or withholding mux credit); after complete_final a paused stream
 *   resumes so that the sentinel is read, and the sentinel's wait is bounded.
 *
 * What it does not do: read sockets or frames. Its driver (OneShotConnection or MuxConnection)
 * decodes the framing and turns it into the events below, and does the stream's I/O through its
 * `StreamLink`. No Effect, and nothing allocated per item beyond the decoded value.
 */
import { readPrologue } from "../../../protocol/CallHome.ts"
import { payloadCodec } from "../../../protocol/PayloadCodec.ts"
import type { PayloadCodec } from "../../../protocol/PayloadCodec.ts"
import type { ProtocolParseError } from "../../../protocol/ProtocolError.ts"
import type { ChunkText } from "../../../protocol/ChunkText.ts"
import { decodeStreamBody, jsonStreamItemIn, NOT_A_PLAIN_ITEM } from "../../../protocol/RequestMessage.ts"
import { STREAM_ID_SIZE, uuidFromStreamId } from "../../../protocol/StreamId.ts"
import { toTransportProtocolError } from "../../../internal/protocolError.ts"
import type { ConnectionInfo } from "../../../ConnectionInfo.ts"
import type { OpenStreamOptions, PendingStream, ResponseSink } from "../../../ResponsePlane.ts"
import { HandlerError, TransportProtocolError } from "../../../TransportError.ts"
import type { TransportError } from "../../../TransportError.ts"
import { Phase } from "./StreamLink.ts"
import { callHomeTimeout, connectionClosed, endedEarly, linkFailure } from "./StreamFailure.ts"
import type { CallHomeWaiter, StreamEnv, StreamLink } from "./StreamLink.ts"
import type { Deadline } from "../../../internal/DeadlineList.ts"
import { lastSeen, streamIdleError } from "../../../internal/IdleSweep.ts"
import type { Activity } from "../../../internal/IdleSweep.ts"

/** One router-side call-home stream; see the module comment. */
export class CallHomeStream implements PendingStream, Activity {
  /** The subject's 16 bytes: the stream id, and its key in the server's table. */
  readonly id: Uint8Array
  /** The subject's text, made on first use (the full mode's streams seldom need it). */
  private subjectText: string | undefined = undefined
  /** Where the worker calls home; the call-home address is built from it on first use. */
  private readonly address: string
  private info: ConnectionInfo | undefined = undefined
  private readonly requestId: string
  private readonly endpoint: string
  private readonly codec: PayloadCodec
  private readonly sink: ResponseSink
  private readonly env: StreamEnv
  private state: Phase = Phase.Waiting
  private current: StreamLink | undefined = undefined
  /** A terminal callback was delivered, or `close()` was called: no more callbacks. */
  private settled = false
  /** `close()` was called. */
  private closed = false
  /** The link closed under the stream. */
  private gone = false
  private paused = false
  private batch: Array<unknown> = []
  private controls: Array<"stop" | "kill"> | undefined = undefined
  /** Its place in the server's call-home deadlines while it waits for its worker. */
  private callHome: Deadline<CallHomeWaiter> | undefined
  /** Its place in the server's sentinel deadlines after complete_final (one-shot). */
  private sentinelDeadline: Deadline<CallHomeWaiter> | undefined = undefined
  /** A frame of this stream arrived since the idle sweep last looked (`Activity`). */
  active = false
  /** When the idle sweep last saw this stream active (`Activity`). */
  seenAt = 0

  /** The stream's single-use subject (a mux stream's id, as UUID text). */
  get subject(): string {
    return (this.subjectText ??= uuidFromStreamId(this.id))
  }

  /**
   * Opens a stream waiting for its worker, which calls home to `address` (the call-home address
   * that travels with the request is built when a request plane first asks for it: the full TCP
   * mode never does).
   */
  constructor(env: StreamEnv, id: Uint8Array, address: string, options: OpenStreamOptions) {
    if (id.length !== STREAM_ID_SIZE) throw new TypeError(`a call-home stream's id is ${STREAM_ID_SIZE} bytes, not ${id.length}`)
    this.env = env
    this.id = id
    this.address = address
    this.requestId = options.requestId
    this.endpoint = options.endpoint
    this.codec = payloadCodec(options.codec)
    this.sink = options.sink
    // A stream the request plane carries (the full mode) has its ack timeout there instead.
    this.callHome = options.carried === true ? undefined : env.callHomeDeadlines.add(this)
  }

  /** The call-home address to send with the request. */
  get connectionInfo(): ConnectionInfo {
    return (this.info ??= this.env.connectionInfo(this.address, this.subject, this.requestId))
  }

  /**
   * The wait for the worker is bounded elsewhere from now on (the full TCP mode: its request was
   * sent, and the ack timeout bounds the wait for its Prologue): the call-home timeout stops.
   */
  stopCallHomeTimer(): void {
    this.env.callHomeDeadlines.remove(this.callHome)
    this.callHome = undefined
  }

  /** True when `env` is the environment this stream was opened with (its server's). */
  openedIn(env: StreamEnv): boolean {
    return this.env === env
  }

  /** The current phase; drivers read it to map frames to events. */
  get phase(): Phase {
    return this.state
  }

  /** The link of a claimed stream, until it closes. */
  get link(): StreamLink | undefined {
    return this.current
  }

  // ---- the consumer's side (PendingStream) ---------------------------------------------------

  /** True once the stream has ended or failed, or its link closed. */
  isDone(): boolean {
    return this.settled || this.gone || this.state === Phase.Closed
  }

  /** Sends stop or kill, queued until the worker has called home; dropped once the stream is over. */
  control(message: "stop" | "kill"): void {
    if (this.closed || this.state >= Phase.Sentinel) return
    if (this.current !== undefined) this.current.control(message)
    else (this.controls ??= []).push(message)
  }

  /** Takes no more data until `resume` (idempotent). */
  pause(): void {
    if (this.paused || this.closed) return
    this.paused = true
    this.current?.pause()
  }

  /** Takes data again after `pause` (idempotent). */
  resume(): void {
    if (!this.paused) return
    this.paused = false
    this.active = true // its silence while paused was the router's doing
    this.current?.resume()
  }

  /** Unregisters the stream; no callback follows. A live stream's worker hears a disconnect. Idempotent. */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.settled = true
    this.stopCallHomeTimer()
    this.env.forget(this.id)
    const phase = this.state
    // After complete_final the sentinel (or its timer) releases the link.
    if (phase === Phase.Sentinel) return
    this.state = Phase.Closed
    if (phase === Phase.Prologue || phase === Phase.Streaming) this.current?.cancel()
  }

  // ---- the worker's side: events from the driver ---------------------------------------------

  /** The worker called home (handshake, or mux Prologue): attach `link`. Only while waiting. */
  claim(link: StreamLink): void {
    if (this.state !== Phase.Waiting) return
    this.stopCallHomeTimer()
    this.current = link
    this.state = Phase.Prologue
    this.active = true
    if (this.paused) link.pause()
    const queued = this.controls
    if (queued === undefined) return
    this.controls = undefined
    for (const message of queued) link.control(message)
  }

  /** The prologue's JSON: the handler started, or why it could not. A second one is a protocol error. */
  prologue(json: Uint8Array): void {
    this.active = true
    if (this.state !== Phase.Prologue) {
      if (this.state === Phase.Streaming) this.unexpected("a second prologue in a response stream")
      return
    }
    const prologue = readPrologue(json)
    if (prologue._tag === "Started") {
      this.state = Phase.Streaming
      if (!this.settled) this.sink.onStart?.()
    } else if (prologue._tag === "Refused") {
      this.state = Phase.Closed
      this.fail(new HandlerError({ endpoint: this.endpoint, requestId: this.requestId, detail: prologue.message, phase: "prologue" }))
      this.current?.release(undefined)
    } else this.malformed(prologue)
  }

  /** One stream body (a data frame): an item, complete_final, or the in-band error; `jsonStreamItemIn` says what `chunk` and `offset` are. */
  data(body: Uint8Array, chunk?: ChunkText, offset = -1): void {
    if (this.state !== Phase.Streaming) return
    this.active = true
    if (this.codec.name === "json") {
      // The common body, `{"data":<item>,"complete_final":false}`: only the item is parsed.
      const item = jsonStreamItemIn(body, chunk, offset)
      if (item !== NOT_A_PLAIN_ITEM) return this.item(item)
    }
    const r = decodeStreamBody(this.codec, body)
    if (r._tag === "Item") {
      this.item(r.data)
      if (r.last) this.complete()
    } else if (r._tag === "Complete") {
      this.complete()
    } else if (r._tag === "Error") {
      this.flush()
      this.state = Phase.Closed
      this.fail(new HandlerError({ endpoint: this.endpoint, requestId: this.requestId, detail: r.message, phase: "stream" }))
      this.current?.release(undefined)
    } else this.malformed(r)
  }

  /** Adds a decoded item to the batch that `flush` hands to the sink. */
  private item(data: unknown): void {
    if (this.batch.length === 0) this.current!.batchStarted()
    this.batch.push(data)
  }

  /** Mux End: complete_final and the sentinel in one. Before the prologue it is a protocol error. */
  end(): void {
    if (this.state === Phase.Streaming) this.complete()
    else if (this.state === Phase.Prologue) this.unexpected("End before the stream's prologue")
  }

  /** The one-shot `"sentinel"`: after complete_final it releases the link; before, it cuts the stream short. */
  sentinel(): void {
    if (this.state === Phase.Sentinel) this.finish()
    else if (this.state === Phase.Streaming) this.cutShort(new Error("sentinel before complete_final"))
  }

  /** Any other frame after complete_final (one-shot): ignored and logged; the link is released as after the sentinel. */
  strayAfterEnd(): void {
    if (this.state !== Phase.Sentinel) return
    this.env.logDebug("unexpected frame after complete_final; closing", { subject: this.subject })
    this.finish()
  }

  /** A frame that has no place here: TransportProtocolError "UnexpectedMessage". */
  unexpected(detail: string): void {
    this.protocolFailure(new TransportProtocolError({ reason: "UnexpectedMessage", transport: "tcp", target: this.subject, detail }))
  }

  /** Bytes that do not parse (the framing, the prologue or a body): TransportProtocolError with the parse error's reason. */
  malformed(error: ProtocolParseError): void {
    this.protocolFailure(toTransportProtocolError(error, "tcp", this.subject))
  }

  /** The worker cut the stream short while its link lives (mux Reset, early sentinel): "StreamEndedEarly". */
  cutShort(cause: unknown): void {
    if (this.state !== Phase.Prologue && this.state !== Phase.Streaming) return
    this.endEarly(cause)
    this.current?.release(undefined)
  }

  /**
   * The link closed under the stream (socket closed, mux connection died). Between call-home and
   * complete_final the stream fails: "StreamEndedEarly", or the connection's TransportProtocolError
   * or TransportTimeoutError (a full-mode peer that missed its heartbeats: "HeartbeatTimeout").
   */
  disconnected(cause: Error | undefined): void {
    this.gone = true
    this.current = undefined
    this.stopSentinelTimer()
    if (this.state === Phase.Prologue || this.state === Phase.Streaming) {
      const failure = linkFailure(cause, this.subject)
      if (failure === undefined) this.endEarly(cause)
      else {
        this.flush()
        this.fail(failure)
      }
    }
    this.state = Phase.Closed
  }

  /** The worker reset the stream before its call-home reached the router (mux): "ConnectionClosed" naming its reason. */
  resetBeforeClaim(reason: string): void {
    if (this.state !== Phase.Waiting) return
    this.state = Phase.Closed
    this.fail(connectionClosed(this.subject, `the worker reset the stream before its prologue reached the router: ${reason}`))
  }

  /**
   * The request meant to start this stream failed before the worker started it (the full mode:
   * refused, no ack in time, or its connection lost): a stream still waiting fails with `error`.
   */
  abandon(error: TransportError): void {
    if (this.state !== Phase.Waiting) return
    this.state = Phase.Closed
    this.fail(error)
  }

  /** The server shuts down: "ConnectionClosed" (the server closes the sockets). */
  serverClosed(): void {
    this.stopCallHomeTimer()
    this.stopSentinelTimer()
    this.state = Phase.Closed
    this.fail(connectionClosed(this.subject, "the call-home server has shut down"))
  }

  /**
   * For the idle sweep, at sweep time `now`: how long (ms) nothing arrived for this stream, its
   * own frames or its link's heartbeats; -1 when it is not watched (not yet called home, over, or
   * paused by the router).
   */
  quietFor(now: number): number {
    if ((this.state !== Phase.Prologue && this.state !== Phase.Streaming) || this.settled) return -1
    if (this.paused) {
      this.active = true
      return -1
    }
    let seen = lastSeen(this, now)
    const heard = this.current?.heardAt?.(now)
    if (heard !== undefined && heard > seen) seen = heard
    return now - seen
  }

  /**
   * Nothing arrived for `silentMs` (at least the idle timeout `idleMs`): TransportTimeoutError
   * "StreamIdle" naming the worker, then Kill and release (a Reset on a mux connection).
   */
  idleOut(silentMs: number, idleMs: number): void {
    if (this.state !== Phase.Prologue && this.state !== Phase.Streaming) return
    const link = this.current
    this.flush()
    this.state = Phase.Closed
    this.fail(streamIdleError("tcp", link?.peer ?? this.subject, `stream ${this.subject}`, silentMs, idleMs))
    if (link === undefined) return
    link.control("kill")
    link.release(`idle timeout: nothing received for ${Math.round(silentMs)} ms`)
  }

  /** Hands the items batched since the last flush to the sink, as one `onItems`. */
  flush(): void {
    const items = this.batch
    if (items.length === 0) return
    this.batch = []
    if (!this.settled) this.sink.onItems(items)
  }

  // ---- transitions ---------------------------------------------------------------------------

  private complete(): void {
    this.flush()
    const link = this.current!
    const awaitsSentinel = link.awaitsSentinel
    this.state = awaitsSentinel ? Phase.Sentinel : Phase.Closed
    // A link that needs no sentinel is let go before the sink hears the end: credit still owed to
    // the stream is dropped instead of riding in the write of a request that `onEnd` may make at
    // once, and the connection's slot is free for that request.
    if (!awaitsSentinel) link.release(undefined)
    if (this.settle()) this.sink.onEnd()
    if (!awaitsSentinel) return
    if (this.state === Phase.Sentinel && !this.gone) {
      // The stream is whole: read on (a pause taken in onItems must not hide the sentinel), and
      // bound the wait for the sentinel so no socket outlives its stream for long.
      this.resume()
      this.sentinelDeadline = this.env.sentinelDeadlines.add(this)
    }
  }

  /** The server's sentinel deadline for this stream passed (it is out of the list already): the link is released. */
  sentinelExpired(): void {
    this.sentinelDeadline = undefined
    this.finish()
  }

  private stopSentinelTimer(): void {
    this.env.sentinelDeadlines.remove(this.sentinelDeadline)
    this.sentinelDeadline = undefined
  }

  private finish(): void {
    this.stopSentinelTimer()
    this.state = Phase.Closed
    this.current?.release(undefined)
  }

  private protocolFailure(error: TransportProtocolError): void {
    if (this.state === Phase.Waiting || this.state === Phase.Closed) return
    this.flush()
    this.state = Phase.Closed
    this.fail(error)
    this.current?.release(`protocol error: ${error.detail ?? error.reason}`)
  }

  private endEarly(cause: unknown): void {
    this.flush()
    this.state = Phase.Closed
    this.fail(endedEarly(this.subject, cause))
  }

  /** The server's call-home deadline for this stream passed (it is out of the list already). */
  callHomeExpired(): void {
    this.callHome = undefined
    if (this.state !== Phase.Waiting) return
    this.state = Phase.Closed
    this.fail(callHomeTimeout(this.subject, this.address, this.env.callHomeTimeoutMs))
  }

  private settle(): boolean {
    if (this.settled) return false
    this.settled = true
    this.stopCallHomeTimer()
    this.env.forget(this.id)
    return true
  }

  private fail(error: TransportError | HandlerError): void {
    if (this.settle()) this.sink.onError(error)
  }
}
