/**
 * File discovery prunes the records of dead processes: a worker process killed with SIGKILL
 * leaves its record files behind, and the next `list` or `watch` poll removes them from disk and
 * does not return the instance (a watch reports it Removed). Records of live processes stay; a
 * bad record is logged once and skipped. mem and file hand out random instance ids.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Logger, Stream } from "effect"
import { endpointPrefix, instanceKey } from "../src/Discovery.ts"
import type { DiscoveryEvent } from "../src/Discovery.ts"
import * as FileDiscovery from "../src/discovery/FileDiscovery.ts"
import * as MemoryDiscovery from "../src/discovery/MemoryDiscovery.ts"
import { instanceToJson } from "../src/Instance.ts"
import type { EndpointPath, Instance } from "../src/Instance.ts"
import { killByPid, startPeerWorker } from "./support/servers.ts"

const pathOf = (endpoint: string): EndpointPath => ({ namespace: "ns", component: "filetest", endpoint })

const record = (endpoint: string, id: bigint): Instance => ({
  type: "Endpoint",
  ...pathOf(endpoint),
  instance_id: id,
  transport: { http: "http://127.0.0.1:1/v1/rpc" }
})

/** A fresh discovery directory, removed when the scope closes. */
const tempDir = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "file-discovery-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

/** A worker process registered in file discovery at `dir`, SIGKILLed when the scope closes. */
const peer = (dir: string, path: string) =>
  Effect.acquireRelease(
    Effect.promise(() => startPeerWorker(path, { DYN_DISCOVERY_BACKEND: "file", DYN_DISCOVERY_PATH: dir })),
    ({ child }) => Effect.promise(() => killByPid(child))
  )

const filesOf = (dir: string, path: EndpointPath) => {
  const d = join(dir, endpointPrefix(path))
  return existsSync(d) ? readdirSync(d).sort() : []
}

const waitFor = (what: string, cond: () => boolean, timeoutMs = 5_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (!cond()) {
      if (Date.now() > deadline) return yield* Effect.fail(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))
      yield* Effect.sleep(20)
    }
  })

describe("file discovery prunes the records of dead processes", () => {
  it.live("list prunes the record of a worker process killed with SIGKILL from disk, and does not return it", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const path = pathOf("listed")
      const discovery = FileDiscovery.make({ directory: dir })
      const worker = yield* peer(dir, "ns.filetest.listed")
      const hex = worker.instanceId.toString(16)
      expect((yield* discovery.list(path)).map((i) => i.instance_id)).toEqual([worker.instanceId])
      expect(filesOf(dir, path)).toEqual([`${hex}.json`, `${hex}.pid`])
      yield* Effect.promise(() => killByPid(worker.child))
      expect(filesOf(dir, path)).toEqual([`${hex}.json`, `${hex}.pid`]) // SIGKILL: no cleanup
      expect(yield* discovery.list(path)).toEqual([])
      expect(filesOf(dir, path)).toEqual([])
    }).pipe(Effect.scoped), 30_000)

  it.live("a watch reports the killed worker Removed and prunes its record; live records stay", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const path = pathOf("watched")
      const discovery = FileDiscovery.make({ directory: dir, pollIntervalMs: 50 })
      yield* discovery.register(record("watched", 0x1234n)) // this process: alive
      const worker = yield* peer(dir, "ns.filetest.watched")
      const events: Array<DiscoveryEvent> = []
      yield* Stream.runForEach(discovery.watch(path), (e) => Effect.sync(() => events.push(e))).pipe(Effect.forkScoped)
      yield* waitFor("the snapshot", () => events.length === 1)
      const snapshot = events[0] as Extract<DiscoveryEvent, { _tag: "Snapshot" }>
      const ascending = (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0)
      expect(snapshot.instances.map((i) => i.instance_id).sort(ascending)).toEqual([0x1234n, worker.instanceId].sort(ascending))
      yield* Effect.promise(() => killByPid(worker.child))
      yield* waitFor("the killed worker removed", () => events.length >= 2)
      expect(events[1]).toEqual({ _tag: "Removed", instance: expect.objectContaining({ instance_id: worker.instanceId }) })
      expect(filesOf(dir, path)).toEqual(["1234.json", "1234.pid"])
      expect((yield* discovery.list(path)).map((i) => i.instance_id)).toEqual([0x1234n])
    }).pipe(Effect.scoped), 30_000)

  it.live("a record whose pid file is not a pid yet (being written) is neither returned nor pruned", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const path = pathOf("partial")
      const file = join(dir, instanceKey(record("partial", 0xabcn)))
      mkdirSync(join(dir, endpointPrefix(path)), { recursive: true })
      writeFileSync(`${file}.json`, instanceToJson(record("partial", 0xabcn)))
      writeFileSync(`${file}.pid`, "")
      expect(yield* FileDiscovery.make({ directory: dir }).list(path)).toEqual([])
      expect(filesOf(dir, path)).toEqual(["abc.json", "abc.pid"])
    }).pipe(Effect.scoped))

  it.live("a record that does not decode is logged once and skipped; the good ones are returned", () => {
    const logged: Array<string> = []
    return Effect.gen(function*() {
      const dir = yield* tempDir
      const path = pathOf("bad")
      const discovery = FileDiscovery.make({ directory: dir })
      yield* discovery.register(record("bad", 7n))
      const bad = join(dir, endpointPrefix(path), "bad")
      writeFileSync(`${bad}.json`, `{"type":"Endpoint","instance_id":"seven"}`)
      writeFileSync(`${bad}.pid`, String(process.pid))
      for (let i = 0; i < 3; i++) expect((yield* discovery.list(path)).map((r) => r.instance_id)).toEqual([7n])
      expect(logged.filter((l) => l.includes("skipping the bad record")).length).toBe(1)
    }).pipe(
      Effect.scoped,
      Effect.provide(Logger.layer([Logger.make((options) => void logged.push(String(options.message)))]))
    )
  })

  it.live("mem and file hand a worker a random, positive 63-bit instance id", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const ids = new Set<bigint>()
      for (const discovery of [MemoryDiscovery.make(), FileDiscovery.make({ directory: dir })]) {
        for (let i = 0; i < 20; i++) {
          const id = yield* discovery.instanceId
          expect(id > 0n && id < 1n << 63n).toBe(true)
          ids.add(id)
        }
      }
      expect(ids.size).toBe(40)
    }).pipe(Effect.scoped))
})
