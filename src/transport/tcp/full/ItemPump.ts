/**
 * The router's side of a streamed request (full mode, `RequestMessage.items`): runs the items
 * Stream on one fiber and sends each item as a RequestData frame, under the stream's credit.
 *
 * What it does: per chunk of the Stream, encodes every item (`{"data": item}` in the request's
 * payload codec) and hands it to the sink, then waits while the sink is not writable (the
 * stream's credit is spent, the connection window is full, or the socket's buffer is past its
 * mark). When the Stream ends it sends RequestEnd; when it fails, or an item cannot be encoded or
 * would make a frame above the maximum message size, it sends the Error frame with the reason
 * instead (the worker's Stream fails with it). The returned function interrupts the fiber: the
 * stream is over on the router's side, and nothing more is sent.
 *
 * What it does not do: frame, count credit or write (the sink, a `RouterConnection`, does). One
 * fiber per streamed request and one wait per chunk at most; nothing per item but the encode.
 */
import { Cause, Data, Effect, Exit, Stream } from "effect"
import type { Fiber } from "effect"
import { MUX_HEADER_SIZE } from "../../../protocol/MuxCodec.ts"
import type { PayloadCodec } from "../../../protocol/PayloadCodec.ts"
import { encodeRequestItem } from "./RequestItems.ts"

/** Runs an Effect on a fiber of the sender's runtime. */
export type RunFork = <A, E>(effect: Effect.Effect<A, E>) => Fiber.Fiber<A, E>

/** Where the pump's frames go (one request on its connection). */
export interface ItemSink {
  /** Largest frame, header included. */
  readonly maxMessageSize: number
  /** Sends one RequestData payload (held for credit if need be). */
  readonly send: (payload: Uint8Array) => void
  /** True when more may be sent now; otherwise false, and `f` runs once it may (or the request is over). */
  readonly whenWritable: (f: () => void) => boolean
  /** Sends RequestEnd. */
  readonly end: () => void
  /** Sends the Error frame with `text`. */
  readonly fail: (text: string) => void
}

/** An item the pump could not send. */
class ItemRefused extends Data.TaggedError("ItemRefused")<{ readonly text: string }> {}

const describe = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (error instanceof ItemRefused) return error.text
  const text = error instanceof Error ? error.message : String(error)
  return `the request's item stream failed: ${text}`
}

/** Starts sending `items` to `sink` on a fiber run by `run`; returns the function that stops it. */
export const pumpItems = (run: RunFork, items: Stream.Stream<unknown, unknown>, codec: PayloadCodec, sink: ItemSink): (() => void) => {
  let index = 0
  const ready = Effect.callback<void>((resume) => {
    if (sink.whenWritable(() => resume(Effect.void))) resume(Effect.void)
  })
  const sendChunk = (chunk: ReadonlyArray<unknown>): Effect.Effect<void, ItemRefused> => {
    for (let i = 0; i < chunk.length; i++) {
      const item = chunk[i]
      let body: Uint8Array
      try {
        if (item === undefined || typeof item === "function" || typeof item === "symbol") throw new TypeError(`a ${typeof item} has no encoding`)
        body = encodeRequestItem(codec, item)
      } catch (cause) {
        return Effect.fail(new ItemRefused({ text: `request item ${index} could not be encoded as ${codec.name}: ${cause instanceof Error ? cause.message : String(cause)}` }))
      }
      if (MUX_HEADER_SIZE + body.length > sink.maxMessageSize) {
        return Effect.fail(
          new ItemRefused({ text: `request item ${index} makes a ${MUX_HEADER_SIZE + body.length}-byte frame, above the maximum message size of ${sink.maxMessageSize} bytes` })
        )
      }
      sink.send(body)
      index++
    }
    return ready
  }
  const fiber = run(Stream.runForEachArray(items, sendChunk))
  fiber.addObserver((exit) => {
    if (Exit.isSuccess(exit)) sink.end()
    else if (!Cause.hasInterruptsOnly(exit.cause)) sink.fail(describe(exit.cause))
  })
  return () => fiber.interruptUnsafe()
}
