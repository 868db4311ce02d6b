/**
 * Fault injection: in the pure HTTP mode (the response streams in the request's own HTTP/2
 * response), a router whose consumer stops reading. Its buffered stream fills and pauses the
 * HTTP/2 stream, the stream's window fills, and the worker's writer holds the handler back
 * (`emit.ready` waits). A reader that takes nothing for `DYN_STREAM_IDLE_TIMEOUT_SECS` (1 s here)
 * has its stream reset by the worker, and the handler is interrupted, instead of holding it until
 * the connection closes. Meanwhile a normal call on the same worker completes. Bounds: the bytes
 * the handler wrote stay under 2 MiB; the handler is interrupted between 0.9 s and 8 s after its
 * last write (from then on it waited on `emit.ready`).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Stream } from "effect"
import * as Endpoint from "../../src/Endpoint.ts"
import { configStack } from "../support/stacks.ts"

const stack = configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http", DYN_STREAM_IDLE_TIMEOUT_SECS: "1" })

describe("never reads, pure HTTP mode", () => {
  it.live("a stalled reader's stream is reset by the worker after the idle timeout, and its handler interrupted", () =>
    Effect.gen(function*() {
      const item = "x".repeat(16 * 1024)
      let sentBytes = 0
      let lastWriteAt: number | undefined
      let interruptedAt: number | undefined
      yield* Endpoint.serveEmit("faults.never.http", (kind: string, _ctx, emit: Endpoint.Emit<string | number>) =>
        kind === "small"
          ? Effect.sync(() => {
            for (let i = 0; i < 3; i++) emit(i)
          })
          : Effect.gen(function*() {
            for (let i = 0; i < 100_000; i++) {
              yield* emit(item)
              sentBytes += item.length
              lastWriteAt = performance.now()
              if (sentBytes > 64 * 1024 * 1024) return
              yield* emit.ready
            }
          }).pipe(Effect.onInterrupt(() => Effect.sync(() => void (interruptedAt = performance.now())))))

      const client = yield* Endpoint.client<string, string | number>("faults.never.http", { maxBufferedItems: 4 })
      while (client.instances().length === 0) yield* Effect.sleep(10)
      // The stalled consumer: takes the first item, then never pulls again.
      const stalled = yield* Effect.forkChild(Stream.runForEach(client.generate("flood"), () => Effect.never))
      // Wait for the handler to be held back (its stream window full), then reset.
      const started = performance.now()
      while (interruptedAt === undefined && performance.now() - started < 15_000) yield* Effect.sleep(20)
      // Meanwhile, and afterwards, a normal call on the same worker completes.
      const items = yield* Stream.runCollect(client.generate("small"))
      console.log(
        `never reads, pure HTTP: the handler wrote ${sentBytes} bytes; last write at ${lastWriteAt === undefined ? "never" : (lastWriteAt - started).toFixed(0)} ms, interrupted at ${
          interruptedAt === undefined ? "never" : (interruptedAt - started).toFixed(0)
        } ms`
      )
      expect(items).toEqual([0, 1, 2])
      expect(sentBytes).toBeLessThan(2 * 1024 * 1024)
      expect(interruptedAt, "the handler was never interrupted").toBeDefined()
      // Held back since its last write: the reset comes one idle timeout later.
      const afterHeld = interruptedAt! - lastWriteAt!
      expect(afterHeld).toBeGreaterThan(900)
      expect(afterHeld).toBeLessThan(8000)
      yield* Fiber.interrupt(stalled)
    }).pipe(Effect.scoped, Effect.provide(stack.layer)), 30_000)
})
