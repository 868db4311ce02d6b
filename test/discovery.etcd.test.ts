/**
 * The etcd discovery backend against a real etcd (started on free loopback ports with a temp data
 * directory, stopped by pid): register, list and watch; u64 ids exact; the instance id is the
 * process lease's id; graceful shutdown removes at once; a SIGKILLed worker process leaves a
 * router's set within the lease TTL + 1 s; a lease revoked behind the worker's back comes back
 * with the same id; bad records are skipped; etcd restarted or paused keeps the set and resumes
 * the watch. Pure parts (the diff of two record sets, the record decoder) are checked with
 * fast-check.
 */
import { describe, expect, it } from "@effect/vitest"
import { Etcd3 } from "etcd3"
import * as fc from "fast-check"
import { Effect, Exit, Layer, Logger, Schedule, Scope, Stream } from "effect"
import { afterAll, beforeAll } from "vitest"
import { Discovery, endpointPrefix, instanceKey } from "../src/Discovery.ts"
import type { DiscoveryEvent, DiscoveryShape } from "../src/Discovery.ts"
import * as EtcdDiscovery from "../src/discovery/EtcdDiscovery.ts"
import { decodeRecord, diffRecords } from "../src/discovery/EtcdWatch.ts"
import type { KnownRecord } from "../src/discovery/EtcdWatch.ts"
import { layerConfig } from "../src/discovery/layerConfig.ts"
import * as Endpoint from "../src/Endpoint.ts"
import * as InstanceSet from "../src/endpoint/InstanceSet.ts"
import { instanceToJson } from "../src/Instance.ts"
import type { EndpointPath, Instance } from "../src/Instance.ts"
import * as TransportRegistry from "../src/registry/index.ts"
import * as MemoryTransport from "../src/transport/memory/MemoryTransport.ts"
import { TransportConfig } from "../src/TransportConfig.ts"
import { killByPid, startEtcd, startPeerWorker } from "./support/servers.ts"
import type { EtcdServer } from "./support/servers.ts"

let etcd: EtcdServer
beforeAll(async () => {
  etcd = await startEtcd()
}, 30_000)
afterAll(async () => {
  await etcd?.stop()
})

// ---- helpers ------------------------------------------------------------------------------------

const pathOf = (endpoint: string): EndpointPath => ({ namespace: "ns", component: "etcdtest", endpoint })

const record = (endpoint: string, id: bigint, transport: Instance["transport"] = { http: "http://127.0.0.1:1/v1/rpc" }): Instance => ({
  type: "Endpoint",
  ...pathOf(endpoint),
  instance_id: id,
  transport
})

/** A backend as one process has it: its own client, and its own lease. */
const backend = (options: Partial<EtcdDiscovery.EtcdDiscoveryOptions> = {}) =>
  EtcdDiscovery.make({ endpoints: [etcd.endpoints], leaseTtlSeconds: 5, callTimeoutMs: 2_000, retryMinMs: 100, retryMaxMs: 500, ...options })

/** A plain etcd client for checks behind the backend's back. */
const rawClient = Effect.acquireRelease(
  Effect.sync(() => new Etcd3({ hosts: etcd.endpoints })),
  (c) => Effect.sync(() => c.close())
)

/** Every event of a watch, collected by a fiber of the scope. */
const collect = (discovery: DiscoveryShape, path: EndpointPath) =>
  Effect.gen(function*() {
    const events: Array<DiscoveryEvent> = []
    yield* Stream.runForEach(discovery.watch(path), (e) => Effect.sync(() => events.push(e))).pipe(Effect.forkScoped)
    return events
  })

/** Polls `cond` every 20 ms; fails with `what` after `timeoutMs`. */
const waitFor = (what: string, cond: () => boolean, timeoutMs = 5_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (!cond()) {
      if (Date.now() > deadline) return yield* Effect.fail(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))
      yield* Effect.sleep(20)
    }
  })

const ascending = (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0)

const show = (e: DiscoveryEvent) =>
  e._tag === "Snapshot" ? `Snapshot[${e.instances.map((i) => i.instance_id.toString(16)).join(",")}]` : `${e._tag} ${e.instance.instance_id.toString(16)}`

/** Registers `instance` in a scope of its own; close the scope to unregister. */
const registered = (discovery: DiscoveryShape, instance: Instance) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* discovery.register(instance).pipe(Scope.provide(scope))
    return scope
  })

// ---- the pure parts -----------------------------------------------------------------------------

const u64 = fc.bigInt({ min: 1n, max: (1n << 64n) - 1n })
const transportArb: fc.Arbitrary<Instance["transport"]> = fc.oneof(
  fc.string().map((s) => ({ nats_tcp: s })),
  fc.string().map((s) => ({ http: s })),
  fc.string().map((s) => ({ tcp: s }))
)

describe("etcd records and diffs (pure)", () => {
  it("a record decodes back with its exact u64 id, whatever its transport form", () => {
    fc.assert(
      fc.property(u64, transportArb, (id, transport) => {
        const instance = record("e", id, transport)
        const decoded = decodeRecord(instanceToJson(instance))
        expect(typeof decoded).not.toBe("string")
        expect((decoded as KnownRecord).instance).toEqual(instance)
      })
    )
  })

  it("text that is not a record decodes to the reason, never throws", () => {
    fc.assert(
      fc.property(fc.string(), (text) => {
        const decoded = decodeRecord(text)
        if (typeof decoded !== "string") expect(decoded.instance.type).toBe("Endpoint")
      })
    )
  })

  it("diffRecords: applying its events to the set before gives the set after", () => {
    const recordSet = fc.uniqueArray(fc.tuple(fc.integer({ min: 1, max: 12 }), fc.constantFrom("a", "b")), { selector: ([k]) => k }).map(
      (entries) =>
        new Map(
          entries.map(([k, v]) => {
            const instance = record("e", BigInt(k), { http: v })
            return [`k${k}`, { instance, text: instanceToJson(instance) }] as const
          })
        )
    )
    fc.assert(
      fc.property(recordSet, recordSet, (before, after) => {
        let set: ReadonlyArray<Instance> = [...before.values()].map((r) => r.instance)
        for (const event of diffRecords(before, after)) set = InstanceSet.applyEvent(set, event)
        const byId = (a: Instance, b: Instance) => (a.instance_id < b.instance_id ? -1 : 1)
        expect([...set].sort(byId)).toEqual([...after.values()].map((r) => r.instance).sort(byId))
      })
    )
  })
})

// ---- against etcd -------------------------------------------------------------------------------

describe("etcd discovery", () => {
  it.live("register, list and watch: a Snapshot, then Added and Removed as instances come and go", () =>
    Effect.gen(function*() {
      const router = yield* backend()
      const worker = yield* backend()
      const path = pathOf("basic")
      const events = yield* collect(router, path)
      yield* waitFor("the snapshot", () => events.length === 1)
      const a = yield* registered(worker, record("basic", 0xa1n))
      yield* waitFor("a added", () => events.length === 2)
      const b = yield* registered(worker, record("basic", 0xb2n, { nats_tcp: "ns_etcdtest.basic-b2" }))
      yield* waitFor("b added", () => events.length === 3)
      expect((yield* router.list(path)).map((i) => i.instance_id).sort(ascending)).toEqual([0xa1n, 0xb2n])
      yield* Scope.close(a, Exit.void)
      yield* waitFor("a removed", () => events.length === 4)
      expect((yield* router.list(path)).map((i) => i.instance_id)).toEqual([0xb2n])
      yield* Scope.close(b, Exit.void)
      yield* waitFor("b removed", () => events.length === 5)
      expect(events.map(show)).toEqual(["Snapshot[]", "Added a1", "Added b2", "Removed a1", "Removed b2"])
      const added = events[2] as Extract<DiscoveryEvent, { _tag: "Added" }>
      expect(added.instance).toEqual(record("basic", 0xb2n, { nats_tcp: "ns_etcdtest.basic-b2" }))
    }).pipe(Effect.scoped))

  it.live("instance ids above 2^53 (up to 2^64-1) are exact in the key, the stored text, list and watch", () =>
    Effect.gen(function*() {
      const ids = [(1n << 53n) + 1n, (1n << 63n) + 12_345n, (1n << 64n) - 1n]
      const worker = yield* backend()
      const path = pathOf("bigids")
      for (const id of ids) yield* worker.register(record("bigids", id))
      expect((yield* worker.list(path)).map((i) => i.instance_id).sort(ascending)).toEqual(ids)
      const router = yield* backend()
      const events = yield* collect(router, path)
      yield* waitFor("the snapshot", () => events.length === 1)
      const snapshot = events[0] as Extract<DiscoveryEvent, { _tag: "Snapshot" }>
      expect(snapshot.instances.map((i) => i.instance_id).sort(ascending)).toEqual(ids)
      const raw = yield* rawClient
      const stored = yield* Effect.promise(() => raw.getAll().prefix(endpointPrefix(path)).strings())
      expect(Object.keys(stored).sort()).toEqual(ids.map((id) => `v1/instances/ns/etcdtest/bigids/${id.toString(16)}`).sort())
      expect(stored[instanceKey(record("bigids", (1n << 64n) - 1n))]).toContain(`"instance_id":18446744073709551615,`)
    }).pipe(Effect.scoped))

  it.live("instanceId is the process lease's id: one lease per process, shared by every record, with the TTL asked for", () =>
    Effect.gen(function*() {
      const worker = yield* backend({ leaseTtlSeconds: 7 })
      const id = yield* worker.instanceId
      expect(yield* worker.instanceId).toBe(id)
      expect(id).toBeGreaterThan(0n)
      yield* worker.register(record("lease", id))
      yield* worker.register(record("lease2", id))
      const raw = yield* rawClient
      for (const endpoint of ["lease", "lease2"]) {
        const res = yield* Effect.promise(() => raw.get(instanceKey(record(endpoint, id))).exec())
        expect(res.kvs[0]!.lease).toBe(id.toString())
      }
      const ttl = yield* Effect.promise(() => raw.leaseClient.leaseTimeToLive({ ID: id.toString() }))
      expect(ttl.grantedTTL).toBe("7")
      const other = yield* backend()
      expect(yield* other.instanceId).not.toBe(id)
    }).pipe(Effect.scoped))

  it.live("a worker served through Endpoint advertises its lease id; graceful shutdown removes it at once and revokes the lease", () =>
    Effect.gen(function*() {
      const router = yield* backend()
      const path = pathOf("graceful")
      const events = yield* collect(router, path)
      yield* waitFor("the snapshot", () => events.length === 1)
      const workerScope = yield* Scope.make()
      const stack = Layer.mergeAll(
        MemoryTransport.layer.pipe(Layer.provideMerge(TransportRegistry.layer)),
        EtcdDiscovery.layerWith({ endpoints: [etcd.endpoints], leaseTtlSeconds: 10 })
      ).pipe(Layer.provideMerge(TransportConfig.layerFromRecord({})))
      // The worker's stack lives in its scope, as a worker process's would.
      const services = yield* Layer.buildWithScope(stack, workerScope)
      const served = yield* Endpoint.serveEmit("ns.etcdtest.graceful", () => Effect.void).pipe(
        Effect.provideContext(services),
        Scope.provide(workerScope)
      )
      yield* waitFor("the worker added", () => events.length === 2)
      const id = served.instance.instance_id
      const raw = yield* rawClient
      const stored = yield* Effect.promise(() => raw.get(instanceKey(served.instance)).exec())
      expect(stored.kvs[0]!.lease).toBe(id.toString())
      const started = Date.now()
      yield* Scope.close(workerScope, Exit.void)
      yield* waitFor("the worker removed", () => events.length === 3, 2_000)
      expect(Date.now() - started).toBeLessThan(1_000)
      expect(events.map(show)).toEqual(["Snapshot[]", `Added ${id.toString(16)}`, `Removed ${id.toString(16)}`])
      const ttl = yield* Effect.promise(() => raw.leaseClient.leaseTimeToLive({ ID: id.toString() }))
      expect(ttl.TTL).toBe("-1") // revoked: etcd no longer knows the lease
    }).pipe(Effect.scoped))

  it.live("a worker process killed with SIGKILL leaves a router's set within the lease TTL (2 s) + 1 s", () =>
    Effect.gen(function*() {
      const path = pathOf("sigkill")
      const router = yield* backend()
      const set = yield* InstanceSet.make(path, "ns.etcdtest.sigkill").pipe(Effect.provideService(Discovery, router))
      const peer = yield* Effect.acquireRelease(
        Effect.promise(() =>
          startPeerWorker("ns.etcdtest.sigkill", { DYN_DISCOVERY_BACKEND: "etcd", ETCD_ENDPOINTS: etcd.endpoints, ETCD_LEASE_TTL: "2" })
        ),
        ({ child }) => Effect.promise(() => killByPid(child))
      )
      yield* waitFor("the worker in the router's set", () => set.instances().some((i) => i.instance_id === peer.instanceId))
      // Let a keepalive or two go by: the lease is then at most one keepalive interval old.
      yield* Effect.sleep(1_500)
      const killed = Date.now()
      yield* Effect.promise(() => killByPid(peer.child))
      yield* waitFor("the worker gone from the router's set", () => set.instances().length === 0, 4_000)
      const gone = Date.now() - killed
      expect(gone, `gone ${gone} ms after the kill`).toBeLessThanOrEqual(3_000)
      expect(yield* router.list(path)).toEqual([])
    }).pipe(Effect.scoped), 20_000)

  it.live("a lease lost behind the worker's back is granted again with the same id: routers see it leave and come back", () =>
    Effect.gen(function*() {
      const path = pathOf("regrant")
      const worker = yield* backend({ leaseTtlSeconds: 2 })
      const router = yield* backend()
      const events = yield* collect(router, path)
      yield* waitFor("the snapshot", () => events.length === 1)
      const id = yield* worker.instanceId
      yield* worker.register(record("regrant", id))
      yield* waitFor("added", () => events.length === 2)
      const raw = yield* rawClient
      yield* Effect.promise(() => raw.leaseClient.leaseRevoke({ ID: id.toString() }))
      yield* waitFor("removed, then added again", () => events.length === 4, 4_000)
      const hex = id.toString(16)
      expect(events.map(show)).toEqual(["Snapshot[]", `Added ${hex}`, `Removed ${hex}`, `Added ${hex}`])
      const stored = yield* Effect.promise(() => raw.get(instanceKey(record("regrant", id))).exec())
      expect(stored.kvs[0]!.lease).toBe(id.toString())
      expect(yield* worker.instanceId).toBe(id)
    }).pipe(Effect.scoped))

  it.live("records of every form are read, and bad records are logged and skipped without failing the watch", () => {
    const logged: Array<string> = []
    return Effect.gen(function*() {
      const path = pathOf("forms")
      const prefix = endpointPrefix(path)
      const raw = yield* rawClient
      const base = `"type":"Endpoint","namespace":"ns","component":"etcdtest","endpoint":"forms"`
      const forms = {
        "1": `{${base},"instance_id":1,"transport":{"nats_tcp":"ns_etcdtest.forms-1"},"request_plane_codec":"msgpack"}`,
        "2": `{${base},"instance_id":2,"transport":{"http":"http://10.0.0.2:8081/v1/rpc"},"device_type":"cuda"}`,
        "3": `{${base},"instance_id":3,"transport":{"tcp":"10.0.0.3:9001/3/forms"}}`,
        "4": `{${base},"instance_id":4,"transport":{"unified":{"request_transport":{"transport_id":"http","address":"http://h:1/v1/rpc","capabilities":{"streaming":true,"persistent_connections":false,"bidirectional":false},"metadata":{}},"response_transport":{"transport_id":"tcp","address":"h:2","capabilities":{"streaming":true,"persistent_connections":true,"bidirectional":false,"max_message_size":33554432},"metadata":{}}}}}`,
        "bad1": "not json",
        "bad2": `{${base},"instance_id":-5,"transport":{"http":"x"}}`
      }
      for (const [k, v] of Object.entries(forms)) yield* Effect.promise(() => raw.put(`${prefix}${k}`).value(v).exec())
      const router = yield* backend()
      const listed = yield* router.list(path)
      expect(listed.map((i) => i.instance_id).sort(ascending)).toEqual([1n, 2n, 3n, 4n])
      expect(listed.find((i) => i.instance_id === 3n)!.transport).toEqual({ tcp: "10.0.0.3:9001/3/forms" })
      const events = yield* collect(router, path)
      yield* waitFor("the snapshot", () => events.length === 1)
      expect(events.map(show)).toEqual(["Snapshot[1,2,3,4]"])
      // A bad record written over a good one removes it; the watch goes on.
      yield* Effect.promise(() => raw.put(`${prefix}3`).value("{").exec())
      yield* waitFor("3 removed", () => events.length === 2)
      yield* Effect.promise(() => raw.put(`${prefix}5`).value(forms["3"].replace(`"instance_id":3`, `"instance_id":5`)).exec())
      yield* waitFor("5 added", () => events.length === 3)
      expect(events.map(show).slice(1)).toEqual(["Removed 3", "Added 5"])
      expect(logged.filter((l) => l.includes("skipping the bad record")).length).toBeGreaterThanOrEqual(3)
      yield* Effect.promise(() => raw.delete().prefix(prefix).exec())
    }).pipe(
      Effect.scoped,
      Effect.provide(Logger.layer([Logger.make((options) => void logged.push(String(options.message)))]))
    )
  })

  it.live("with etcd out of reach, the first list, watch and instanceId fail typed (Unavailable) within the call timeout", () =>
    Effect.gen(function*() {
      const down = yield* EtcdDiscovery.make({ endpoints: ["http://127.0.0.1:1"], callTimeoutMs: 500 })
      for (const failure of [
        yield* Effect.flip(down.list(pathOf("down"))),
        yield* Effect.flip(Stream.runCollect(down.watch(pathOf("down")))),
        yield* Effect.flip(down.instanceId)
      ]) {
        expect(failure._tag).toBe("DiscoveryError")
        expect(failure.backend).toBe("etcd")
        expect(failure.reason).toBe("Unavailable")
      }
    }).pipe(Effect.scoped))

  it.live("DYN_DISCOVERY_BACKEND=etcd builds the etcd backend on ETCD_ENDPOINTS, with leases of ETCD_LEASE_TTL seconds", () =>
    Effect.gen(function*() {
      const discovery = yield* Discovery
      expect(discovery.backend).toBe("etcd")
      expect(yield* discovery.list(pathOf("nothing"))).toEqual([])
      const id = yield* discovery.instanceId
      const raw = yield* rawClient
      const ttl = yield* Effect.promise(() => raw.leaseClient.leaseTimeToLive({ ID: id.toString() }))
      expect(ttl.grantedTTL).toBe("3")
    }).pipe(
      Effect.scoped,
      Effect.provide(
        layerConfig.pipe(
          Layer.provide(TransportConfig.layerFromRecord({ DYN_DISCOVERY_BACKEND: "etcd", ETCD_ENDPOINTS: etcd.endpoints, ETCD_LEASE_TTL: "3" }))
        )
      )
    ))

  // These two stop etcd: they run last.
  it.live("etcd down for longer than the lease TTL, then restarted: routers keep the set, the worker logs its lease lost and registers again, the watch resumes", () => {
    const logged: Array<string> = []
    return Effect.gen(function*() {
      const path = pathOf("restart")
      const worker = yield* backend({ leaseTtlSeconds: 2 })
      const router = yield* backend()
      const set = yield* InstanceSet.make(path, "ns.etcdtest.restart").pipe(Effect.provideService(Discovery, router))
      const a = yield* registered(worker, record("restart", 0xaan))
      yield* waitFor("a in the set", () => set.instances().length === 1)
      yield* Effect.promise(() => etcd.kill())
      yield* Effect.sleep(3_000)
      expect(set.instances().map((i) => i.instance_id)).toEqual([0xaan])
      expect(logged.some((l) => l.includes("etcd LEASE LOST"))).toBe(true)
      yield* Effect.promise(() => etcd.restart())
      yield* waitFor("the lease restored", () => logged.some((l) => l.includes("etcd lease restored with the same id")), 10_000)
      expect(set.instances().map((i) => i.instance_id)).toEqual([0xaan])
      yield* registered(worker, record("restart", 0xbbn)).pipe(
        Effect.retry({ times: 20, schedule: Schedule.spaced("250 millis") })
      )
      yield* waitFor("b in the set after the restart", () => set.instances().length === 2, 10_000)
      yield* Scope.close(a, Exit.void)
      yield* waitFor("a gone", () => set.instances().length === 1)
      expect(set.instances().map((i) => i.instance_id)).toEqual([0xbbn])
    }).pipe(
      Effect.scoped,
      Effect.provide(Logger.layer([Logger.make((options) => void logged.push(String(options.message)))]))
    )
  }, 30_000)

  it.live("etcd paused (SIGSTOP) and resumed: routers keep the set meanwhile, and the watch goes on", () =>
    Effect.gen(function*() {
      const path = pathOf("pause")
      const worker = yield* backend()
      const router = yield* backend()
      const set = yield* InstanceSet.make(path, "ns.etcdtest.pause").pipe(Effect.provideService(Discovery, router))
      yield* worker.register(record("pause", 0xc1n))
      yield* waitFor("c1 in the set", () => set.instances().length === 1)
      etcd.pause()
      yield* Effect.sleep(1_500).pipe(Effect.ensuring(Effect.sync(() => etcd.resume())))
      expect(set.instances().map((i) => i.instance_id)).toEqual([0xc1n])
      yield* worker.register(record("pause", 0xc2n))
      yield* waitFor("c2 in the set after the pause", () => set.instances().length === 2, 10_000)
      expect((yield* router.list(path)).length).toBe(2)
    }).pipe(Effect.scoped), 30_000)
})
