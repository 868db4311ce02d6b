/**
 * Admission of a served endpoint (`ServeOptions.maxInFlight`, and draining once its scope
 * closes), over the in-memory and the http request planes (and the pure HTTP mode): at the cap a
 * request is refused before its ack, typed `TransportConnectionError` "Overloaded" naming the
 * cap; while draining, "ServerUnavailable". Requests sent in the same tick never overshoot the cap. Over http the
 * refusal is a 503 whose error text is Dynamo's (`Server overloaded: ...`). And the socket-free
 * admission state itself.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Scope, Stream } from "effect"
import type { Layer } from "effect"
import { Discovery } from "../src/Discovery.ts"
import * as Endpoint from "../src/Endpoint.ts"
import { makeAdmission, normalizeMaxInFlight } from "../src/endpoint/Admission.ts"
import { encodeRequestMessage } from "../src/protocol/RequestMessage.ts"
import * as TransportRegistry from "../src/registry/index.ts"
import { TransportConnectionError } from "../src/TransportError.ts"
import type { CallError } from "../src/TransportError.ts"
import { configuredStack, httpStack, memoryStack } from "./support/stack.ts"

/** Waits up to `ms` for `check` to hold. */
const eventually = (check: () => boolean, ms = 2000) =>
  Effect.gen(function*() {
    for (let waited = 0; waited < ms && !check(); waited += 5) yield* Effect.sleep(5)
  })

/** A handler that answers once `gate` opens, recording the most handlers seen running at once. */
const gated = (gate: Deferred.Deferred<void>) => {
  let running = 0
  let most = 0
  const handler: Endpoint.EmitHandler<unknown, string> = (_req, _ctx, emit) =>
    Effect.gen(function*() {
      running++
      most = Math.max(most, running)
      yield* Deferred.await(gate)
      emit("done")
      running--
    })
  return { handler, most: () => most }
}

const expectRefused = (error: CallError, reason: "Overloaded" | "ServerUnavailable", text: string) => {
  expect(error).toBeInstanceOf(TransportConnectionError)
  if (error instanceof TransportConnectionError) {
    expect(error.reason).toBe(reason)
    expect(error.message).toContain(text)
  }
}

/** The admission behaviours, on one stack. */
const admissionSuite = (name: string, stack: () => Layer.Layer<any, any, never>) =>
  describe(`admission over ${name}`, () => {
    it.live("at maxInFlight a request is refused Overloaded, naming the cap; once handlers finish, requests are admitted again", () =>
      Effect.gen(function*() {
        const gate = yield* Deferred.make<void>()
        const h = gated(gate)
        const served = yield* Endpoint.serveEmit("ad.cap.run", h.handler, { maxInFlight: 2 })
        const client = yield* Endpoint.client<unknown, string>("ad.cap.run")
        const running = yield* Effect.forkChild(Effect.all([Stream.runCollect(client.generate(1)), Stream.runCollect(client.generate(2))], { concurrency: 2 }))
        yield* eventually(() => served.inFlight() === 2)
        expect(served.inFlight()).toBe(2)
        const error = yield* Effect.flip(Stream.runCollect(client.generate(3)))
        expectRefused(error, "Overloaded", "in-flight cap of 2")
        yield* Deferred.succeed(gate, undefined)
        expect(yield* Fiber.join(running)).toEqual([["done"], ["done"]])
        yield* eventually(() => served.inFlight() === 0)
        expect(yield* Stream.runCollect(client.generate(4))).toEqual(["done"])
        expect(h.most()).toBe(2)
      }).pipe(Effect.provide(stack())))

    it.live("a burst of requests sent at once: exactly maxInFlight are admitted, the rest refused Overloaded", () =>
      Effect.gen(function*() {
        const gate = yield* Deferred.make<void>()
        const h = gated(gate)
        const served = yield* Endpoint.serveEmit("ad.burst.run", h.handler, { maxInFlight: 3 })
        const client = yield* Endpoint.client<unknown, string>("ad.burst.run")
        let settled = 0
        const calls = Array.from({ length: 10 }, (_, i) =>
          Effect.exit(Stream.runCollect(client.generate(i))).pipe(Effect.tap(() => Effect.sync(() => settled++))))
        const all = yield* Effect.forkChild(Effect.all(calls, { concurrency: "unbounded" }))
        yield* eventually(() => settled === 7 && served.inFlight() === 3)
        yield* Deferred.succeed(gate, undefined)
        const exits = yield* Fiber.join(all)
        const admitted = exits.filter(Exit.isSuccess)
        const refused = exits.filter(Exit.isFailure)
        expect(admitted.length).toBe(3)
        expect(refused.length).toBe(7)
        for (const exit of refused) {
          const error = Exit.findErrorOption(exit)
          expect(error._tag).toBe("Some")
          if (error._tag === "Some") expectRefused(error.value, "Overloaded", "cap of 3")
        }
        expect(h.most()).toBe(3)
      }).pipe(Effect.provide(stack())))

    it.live("draining: once the endpoint's scope closes, a request to it is refused ServerUnavailable while running handlers finish", () =>
      Effect.gen(function*() {
        const gate = yield* Deferred.make<void>()
        const h = gated(gate)
        const workerScope = yield* Scope.fork(yield* Scope.Scope, "sequential")
        const served = yield* Endpoint.serveEmit("ad.drain.run", h.handler, { drainTimeoutMs: 5000 }).pipe(Scope.provide(workerScope))
        const client = yield* Endpoint.client<unknown, string>("ad.drain.run")
        const running = yield* Effect.forkChild(Stream.runCollect(client.generate("before")))
        yield* eventually(() => served.inFlight() === 1)
        const closing = yield* Effect.forkChild(Scope.close(workerScope, Exit.void))
        yield* eventually(() => served.draining() && client.instances().length === 0)
        expect(served.draining()).toBe(true)
        // A router with a stale instance list: the record is back in discovery, the worker is draining.
        const discovery = yield* Discovery
        yield* discovery.register(served.instance)
        yield* eventually(() => client.instances().length === 1)
        const error = yield* Effect.flip(Stream.runCollect(client.generate("during")))
        expectRefused(error, "ServerUnavailable", "draining")
        // The running handler is drained, not interrupted.
        yield* Deferred.succeed(gate, undefined)
        expect(yield* Fiber.join(running)).toEqual(["done"])
        yield* Fiber.join(closing)
      }).pipe(Effect.provide(stack())))
  })

admissionSuite("the in-memory request plane", () => memoryStack())
admissionSuite("the http request plane", () => httpStack())
admissionSuite("the pure HTTP mode (http + http inline streams)", () =>
  configuredStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_HOST: "127.0.0.1", DYN_HTTP_RESPONSE_PORT: "0" }))

describe("admission of requests sent in one tick", () => {
  it.live("memory: five sends in one synchronous loop, before any handler started, admit exactly maxInFlight", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const h = gated(gate)
      const served = yield* Endpoint.serveEmit("ad.tick.run", h.handler, { maxInFlight: 2 })
      const registry = yield* TransportRegistry.TransportRegistry
      const requests = yield* registry.getRequestClient("memory")
      const responses = yield* registry.getResponseServer("memory")
      const address = (served.instance.transport as { unified: { request_transport: { address: string } } }).unified.request_transport.address
      const ended: Array<string> = []
      const opened = yield* Effect.forEach([0, 1, 2, 3, 4], (i) =>
        responses.open({
          requestId: `r${i}`,
          endpoint: "ad.tick.run",
          codec: "json",
          sink: { onItems: () => {}, onEnd: () => ended.push(`r${i}`), onError: () => {} }
        }))
      const acks: Array<string> = []
      // No yield between the sends: every admission is asked before any handler runs.
      opened.forEach((pending, i) =>
        requests.sendCallback!(
          { address, endpoint: "ad.tick.run" },
          {
            control: { id: `r${i}`, request_type: "single_in", response_type: "many_out", payload_codec: "json", connection_info: pending.connectionInfo },
            payload: i,
            headers: {}
          },
          (error) => acks.push(error === undefined ? "ok" : error instanceof TransportConnectionError ? error.reason : error._tag)
        ))
      expect(acks).toEqual(["ok", "ok", "Overloaded", "Overloaded", "Overloaded"])
      yield* eventually(() => h.most() === 2)
      yield* Deferred.succeed(gate, undefined)
      yield* eventually(() => ended.length === 2)
      expect(ended).toEqual(["r0", "r1"])
      expect(h.most()).toBe(2)
      for (const pending of opened) pending.close()
    }).pipe(Effect.provide(memoryStack())))
})

describe("the http request plane's admission refusal on the wire", () => {
  it.live("503, with Dynamo's `Server overloaded: ...` text and the reason in the JSON body", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const served = yield* Endpoint.serveEmit("ad.wire.run", gated(gate).handler, { maxInFlight: 1 })
      const client = yield* Endpoint.client<unknown, string>("ad.wire.run")
      const running = yield* Effect.forkChild(Stream.runCollect(client.generate("first")))
      yield* eventually(() => served.inFlight() === 1)
      const url = (served.instance.transport as { http: string }).http
      const body = encodeRequestMessage(
        {
          id: crypto.randomUUID(),
          request_type: "single_in",
          response_type: "many_out",
          connection_info: { transport: "memory", info: "{}" }
        },
        { by: "hand" }
      )
      const response = yield* Effect.promise(() =>
        fetch(url, { method: "POST", headers: { "content-type": "application/octet-stream" }, body }).then(async (r) => ({
          status: r.status,
          json: (await r.json()) as { error: string; reason: string }
        }))
      )
      expect(response.status).toBe(503)
      expect(response.json.reason).toBe("overloaded")
      expect(response.json.error).toMatch(/^Server overloaded: endpoint ad\.wire\.run is at its in-flight cap of 1/)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(running)
    }).pipe(Effect.provide(httpStack())))
})

describe("the admission state (socket-free)", () => {
  it("no cap: admits everything until draining, then refuses unavailable", () => {
    const a = makeAdmission({ endpoint: "a.b.c", maxInFlight: undefined, running: () => 1_000_000 })
    expect(a.admit()).toBeUndefined()
    a.startDraining()
    expect(a.draining()).toBe(true)
    expect(a.admit()).toEqual({ refuse: "unavailable", detail: "endpoint a.b.c is draining (shutting down)" })
  })

  it("a cap counts running handlers and reservations; a reservation no handler took up is dropped by the next macrotask", async () => {
    let running = 0
    const a = makeAdmission({ endpoint: "a.b.c", maxInFlight: 2, running: () => running })
    expect(a.admit()).toBeUndefined()
    expect(a.admit()).toBeUndefined()
    expect(a.admit()?.refuse).toBe("overloaded")
    // One admitted request starts its handler; the other is never handed over.
    a.started()
    running = 1
    expect(a.admit()?.refuse).toBe("overloaded")
    await new Promise((resolve) => setImmediate(resolve))
    expect(a.admit()).toBeUndefined()
    expect(a.admit()?.refuse).toBe("overloaded")
  })

  it("maxInFlight: absent or Infinity is no cap; otherwise its integer part, at least 1", () => {
    expect(normalizeMaxInFlight(undefined)).toBeUndefined()
    expect(normalizeMaxInFlight(Infinity)).toBeUndefined()
    expect(normalizeMaxInFlight(3.7)).toBe(3)
    expect(normalizeMaxInFlight(0)).toBe(1)
    expect(normalizeMaxInFlight(-5)).toBe(1)
    expect(normalizeMaxInFlight(Number.NaN)).toBe(1)
  })
})
