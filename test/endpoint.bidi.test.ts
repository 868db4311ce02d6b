/**
 * Bidirectional streaming through the Endpoint API, over the in-memory transport (the reference
 * request plane for streamed requests): `serveDuplex` on the worker, `generateDuplex` and
 * `callDuplex` on the router. A duplex echo; a producer failure reaching the worker's item Stream
 * as a typed error (and the call going on as the worker decides); a worker that ends early
 * interrupting the router's producer; flow control (the producer is pulled only as far as the
 * transport's window); and the refusal, at once, on a request transport that is not
 * bidirectional (http).
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Stream } from "effect"
import * as Endpoint from "../src/Endpoint.ts"
import * as MemoryTransport from "../src/transport/memory/MemoryTransport.ts"
import type { TransportError } from "../src/TransportError.ts"
import { httpStack, memoryStack } from "./support/stack.ts"

/** A producer of 0, 1, 2, … without end, one item per pull, counting its pulls and recording how it ended. */
const endlessProducer = () => {
  let pulled = 0
  let ended: Exit.Exit<unknown, unknown> | undefined
  const stream = Stream.fromEffectRepeat(Effect.sync(() => pulled++)).pipe(
    Stream.onExit((exit) =>
      Effect.sync(() => {
        ended = exit
      })
    )
  )
  return { stream, pulled: () => pulled, ended: () => ended }
}

/** Waits up to `ms` for `check` to hold. */
const eventually = (check: () => boolean, ms = 1000) =>
  Effect.gen(function*() {
    for (let waited = 0; waited < ms && !check(); waited += 5) yield* Effect.sleep(5)
  })

describe("bidirectional streaming over the in-memory transport", () => {
  it.live("a duplex echo: every item the router streams comes back, transformed, in order", () =>
    Effect.gen(function*() {
      yield* Endpoint.serveDuplex("bd.echo.run", (req: { prefix: string }, items: Stream.Stream<number, TransportError>) =>
        items.pipe(Stream.map((n) => `${req.prefix}${n}`)))
      const client = yield* Endpoint.client<{ prefix: string }, string>("bd.echo.run")
      // Many chunks, more items than the transport's window.
      const items = Stream.range(1, 1000).pipe(Stream.rechunk(7))
      const echoed = yield* Stream.runCollect(client.generateDuplex({ prefix: "e" }, items))
      expect(echoed).toEqual(Array.from({ length: 1000 }, (_, i) => `e${i + 1}`))

      const seen: Array<string> = []
      yield* client.callDuplex({ prefix: "c" }, Stream.make(1, 2, 3), (batch) => {
        seen.push(...batch)
      })
      expect(seen).toEqual(["c1", "c2", "c3"])
    }).pipe(Effect.provide(memoryStack())))

  it.live("a plain request to a duplex endpoint gives its handler an empty item Stream", () =>
    Effect.gen(function*() {
      yield* Endpoint.serveDuplex("bd.plain.run", (req: string, items: Stream.Stream<string, TransportError>) =>
        Stream.concat(Stream.make(`start ${req}`), items))
      const client = yield* Endpoint.client<string, string>("bd.plain.run")
      expect(yield* Stream.runCollect(client.generate("p"))).toEqual(["start p"])
      expect(yield* Stream.runCollect(client.generateDuplex("d", Stream.make("x", "y")))).toEqual(["start d", "x", "y"])
    }).pipe(Effect.provide(memoryStack())))

  it.live("the router's producer fails: the worker's item Stream fails with a typed TransportError carrying its message, after the items before it", () =>
    Effect.gen(function*() {
      const seenByWorker = yield* Deferred.make<TransportError>()
      // The worker turns the failure into a last item: the call goes on as it decides.
      yield* Endpoint.serveDuplex("bd.fail.catch", (_req: unknown, items: Stream.Stream<number, TransportError>) =>
        items.pipe(
          Stream.map((n) => `item ${n}`),
          Stream.catch((error) => Stream.fromEffect(Effect.as(Deferred.succeed(seenByWorker, error), `caught ${error._tag}`)))
        ))
      const client = yield* Endpoint.client<unknown, string>("bd.fail.catch")
      const producer = Stream.concat(Stream.make(1, 2), Stream.fail(new Error("the producer broke")))
      const out = yield* Stream.runCollect(client.generateDuplex({}, producer))
      expect(out).toEqual(["item 1", "item 2", "caught TransportConnectionError"])
      const error = yield* Deferred.await(seenByWorker)
      expect(error._tag).toBe("TransportConnectionError")
      expect(error.reason).toBe("StreamEndedEarly")
      expect(error.message).toContain("the producer broke")

      // A worker that lets the failure fail its handler: the router sees a HandlerError naming it.
      yield* Endpoint.serveDuplex("bd.fail.pass", (_req: unknown, items: Stream.Stream<number, TransportError>) => items)
      const passing = yield* Endpoint.client<unknown, number>("bd.fail.pass")
      const failed = yield* Effect.flip(Stream.runCollect(passing.generateDuplex({}, producer)))
      expect(failed._tag).toBe("HandlerError")
      expect(failed.message).toContain("the producer broke")
    }).pipe(Effect.provide(memoryStack())))

  it.live("a worker that ends early: the call completes and the router's endless producer is interrupted, pulled no further than the window", () =>
    Effect.gen(function*() {
      yield* Endpoint.serveDuplex("bd.early.take", (_req: unknown, items: Stream.Stream<number, TransportError>) =>
        items.pipe(Stream.take(3)))
      const client = yield* Endpoint.client<unknown, number>("bd.early.take")
      const producer = endlessProducer()
      expect(yield* Stream.runCollect(client.generateDuplex({}, producer.stream))).toEqual([0, 1, 2])
      yield* eventually(() => producer.ended() !== undefined)
      const ended = producer.ended()
      expect(ended !== undefined && Exit.isFailure(ended) && Cause.hasInterruptsOnly(ended.cause)).toBe(true)
      // The worker's first read took the whole window as one chunk (of which it used 3); then at
      // most another window waited, and one pull was in hand.
      expect(producer.pulled()).toBeLessThanOrEqual(2 * MemoryTransport.ITEM_WINDOW + 1)

      // A worker that never reads its items at all.
      yield* Endpoint.serveDuplex("bd.early.ignore", () => Stream.make("done"))
      const ignoring = yield* Endpoint.client<unknown, string>("bd.early.ignore")
      const unread = endlessProducer()
      expect(yield* Stream.runCollect(ignoring.generateDuplex({}, unread.stream))).toEqual(["done"])
      yield* eventually(() => unread.ended() !== undefined)
      expect(unread.ended()?._tag).toBe("Failure")
      expect(unread.pulled()).toBeLessThanOrEqual(MemoryTransport.ITEM_WINDOW + 1)
    }).pipe(Effect.provide(memoryStack())))

  it.live("flow control: a worker that reads slowly holds the producer to the window; a router that cancels interrupts it", () =>
    Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      const firstRead = yield* Deferred.make<void>()
      yield* Endpoint.serveDuplex("bd.flow.slow", (_req: unknown, items: Stream.Stream<number, TransportError>) =>
        Stream.concat(
          Stream.fromEffect(Effect.as(Deferred.succeed(firstRead, undefined), -1)),
          Stream.fromEffect(Deferred.await(release)).pipe(Stream.flatMap(() => items))
        ))
      const client = yield* Endpoint.client<unknown, number>("bd.flow.slow")
      const producer = endlessProducer()
      const seen: Array<number> = []
      const fiber = yield* Effect.forkChild(
        client.callDuplex({}, producer.stream, (batch) => {
          seen.push(...batch)
        })
      )
      yield* Deferred.await(firstRead)
      yield* Effect.sleep(50)
      // Nothing read yet: the transport pulled a window's worth (and one in hand), then stopped.
      const stalledAt = producer.pulled()
      expect(stalledAt).toBeLessThanOrEqual(MemoryTransport.ITEM_WINDOW + 1)
      yield* Effect.sleep(30)
      expect(producer.pulled()).toBe(stalledAt)
      yield* Deferred.succeed(release, undefined)
      yield* eventually(() => seen.length > 100)
      expect(seen.slice(0, 101)).toEqual([-1, ...Array.from({ length: 100 }, (_, i) => i)])
      yield* Fiber.interrupt(fiber)
      yield* eventually(() => producer.ended() !== undefined)
      expect(producer.ended()?._tag).toBe("Failure")
    }).pipe(Effect.provide(memoryStack())))
})

describe("bidirectional streaming needs a bidirectional request transport", () => {
  it.live("over http (not bidirectional) generateDuplex fails at once with NoTransportAvailable requiring bidirectional; the producer is never pulled; plain calls still work", () =>
    Effect.gen(function*() {
      yield* Endpoint.serveDuplex("bd.http.echo", (req: string, items: Stream.Stream<string, TransportError>) =>
        Stream.concat(Stream.make(req), items))
      const client = yield* Endpoint.client<string, string>("bd.http.echo")
      const producer = endlessProducer()
      const error = yield* Effect.flip(Stream.runCollect(client.generateDuplex("r", producer.stream.pipe(Stream.map(String)))))
      expect(error._tag).toBe("NoTransportAvailable")
      if (error._tag === "NoTransportAvailable") {
        expect(error.required.bidirectional).toBe(true)
        expect(error.transport).toBe("http")
        expect(error.message).toContain("\"bidirectional\":true")
      }
      expect(producer.pulled()).toBe(0)
      // The same endpoint answers a plain request, with an empty item Stream.
      expect(yield* Stream.runCollect(client.generate("plain"))).toEqual(["plain"])
    }).pipe(Effect.provide(httpStack())))
})
