/**
 * In the pure HTTP mode every cancellation resets an HTTP/2 stream on the one session a router
 * keeps per worker. Node's defaults close a server session after a burst of 1,000 resets (its
 * reset-flood guard): a burst of consumers that cancel must not fail the calls nobody cancelled.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Stream } from "effect"
import * as Endpoint from "../src/Endpoint.ts"
import { httpHttpSse } from "./support/stacks.ts"

describe("pure HTTP mode under a burst of cancellations", () => {
  it.live("1,500 cancelled streams on one session leave the calls in flight, and later ones, intact", () =>
    Effect.gen(function*() {
      yield* Endpoint.serveEmit("ns.flood.gen", (req: { slow: boolean }, _ctx, emit: Endpoint.Emit<number>) =>
        Effect.gen(function*() {
          for (let i = 0; i < (req.slow ? 40 : 1_000_000); i++) {
            emit(i)
            yield* Effect.sleep(req.slow ? 25 : 2)
          }
        }))
      const client = yield* Endpoint.client<{ slow: boolean }, number>("ns.flood.gen")
      // Calls nobody cancels, in flight through the whole burst.
      const kept: Array<Fiber.Fiber<ReadonlyArray<number>, unknown>> = []
      for (let i = 0; i < 20; i++) kept.push(yield* Effect.forkChild(Stream.runCollect(client.generate({ slow: true }))))
      // The burst: streams that are cancelled as soon as their first item arrives.
      let cancelled = 0
      yield* Effect.forEach(
        Array.from({ length: 1500 }, () => undefined),
        () =>
          client.generate({ slow: false }).pipe(
            Stream.take(1),
            Stream.runDrain,
            Effect.tap(() => Effect.sync(() => cancelled++))
          ),
        { concurrency: 100 }
      )
      expect(cancelled).toBe(1500)
      for (const fiber of kept) {
        const items = yield* Fiber.join(fiber)
        expect(items.length).toBe(40)
      }
      const after = yield* Stream.runCollect(client.generate({ slow: true }).pipe(Stream.take(3)))
      expect(after).toEqual([0, 1, 2])
    }).pipe(Effect.provide(httpHttpSse.layer)), 60_000)
})
