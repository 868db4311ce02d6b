/**
 * The response plane: how a worker's response stream gets back to the router.
 *
 * Shapes only. The router's side (`ResponsePlaneServer`) opens a pending stream and hands
 * out the `ConnectionInfo` that travels with the request; items arrive through a
 * `ResponseSink` of plain callbacks (the lean core: no fiber or Stream per frame). The
 * worker's side (`ResponsePlaneClient`) connects with that ConnectionInfo and writes items
 * through a `ResponseWriter`.
 */
import type { Effect, Exit } from "effect"
import type { ConnectionInfo, PayloadCodecName } from "./ConnectionInfo.ts"
import type { TransportId } from "./Transport.ts"
import type { HandlerError, ResponseWriteError, TransportError } from "./TransportError.ts"

/** Router-side callbacks for one stream. Exactly one of `onEnd` / `onError` is called, once. */
export interface ResponseSink {
  /** The worker's prologue said the handler started. */
  readonly onStart?: (() => void) | undefined
  /** Items, in order. Called once per frame batch. */
  readonly onItems: (items: ReadonlyArray<unknown>) => void
  /** `complete_final` arrived: the stream is whole. */
  readonly onEnd: () => void
  /** The stream failed: a transport failure, or the handler's own failure. */
  readonly onError: (error: TransportError | HandlerError) => void
}

/** What the router needs to open a stream. */
export interface OpenStreamOptions {
  readonly requestId: string
  readonly endpoint: string
  readonly codec: PayloadCodecName
  readonly sink: ResponseSink
  /**
   * The request plane carries this stream on its own connection (`RequestPlaneClient.carriesResponses`,
   * the full TCP mode): no worker will call home, so no call-home timeout is armed; the request
   * plane bounds the wait for the stream's first frame (its ack timeout). Default false.
   */
  readonly carried?: boolean | undefined
}

/** A pending or live stream on the router. */
export interface PendingStream {
  /** The call-home address to send with the request. */
  readonly connectionInfo: ConnectionInfo
  /** Sends `stop` or `kill` to the worker (delivered once it has connected). */
  readonly control: (message: "stop" | "kill") => void
  /** True once the stream has ended or failed, or its connection closed. */
  readonly isDone: () => boolean
  /** Unregisters the stream and closes its connection. Idempotent. */
  readonly close: () => void
  /**
   * Flow control (optional): stop taking this stream's data from the worker until `resume`
   * (one connection per stream: its socket is not read; pooled: no more credit is granted, so
   * at most one stream window more arrives). Idempotent; items already read still arrive.
   */
  readonly pause?: (() => void) | undefined
  /** Takes the stream's data again after `pause`. Idempotent. */
  readonly resume?: (() => void) | undefined
}

/** The router's side of a response transport. */
export interface ResponsePlaneServer {
  readonly transport: TransportId
  /**
   * Opens a pending stream; the caller must `close()` it (the Endpoint layer ties that to the
   * request's scope). A worker that never connects fails the sink with a timeout.
   */
  readonly open: (options: OpenStreamOptions) => Effect.Effect<PendingStream, TransportError>
  /**
   * Optional: the stream `open` would give, opened now when that needs no waiting (a server
   * already listening), else undefined and the caller uses `open`. Lets the router's call skip
   * the Effect steps of `open` on its hot path.
   */
  readonly openNow?: ((options: OpenStreamOptions) => PendingStream | undefined) | undefined
}

/**
 * The outcome of a write: `Exit.void` when the item was queued (or dropped because the stream is
 * already over, which its `onDisconnect`/`onControl` report), a failed Exit with a
 * `ResponseWriteError` when it could not be encoded or framed. An `Exit` is an `Effect`, so
 * `yield* writer.send(item)` fails in the error channel; the write itself happened synchronously.
 * Writers never throw.
 */
export type WriteResult = Exit.Exit<void, ResponseWriteError>

/** The worker's writer for one stream. Writes are synchronous and batched by the transport. */
export interface ResponseWriter {
  /** Sends the prologue: no error (the handler started), or the reason it could not start. */
  readonly prologue: (error?: string) => void
  /** Sends one item. */
  readonly send: (item: unknown) => WriteResult
  /** Sends several items, in order; on a failure, the items before the one that failed were sent, none after it. */
  readonly sendAll: (items: ReadonlyArray<unknown>) => WriteResult
  /** Reports a handler failure in-band and closes: the router fails with a HandlerError. */
  readonly fail: (message: string) => void
  /** Sends `complete_final` and the sentinel, then closes. */
  readonly complete: () => void
  /** Aborts: closes without `complete_final` (after stop/kill). */
  readonly close: () => void
  /** Registers the receiver of the router's control messages. */
  readonly onControl: (f: (message: "stop" | "kill") => void) => void
  /** Registers a callback for the connection ending before `complete`/`close` (router gone). */
  readonly onDisconnect: (f: (error: TransportError) => void) => void
  /**
   * Backpressure. True when the stream can take more now. Otherwise false, and `f` runs once
   * it can, or once the stream is over: the router is not reading fast enough (frames held back
   * for credit, or a socket buffer past its mark). Absent: the transport never holds writes back.
   */
  readonly whenWritable?: ((f: () => void) => boolean) | undefined
}

/** What the worker needs to call home. */
export interface ConnectOptions {
  readonly connectionInfo: ConnectionInfo
  readonly requestId: string
  readonly codec: PayloadCodecName
  /**
   * The request plane the request came on, when known. The pooled TCP call-home uses it to
   * choose whether and how it waits one event-loop turn before its stream: not at all after a
   * "tcp" request (Dynamo's framing queues its ack for the tick's write before the handler
   * runs) or an "http" one (that plane starts the handler on the next turn itself when it
   * should); on its own when absent (an unknown plane's ack may leave on a later turn); else
   * (NATS) on the turn it shares with every stream started in the same tick, so their frames
   * leave in one write.
   */
  readonly requestTransport?: TransportId | undefined
}

/** The worker's side of a response transport. */
export interface ResponsePlaneClient {
  readonly transport: TransportId
  /** The `ConnectionInfo.transport` strings this client can call home to. */
  readonly connectionTransports: ReadonlyArray<string>
  /** Connects to the router. Fails with a typed error when the info is bad or the router unreachable. */
  readonly connect: (options: ConnectOptions) => Effect.Effect<ResponseWriter, TransportError>
  /**
   * Optional: the writer at once when nothing needs waiting for (a pooled connection with room,
   * already open), or the typed error `connect` would fail with; undefined when it cannot say
   * without I/O, and the caller uses `connect`. Like `connect`, it opens the stream: call one or
   * the other. Lets the worker skip the Effect steps of `connect` on its hot path.
   */
  readonly connectNow?: ((options: ConnectOptions) => ResponseWriter | TransportError | undefined) | undefined
}
