/**
 * One request on the router's side of the full mode, from `sendCallback` until its stream is over
 * on its connection: what the sender, the target's connections and the item pump share.
 *
 * It holds data and the ack callback only: `RouterConnection` moves it through its states
 * (queued at the target → sent → started → done), the ack is delivered once (`ack`), and its
 * `credit`/`held` fields are its `SendWindow` state for streamed request items; `prevWaiting`/
 * `nextWaiting` link it into its connection's `AckDeadlines` while it waits for its ack.
 */
import type { Stream } from "effect"
import type { PayloadCodec } from "../../../protocol/PayloadCodec.ts"
import type { EndpointNotFound, TransportError } from "../../../TransportError.ts"
import { Waiters } from "../../../internal/Waiters.ts"
import type { CallHomeStream } from "../router/CallHomeStream.ts"
import type { HeldFrame, WindowedStream } from "../worker/SendWindow.ts"

/** Where a request stands. */
export const RequestState = {
  /** Waiting at its target for a connection with room. */
  Queued: 0,
  /** Its Request frame is queued on a connection; no answer yet. */
  Sent: 1,
  /** The worker's Prologue arrived (the ack): its stream is claimed. */
  Started: 2,
  /** Over on its connection (refused, timed out, released, or the connection gone). */
  Done: 3
} as const

/** One of `RequestState`. */
export type RequestState = (typeof RequestState)[keyof typeof RequestState]

/** The ack's error. */
export type AckError = TransportError | EndpointNotFound

/** One full-mode request on the router; see the module comment. */
export class FullRequest implements WindowedStream {
  state: RequestState = RequestState.Queued
  credit = 0
  held: Array<HeldFrame> | undefined = undefined
  /** `whenWritable` callbacks of the item pump, woken when its held frames go out (made on first use). */
  private waiting: Waiters | undefined = undefined
  /** When its Request frame was queued (`performance.now()`), for the ack timeout. */
  sentAt = 0
  /** Its neighbours in its connection's `AckDeadlines` (in send order) while it waits for its ack. */
  prevWaiting: FullRequest | undefined = undefined
  nextWaiting: FullRequest | undefined = undefined
  /** True while it is in its connection's `AckDeadlines`. */
  waitingAck = false
  /** When it first waited for a stream slot (`performance.now()`; 0: never), for the ack timeout. */
  queuedAt = 0
  /** Stops the item pump (set while one runs). */
  stopPump: (() => void) | undefined = undefined
  /** The stream's 16 id bytes (the stream's subject as a UUID). */
  readonly id: Uint8Array
  /** The router's response stream this request starts. */
  readonly stream: CallHomeStream
  /**
   * The Request frame's payload, in two parts: the request head (path, headers) and the section 2
   * message. Let go (undefined) once written: a request in flight keeps no copy of its bytes.
   */
  head: Uint8Array | undefined
  message: Uint8Array | undefined
  /** The endpoint's name, for EndpointNotFound. */
  readonly endpoint: string
  /** The request's items (a streamed request), and the codec they travel in. */
  readonly items: Stream.Stream<unknown, unknown> | undefined
  readonly codec: PayloadCodec
  private onAck: ((error: AckError | undefined) => void) | undefined

  constructor(
    id: Uint8Array,
    stream: CallHomeStream,
    head: Uint8Array,
    message: Uint8Array,
    endpoint: string,
    items: Stream.Stream<unknown, unknown> | undefined,
    codec: PayloadCodec,
    onAck: (error: AckError | undefined) => void
  ) {
    this.id = id
    this.stream = stream
    this.head = head
    this.message = message
    this.endpoint = endpoint
    this.items = items
    this.codec = codec
    this.onAck = onAck
  }

  /** Registers `f` to run when the pump may go on; returns false (`whenWritable`'s "not now"). */
  waitWritable(f: () => void): false {
    return (this.waiting ??= new Waiters()).add(f)
  }

  /** Runs the pump's waiting callbacks (its frames went out, or the request is over). */
  wakeWriters(): void {
    this.waiting?.wake()
  }

  /** True once nobody waits for the ack (delivered, or cancelled by the caller). */
  get ackDone(): boolean {
    return this.onAck === undefined
  }

  /** Delivers the ack (undefined) or its failure, once. */
  ack(error: AckError | undefined): void {
    const f = this.onAck
    if (f === undefined) return
    this.onAck = undefined
    f(error)
  }

  /** The caller stopped waiting for the ack. */
  cancelAck(): void {
    this.onAck = undefined
  }
}
