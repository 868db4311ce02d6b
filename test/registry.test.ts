import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import type { RequestPlaneClient, RequestPlaneServer } from "../src/RequestPlane.ts"
import type { ResponsePlaneClient, ResponsePlaneServer } from "../src/ResponsePlane.ts"
import type { TransportCapabilities, TransportId } from "../src/Transport.ts"
import { NoTransportAvailable } from "../src/TransportError.ts"
import * as TransportRegistry from "../src/registry/index.ts"

const fakeRequest = (id: TransportId): { client: RequestPlaneClient; server: RequestPlaneServer } => ({
  client: { transport: id, send: () => Effect.void },
  server: { transport: id, register: () => Effect.succeed({ http: `fake://${id}` }) }
})
const fakeResponse = (id: TransportId): { client: ResponsePlaneClient; server: ResponsePlaneServer } => ({
  client: { transport: id, connectionTransports: [`${id}_server`], connect: () => Effect.die("unused") },
  server: { transport: id, open: () => Effect.die("unused") }
})
const caps = (c: Partial<TransportCapabilities>): TransportCapabilities => ({
  streaming: false,
  persistent_connections: false,
  bidirectional: false,
  ...c
})

const withRegistry = Effect.gen(function*() {
  const registry = TransportRegistry.make()
  yield* registry.registerRequest({
    registration: { transport_id: "nats", plane_type: "request", capabilities: caps({ max_message_size: 1024 * 1024 }), priority: 5 },
    ...fakeRequest("nats")
  })
  yield* registry.registerRequest({
    registration: { transport_id: "http", plane_type: "request", capabilities: caps({ persistent_connections: true }), priority: 10 },
    ...fakeRequest("http")
  })
  yield* registry.registerRequest({
    registration: {
      transport_id: "tcp",
      plane_type: "request",
      capabilities: caps({ persistent_connections: true, bidirectional: true, streaming: true, max_message_size: 32 * 1024 * 1024 }),
      priority: 1
    },
    ...fakeRequest("tcp")
  })
  yield* registry.registerResponse({
    registration: { transport_id: "tcp", plane_type: "response", capabilities: caps({ streaming: true }), priority: 3 },
    ...fakeResponse("tcp")
  })
  return registry
})

describe("TransportRegistry.select", () => {
  it.effect("picks the highest priority when nothing is required", () =>
    Effect.gen(function*() {
      const registry = yield* withRegistry
      expect(yield* registry.select("request")).toBe("http")
      expect(yield* registry.select("response")).toBe("tcp")
    }))

  it.effect("filters by capabilities, falling to lower priorities", () =>
    Effect.gen(function*() {
      const registry = yield* withRegistry
      expect(yield* registry.select("request", caps({ persistent_connections: true }))).toBe("http")
      expect(yield* registry.select("request", caps({ bidirectional: true }))).toBe("tcp")
      expect(yield* registry.select("request", caps({ streaming: true, persistent_connections: true }))).toBe("tcp")
    }))

  it.effect("treats max_message_size as a requirement: no limit or a large enough one", () =>
    Effect.gen(function*() {
      const registry = yield* withRegistry
      // http has no limit of its own, so it meets any size and wins on priority
      expect(yield* registry.select("request", caps({ max_message_size: 10 * 1024 * 1024 }))).toBe("http")
      // without http (unregistered), nats' 1 MiB limit is too small for 10 MiB, tcp's 32 MiB is enough
      const scoped = TransportRegistry.make()
      const scope = yield* Scope.make()
      yield* Scope.provide(scope)(
        scoped.registerRequest({
          registration: { transport_id: "nats", plane_type: "request", capabilities: caps({ max_message_size: 1024 * 1024 }), priority: 5 },
          ...fakeRequest("nats")
        })
      )
      yield* Scope.provide(scope)(
        scoped.registerRequest({
          registration: { transport_id: "tcp", plane_type: "request", capabilities: caps({ max_message_size: 32 * 1024 * 1024 }), priority: 1 },
          ...fakeRequest("tcp")
        })
      )
      expect(yield* scoped.select("request", caps({ max_message_size: 1024 * 1024 }))).toBe("nats")
      expect(yield* scoped.select("request", caps({ max_message_size: 1024 * 1024 + 1 }))).toBe("tcp")
      const tooBig = yield* Effect.flip(scoped.select("request", caps({ max_message_size: 64 * 1024 * 1024 })))
      expect(tooBig).toBeInstanceOf(NoTransportAvailable)
      yield* Scope.close(scope, Exit.void)
    }))

  it.effect("fails with NoTransportAvailable naming the plane and the capabilities", () =>
    Effect.gen(function*() {
      const registry = yield* withRegistry
      const error = yield* Effect.flip(registry.select("response", caps({ bidirectional: true })))
      expect(error._tag).toBe("NoTransportAvailable")
      expect(error.plane).toBe("response")
      expect(error.message).toContain("response")
      expect(error.message).toContain("\"bidirectional\":true")
      const empty = TransportRegistry.make()
      expect((yield* Effect.flip(empty.select("request")))._tag).toBe("NoTransportAvailable")
    }))

  it.effect("unregisters a transport when its scope closes", () =>
    Effect.gen(function*() {
      const registry = TransportRegistry.make()
      const scope = yield* Scope.make()
      yield* Scope.provide(scope)(
        registry.registerRequest({
          registration: { transport_id: "memory", plane_type: "request", capabilities: caps({}), priority: 0 },
          ...fakeRequest("memory")
        })
      )
      expect((yield* registry.getRequestClient("memory")).transport).toBe("memory")
      yield* Scope.close(scope, Exit.void)
      const error = yield* Effect.flip(registry.getRequestClient("memory"))
      expect(error.transport).toBe("memory")
      expect(registry.registrations()).toEqual([])
    }))

  it.effect("finds response clients by their ConnectionInfo transport", () =>
    Effect.gen(function*() {
      const registry = yield* withRegistry
      expect(registry.responseClientFor("tcp_server")?.transport).toBe("tcp")
      expect(registry.responseClientFor("carrier_pigeon")).toBeUndefined()
    }))
})
