// The recommended mode end to end: HTTP/2 request plane + TCP call-home response plane, both
// over real loopback sockets, selected through DYN_* as users do.
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Scope, Stream } from "effect"
import * as Endpoint from "../src/Endpoint.ts"
import * as TransportRegistry from "../src/registry/index.ts"
import { configuredStack } from "./support/stack.ts"

const env = {
  DYN_REQUEST_PLANE: "http",
  DYN_RESPONSE_PLANE: "tcp",
  DYN_HTTP_RPC_HOST: "127.0.0.1",
  DYN_HTTP_RPC_PORT: "0",
  DYN_TCP_RESPONSE_HOST: "127.0.0.1",
  DYN_TCP_RESPONSE_PORT: "0",
  DYN_CANCEL_GRACE_MS: "200"
}
const stack = configuredStack(env)

const sockets = () =>
  process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap" || r === "TCPServerWrap").length

describe("recommended mode (http + tcp) end to end", () => {
  it.live("1,000 sequential and 200 concurrent streams arrive whole and in order", () =>
    Effect.gen(function*() {
      const registry = yield* TransportRegistry.TransportRegistry
      expect(yield* registry.select("request")).toBe("http")
      expect(yield* registry.select("response", { streaming: true, persistent_connections: false, bidirectional: false })).toBe("tcp")
      yield* Endpoint.serveEmit("e2e.rec.gen", (req: { id: number; n: number }, _ctx, emit: Endpoint.Emit<string>) =>
        Effect.gen(function*() {
          for (let i = 0; i < req.n; i++) {
            emit(`${req.id}:${i}`)
            if (i % 4 === 3) yield* Effect.yieldNow
          }
        }))
      const client = yield* Endpoint.client<{ id: number; n: number }, string>("e2e.rec.gen")
      for (let id = 0; id < 1000; id++) {
        const items = yield* Stream.runCollect(client.generate({ id, n: 5 }))
        if (items.join() !== [0, 1, 2, 3, 4].map((i) => `${id}:${i}`).join()) expect(items).toEqual(`stream ${id} in order`)
      }
      const results = yield* Effect.forEach(
        Array.from({ length: 200 }, (_, id) => id),
        (id) => Stream.runCollect(client.generate({ id, n: 20 })),
        { concurrency: "unbounded" }
      )
      results.forEach((items, id) => expect(items).toEqual(Array.from({ length: 20 }, (_, i) => `${id}:${i}`)))
    }).pipe(Effect.provide(stack)), 60_000)

  it.live("a consumer that stops reading interrupts the worker's handler within 100 ms", () =>
    Effect.gen(function*() {
      const interrupted = yield* Deferred.make<number>()
      yield* Endpoint.serveEmit("e2e.rec.slow", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) =>
        Effect.gen(function*() {
          for (let i = 0;; i++) {
            emit(i)
            yield* Effect.sleep(5)
          }
        }).pipe(Effect.onInterrupt(() => Deferred.succeed(interrupted, performance.now()))))
      const client = yield* Endpoint.client<unknown, number>("e2e.rec.slow")
      expect(yield* Stream.runCollect(client.generate({}).pipe(Stream.take(3)))).toEqual([0, 1, 2])
      const cancelledAt = performance.now()
      const at = yield* Deferred.await(interrupted).pipe(Effect.timeout(1000))
      expect(at - cancelledAt).toBeLessThan(100)
    }).pipe(Effect.provide(stack)))

  it.live("returns to the baseline of open sockets after the scope closes", () =>
    Effect.gen(function*() {
      // let sockets of earlier tests finish closing, so the baseline is stable
      let baseline = sockets()
      for (let i = 0; i < 50; i++) {
        yield* Effect.sleep(20)
        const now = sockets()
        if (now === baseline) break
        baseline = now
      }
      const scope = yield* Scope.make()
      yield* Effect.gen(function*() {
        yield* Endpoint.serve("e2e.rec.sock", (n: number) => Stream.range(1, n))
        const client = yield* Endpoint.client<number, number>("e2e.rec.sock")
        yield* Effect.forEach(Array.from({ length: 20 }), () => Stream.runDrain(client.generate(3)), { concurrency: 5 })
        expect(sockets()).toBeGreaterThan(baseline)
      }).pipe(Effect.provide(stack), Scope.provide(scope))
      yield* Scope.close(scope, Exit.void)
      for (let i = 0; i < 100 && sockets() > baseline; i++) yield* Effect.sleep(10)
      expect(sockets()).toBe(baseline)
    }))
})
