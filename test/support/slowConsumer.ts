/**
 * End-to-end flow control, shared by the one-shot and the pooled call-home tests: a worker's
 * Stream handler produces `n` items of 32 KiB; the router's `generate` consumer takes 20, then
 * stops pulling until released. The worker must stall (its handler is no longer pulled) well
 * before `n`, and once the consumer goes on, every item arrives in order and the stream ends.
 */
import { Deferred, Effect, Fiber, Stream } from "effect"
import * as Endpoint from "../../src/Endpoint.ts"

const sleep = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))

const eventually = (f: () => boolean, ms = 5000) =>
  Effect.promise(async () => {
    const deadline = Date.now() + ms
    while (!f() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5))
    return f()
  })

/** What the scenario saw: items produced when the worker stalled, and in the end. */
export interface SlowConsumerResult {
  readonly stalledAt: number
  readonly stalledLater: number
  readonly produced: number
  readonly received: ReadonlyArray<number>
  readonly handlerFinished: boolean
}

/** Runs the scenario on `path` with the stack in context (Endpoint's requirements). */
export const slowConsumer = (path: string, n: number, maxBufferedItems: number) =>
  Effect.gen(function*() {
    const token = "x".repeat(32 * 1024)
    let produced = 0
    let handlerFinished = false
    yield* Endpoint.serve(path, () =>
      Stream.range(1, n, 4).pipe(
        Stream.tap(() => Effect.sync(() => produced++)),
        Stream.map((i) => ({ i, token })),
        Stream.ensuring(Effect.sync(() => (handlerFinished = true)))
      ))
    const client = yield* Endpoint.client<unknown, { i: number; token: string }>(path, { maxBufferedItems })
    const gate = yield* Deferred.make<void>()
    const received: Array<number> = []
    const consumer = yield* Stream.runForEach(client.generate({}), (item) =>
      Effect.suspend(() => {
        received.push(item.i)
        return received.length === 20 ? Deferred.await(gate) : Effect.void
      })).pipe(Effect.forkChild)
    yield* eventually(() => received.length === 20)
    // The consumer has stopped pulling: the worker fills what the transport lets it, then stalls.
    yield* sleep(300)
    const stalledAt = produced
    yield* sleep(300)
    const stalledLater = produced
    yield* Deferred.succeed(gate, undefined)
    yield* Fiber.join(consumer)
    yield* eventually(() => handlerFinished, 2000)
    return { stalledAt, stalledLater, produced, received, handlerFinished } satisfies SlowConsumerResult
  })
