/**
 * Failover: a send that fails before the ack goes to another instance (bounded by
 * DYN_ROUTER_MAX_ATTEMPTS, never the same instance twice); instances that keep failing are
 * quarantined for DYN_ROUTER_QUARANTINE_SECS (logged, counted); nothing is retried after the ack.
 *
 * Over real sockets: instances whose records point at closed ports (http and tcp) beside a good
 * worker, and workers in child processes that die after their ack. Plus the socket-free parts:
 * the quarantine, the classification of failures, and `pick`.
 */
import { describe, expect, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Deferred, Effect, Exit, Fiber, Layer, Logger, Metric, References, Scope, Stream } from "effect"
import { Discovery } from "../src/Discovery.ts"
import type { DiscoveryShape } from "../src/Discovery.ts"
import * as FileDiscovery from "../src/discovery/FileDiscovery.ts"
import * as MemoryDiscovery from "../src/discovery/MemoryDiscovery.ts"
import * as Endpoint from "../src/Endpoint.ts"
import { countsTowardsQuarantine, isRetryableBeforeAck } from "../src/endpoint/Failover.ts"
import * as InstanceSet from "../src/endpoint/InstanceSet.ts"
import { Quarantine } from "../src/endpoint/Quarantine.ts"
import type { Instance } from "../src/Instance.ts"
import * as Metrics from "../src/observability/Metrics.ts"
import * as TransportRegistry from "../src/registry/index.ts"
import { TransportConfig } from "../src/TransportConfig.ts"
import {
  EndpointNotFound,
  HandlerError,
  TransportConnectionError,
  TransportProtocolError,
  TransportTimeoutError
} from "../src/TransportError.ts"
import type { CallError } from "../src/TransportError.ts"
import { baseEnv } from "./support/stacks.ts"

// ---- helpers ----------------------------------------------------------------------------------

/** A loopback port nobody listens on (bound, then closed). */
const closedPort = () =>
  Effect.promise(() =>
    new Promise<number>((resolve, reject) => {
      const server = net.createServer()
      server.once("error", reject)
      server.listen(0, "127.0.0.1", () => {
        const port = (server.address() as net.AddressInfo).port
        server.close(() => resolve(port))
      })
    })
  )

/** A record for `path` whose request transport points at a closed port. */
const deadRecord = (kind: "http" | "tcp", ns: string, component: string, endpoint: string, id: bigint, port: number): Instance => ({
  type: "Endpoint",
  namespace: ns,
  component,
  endpoint,
  instance_id: id,
  transport: kind === "http"
    ? { http: `http://127.0.0.1:${port}/v1/rpc/${ns}_${component}.${endpoint}-${id.toString(16)}` }
    : { tcp: `127.0.0.1:${port}/${id.toString(16)}/${ns}/${component}/${endpoint}` }
})

/** The router's (and good workers') stack: http + tcp on loopback, over `discovery`. */
const stack = (discovery: DiscoveryShape, env: Readonly<Record<string, string>> = {}) =>
  Layer.mergeAll(TransportRegistry.layerFromConfig, Layer.succeed(Discovery, discovery)).pipe(
    Layer.provideMerge(TransportConfig.layerFromRecord({ ...baseEnv, DYN_LOG: "error", ...env }))
  )

/** `stack`, built in the current scope (its transports live as long as it). */
const built = (discovery: DiscoveryShape, env: Readonly<Record<string, string>> = {}) => Layer.build(stack(discovery, env))

const counterValue = (metric: Metric.Metric<number, Metric.CounterState<number>>, endpoint: string) =>
  Effect.map(Metric.value(Metric.withAttributes(metric, { endpoint, role: "client" })), (s) => s.count)
const gaugeValue = (endpoint: string) =>
  Effect.map(Metric.value(Metric.withAttributes(Metrics.transportQuarantinedInstances, { endpoint, role: "client" })), (s) => s.value)

interface LogLine {
  readonly level: string
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
}

/** A logger that keeps every line (debug and up) with its annotations. */
const captureLogs = (lines: Array<LogLine>) =>
  Layer.mergeAll(
    Logger.layer([
      Logger.make((options) => {
        lines.push({
          level: options.logLevel,
          message: String(Array.isArray(options.message) ? options.message[0] : options.message),
          annotations: options.fiber.getRef(References.CurrentLogAnnotations) as Readonly<Record<string, unknown>>
        })
      })
    ]),
    Layer.succeed(References.MinimumLogLevel, "Debug")
  )

/** Serves `path` with a handler that counts its requests and answers `worker` `n` times. */
const goodWorker = (path: string, name: string, counts: Map<string, number>) =>
  Endpoint.serveEmit(path, (req: { readonly n: number }, _ctx, emit: Endpoint.Emit<string>) =>
    Effect.sync(() => {
      counts.set(name, (counts.get(name) ?? 0) + 1)
      for (let i = 0; i < req.n; i++) emit(name)
    }))

// ---- over real sockets --------------------------------------------------------------------------

describe("failover before the ack (real sockets)", () => {
  it.live("instances that refuse connections (http and tcp records on closed ports) are skipped for the good one; every call succeeds; repeated failures quarantine them (warning + metrics), and quarantine ends", () => {
    const lines: Array<LogLine> = []
    const endpoint = "fo.refuse.gen"
    return Effect.gen(function*() {
      const discovery = MemoryDiscovery.make()
      const counts = new Map<string, number>()
      yield* goodWorker(endpoint, "good", counts).pipe(Effect.provide(yield* built(discovery)))
      const httpDead = deadRecord("http", "fo", "refuse", "gen", 0xdead1n, yield* closedPort())
      const tcpDead = deadRecord("tcp", "fo", "refuse", "gen", 0xdead2n, yield* closedPort())
      yield* discovery.register(httpDead)
      yield* discovery.register(tcpDead)

      const before = {
        retries: yield* counterValue(Metrics.transportRequestRetriesTotal, endpoint),
        quarantined: yield* counterValue(Metrics.transportInstanceQuarantinedTotal, endpoint)
      }
      yield* Effect.gen(function*() {
        const client = yield* Endpoint.client<{ readonly n: number }, string>(endpoint)
        expect(client.instances()).toHaveLength(3)
        // 9 calls, round-robin over [good, http dead, tcp dead]: each dead instance is picked
        // first 3 times (then quarantined), and each of those calls fails over.
        for (let k = 0; k < 9; k++) expect(yield* Stream.runCollect(client.generate({ n: 3 }))).toEqual(["good", "good", "good"])
        expect(counts.get("good")).toBe(9)
        const retries = (yield* counterValue(Metrics.transportRequestRetriesTotal, endpoint)) - before.retries
        expect(retries).toBeGreaterThanOrEqual(6)
        expect((yield* counterValue(Metrics.transportInstanceQuarantinedTotal, endpoint)) - before.quarantined).toBe(2)
        expect(yield* gaugeValue(endpoint)).toBe(2)
        const warnings = lines.filter((l) => l.level === "Warn" && l.message.includes("quarantined"))
        expect(warnings.map((w) => w.annotations.instance_id).sort()).toEqual(["dead1", "dead2"])
        for (const w of warnings) {
          expect(w.annotations.endpoint).toBe(endpoint)
          expect(String(w.annotations.instance_id_decimal)).toMatch(/^\d+$/)
          expect(String(w.annotations.reason)).toMatch(/ConnectFailed|ConnectionClosed|ConnectTimeout/)
          expect(w.annotations.quarantine_secs).toBe(2)
        }

        // While quarantined, picks skip them: no more failovers.
        const retriesBefore = yield* counterValue(Metrics.transportRequestRetriesTotal, endpoint)
        for (let k = 0; k < 6; k++) expect(yield* Stream.runCollect(client.generate({ n: 1 }))).toEqual(["good"])
        expect(yield* counterValue(Metrics.transportRequestRetriesTotal, endpoint)).toBe(retriesBefore)

        // The quarantine ends: the gauge is back to 0 and the instances are picked again; on
        // probation, the first failure quarantines each again at once.
        yield* Effect.sleep(2300)
        expect(yield* gaugeValue(endpoint)).toBe(0)
        for (let k = 0; k < 3; k++) expect(yield* Stream.runCollect(client.generate({ n: 1 }))).toEqual(["good"])
        expect((yield* counterValue(Metrics.transportInstanceQuarantinedTotal, endpoint)) - before.quarantined).toBe(4)
        expect(yield* gaugeValue(endpoint)).toBe(2)
      }).pipe(Effect.scoped, Effect.provide(yield* built(discovery, { DYN_ROUTER_QUARANTINE_SECS: "2" })))
      // The client's scope closed: its quarantines are over.
      expect(yield* gaugeValue(endpoint)).toBe(0)
    }).pipe(Effect.scoped, Effect.provide(captureLogs(lines)))
  }, 30_000)

  it.live("attempts are bounded by DYN_ROUTER_MAX_ATTEMPTS and never repeat an instance: with only dead instances the call fails typed after trying each once", () =>
    Effect.gen(function*() {
      const endpoint = "fo.bound.gen"
      const discovery = MemoryDiscovery.make()
      for (const id of [1n, 2n, 3n, 4n]) yield* discovery.register(deadRecord("http", "fo", "bound", "gen", id, yield* closedPort()))
      const retries = () => counterValue(Metrics.transportRequestRetriesTotal, endpoint)

      // 4 dead instances, at most 3 attempts: 2 retries, then the typed failure.
      const r0 = yield* retries()
      const error = yield* Effect.flip(Stream.runCollect(
        (yield* Endpoint.client<unknown, string>(endpoint).pipe(Effect.provide(yield* built(discovery)))).generate({})
      ))
      expect(error).toBeInstanceOf(TransportConnectionError)
      expect((yield* retries()) - r0).toBe(2)

      // 2 dead instances, 3 attempts allowed: each is tried once, never twice.
      const two = MemoryDiscovery.make()
      for (const id of [5n, 6n]) yield* two.register(deadRecord("http", "fo", "bound", "gen", id, yield* closedPort()))
      const r1 = yield* retries()
      const client2 = yield* Endpoint.client<unknown, string>(endpoint).pipe(Effect.provide(yield* built(two)))
      expect(yield* Effect.flip(Stream.runCollect(client2.generate({})))).toBeInstanceOf(TransportConnectionError)
      expect((yield* retries()) - r1).toBe(1)

      // DYN_ROUTER_MAX_ATTEMPTS=1: no failover at all.
      const r2 = yield* retries()
      const client3 = yield* Endpoint.client<unknown, string>(endpoint).pipe(Effect.provide(yield* built(two, { DYN_ROUTER_MAX_ATTEMPTS: "1" })))
      expect(yield* Effect.flip(Stream.runCollect(client3.generate({})))).toBeInstanceOf(TransportConnectionError)
      expect((yield* retries()) - r2).toBe(0)

      // A call routed to one instance id is not failed over either.
      const counts = new Map<string, number>()
      yield* goodWorker(endpoint, "good", counts).pipe(Effect.provide(yield* built(two)))
      const client4 = yield* Endpoint.client<{ readonly n: number }, string>(endpoint).pipe(Effect.provide(yield* built(two)))
      const r3 = yield* retries()
      expect(yield* Effect.flip(Stream.runCollect(client4.generate({ n: 1 }, { routing: { instanceId: 5n } })))).toBeInstanceOf(TransportConnectionError)
      expect((yield* retries()) - r3).toBe(0)
      expect(counts.get("good")).toBeUndefined()
    }).pipe(Effect.scoped), 30_000)

  it.live("a worker that no longer serves the endpoint (EndpointNotFound from it) and one refusing Overloaded are failed over to a good one; Overloaded never quarantines", () =>
    Effect.gen(function*() {
      const endpoint = "fo.gone.gen"
      const discovery = MemoryDiscovery.make()
      const counts = new Map<string, number>()
      // A stale record: the worker's request server is up (its stack lives on) but no longer
      // serves the endpoint; its record is put back in discovery.
      const staleStack = yield* Layer.build(stack(discovery))
      const staleScope = yield* Scope.fork(yield* Scope.Scope, "sequential")
      const stale = yield* goodWorker(endpoint, "stale", counts).pipe(Effect.provide(staleStack), Scope.provide(staleScope))
      yield* Scope.close(staleScope, Exit.void)
      yield* discovery.register(stale.instance)
      // A busy worker: one request in flight at most, and one held open.
      const gate = yield* Deferred.make<void>()
      const busy = yield* Endpoint.serveEmit(endpoint, (_req: { readonly n: number }, _ctx, emit: Endpoint.Emit<string>) =>
        Effect.gen(function*() {
          counts.set("busy", (counts.get("busy") ?? 0) + 1)
          yield* Deferred.await(gate)
          emit("busy")
        }), { maxInFlight: 1 }).pipe(Effect.provide(yield* built(discovery)))
      yield* goodWorker(endpoint, "good", counts).pipe(Effect.provide(yield* built(discovery)))

      yield* Effect.gen(function*() {
        const client = yield* Endpoint.client<{ readonly n: number }, string>(endpoint)
        expect(client.instances()).toHaveLength(3)
        const held = yield* Effect.forkChild(Stream.runCollect(client.generate({ n: 1 }, { routing: { instanceId: busy.instance.instance_id } })))
        for (let waited = 0; waited < 2000 && busy.inFlight() === 0; waited += 5) yield* Effect.sleep(5)
        expect(busy.inFlight()).toBe(1)
        for (let k = 0; k < 12; k++) expect(yield* Stream.runCollect(client.generate({ n: 2 }))).toEqual(["good", "good"])
        expect(counts.get("good")).toBe(12)
        expect(counts.get("stale")).toBeUndefined()
        expect(counts.get("busy")).toBe(1)
        // The stale instance was quarantined; the busy one never was.
        expect(yield* gaugeValue(endpoint)).toBe(1)
        yield* Deferred.succeed(gate, undefined)
        expect(yield* Fiber.join(held)).toEqual(["busy"])
      }).pipe(Effect.provide(yield* built(discovery)))
    }).pipe(Effect.scoped), 30_000)
})

// ---- after the ack: child-process workers -------------------------------------------------------

const repoRoot = new URL("..", import.meta.url)

/**
 * A worker in its own process (http + tcp, file discovery in DYN_DISCOVERY_PATH): serves
 * WORKER_ENDPOINT, prints `ready <id hex>` once registered, then `request` for each request it
 * receives, and streams `{worker, i}` every 20 ms without end.
 */
const childWorkerSource = `
import { Effect, Layer } from "effect"
const Discovery = await import(new URL("src/discovery/index.ts", ${JSON.stringify(repoRoot.href)}).href)
const Endpoint = await import(new URL("src/Endpoint.ts", ${JSON.stringify(repoRoot.href)}).href)
const TransportRegistry = await import(new URL("src/registry/index.ts", ${JSON.stringify(repoRoot.href)}).href)
const name = process.env.WORKER_NAME
const Live = Discovery.layerConfig.pipe(Layer.provideMerge(TransportRegistry.layerConfig))
Effect.gen(function*() {
  const served = yield* Endpoint.serveEmit(process.env.WORKER_ENDPOINT, (_req, _ctx, emit) =>
    Effect.gen(function*() {
      process.stdout.write("request\\n")
      for (let i = 0;; i++) {
        emit({ worker: name, i })
        yield* Effect.sleep(20)
      }
    }))
  process.stdout.write("ready " + served.instance.instance_id.toString(16) + "\\n")
  return yield* Effect.never
}).pipe(Effect.scoped, Effect.provide(Live), Effect.runFork)
`

interface ChildWorker {
  readonly name: string
  readonly child: ChildProcess
  /** The requests it reported receiving. */
  readonly requests: () => number
}

const startChildWorker = (name: string, endpoint: string, dir: string) =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<ChildWorker>((resolve, reject) => {
        const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(DYN_|OTEL_)/.test(k)))
        const child = spawn(process.execPath, ["--experimental-strip-types", "--no-warnings", "--input-type=module", "-e", childWorkerSource], {
          cwd: new URL(".", repoRoot).pathname,
          env: {
            ...env,
            ...baseEnv,
            DYN_LOG: "error",
            DYN_DISCOVERY_BACKEND: "file",
            DYN_DISCOVERY_PATH: dir,
            WORKER_NAME: name,
            WORKER_ENDPOINT: endpoint
          },
          stdio: ["ignore", "pipe", "pipe"]
        })
        let out = ""
        let err = ""
        let ready = false
        const timer = setTimeout(() => reject(new Error(`worker ${name} did not start: ${out}${err}`)), 20_000)
        child.stderr!.on("data", (c: Buffer) => void (err += c.toString()))
        child.stdout!.on("data", (c: Buffer) => {
          out += c.toString()
          if (!ready && out.includes("ready ")) {
            ready = true
            clearTimeout(timer)
            resolve({ name, child, requests: () => out.split("\n").filter((l) => l === "request").length })
          }
        })
        child.once("exit", (code, signal) => {
          clearTimeout(timer)
          if (!ready) reject(new Error(`worker ${name} exited (${code ?? signal}): ${out}${err}`))
        })
      })
    ),
    (w) =>
      Effect.promise(() =>
        new Promise<void>((resolve) => {
          if (w.child.exitCode !== null || w.child.signalCode !== null) return resolve()
          w.child.once("exit", () => resolve())
          try {
            process.kill(w.child.pid!, "SIGKILL")
          } catch {
            resolve()
          }
        })
      )
  )

describe("nothing is retried after the ack (workers in child processes)", () => {
  it.live("a worker SIGKILLed mid-stream, after its ack, fails the call typed: one attempt, no retry on the other worker", () =>
    Effect.gen(function*() {
      const endpoint = "fo.after.gen"
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => mkdtempSync(join(tmpdir(), "failover-discovery-"))),
        (d) => Effect.sync(() => rmSync(d, { recursive: true, force: true }))
      )
      const workers = [yield* startChildWorker("a", endpoint, dir), yield* startChildWorker("b", endpoint, dir)]
      const discovery = FileDiscovery.make({ directory: dir, pollIntervalMs: 50 })
      const client = yield* Endpoint.client<unknown, { readonly worker: string; readonly i: number }>(endpoint).pipe(
        Effect.provide(yield* built(discovery))
      )
      for (let waited = 0; waited < 5000 && client.instances().length < 2; waited += 20) yield* Effect.sleep(20)
      expect(client.instances()).toHaveLength(2)
      const retries0 = yield* counterValue(Metrics.transportRequestRetriesTotal, endpoint)

      const received: Array<{ readonly worker: string; readonly i: number }> = []
      const started = yield* Deferred.make<void>()
      const call = yield* Effect.forkChild(Effect.exit(client.call({}, (batch) => {
        received.push(...batch)
        if (received.length >= 3) Deferred.doneUnsafe(started, Effect.void)
      })))
      yield* Deferred.await(started).pipe(Effect.timeout(5000))
      const victim = workers.find((w) => w.name === received[0]!.worker)!
      const other = workers.find((w) => w !== victim)!
      process.kill(victim.child.pid!, "SIGKILL")
      const exit = yield* Fiber.join(call).pipe(Effect.timeout(5000))
      expect(Exit.isFailure(exit)).toBe(true)
      const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
      expect(error?._tag).toBe("Fail")
      if (error?._tag === "Fail") {
        expect(error.error).toBeInstanceOf(TransportConnectionError)
        expect((error.error as TransportConnectionError).reason).toMatch(/StreamEndedEarly|ConnectionClosed/)
      }
      // Every item came from the victim, in order; it got the one request, the other none.
      expect(received.every((r) => r.worker === victim.name)).toBe(true)
      expect(received.map((r) => r.i)).toEqual(received.map((_, i) => i))
      yield* Effect.sleep(300)
      expect(victim.requests()).toBe(1)
      expect(other.requests()).toBe(0)
      expect(yield* counterValue(Metrics.transportRequestRetriesTotal, endpoint)).toBe(retries0)
      // The next call goes to the survivor and streams.
      const next = yield* Stream.runCollect(client.generate({}).pipe(Stream.take(3)))
      expect(next.map((r) => r.worker)).toEqual([other.name, other.name, other.name])
    }).pipe(Effect.scoped), 60_000)
})

// ---- socket-free parts ------------------------------------------------------------------------

describe("which failures fail over", () => {
  const conn = (reason: TransportConnectionError["reason"]) => new TransportConnectionError({ reason, transport: "tcp", target: "h:1" })
  it("connection failures before the ack, a connect timeout, and a worker's EndpointNotFound are retryable; nothing else", () => {
    for (const reason of ["ConnectFailed", "ConnectionClosed", "SendFailed", "Refused", "ServerUnavailable", "Overloaded"] as const) {
      expect(isRetryableBeforeAck(conn(reason)), reason).toBe(true)
    }
    expect(isRetryableBeforeAck(conn("StreamEndedEarly"))).toBe(false)
    expect(isRetryableBeforeAck(conn("ListenFailed"))).toBe(false)
    expect(isRetryableBeforeAck(new TransportTimeoutError({ reason: "ConnectTimeout", transport: "tcp", target: "h:1" }))).toBe(true)
    expect(isRetryableBeforeAck(new TransportTimeoutError({ reason: "AckTimeout", transport: "tcp", target: "h:1" }))).toBe(false)
    expect(isRetryableBeforeAck(new TransportProtocolError({ reason: "MessageTooLarge", transport: "tcp", target: "h:1" }))).toBe(false)
    expect(isRetryableBeforeAck(new EndpointNotFound({ endpoint: "a.b.c", target: "h:1" }))).toBe(true)
    expect(isRetryableBeforeAck(new EndpointNotFound({ endpoint: "a.b.c", detail: "no instance registered" }))).toBe(false)
    expect(isRetryableBeforeAck(new HandlerError({ endpoint: "a.b.c", requestId: "r", detail: "x", phase: "prologue" }))).toBe(false)
  })

  it("Overloaded fails over but does not count towards quarantine", () => {
    expect(countsTowardsQuarantine(conn("Overloaded"))).toBe(false)
    for (const e of [conn("ConnectFailed"), new EndpointNotFound({ endpoint: "a.b.c", target: "h" })] satisfies Array<CallError>) {
      expect(countsTowardsQuarantine(e)).toBe(true)
    }
  })
})

/** Timers driven by hand. */
const manualTimers = () => {
  const pending = new Map<number, () => void>()
  let next = 0
  return {
    timers: {
      setTimeout: (f: () => void) => {
        pending.set(++next, f)
        return next
      },
      clearTimeout: (h: unknown) => void pending.delete(h as number)
    },
    pending: () => pending.size,
    fireAll: () => {
      const fs = [...pending.values()]
      pending.clear()
      for (const f of fs) f()
    }
  }
}

describe("Quarantine", () => {
  it("quarantines at the third consecutive failure, once; an ack resets the run; release puts it on probation", () => {
    const clock = manualTimers()
    const events: Array<string> = []
    const q = new Quarantine({
      quarantineMs: 1000,
      timers: clock.timers,
      metrics: { quarantined: () => events.push("quarantined"), delta: (d) => events.push(`gauge ${d}`) }
    })
    expect(q.failed(1n)).toBe(false)
    expect(q.failed(1n)).toBe(false)
    q.succeeded(1n)
    expect(q.failed(1n)).toBe(false)
    expect(q.failed(1n)).toBe(false)
    expect(q.has(1n)).toBe(false)
    expect(q.failed(1n)).toBe(true)
    expect(q.has(1n)).toBe(true)
    expect(q.size).toBe(1)
    // A failure while quarantined extends it: no new quarantine, one timer.
    expect(q.failed(1n)).toBe(false)
    expect(clock.pending()).toBe(1)
    expect(events).toEqual(["quarantined", "gauge 1"])
    clock.fireAll()
    expect(q.has(1n)).toBe(false)
    expect(events).toEqual(["quarantined", "gauge 1", "gauge -1"])
    // On probation: the next failure quarantines again at once; an ack would have cleared it.
    expect(q.failed(1n)).toBe(true)
    clock.fireAll()
    q.succeeded(1n)
    expect(q.failed(1n)).toBe(false)
  })

  it("forget and close end quarantines and clear every timer; a closed quarantine ignores failures", () => {
    const clock = manualTimers()
    let gauge = 0
    const q = new Quarantine({ quarantineMs: 1000, threshold: 1, timers: clock.timers, metrics: { quarantined: () => {}, delta: (d) => void (gauge += d) } })
    expect(q.failed(1n)).toBe(true)
    expect(q.failed(2n)).toBe(true)
    expect(q.failed(3n)).toBe(true)
    expect(gauge).toBe(3)
    q.forget(2n)
    expect(gauge).toBe(2)
    expect(q.quarantined()).toEqual([1n, 3n])
    q.close()
    expect(gauge).toBe(0)
    expect(clock.pending()).toBe(0)
    expect(q.failed(4n)).toBe(false)
    expect(q.size).toBe(0)
  })
})

describe("InstanceSet.pick", () => {
  const record = (id: bigint): Instance => ({
    type: "Endpoint",
    namespace: "p",
    component: "c",
    endpoint: "e",
    instance_id: id,
    transport: { http: `http://h/${id}` }
  })

  it.live("round-robin skips tried ids always, and avoided ids while another is left; by id ignores both", () =>
    Effect.gen(function*() {
      const discovery = MemoryDiscovery.make()
      for (const id of [1n, 2n, 3n]) yield* discovery.register(record(id))
      const set = yield* InstanceSet.make({ namespace: "p", component: "c", endpoint: "e" }, "p.c.e").pipe(
        Effect.provideService(Discovery, discovery)
      )
      const ids = (n: number, avoid?: (id: bigint) => boolean, tried?: ReadonlyArray<bigint>) =>
        Array.from({ length: n }, () => set.pick("round-robin", avoid, tried)?.instance_id)
      expect(ids(6)).toEqual([1n, 2n, 3n, 1n, 2n, 3n])
      expect(ids(4, (id) => id === 2n)).toEqual([1n, 3n, 3n, 1n])
      expect(ids(3, undefined, [1n, 3n])).toEqual([2n, 2n, 2n])
      // Everything avoided: one is still picked; everything tried: none.
      expect(set.pick("round-robin", () => true)).toBeDefined()
      expect(set.pick("round-robin", undefined, [1n, 2n, 3n])).toBeUndefined()
      expect(set.pick("random", (id) => id !== 3n)?.instance_id).toBe(3n)
      expect(set.pick({ instanceId: 2n }, () => true, [2n])?.instance_id).toBe(2n)
      expect(set.pick({ instanceId: 9n })).toBeUndefined()
    }).pipe(Effect.scoped))

  it.live("reports the instances that leave the set", () =>
    Effect.gen(function*() {
      const discovery = MemoryDiscovery.make()
      const removed: Array<bigint> = []
      const scopes = new Map<bigint, Scope.Closeable>()
      for (const id of [1n, 2n]) {
        const scope = yield* Scope.make()
        scopes.set(id, scope)
        yield* discovery.register(record(id)).pipe(Scope.provide(scope))
      }
      const set = yield* InstanceSet.make({ namespace: "p", component: "c", endpoint: "e" }, "p.c.e", {
        onRemoved: (i) => removed.push(i.instance_id)
      }).pipe(Effect.provideService(Discovery, discovery))
      yield* Scope.close(scopes.get(2n)!, Exit.void)
      for (let waited = 0; waited < 1000 && removed.length === 0; waited += 5) yield* Effect.sleep(5)
      expect(removed).toEqual([2n])
      expect(set.instances().map((i) => i.instance_id)).toEqual([1n])
      yield* Scope.close(scopes.get(1n)!, Exit.void)
    }).pipe(Effect.scoped))
})
