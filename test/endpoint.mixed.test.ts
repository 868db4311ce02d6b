/**
 * Mixed deployments: one router calls workers of different modes at once, each the way its
 * discovery record says (request transport, response plane, codec), through one registry built
 * from the router's own `DYN_*` (`TransportRegistry.layerFromConfig`, which also registers the
 * router's side of every other wire transport).
 *
 * Each worker and the router have their own registry, config and scope; they share one mem
 * discovery. The workers: http+tcp, http+http (streamed inline), tcp+tcp in Dynamo's framing, and
 * nats+tcp through a real nats-server. A router of each of those four modes calls all four
 * workers, round-robin: every call succeeds and every worker serves its share.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Stream } from "effect"
import type { Context, Scope } from "effect"
import { Discovery } from "../src/Discovery.ts"
import type { DiscoveryShape } from "../src/Discovery.ts"
import * as MemoryDiscovery from "../src/discovery/MemoryDiscovery.ts"
import * as Endpoint from "../src/Endpoint.ts"
import { requestTransportOf, responseTransportOf } from "../src/Instance.ts"
import type { Instance } from "../src/Instance.ts"
import * as TransportRegistry from "../src/registry/index.ts"
import { TransportConfig } from "../src/TransportConfig.ts"
import { baseEnv } from "./support/stacks.ts"
import { natsServer } from "./support/servers.ts"

type Services = TransportRegistry.TransportRegistry | TransportConfig | Discovery

/** A registry and config from `env` (over the loopback base), with the shared `discovery`. */
const stackLayer = (env: Readonly<Record<string, string>>, discovery: DiscoveryShape): Layer.Layer<Services, unknown> =>
  Layer.mergeAll(TransportRegistry.layerFromConfig, Layer.succeed(Discovery, discovery)).pipe(
    Layer.provideMerge(TransportConfig.layerFromRecord({ ...baseEnv, DYN_LOG: "error", ...env }))
  )

/** Builds the stack of `env` in the current scope (its transports close with it). */
const buildStack = (env: Readonly<Record<string, string>>, discovery: DiscoveryShape): Effect.Effect<Context.Context<Services>, unknown, Scope.Scope> =>
  Layer.build(stackLayer(env, discovery))

/** The reply items of the mixed workers: who answered, what the request looked like, and a counter. */
interface Reply {
  readonly worker: string
  readonly binary: boolean
  readonly i: number
}

/** A worker named `name`: streams `n` replies; counts its requests in `served`. */
const mixedWorker = (name: string, served: Map<string, number>): Endpoint.EmitHandler<{ readonly n: number }, Reply> => (req, _ctx, emit) =>
  Effect.sync(() => {
    served.set(name, (served.get(name) ?? 0) + 1)
    for (let i = 0; i < req.n; i++) emit({ worker: name, binary: false, i })
  })

const workerModes: ReadonlyArray<{ readonly name: string; readonly env: Readonly<Record<string, string>> }> = [
  { name: "http+tcp", env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp" } },
  { name: "http+http", env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http" } },
  { name: "tcp+tcp dynamo", env: { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "false" } },
  { name: "nats+tcp", env: { DYN_REQUEST_PLANE: "nats", DYN_RESPONSE_PLANE: "tcp" } }
]

const routerModes: ReadonlyArray<{ readonly name: string; readonly env: Readonly<Record<string, string>> }> = [
  { name: "http+tcp", env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp" } },
  { name: "http+http", env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http" } },
  { name: "tcp+tcp dynamo", env: { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "false" } },
  { name: "nats+tcp", env: { DYN_REQUEST_PLANE: "nats", DYN_RESPONSE_PLANE: "tcp" } }
]

describe("mixed deployments: one router, workers of several modes", () => {
  for (const router of routerModes) {
    it.live(`a ${router.name} router calls http+tcp, http+http, tcp+tcp (Dynamo framing) and nats+tcp workers, alternating, every call succeeding`, () =>
      Effect.gen(function*() {
        const nats = yield* natsServer()
        const discovery = MemoryDiscovery.make()
        const served = new Map<string, number>()
        const records = new Map<string, Instance>()
        for (const mode of workerModes) {
          const context = yield* buildStack({ ...mode.env, NATS_SERVER: nats.url }, discovery)
          const endpoint = yield* Endpoint.serveEmit("mixed.gen.tokens", mixedWorker(mode.name, served)).pipe(Effect.provide(context))
          records.set(mode.name, endpoint.instance)
        }
        // The records say what each worker is.
        expect(requestTransportOf(records.get("http+tcp")!.transport).id).toBe("http")
        expect(responseTransportOf(records.get("http+tcp")!.transport)).toBeUndefined()
        expect(responseTransportOf(records.get("http+http")!.transport)?.id).toBe("http")
        expect(requestTransportOf(records.get("tcp+tcp dynamo")!.transport).id).toBe("tcp")
        expect(requestTransportOf(records.get("nats+tcp")!.transport).id).toBe("nats")

        const routerContext = yield* buildStack({ ...router.env, NATS_SERVER: nats.url }, discovery)
        const client = yield* Endpoint.client<{ readonly n: number }, Reply>("mixed.gen.tokens").pipe(Effect.provide(routerContext))
        expect(client.instances()).toHaveLength(4)

        const calls = 24
        const answered: Array<string> = []
        for (let k = 0; k < calls; k++) {
          const items = yield* Stream.runCollect(client.generate({ n: 5 }))
          expect(items.map((r) => r.i)).toEqual([0, 1, 2, 3, 4])
          expect(new Set(items.map((r) => r.worker)).size).toBe(1)
          answered.push(items[0]!.worker)
        }
        // Round-robin: four different workers in every window of four calls.
        for (let k = 0; k + 4 <= calls; k += 4) expect(new Set(answered.slice(k, k + 4)).size).toBe(4)
        for (const mode of workerModes) expect(served.get(mode.name), mode.name).toBe(calls / 4)

        // And concurrently, mixed in flight at once.
        const concurrent = yield* Effect.forEach(
          Array.from({ length: 40 }, (_, k) => k),
          () => Stream.runCollect(client.generate({ n: 20 })),
          { concurrency: "unbounded" }
        )
        for (const items of concurrent) expect(items.map((r) => r.i)).toEqual(Array.from({ length: 20 }, (_, i) => i))
        expect(new Set(concurrent.map((items) => items[0]!.worker)).size).toBe(4)
      }).pipe(Effect.scoped), 30_000)
  }

  it.live("a router with no nats-server to reach fails a call to a nats instance typed, and keeps serving the others", () =>
    Effect.gen(function*() {
      const discovery = MemoryDiscovery.make()
      const served = new Map<string, number>()
      const context = yield* buildStack(workerModes[0]!.env, discovery)
      yield* Endpoint.serveEmit("mixed.nonats.gen", mixedWorker("http+tcp", served)).pipe(Effect.provide(context))
      // A nats+tcp record whose nats-server is gone (a port nobody listens on).
      yield* discovery.register({
        type: "Endpoint",
        namespace: "mixed",
        component: "nonats",
        endpoint: "gen",
        instance_id: 0xabcn,
        transport: { nats_tcp: "mixed_nonats.gen-abc" }
      })
      const routerContext = yield* buildStack({ NATS_SERVER: "nats://127.0.0.1:1", DYN_NATS_REQUEST_TIMEOUT: "0.5", DYN_ROUTER_MAX_ATTEMPTS: "1" }, discovery)
      const client = yield* Endpoint.client<{ readonly n: number }, Reply>("mixed.nonats.gen").pipe(Effect.provide(routerContext))
      expect(client.instances()).toHaveLength(2)
      const outcomes = yield* Effect.forEach([0, 1, 2, 3], () => Effect.exit(Stream.runCollect(client.generate({ n: 2 }))))
      const failures = outcomes.filter((o) => o._tag === "Failure")
      const successes = outcomes.filter((o) => o._tag === "Success")
      expect(successes).toHaveLength(2)
      expect(failures).toHaveLength(2)
      for (const f of failures) {
        const error = f._tag === "Failure" ? f.cause.reasons[0] : undefined
        expect(error?._tag).toBe("Fail")
        if (error?._tag === "Fail") expect((error.error as { _tag: string; reason?: string })).toMatchObject({ _tag: "TransportConnectionError", reason: "ConnectFailed" })
      }
      // With failover on (the default), the same calls all succeed on the http+tcp worker.
      const failover = yield* Endpoint.client<{ readonly n: number }, Reply>("mixed.nonats.gen").pipe(
        Effect.provide(yield* buildStack({ NATS_SERVER: "nats://127.0.0.1:1", DYN_NATS_REQUEST_TIMEOUT: "0.5" }, discovery))
      )
      for (let k = 0; k < 4; k++) expect(yield* Stream.runCollect(failover.generate({ n: 2 }))).toHaveLength(2)
      expect(served.get("http+tcp")).toBe(6)
    }).pipe(Effect.scoped), 30_000)
})

describe("request_plane_codec", () => {
  /** A worker that says which codec the request came in: msgpack carries a Uint8Array as bytes, JSON cannot. */
  const codecWorker: Endpoint.EmitHandler<{ readonly data: unknown }, Reply> = (req, _ctx, emit) =>
    Effect.sync(() => {
      emit({ worker: "codec", binary: req.data instanceof Uint8Array, i: 0 })
    })

  /** `discovery`, but every record registered through it advertises `extra` too. */
  const advertising = (discovery: DiscoveryShape, extra: Record<string, unknown>): DiscoveryShape => ({
    ...discovery,
    register: (instance) => discovery.register({ ...instance, ...extra })
  })

  for (const mode of workerModes.slice(0, 3)) {
    it.live(`a ${mode.name} worker advertising request_plane_codec "msgpack" gets msgpack bodies from a json router (and keeps its other fields)`, () =>
      Effect.gen(function*() {
        const discovery = MemoryDiscovery.make()
        const context = yield* buildStack(mode.env, advertising(discovery, { request_plane_codec: "msgpack", device_type: "cuda" }))
        yield* Endpoint.serveEmit("codec.gen.one", codecWorker).pipe(Effect.provide(context))
        const routerContext = yield* buildStack({ DYN_REQUEST_PLANE_CODEC: "json" }, discovery)
        const client = yield* Endpoint.client<{ readonly data: unknown }, Reply>("codec.gen.one").pipe(Effect.provide(routerContext))
        expect(client.instances()[0]).toMatchObject({ request_plane_codec: "msgpack", device_type: "cuda" })
        const items = yield* Stream.runCollect(client.generate({ data: new Uint8Array([1, 2, 3]) }))
        expect(items).toEqual([{ worker: "codec", binary: true, i: 0 }])

        // Without the field, the router's own codec (json) is used: the bytes arrive as an object.
        const plain = MemoryDiscovery.make()
        const context2 = yield* buildStack(mode.env, plain)
        yield* Endpoint.serveEmit("codec.gen.two", codecWorker).pipe(Effect.provide(context2))
        const client2 = yield* Endpoint.client<{ readonly data: unknown }, Reply>("codec.gen.two").pipe(
          Effect.provide(yield* buildStack({ DYN_REQUEST_PLANE_CODEC: "json" }, plain))
        )
        expect(yield* Stream.runCollect(client2.generate({ data: new Uint8Array([1, 2, 3]) }))).toEqual([{ worker: "codec", binary: false, i: 0 }])
      }).pipe(Effect.scoped), 30_000)
  }

  it.live("a codec the router does not speak fails that instance typed (TransportProtocolError BadPayload); other instances are still called", () =>
    Effect.gen(function*() {
      const discovery = MemoryDiscovery.make()
      const context = yield* buildStack(workerModes[0]!.env, advertising(discovery, { request_plane_codec: "bincode" }))
      yield* Endpoint.serveEmit("codec.gen.odd", codecWorker).pipe(Effect.provide(context))
      const routerContext = yield* buildStack({}, discovery)
      const client = yield* Endpoint.client<{ readonly data: unknown }, Reply>("codec.gen.odd").pipe(Effect.provide(routerContext))
      const error = yield* Effect.flip(Stream.runCollect(client.generate({ data: 1 })))
      expect(error).toMatchObject({ _tag: "TransportProtocolError", reason: "BadPayload" })
      expect(error.message).toContain("bincode")
      // A second worker that speaks json: every call goes there.
      const context2 = yield* buildStack(workerModes[0]!.env, discovery)
      yield* Endpoint.serveEmit("codec.gen.odd", codecWorker).pipe(Effect.provide(context2))
      yield* Effect.sleep(20)
      for (let k = 0; k < 4; k++) expect(yield* Stream.runCollect(client.generate({ data: 1 }))).toHaveLength(1)
    }).pipe(Effect.scoped), 30_000)
})
