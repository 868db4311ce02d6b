/**
 * Fault injection: overload. A worker serving with `ServeOptions.maxInFlight` takes at most that
 * many requests at once; beyond it, a new request is refused at once, before its ack, with a
 * typed `TransportConnectionError` reason "Overloaded" (the http plane answers 503 with Dynamo's
 * `Server overloaded: ...` text), instead of waiting in a queue until some timeout. The admitted
 * calls all complete, every item in order, once their handlers finish; and once they finished,
 * new requests are admitted again.
 *
 * On every mode with a request plane (http+tcp, pooled, http+http SSE, tcp+tcp in Dynamo's
 * framing, the full TCP mode, nats+tcp), router and worker in this process over real loopback
 * sockets. Failover is off (`DYN_ROUTER_MAX_ATTEMPTS=1`) so that a refusal is the call's outcome.
 *
 * Bounds: each refused call fails within 2 s of being sent (the ack timeouts are 5 s, so a refusal
 * that queued would miss it), measured while the admitted handlers are held.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Stream } from "effect"
import { afterAll } from "vitest"
import * as Endpoint from "../../src/Endpoint.ts"
import { encodeRequestMessage } from "../../src/protocol/RequestMessage.ts"
import { TransportConnectionError } from "../../src/TransportError.ts"
import { startNatsServer } from "../support/servers.ts"
import { configStack } from "../support/stacks.ts"
import { modes, natsMode } from "../support/faults/modes.ts"
import type { FaultMode } from "../support/faults/modes.ts"

const nats = await startNatsServer()
afterAll(() => nats.stop())

const CAP = 4
const EXCESS = 12
const REFUSAL_BOUND_MS = 2000

/** Waits up to `ms` for `check` to hold. */
const eventually = (check: () => boolean, ms = 5000) =>
  Effect.gen(function*() {
    for (let waited = 0; waited < ms && !check(); waited += 5) yield* Effect.sleep(5)
  })

/** A handler that emits 3 items once `gate` opens, counting the handlers running now and the most at once. */
const gated = (gate: Deferred.Deferred<void>) => {
  let running = 0
  let most = 0
  const handler: Endpoint.EmitHandler<number, string> = (req, _ctx, emit) =>
    Effect.gen(function*() {
      running++
      most = Math.max(most, running)
      yield* Deferred.await(gate)
      for (let i = 0; i < 3; i++) emit(`${req}:${i}`)
      running--
    })
  return { handler, running: () => running, most: () => most }
}

const overloadSuite = (mode: () => FaultMode) =>
  it.live(`beyond maxInFlight=${CAP}, ${EXCESS} more requests are refused at once (Overloaded); the ${CAP} admitted complete`, () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const h = gated(gate)
      const served = yield* Endpoint.serveEmit("faults.overload.run", h.handler, { maxInFlight: CAP })
      const client = yield* Endpoint.client<number, string>("faults.overload.run")
      const admitted = yield* Effect.forkChild(
        Effect.all(Array.from({ length: CAP }, (_, i) => Stream.runCollect(client.generate(i))), { concurrency: "unbounded" })
      )
      // Admitted is not yet running: a handler starts once its call-home stream is open, and with
      // pooled call-home the pool may still be connecting. The refusals are sent once all run.
      yield* eventually(() => served.inFlight() === CAP && h.running() === CAP)
      expect(served.inFlight()).toBe(CAP)
      expect(h.running()).toBe(CAP)

      const started = performance.now()
      const refused = yield* Effect.all(
        Array.from({ length: EXCESS }, (_, i) =>
          Effect.exit(Stream.runCollect(client.generate(100 + i))).pipe(Effect.map((exit) => ({ exit, ms: performance.now() - started })))),
        { concurrency: "unbounded" }
      )
      for (const { exit, ms } of refused) {
        expect(Exit.isFailure(exit)).toBe(true)
        if (Exit.isFailure(exit)) {
          const error = exit.cause.reasons.find((r) => r._tag === "Fail")
          expect(error?._tag).toBe("Fail")
          const e = (error as { error: unknown }).error
          expect(e).toBeInstanceOf(TransportConnectionError)
          expect((e as TransportConnectionError).reason).toBe("Overloaded")
          expect((e as TransportConnectionError).message).toContain(`in-flight cap of ${CAP}`)
        }
        expect(ms).toBeLessThan(REFUSAL_BOUND_MS)
      }
      // The refusals did not disturb the admitted calls: still running, all of them.
      expect(served.inFlight()).toBe(CAP)
      expect(h.most()).toBe(CAP)

      yield* Deferred.succeed(gate, undefined)
      const results = yield* Fiber.join(admitted)
      expect(results.map((items) => [...items])).toEqual(Array.from({ length: CAP }, (_, i) => [`${i}:0`, `${i}:1`, `${i}:2`]))
      yield* eventually(() => served.inFlight() === 0)

      // Below the cap again: admitted.
      const after = yield* Stream.runCollect(client.generate(7))
      expect([...after]).toEqual(["7:0", "7:1", "7:2"])
    }).pipe(Effect.provide(configStack({ ...mode().env, DYN_ROUTER_MAX_ATTEMPTS: "1" }).layer)))

for (const mode of modes) {
  describe(`overload: ${mode.name}`, () => overloadSuite(() => mode))
}
describe("overload: nats+tcp", () => overloadSuite(() => natsMode(nats.url)))

describe("overload on the http plane's wire", () => {
  const wire = (env: Record<string, string>, body: () => { readonly contentType: string; readonly bytes: Uint8Array }) =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const served = yield* Endpoint.serveEmit("faults.overload.wire", gated(gate).handler, { maxInFlight: 1 })
      const client = yield* Endpoint.client<number, string>("faults.overload.wire")
      const running = yield* Effect.forkChild(Stream.runCollect(client.generate(1)))
      yield* eventually(() => served.inFlight() === 1)
      // The http form `{ http: url }`, or the pure HTTP mode's unified form: the first URL in it.
      const url = /"(http:\/\/[^"]+)"/.exec(JSON.stringify(served.instance.transport))![1]!
      const { bytes, contentType } = body()
      const response = yield* Effect.promise(() =>
        fetch(url, { method: "POST", headers: { "content-type": contentType }, body: bytes }).then(async (r) => ({
          status: r.status,
          json: (await r.json()) as { error: string; reason: string }
        }))
      )
      expect(response.status).toBe(503)
      expect(response.json.reason).toBe("overloaded")
      expect(response.json.error).toMatch(/^Server overloaded: endpoint faults\.overload\.wire is at its in-flight cap of 1/)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(running)
    }).pipe(Effect.provide(configStack(env).layer))

  it.live("http+tcp: a request-plane message beyond the cap is answered 503", () =>
    wire({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp" }, () => ({
      contentType: "application/octet-stream",
      bytes: encodeRequestMessage(
        { id: crypto.randomUUID(), request_type: "single_in", response_type: "many_out", connection_info: { transport: "tcp", info: "{}" } },
        2
      )
    })))

  it.live("http+http: a plain JSON request (curl) beyond the cap is answered 503", () =>
    wire({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http" }, () => ({
      contentType: "application/json",
      bytes: new TextEncoder().encode("2")
    })))
})
