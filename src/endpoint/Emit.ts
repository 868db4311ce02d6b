/**
 * The `emit` a worker handler writes its response items with, over one stream's
 * `ResponseWriter`: synchronous writes, a `WriteResult` per write, and `emit.ready` for
 * backpressure. It remembers the first write that failed, so the runner can fail the stream with
 * it whether or not the handler looked at the result.
 *
 * It does not end the stream (the runner does) and allocates nothing per item beyond the
 * transport's own write.
 */
import { Cause, Effect, Result } from "effect"
import type { Exit } from "effect"
import type { ResponseWriter, WriteResult } from "../ResponsePlane.ts"
import type { ResponseWriteError } from "../TransportError.ts"

/**
 * Sends response items from an emit-style handler. Each write happens synchronously (the
 * transport batches the bytes) and returns its `WriteResult`: `Exit.void`, or a failed Exit with
 * a `ResponseWriteError` when the item has no encoding (`EncodeFailed`) or its frame is too large
 * (`MessageTooLarge`). An Exit is an Effect, so `yield* emit(item)` fails the handler with that
 * error. Ignoring the result does not hide it: the stream still fails with it, the items after
 * it are not sent, and the router gets a `HandlerError` naming it.
 */
export interface Emit<A> {
  (item: A): WriteResult
  /** Sends several items at once; same result as `emit`. */
  readonly all: (items: ReadonlyArray<A>) => WriteResult
  /**
   * Backpressure: succeeds at once while the transport keeps up, otherwise once the router has
   * read enough (or the stream is over). `serve`'s Stream adapter waits on it after every chunk;
   * an emit-style handler that produces a lot should `yield* emit.ready` between batches, or its
   * items pile up in the worker's memory when the router is slow.
   */
  readonly ready: Effect.Effect<void>
}

/** An `emit` and what the runner needs to know about its writes. */
export interface Emitter<A> {
  readonly emit: Emit<A>
  /** How many items were written. */
  readonly items: () => number
  /** The first write that failed, if any. */
  readonly failure: () => ResponseWriteError | undefined
}

/** An `Emitter` over `writer`. */
export const makeEmitter = <A>(writer: ResponseWriter): Emitter<A> => {
  let items = 0
  let failed: WriteResult | undefined
  let failure: ResponseWriteError | undefined
  const record = (result: Exit.Failure<void, ResponseWriteError>): WriteResult => {
    failed = result
    const error = Cause.findError(result.cause)
    if (Result.isSuccess(error)) failure = error.success
    return result
  }
  const emit = ((item: A): WriteResult => {
    if (failed !== undefined) return failed
    const result = writer.send(item)
    if (result._tag === "Failure") return record(result)
    items++
    return result
  }) as Emit<A> & { all: Emit<A>["all"]; ready: Emit<A>["ready"] }
  emit.all = (batch) => {
    if (failed !== undefined) return failed
    const result = writer.sendAll(batch)
    if (result._tag === "Failure") return record(result)
    items += batch.length
    return result
  }
  emit.ready = readyOf(writer)
  return { emit, items: () => items, failure: () => failure }
}

/**
 * `emit.ready` for `writer`: waits on its `whenWritable` only when it holds writes back. One
 * wake callback and one wait per request; a writable check allocates nothing.
 */
const readyOf = (writer: ResponseWriter): Effect.Effect<void> => {
  if (writer.whenWritable === undefined) return Effect.void
  let resume: ((effect: Effect.Effect<void>) => void) | undefined
  let woken = false
  const wake = () => {
    woken = true
    const r = resume
    resume = undefined
    r?.(Effect.void)
  }
  const wait = Effect.callback<void>((r) => {
    if (woken) return r(Effect.void)
    resume = r
    return Effect.sync(() => {
      resume = undefined
    })
  })
  return Effect.suspend(() => {
    woken = false
    return writer.whenWritable!(wake) ? Effect.void : wait
  })
}
