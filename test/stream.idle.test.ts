/**
 * Inactivity timeouts, in one process (`DYN_STREAM_IDLE_TIMEOUT_SECS`, docs/reliability.md
 * "Inactivity timeouts and heartbeats"): a slow but healthy handler, silent for longer than the
 * idle timeout before its first item, still succeeds on every mode that has heartbeats (pooled
 * call-home: the router's Ping, the worker's Pong; pure HTTP: HTTP/2 PING; the full TCP mode: its
 * Ping/Pong); on Dynamo's one-shot call-home, which has none, the same silence fails typed
 * (TransportTimeoutError "StreamIdle", naming the worker and the seconds) and the worker's handler
 * is told to stop. The memory transport has no idle timeout (one process: nothing to freeze).
 *
 * The idle timeout is 1 s and the silence 2.5 s; the bounds are generous (a loaded machine).
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Scope } from "effect"
import * as Endpoint from "../src/Endpoint.ts"
import { outcomeOf } from "./contract/transportContract.ts"
import { configStack } from "./support/stacks.ts"
import type { ContractStack, StackServices } from "./support/stacks.ts"

const IDLE = { DYN_STREAM_IDLE_TIMEOUT_SECS: "1" }
const SILENCE_MS = 2500

const onStack = <A, E>(stack: ContractStack, effect: Effect.Effect<A, E, Scope.Scope | StackServices>) =>
  effect.pipe(Effect.scoped, Effect.provide(stack.layer))

/** A handler that says nothing for `SILENCE_MS` (a long prefill), then streams 3 items. */
const slowStart = (_req: unknown, _ctx: unknown, emit: Endpoint.Emit<number>) =>
  Effect.gen(function*() {
    yield* Effect.sleep(SILENCE_MS)
    emit(1)
    emit(2)
    emit(3)
  })

const healthy: ReadonlyArray<ContractStack> = [
  configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_POOL_ENABLED: "true", ...IDLE }),
  configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_STREAM_FORMAT: "sse", ...IDLE }),
  configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_STREAM_FORMAT: "ndjson", ...IDLE }),
  configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_STREAM_FORMAT: "binary", ...IDLE }),
  configStack(
    { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "true", DYN_TCP_REQUEST_HEARTBEAT_INTERVAL_SECS: "0.2", ...IDLE },
    { name: "tcp full mode" }
  ),
  configStack({ DYN_REQUEST_PLANE: "memory", DYN_RESPONSE_PLANE: "memory", ...IDLE })
]

describe("inactivity timeouts: a slow but healthy worker is kept alive by heartbeats", () => {
  for (const stack of healthy) {
    it.live(`${stack.name}: silent for 2.5 s with a 1 s idle timeout, then 3 items: success`, () =>
      onStack(stack, Effect.gen(function*() {
        yield* Endpoint.serveEmit("idle.slow.start", slowStart)
        const client = yield* Endpoint.client<unknown, number>("idle.slow.start")
        const items: Array<number> = []
        const o = yield* outcomeOf(client.call({}, (batch) => void items.push(...batch)), 15_000)
        expect(o.kind, o.kind === "fail" ? `${o.error._tag}: ${o.error.message}` : o.kind).toBe("success")
        expect(items).toEqual([1, 2, 3])
      })), 20_000)
  }
})

const silent: ReadonlyArray<ContractStack> = [
  configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", ...IDLE }),
  configStack({ DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "false", ...IDLE }, { name: "tcp (Dynamo framing)+tcp" })
]

describe("inactivity timeouts: Dynamo's one-shot call-home has no heartbeat", () => {
  for (const stack of silent) {
    it.live(`${stack.name}: a handler silent past the 1 s idle timeout fails typed (StreamIdle), and its handler is stopped`, () =>
      onStack(stack, Effect.gen(function*() {
        const stopped = yield* Deferred.make<void>()
        yield* Endpoint.serveEmit("idle.test.silent", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) =>
          Effect.gen(function*() {
            emit(0)
            yield* Effect.sleep(60_000)
          }).pipe(Effect.onInterrupt(() => Deferred.succeed(stopped, undefined))))
        const client = yield* Endpoint.client<unknown, number>("idle.test.silent")
        const items: Array<number> = []
        const started = performance.now()
        const o = yield* outcomeOf(client.call({}, (batch) => void items.push(...batch)), 15_000)
        const took = performance.now() - started
        expect(o.kind, o.kind).toBe("fail")
        if (o.kind !== "fail") return
        expect(o.error).toMatchObject({ _tag: "TransportTimeoutError", reason: "StreamIdle", transport: "tcp" })
        expect(o.error.message).toMatch(/127\.0\.0\.1:\d+/) // the worker
        expect(o.error.message).toContain("the idle timeout is 1 s")
        expect(items).toEqual([0])
        expect(took).toBeGreaterThanOrEqual(1000)
        expect(took).toBeLessThan(8000)
        // The worker heard the router let go (its socket closed after a kill): the handler stops.
        const heard = yield* Effect.timeoutOption(Deferred.await(stopped), 5000)
        expect(heard._tag, "the worker's handler was not interrupted").toBe("Some")
      })), 20_000)
  }

  it.live("off (0): the same silence is waited out", () =>
    onStack(configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", DYN_STREAM_IDLE_TIMEOUT_SECS: "0" }), Effect.gen(function*() {
      yield* Endpoint.serveEmit("idle.test.off", slowStart)
      const client = yield* Endpoint.client<unknown, number>("idle.test.off")
      const items: Array<number> = []
      const o = yield* outcomeOf(client.call({}, (batch) => void items.push(...batch)), 15_000)
      expect(o.kind).toBe("success")
      expect(items).toEqual([1, 2, 3])
    })), 20_000)
})
