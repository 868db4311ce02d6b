import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Layer, Stream } from "effect"
import { Discovery } from "../src/Discovery.ts"
import * as Endpoint from "../src/Endpoint.ts"
import * as MemoryDiscovery from "../src/discovery/MemoryDiscovery.ts"
import type { RequestPlaneClient, RequestPlaneServer } from "../src/RequestPlane.ts"
import * as MemoryTransport from "../src/transport/memory/MemoryTransport.ts"
import { TransportConfig } from "../src/TransportConfig.ts"
import * as TransportRegistry from "../src/registry/index.ts"
import { memoryStack } from "./support/stack.ts"
import { slowConsumer } from "./support/slowConsumer.ts"

describe("Endpoint over the in-memory transport", () => {
  it.live("streams every item in order", () =>
    Effect.gen(function*() {
      yield* Endpoint.serve("ns.comp.gen", (req: { n: number }) => Stream.range(1, req.n))
      const client = yield* Endpoint.client<{ n: number }, number>("ns.comp.gen")
      const items = yield* Stream.runCollect(client.generate({ n: 1000 }))
      expect(items).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1))
      const seen: Array<number> = []
      yield* client.call({ n: 5 }, (batch) => {
        seen.push(...batch)
      })
      expect(seen).toEqual([1, 2, 3, 4, 5])
    }).pipe(Effect.provide(memoryStack())))

  it.live("sends kill after the grace period when the handler ignores stop", () =>
    Effect.gen(function*() {
      const controls: Array<string> = []
      // A raw worker that records control messages and never finishes on stop.
      const registry = yield* TransportRegistry.TransportRegistry
      const server = yield* registry.getRequestServer("memory")
      const discovery = yield* Discovery
      const started = yield* Deferred.make<void>()
      const transport = yield* server.register(
        { path: { namespace: "ns", component: "comp", endpoint: "stubborn" }, instanceId: 7n },
        (message) => {
          const client = registry.responseClientFor(message.control.connection_info.transport)!
          Effect.runFork(
            client.connect({ connectionInfo: message.control.connection_info, requestId: message.control.id, codec: "json" }).pipe(
              Effect.tap((writer) =>
                Effect.sync(() => {
                  writer.prologue()
                  writer.onControl((m) => {
                    controls.push(`${m}@${Date.now()}`)
                    if (m === "kill") writer.close()
                  })
                  writer.send(1)
                })
              ),
              Effect.andThen(Deferred.succeed(started, undefined))
            )
          )
        }
      )
      yield* discovery.register({ type: "Endpoint", namespace: "ns", component: "comp", endpoint: "stubborn", instance_id: 7n, transport })
      const client = yield* Endpoint.client<unknown, number>("ns.comp.stubborn")
      const fiber = yield* Effect.forkChild(Stream.runCollect(client.generate({})))
      yield* Deferred.await(started)
      yield* Effect.sleep(10)
      yield* Fiber.interrupt(fiber)
      yield* Effect.sleep(250)
      expect(controls.map((c) => c.split("@")[0])).toEqual(["stop", "kill"])
      const [stopAt, killAt] = controls.map((c) => Number(c.split("@")[1]))
      expect(killAt! - stopAt!).toBeGreaterThanOrEqual(90)
    }).pipe(Effect.provide(memoryStack({ DYN_CANCEL_GRACE_MS: "100" }))))

  it.live("flow control: a slow generate consumer pauses the stream, so the worker's Stream handler stalls; then everything arrives in order", () =>
    Effect.gen(function*() {
      const n = 300
      const r = yield* slowConsumer("ns.mem.slow", n, 16)
      // 20 consumed + 16 buffered + the chunk in hand when the pause was seen.
      expect(r.stalledAt).toBeLessThan(50)
      expect(r.stalledLater).toBe(r.stalledAt)
      expect(r.produced).toBe(n)
      expect(r.received).toEqual(Array.from({ length: n }, (_, k) => k + 1))
      expect(r.handlerFinished).toBe(true)
    }).pipe(Effect.provide(memoryStack())))

  it.live("a malformed endpoint path fails serve and client with a typed InvalidEndpointPath", () =>
    Effect.gen(function*() {
      for (const path of ["ns.comp", "a..b", "ns.comp.end point", "ns.comp.e.x"]) {
        const served = yield* Effect.flip(Endpoint.serveEmit(path, () => Effect.void))
        expect(served._tag).toBe("InvalidEndpointPath")
        const client = yield* Effect.flip(Endpoint.client(path))
        expect(client._tag).toBe("InvalidEndpointPath")
        if (client._tag === "InvalidEndpointPath") {
          expect(client.path).toBe(path)
          expect(client.message).toContain("namespace.component.endpoint")
        }
      }
    }).pipe(Effect.provide(memoryStack())))

  it.live("times out when the worker never calls home", () =>
    Effect.gen(function*() {
      const registry = yield* TransportRegistry.TransportRegistry
      const server = yield* registry.getRequestServer("memory")
      const discovery = yield* Discovery
      const transport = yield* server.register({ path: { namespace: "ns", component: "comp", endpoint: "mute" }, instanceId: 9n }, () => {})
      yield* discovery.register({ type: "Endpoint", namespace: "ns", component: "comp", endpoint: "mute", instance_id: 9n, transport })
      const client = yield* Endpoint.client<unknown, number>("ns.comp.mute")
      const error = yield* Effect.flip(Stream.runCollect(client.generate({})))
      expect(error._tag).toBe("TransportTimeoutError")
      if (error._tag === "TransportTimeoutError") expect(error.reason).toBe("CallHomeTimeout")
    }).pipe(Effect.provide(memoryStack({ DYN_TCP_CALL_HOME_TIMEOUT_SECS: "0.2" }))))

  it.live("removes the instance from discovery and fails running streams when the worker stops", () =>
    Effect.gen(function*() {
      const served = yield* Deferred.make<void>()
      const fiber = yield* Effect.forkChild(
        Effect.scoped(
          Effect.gen(function*() {
            yield* Endpoint.serveEmit("ns.comp.short", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) =>
              Effect.gen(function*() {
                emit(1)
                yield* Effect.never
              }))
            yield* Deferred.succeed(served, undefined)
            yield* Effect.sleep(50)
          })
        )
      )
      yield* Deferred.await(served)
      const client = yield* Endpoint.client<unknown, number>("ns.comp.short")
      expect(client.instances().length).toBe(1)
      const error = yield* Effect.flip(Stream.runCollect(client.generate({})))
      expect(error._tag).toBe("HandlerError")
      expect(error.message).toContain("shutting down")
      yield* Fiber.join(fiber)
      // the client's discovery watch applies the removal asynchronously
      for (let i = 0; i < 100 && client.instances().length > 0; i++) yield* Effect.sleep(5)
      expect(client.instances().length).toBe(0)
    }).pipe(Effect.provide(memoryStack())))
})

describe("swapping the transport layer", () => {
  it.live("runs the same program over a substituted request transport", () =>
    Effect.gen(function*() {
      const sent: Array<string> = []
      // A recording transport substituted for the in-memory request plane.
      const recording = Layer.effectDiscard(
        Effect.gen(function*() {
          const registry = yield* TransportRegistry.TransportRegistry
          const hub = MemoryTransport.makeHub()
          const inner = MemoryTransport.makeRequestPlane(hub)
          const client: RequestPlaneClient = {
            transport: "memory",
            send: (target, message) => {
              sent.push(`${target.endpoint}:${message.control.id}`)
              return inner.client.send(target, message)
            }
          }
          const server: RequestPlaneServer = inner.server
          yield* registry.registerRequest({
            registration: { transport_id: "memory", plane_type: "request", capabilities: MemoryTransport.capabilities, priority: 100 },
            client,
            server
          })
        })
      )
      const layer = Layer.mergeAll(
        Layer.mergeAll(recording, MemoryTransport.layerWith({ planes: ["response"] })).pipe(Layer.provideMerge(TransportRegistry.layer)),
        MemoryDiscovery.layer
      ).pipe(Layer.provideMerge(TransportConfig.layerFromRecord({})))
      const program = Effect.gen(function*() {
        yield* Endpoint.serve("ns.comp.swap", (req: string) => Stream.make(req, req))
        const client = yield* Endpoint.client<string, string>("ns.comp.swap")
        return yield* Stream.runCollect(client.generate("hi"))
      })
      const exit = yield* Effect.exit(program.pipe(Effect.scoped, Effect.provide(layer)))
      expect(exit).toEqual(Exit.succeed(["hi", "hi"]))
      expect(sent.length).toBe(1)
      expect(sent[0]).toMatch(/^ns\.comp\.swap:/)
    }))
})
