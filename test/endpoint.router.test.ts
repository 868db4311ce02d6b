/**
 * The router side of Endpoint: a request transport without the lean `sendCallback` has its
 * `send` run in the context the client was built in (its logger and services), never on the
 * default runtime; the request target carries the instance record's request-transport metadata;
 * the control header says "many_in" exactly when the request streams items.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Logger, Option, Stream } from "effect"
import * as MemoryDiscovery from "../src/discovery/MemoryDiscovery.ts"
import * as Endpoint from "../src/Endpoint.ts"
import type { RequestPlaneClient, RequestPlaneServer, RequestTarget } from "../src/RequestPlane.ts"
import * as MemoryTransport from "../src/transport/memory/MemoryTransport.ts"
import { TransportConfig } from "../src/TransportConfig.ts"
import * as TransportRegistry from "../src/registry/index.ts"

/** A service only the test's context provides. */
class Marker extends Context.Service<Marker, string>()("test/Marker") {}

describe("the client's runtime", () => {
  it.live("runs a transport's `send` (no sendCallback) with the client's logger and services", () =>
    Effect.gen(function*() {
      const logged: Array<string> = []
      const markers: Array<string> = []
      // The in-memory request plane, with only the Effect form of send: it logs and reads Marker.
      const effectOnly = Layer.effectDiscard(
        Effect.gen(function*() {
          const registry = yield* TransportRegistry.TransportRegistry
          const inner = MemoryTransport.makeRequestPlane(MemoryTransport.makeHub())
          const client: RequestPlaneClient = {
            transport: "memory",
            send: (target, message) =>
              Effect.gen(function*() {
                yield* Effect.logInfo("sending without sendCallback")
                markers.push(Option.getOrElse(yield* Effect.serviceOption(Marker), () => "none"))
                return yield* inner.client.send(target, message)
              })
          }
          yield* registry.registerRequest({
            registration: { transport_id: "memory", plane_type: "request", capabilities: MemoryTransport.capabilities, priority: 100 },
            client,
            server: inner.server
          })
        })
      )
      const stack = Layer.mergeAll(
        Layer.mergeAll(effectOnly, MemoryTransport.layerWith({ planes: ["response"] })).pipe(Layer.provideMerge(TransportRegistry.layer)),
        MemoryDiscovery.layer
      ).pipe(Layer.provideMerge(TransportConfig.layerFromRecord({})))
      const capture = Logger.layer([Logger.make((options) => logged.push(String(options.message)))])

      const items = yield* Effect.gen(function*() {
        yield* Endpoint.serve("rt.comp.send", (req: string) => Stream.make(req, req))
        const client = yield* Endpoint.client<string, string>("rt.comp.send")
        return yield* Stream.runCollect(client.generate("hi"))
      }).pipe(
        Effect.scoped,
        Effect.provide(Layer.mergeAll(stack, capture, Layer.succeed(Marker, "from the client's context")))
      )
      expect(items).toEqual(["hi", "hi"])
      expect(logged.filter((l) => l.includes("sending without sendCallback")).length).toBe(1)
      expect(markers).toEqual(["from the client's context"])
    }))
})

describe("what the router hands its request transport", () => {
  it.live("the target carries the unified record's request_transport metadata; request_type is many_in only with items", () =>
    Effect.gen(function*() {
      const targets: Array<RequestTarget> = []
      const requestTypes: Array<string> = []
      // The in-memory request plane, recording what it is asked to send; its server advertises metadata.
      const recording = Layer.effectDiscard(
        Effect.gen(function*() {
          const registry = yield* TransportRegistry.TransportRegistry
          const inner = MemoryTransport.makeRequestPlane(MemoryTransport.makeHub())
          const client: RequestPlaneClient = {
            transport: "memory",
            send: inner.client.send,
            sendCallback: (target, message, onAck) => {
              targets.push(target)
              requestTypes.push(message.control.request_type)
              return inner.client.sendCallback!(target, message, onAck)
            }
          }
          const server: RequestPlaneServer = {
            transport: "memory",
            register: (key, handler, options) =>
              Effect.map(inner.server.register(key, handler, options), (transport) =>
                "unified" in transport
                  ? {
                    unified: {
                      ...transport.unified,
                      request_transport: { ...transport.unified.request_transport, metadata: { tcp_mux: "1", zone: "a" } }
                    }
                  }
                  : transport)
          }
          yield* registry.registerRequest({
            registration: { transport_id: "memory", plane_type: "request", capabilities: MemoryTransport.capabilities, priority: 100 },
            client,
            server
          })
        })
      )
      const stack = Layer.mergeAll(
        Layer.mergeAll(recording, MemoryTransport.layerWith({ planes: ["response"] })).pipe(Layer.provideMerge(TransportRegistry.layer)),
        MemoryDiscovery.layer
      ).pipe(Layer.provideMerge(TransportConfig.layerFromRecord({})))

      const items = yield* Effect.gen(function*() {
        yield* Endpoint.serveDuplex("rt.comp.meta", (req: string, rest: Stream.Stream<string, unknown>) => Stream.concat(Stream.make(req), rest))
        const client = yield* Endpoint.client<string, string>("rt.comp.meta")
        const plain = yield* Stream.runCollect(client.generate("a"))
        const duplex = yield* Stream.runCollect(client.generateDuplex("b", Stream.make("c")))
        return [...plain, ...duplex]
      }).pipe(Effect.scoped, Effect.provide(stack))
      expect(items).toEqual(["a", "b", "c"])
      expect(targets.map((t) => t.metadata)).toEqual([{ tcp_mux: "1", zone: "a" }, { tcp_mux: "1", zone: "a" }])
      expect(targets[0]!.endpoint).toBe("rt.comp.meta")
      expect(requestTypes).toEqual(["single_in", "many_in"])
    }))
})
