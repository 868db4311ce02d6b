/**
 * The items of one streamed request on the worker (full mode, request_type "many_in"): the
 * RequestData frames of a stream, as the `Stream` the handler reads (`RequestMessage.items`).
 *
 * What it does: `push` decodes one RequestData payload (the payload codec's encoding of
 * `{"data": item}`) and buffers the item; the Stream hands the consumer everything buffered in
 * one chunk per pull, and reports the payload bytes of what it handed over to `onConsumed` (the
 * connection grants them back to the router as WindowUpdate credit: a slow handler holds the
 * router back). `end` (RequestEnd) ends the Stream after the buffered items; `fail` (the router's
 * Error frame, a Reset, the connection's death) fails it with a `TransportError` once the
 * buffered items are read, or at once when `now` says so. `outstanding` is the payload bytes
 * received and not yet consumed, which the connection checks against the credit it granted.
 *
 * What it does not do: frames or credit frames (the connection does), or more than one run of
 * the Stream (a second run finds nothing). Per item: one decode and one array push; no fiber or
 * Effect per item, one wake-up per batch.
 */
import { Cause, Effect, Stream } from "effect"
import type { Array as Arr } from "effect"
import type { PayloadCodec } from "../../../protocol/PayloadCodec.ts"
import { ProtocolParseError } from "../../../protocol/ProtocolError.ts"
import type { TransportError } from "../../../TransportError.ts"

/** The payload of a RequestData frame carrying `item`: the codec's encoding of `{"data": item}` (throws what the codec throws). */
export const encodeRequestItem = (codec: PayloadCodec, item: unknown): Uint8Array => codec.encode({ data: item })

/** The item of a RequestData payload, or the "BadPayload" parse error naming what is wrong. */
export const decodeRequestItem = (codec: PayloadCodec, payload: Uint8Array): { readonly item: unknown } | ProtocolParseError => {
  let value: unknown
  try {
    value = codec.decode(payload)
  } catch (cause) {
    return new ProtocolParseError("BadPayload", `request item is not valid ${codec.name}: ${cause instanceof Error ? cause.message : String(cause)}`, cause)
  }
  if (typeof value !== "object" || value === null || Array.isArray(value) || !("data" in value)) {
    return new ProtocolParseError("BadPayload", "request item is not an object with a data field")
  }
  return { item: (value as { readonly data: unknown }).data }
}

/** One streamed request's items; see the module comment. */
export class RequestItems {
  /** The handler's Stream of the items. */
  readonly stream: Stream.Stream<unknown, TransportError>
  private readonly codec: PayloadCodec
  private readonly onConsumed: (bytes: number) => void
  private buffer: Array<unknown> = []
  private bufferedBytes = 0
  private ended = false
  private failure: TransportError | undefined = undefined
  private waiting: (() => void) | undefined = undefined

  /** Items decoded with `codec`; `onConsumed(bytes)` runs as the consumer takes them. */
  constructor(codec: PayloadCodec, onConsumed: (bytes: number) => void) {
    this.codec = codec
    this.onConsumed = onConsumed
    this.stream = Stream.fromPull(Effect.succeed(this.pull))
  }

  /** True once the stream has ended or failed (nothing more is taken). */
  get isOver(): boolean {
    return this.ended || this.failure !== undefined
  }

  /** Payload bytes received and not yet handed to the consumer. */
  outstanding(): number {
    return this.bufferedBytes
  }

  /** One RequestData payload; returns the parse error (and takes nothing) when it is not an item. */
  push(payload: Uint8Array): ProtocolParseError | undefined {
    if (this.isOver) return undefined
    const r = decodeRequestItem(this.codec, payload)
    if (r instanceof ProtocolParseError) return r
    this.buffer.push(r.item)
    this.bufferedBytes += payload.length
    this.wake()
    return undefined
  }

  /** RequestEnd: the Stream ends after the items buffered. */
  end(): void {
    if (this.isOver) return
    this.ended = true
    this.wake()
  }

  /** The request stream failed: the Stream fails with `error` after the buffered items (at once with `now`, dropping them). */
  fail(error: TransportError, now = false): void {
    if (this.isOver) return
    this.failure = error
    if (now) {
      this.buffer = []
      this.bufferedBytes = 0
    }
    this.wake()
  }

  private wake(): void {
    const w = this.waiting
    if (w === undefined) return
    this.waiting = undefined
    // The consumer resumes in a microtask, never inside the connection's read loop.
    queueMicrotask(w)
  }

  private readonly pull: Effect.Effect<Arr.NonEmptyReadonlyArray<unknown>, TransportError | Cause.Done> = Effect.suspend(() => {
    if (this.buffer.length > 0) {
      const out = this.buffer as unknown as Arr.NonEmptyReadonlyArray<unknown>
      const bytes = this.bufferedBytes
      this.buffer = []
      this.bufferedBytes = 0
      this.onConsumed(bytes)
      return Effect.succeed(out)
    }
    if (this.failure !== undefined) return Effect.fail(this.failure)
    if (this.ended) return Cause.done()
    return Effect.callback<Arr.NonEmptyReadonlyArray<unknown>, TransportError | Cause.Done>((resume) => {
      this.waiting = () => resume(this.pull)
      return Effect.sync(() => {
        this.waiting = undefined
      })
    })
  })
}
