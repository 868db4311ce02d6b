/**
 * The pooled, multiplexed call-home plane (response mux v1, DYN_TCP_POOL_ENABLED=true) over real
 * loopback sockets: the worker's ConnectionPool against the router's stream server, the
 * Endpoint API on top of both, and hand-scripted raw peers that check the bytes on the wire.
 * Time-driven behaviour (idle timeout, max lifetime) runs on TestClock; everything else on real
 * time with small bounds.
 */
import * as net from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Effect, Fiber, Schema, Stream } from "effect"
import { PrometheusMetrics } from "effect/observability"
import { TestClock } from "effect/testing"
import {
  decodeConnectionAck,
  decodeWindowUpdate,
  encodeConnectionAck,
  encodeMuxFrame,
  encodeWindowUpdate,
  makeMuxDecoder,
  MUX_HEADER_SIZE,
  MuxKind,
  streamIdFromUuid,
  uuidFromStreamId
} from "../src/protocol/MuxCodec.ts"
import { json as jsonCodec } from "../src/protocol/PayloadCodec.ts"
import { encodeStreamComplete, encodeStreamItem } from "../src/protocol/RequestMessage.ts"
import { encodeFrame, encodeHeaderOnlyJson, makeDecoder } from "../src/protocol/TwoPartCodec.ts"
import { Discovery } from "../src/Discovery.ts"
import * as Endpoint from "../src/Endpoint.ts"
import type { RequestMessage } from "../src/RequestPlane.ts"
import type { ResponseSink } from "../src/ResponsePlane.ts"
import { encodeMuxHandshake, muxConnectionInfo } from "../src/protocol/MuxHandshake.ts"
import type { ConnectionPool, ConnectionPoolOptions, PooledConnection } from "../src/transport/tcp/worker/pool/ConnectionPool.ts"
import * as TcpResponseTransport from "../src/transport/tcp/TcpResponseTransport.ts"
import * as CallHomeClient from "../src/transport/tcp/worker/CallHomeClient.ts"
import * as CallHomeServer from "../src/transport/tcp/router/CallHomeServer.ts"
import { defaults } from "../src/TransportConfig.ts"
import { TransportProtocolError } from "../src/TransportError.ts"
import type { HandlerError, TransportError } from "../src/TransportError.ts"
import type { ResponseWriter } from "../src/ResponsePlane.ts"
import * as TransportRegistry from "../src/registry/index.ts"
import { slowConsumer } from "./support/slowConsumer.ts"
import { tcpStack } from "./support/stack.ts"

const MAX = 32 * 1024 * 1024

// ---- stacks -----------------------------------------------------------------------------------

/** In-memory request plane + pooled TCP call-home response plane + mem discovery, on loopback. */
const poolStack = (env: Record<string, string> = {}, options: TcpResponseTransport.TcpResponseTransportOptions = {}) =>
  tcpStack({ DYN_TCP_POOL_ENABLED: "true", ...env }, options)

/** The stack's router server and worker pool. */
const planes = Effect.gen(function*() {
  const registry = yield* TransportRegistry.TransportRegistry
  const server = yield* registry.getResponseServer("tcp")
  const client = registry.responseClientFor("tcp_response_mux_v1") as CallHomeClient.CallHomeClient
  return { server, client, pool: client.pool()! }
})

// ---- helpers ----------------------------------------------------------------------------------

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const text = (b: Uint8Array) => new TextDecoder().decode(b)
const utf8 = (s: string) => new TextEncoder().encode(s)
const toHex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex")

/** Polls (on real time, whatever the clock) until `f()` holds, at most `ms`. */
const eventually = (f: () => boolean, ms = 2000) =>
  Effect.promise(async () => {
    const deadline = Date.now() + ms
    while (!f() && Date.now() < deadline) await sleep(5)
    return f()
  })

/** Waits on real time. */
const realSleep = (ms: number) => Effect.promise(() => sleep(ms))

const tcpSockets = () =>
  process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap" || r === "TCPServerWrap").length

/** A sink that records what the server tells it. */
const recordingSink = () => {
  const events: Array<string> = []
  const items: Array<unknown> = []
  let error: TransportError | HandlerError | undefined
  let doneAt = 0
  let resolveDone: () => void = () => {}
  const done = new Promise<void>((resolve) => (resolveDone = resolve))
  const sink: ResponseSink = {
    onStart: () => events.push("start"),
    onItems: (batch) => items.push(...batch),
    onEnd: () => {
      events.push("end")
      doneAt = performance.now()
      resolveDone()
    },
    onError: (e) => {
      events.push(`error:${e._tag}`)
      error = e
      doneAt = performance.now()
      resolveDone()
    }
  }
  return { sink, events, items, done, error: () => error, doneAt: () => doneAt }
}

/** The value of one series in exposition text, or 0 when absent. */
const valueOf = (scrape: string, series: string): number => {
  const line = scrape.split("\n").find((l) => l.startsWith(series + " "))
  return line === undefined ? 0 : Number(line.slice(series.length + 1))
}

/** Every pool metric of `target`, scraped from the global registry. */
const rawPoolMetrics = (target: string) => {
  const scrape = PrometheusMetrics.formatUnsafe(Context.empty())
  const label = `{target="${target}",role="server"}`
  return {
    created: valueOf(scrape, `tcp_pool_connections_created_total${label}`),
    reused: valueOf(scrape, `tcp_pool_connections_reused_total${label}`),
    active: valueOf(scrape, `tcp_pool_active_connections${label}`),
    idle: valueOf(scrape, `tcp_pool_idle_connections${label}`),
    acquisitions: valueOf(scrape, `tcp_pool_acquisition_latency_seconds_count${label}`),
    validationFailures: valueOf(scrape, `tcp_pool_validation_failures_total${label}`),
    scrape
  }
}

/**
 * Counters live in the process-wide registry, keyed by target (host:port), and an earlier test
 * may have had the same ephemeral port: a harness records each target's counters when it first
 * meets it, and `poolMetrics` reports counters since then (gauges as they are).
 */
const baselines = new Map<string, ReturnType<typeof rawPoolMetrics>>()
const poolMetrics = (target: string) => {
  const now = rawPoolMetrics(target)
  const base = baselines.get(target)
  if (base === undefined) return now
  return {
    ...now,
    created: now.created - base.created,
    reused: now.reused - base.reused,
    acquisitions: now.acquisitions - base.acquisitions,
    validationFailures: now.validationFailures - base.validationFailures
  }
}

const addressOf = (info: { readonly info: string }) => (JSON.parse(info.info) as { address: string }).address

/**
 * A router's stream server in mux mode and a worker's client with its pool, used directly:
 * `open` opens a router stream and calls home for it; `roundTrip` runs a whole stream.
 */
const harness = (pool: Partial<ConnectionPoolOptions> = {}, server: Partial<CallHomeServer.CallHomeServerOptions> = {}) =>
  Effect.gen(function*() {
    const srv = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 5000, maxMessageSize: MAX, mux: true, ...server })
    const client = yield* CallHomeClient.make({ maxMessageSize: MAX, pool: { minIdle: 0, ...pool } })
    let target = ""
    const open = Effect.gen(function*() {
      const requestId = crypto.randomUUID()
      const rec = recordingSink()
      const pending = yield* srv.open({ requestId, endpoint: "ns.pool.e", codec: "json", sink: rec.sink })
      if (target === "") {
        target = addressOf(pending.connectionInfo)
        baselines.set(target, rawPoolMetrics(target))
      }
      const writer = yield* client.connect({ connectionInfo: pending.connectionInfo, requestId, codec: "json" })
      return { rec, pending, writer }
    })
    const roundTrip = (n: number) =>
      Effect.gen(function*() {
        const s = yield* open
        s.writer.prologue()
        for (let i = 0; i < n; i++) s.writer.send(i)
        s.writer.complete()
        yield* Effect.promise(() => s.rec.done)
        expect(s.rec.events).toEqual(["start", "end"])
        expect(s.rec.items).toEqual(Array.from({ length: n }, (_, i) => i))
        s.pending.close()
      })
    return { server: srv, client, pool: client.pool()!, open, roundTrip, target: () => target }
  })

const ids = (pool: ConnectionPool) => pool.connections().map((c) => c.id)

/** The socket of a pooled connection (its MuxConnection's private field, for failure drills). */
const socketOf = (c: PooledConnection | undefined) => (c!.conn as unknown as { socket: net.Socket }).socket

// ---- the pool ---------------------------------------------------------------------------------

describe("ConnectionPool", () => {
  it.live("reuse: 50 sequential streams to one target create one connection", () =>
    Effect.gen(function*() {
      const h = yield* harness()
      for (let i = 0; i < 50; i++) yield* h.roundTrip(3)
      const target = h.target()
      expect(h.pool.stats()).toMatchObject([{ target, connections: 1, active: 0, streams: 0 }])
      expect(CallHomeServer.muxDrill(h.server).connectionCount()).toBe(1)
      const m = poolMetrics(target)
      expect(m).toMatchObject({ created: 1, reused: 49, acquisitions: 50, validationFailures: 0, active: 0, idle: 1 })
    }))

  it.live("fast path: sequential streams reuse one connection with no acquisition through the Pool after the first", () =>
    Effect.gen(function*() {
      const h = yield* harness()
      for (let i = 0; i < 30; i++) yield* h.roundTrip(2)
      const target = h.target()
      expect(h.pool.stats()).toMatchObject([{ target, connections: 1, streams: 0, spare: 1, poolAcquisitions: 1, fastAcquisitions: 29 }])
      expect(poolMetrics(target)).toMatchObject({ created: 1, reused: 29, acquisitions: 30, validationFailures: 0, active: 0, idle: 1 })
    }))

  it.live("fast path: after a request in Dynamo's TCP framing or over HTTP the stream opens with no event-loop turn; after NATS or an unknown plane it waits one", () =>
    Effect.gen(function*() {
      const h = yield* harness()
      yield* h.roundTrip(1) // leaves a spare connection
      // Which comes first: the stream's open, or a setImmediate queued just before connecting.
      const order = (requestTransport: "tcp" | "nats" | "http" | undefined) =>
        Effect.gen(function*() {
          const requestId = crypto.randomUUID()
          const rec = recordingSink()
          const pending = yield* h.server.open({ requestId, endpoint: "ns.pool.e", codec: "json", sink: rec.sink })
          const events: Array<string> = []
          setImmediate(() => events.push("turn"))
          const writer = yield* h.client.connect({ connectionInfo: pending.connectionInfo, requestId, codec: "json", requestTransport }).pipe(
            Effect.tap(() => Effect.sync(() => events.push("open")))
          )
          writer.prologue()
          writer.send(requestTransport ?? "unknown")
          writer.complete()
          yield* Effect.promise(() => rec.done)
          expect(rec.items).toEqual([requestTransport ?? "unknown"])
          pending.close()
          yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
          return events
        })
      // The HTTP request plane starts a handler on the next turn itself when its session is busy.
      expect(yield* order("tcp")).toEqual(["open", "turn"])
      expect(yield* order("http")).toEqual(["open", "turn"])
      expect(yield* order("nats")).toEqual(["turn", "open"])
      expect(yield* order(undefined)).toEqual(["turn", "open"])
      expect(h.pool.stats()).toMatchObject([{ connections: 1, poolAcquisitions: 1, fastAcquisitions: 4 }])
    }))

  it.live("connectNow: a writer at once on a spare connection (tcp and http planes), a typed error for bad info, undefined when it must wait", () =>
    Effect.gen(function*() {
      const h = yield* harness()
      const pendingStream = Effect.gen(function*() {
        const requestId = crypto.randomUUID()
        const rec = recordingSink()
        const pending = yield* h.server.open({ requestId, endpoint: "ns.pool.e", codec: "json", sink: rec.sink })
        return { requestId, rec, pending }
      })
      // no connection yet: nothing to lend, connect must dial
      const first = yield* pendingStream
      expect(h.client.connectNow!({ connectionInfo: first.pending.connectionInfo, requestId: first.requestId, codec: "json", requestTransport: "http" })).toBeUndefined()
      first.pending.close()
      yield* h.roundTrip(1) // leaves a spare connection
      for (const requestTransport of ["tcp", "http"] as const) {
        const s = yield* pendingStream
        const writer = h.client.connectNow!({ connectionInfo: s.pending.connectionInfo, requestId: s.requestId, codec: "json", requestTransport })
        expect(writer).toBeDefined()
        expect(writer).not.toBeInstanceOf(Error)
        const w = writer as ResponseWriter
        w.prologue()
        w.send(requestTransport)
        w.complete()
        yield* Effect.promise(() => s.rec.done)
        expect(s.rec.items).toEqual([requestTransport])
        s.pending.close()
      }
      // after NATS or an unknown plane the stream waits a turn: connect, not connectNow
      const waits = yield* pendingStream
      for (const requestTransport of ["nats", undefined] as const) {
        expect(h.client.connectNow!({ connectionInfo: waits.pending.connectionInfo, requestId: waits.requestId, codec: "json", requestTransport })).toBeUndefined()
      }
      waits.pending.close()
      // info that names another request: the typed error connect fails with
      const bad = h.client.connectNow!({ connectionInfo: waits.pending.connectionInfo, requestId: "another-request", codec: "json", requestTransport: "tcp" })
      expect(bad).toBeInstanceOf(TransportProtocolError)
      expect((bad as TransportProtocolError).target).toBe(h.target())
      expect(h.pool.stats()).toMatchObject([{ connections: 1, poolAcquisitions: 1, fastAcquisitions: 2 }])
    }))

  it.live("fast path: a connection destroyed or half-closed under a spare lease is not lent; it is invalidated and replaced", () =>
    Effect.gen(function*() {
      const h = yield* harness()
      yield* h.roundTrip(1)
      const [first] = h.pool.connections()
      expect(h.pool.stats()[0]).toMatchObject({ spare: 1, fastAcquisitions: 0, poolAcquisitions: 1 })
      // Destroyed, its 'close' not yet delivered: the spare lease is found invalid and given back.
      yield* Effect.sync(() => socketOf(first).destroy()).pipe(Effect.andThen(h.roundTrip(1)))
      expect(h.pool.connections()).not.toContain(first)
      expect(h.pool.stats()[0]).toMatchObject({ fastAcquisitions: 0, poolAcquisitions: 2 })
      expect(poolMetrics(h.target())).toMatchObject({ created: 2, validationFailures: 1 })
      // Half-closed by the peer: not lent either.
      const [second] = h.pool.connections()
      yield* Effect.promise(() =>
        new Promise<void>((resolve) => {
          socketOf(second).once("end", () => resolve())
          socketOf(second).push(null)
        })
      )
      yield* h.roundTrip(1)
      expect(h.pool.connections()).not.toContain(second)
      expect(h.pool.stats()[0]).toMatchObject({ fastAcquisitions: 0, poolAcquisitions: 3 })
      expect(poolMetrics(h.target())).toMatchObject({ created: 3, validationFailures: 2 })
      // The replacement is lent by the fast path.
      yield* h.roundTrip(1)
      expect(h.pool.stats()[0]).toMatchObject({ connections: 1, fastAcquisitions: 1, poolAcquisitions: 3 })
    }))

  it.live("fast path: the per-target max and the streams per connection hold under 500 concurrent streams, twice", () =>
    Effect.gen(function*() {
      const h = yield* harness({ maxPerTarget: 4, maxStreamsPerConnection: 50 })
      let peakConnections = 0
      let peakStreams = 0
      const sample = () => {
        const conns = h.pool.connections()
        peakConnections = Math.max(peakConnections, conns.length, CallHomeServer.muxDrill(h.server).connectionCount())
        for (const c of conns) peakStreams = Math.max(peakStreams, c.conn.streamCount())
      }
      const stream = (i: number) =>
        Effect.gen(function*() {
          const s = yield* h.open
          sample()
          s.writer.prologue()
          s.writer.send(i)
          yield* Effect.promise(() => sleep(2))
          s.writer.complete()
          yield* Effect.promise(() => s.rec.done)
          expect(s.rec.items).toEqual([i])
          s.pending.close()
        })
      for (let round = 0; round < 2; round++) {
        yield* Effect.forEach(Array.from({ length: 500 }, (_, i) => i), stream, { concurrency: "unbounded", discard: true })
      }
      expect(peakConnections).toBe(4)
      expect(peakStreams).toBeLessThanOrEqual(50)
      const stats = h.pool.stats()[0]!
      expect(stats.connections).toBeLessThanOrEqual(4)
      expect(stats.fastAcquisitions + stats.poolAcquisitions).toBe(1000)
      expect(stats.fastAcquisitions).toBeGreaterThan(0)
      expect(stats.streams).toBe(0)
    }))

  it.live("the per-target max holds under 500 concurrent streams, and nothing is lost", () =>
    Effect.gen(function*() {
      const { pool, server } = yield* planes
      let peak = 0
      const sample = () => (peak = Math.max(peak, pool.connections().length, CallHomeServer.muxDrill(server).connectionCount()))
      yield* Endpoint.serveEmit("ns.pool.burst", (req: { id: number }, _ctx, emit: Endpoint.Emit<string>) =>
        Effect.gen(function*() {
          sample()
          emit(`${req.id}:0`)
          yield* Effect.sleep(2)
          emit(`${req.id}:1`)
        }))
      const client = yield* Endpoint.client<{ id: number }, string>("ns.pool.burst")
      const timer = setInterval(sample, 1)
      const results = yield* Effect.forEach(
        Array.from({ length: 500 }, (_, id) => id),
        (id) => Stream.runCollect(client.generate({ id })),
        { concurrency: "unbounded" }
      ).pipe(Effect.ensuring(Effect.sync(() => clearInterval(timer))))
      results.forEach((items, id) => expect(items).toEqual([`${id}:0`, `${id}:1`]))
      // 500 streams at 50 per connection want 10 connections: the max of 4 held, and was reached.
      expect(peak).toBe(4)
      expect(pool.stats()[0]!.connections).toBeLessThanOrEqual(4)
    }).pipe(Effect.provide(poolStack({ DYN_TCP_POOL_MAX_PER_TARGET: "4", DYN_TCP_POOL_MIN_IDLE: "0" }, { client: { pool: { maxStreamsPerConnection: 50 } } }))))

  it.live("8,000 concurrent streams keep the connections at most the per-target max", () =>
    Effect.gen(function*() {
      const { pool, server } = yield* planes
      let peak = 0
      const sample = () => (peak = Math.max(peak, pool.connections().length, CallHomeServer.muxDrill(server).connectionCount()))
      yield* Endpoint.serveEmit("ns.pool.many", (req: { id: number }, _ctx, emit: Endpoint.Emit<number>) =>
        Effect.sync(() => {
          sample()
          emit(req.id)
        }))
      const client = yield* Endpoint.client<{ id: number }, number>("ns.pool.many")
      const timer = setInterval(sample, 2)
      let ok = 0
      yield* Effect.forEach(
        Array.from({ length: 8000 }, (_, id) => id),
        (id) =>
          client.call({ id }, (items) => {
            if (items.length === 1 && items[0] === id) ok++
          }),
        { concurrency: "unbounded", discard: true }
      ).pipe(Effect.ensuring(Effect.sync(() => clearInterval(timer))))
      expect(ok).toBe(8000)
      expect(peak).toBeGreaterThan(0)
      expect(peak).toBeLessThanOrEqual(4)
    }).pipe(Effect.provide(poolStack({ DYN_TCP_POOL_MAX_PER_TARGET: "4", DYN_TCP_POOL_MIN_IDLE: "0" }))), 60_000)

  it.live("min idle is refilled after the router drops the connections (counted as validation failures)", () =>
    Effect.gen(function*() {
      const h = yield* harness({ minIdle: 2 })
      yield* h.roundTrip(1)
      const target = h.target()
      expect(yield* eventually(() => h.pool.connections().length === 2 && CallHomeServer.muxDrill(h.server).connectionCount() === 2)).toBe(true)
      const before = ids(h.pool)
      const m0 = poolMetrics(target)
      CallHomeServer.muxDrill(h.server).dropConnections()
      expect(
        yield* eventually(() => {
          const now = ids(h.pool)
          return now.length === 2 && now.every((id) => !before.includes(id)) && CallHomeServer.muxDrill(h.server).connectionCount() === 2
        })
      ).toBe(true)
      const m1 = poolMetrics(target)
      expect(m1.validationFailures - m0.validationFailures).toBe(2)
      expect(m1.created - m0.created).toBe(2)
      expect(m1.idle).toBe(2)
      // A stream on a warm connection reuses it.
      yield* h.roundTrip(2)
      expect(poolMetrics(target).reused - m1.reused).toBe(1)
      expect(poolMetrics(target).created).toBe(m1.created)
    }))

  it.effect("the idle timeout closes connections beyond min idle (TestClock)", () =>
    Effect.gen(function*() {
      const h = yield* harness({ minIdle: 1, maxPerTarget: 4, maxStreamsPerConnection: 1, idleTimeoutMs: 60_000, targetIdleTimeoutMs: 3_600_000 })
      // Three streams at once, one per connection.
      const streams = [yield* h.open, yield* h.open, yield* h.open]
      for (const s of streams) s.writer.prologue()
      expect(yield* eventually(() => h.pool.connections().length === 3)).toBe(true)
      for (const s of streams) s.writer.complete()
      yield* Effect.promise(() => Promise.all(streams.map((s) => s.rec.done)))
      expect(yield* eventually(() => h.pool.stats()[0]!.active === 0)).toBe(true)
      yield* TestClock.adjust("59 seconds")
      yield* realSleep(50)
      expect(h.pool.connections().length).toBe(3)
      yield* TestClock.adjust("2 seconds")
      expect(yield* eventually(() => h.pool.connections().length === 1 && CallHomeServer.muxDrill(h.server).connectionCount() === 1)).toBe(true)
      expect(poolMetrics(h.target())).toMatchObject({ idle: 1, active: 0, validationFailures: 0 })
      yield* h.roundTrip(1)
      expect(h.pool.connections().length).toBe(1)
    }))

  it.effect("the max lifetime rotates connections: drain, then close, never cutting a live stream (TestClock)", () =>
    Effect.gen(function*() {
      const h = yield* harness({ maxLifetimeMs: 10_000, idleTimeoutMs: 3_600_000 })
      const a = yield* h.open
      a.writer.prologue()
      a.writer.send("a1")
      yield* eventually(() => a.rec.items.length === 1)
      const [first] = h.pool.connections()
      yield* TestClock.adjust("11 seconds")
      expect(yield* eventually(() => first!.retired)).toBe(true)
      // A new stream gets a new connection; the old one still carries stream a.
      const b = yield* h.open
      b.writer.prologue()
      expect(h.pool.connections().length).toBe(2)
      expect(first!.conn.streamCount()).toBe(1)
      a.writer.send("a2")
      a.writer.complete()
      yield* Effect.promise(() => a.rec.done)
      expect(a.rec.events).toEqual(["start", "end"])
      expect(a.rec.items).toEqual(["a1", "a2"])
      // Drained: the old connection closes; the new one stays.
      expect(yield* eventually(() => h.pool.connections().length === 1 && CallHomeServer.muxDrill(h.server).connectionCount() === 1)).toBe(true)
      expect(h.pool.connections()[0]).not.toBe(first)
      b.writer.send("b1")
      b.writer.complete()
      yield* Effect.promise(() => b.rec.done)
      expect(b.rec.items).toEqual(["b1"])
      expect(poolMetrics(h.target())).toMatchObject({ created: 2, validationFailures: 0 })
    }))

  it.live("a connection killed by the peer is replaced, and counted in validation failures", () =>
    Effect.gen(function*() {
      const h = yield* harness()
      yield* h.roundTrip(2)
      const target = h.target()
      const [first] = h.pool.connections()
      CallHomeServer.muxDrill(h.server).dropConnections()
      expect(yield* eventually(() => h.pool.connections().length === 0)).toBe(true)
      yield* h.roundTrip(2)
      expect(h.pool.connections().length).toBe(1)
      expect(h.pool.connections()[0]).not.toBe(first)
      expect(poolMetrics(target)).toMatchObject({ created: 2, reused: 0, validationFailures: 1, acquisitions: 2 })
    }))

  it.live("validation before lending: a destroyed or half-closed connection is not lent, it is replaced", () =>
    Effect.gen(function*() {
      const h = yield* harness()
      yield* h.roundTrip(1)
      // Destroyed, and its 'close' not yet delivered: only validation can catch it.
      const [first] = h.pool.connections()
      yield* Effect.sync(() => socketOf(first).destroy()).pipe(Effect.andThen(h.roundTrip(1)))
      expect(h.pool.connections()).not.toContain(first)
      expect(poolMetrics(h.target())).toMatchObject({ created: 2, validationFailures: 1 })
      // Half-closed by the router: between its FIN and the close, the connection says why it is unusable.
      const [second] = h.pool.connections()
      const seen = yield* Effect.promise(() =>
        new Promise<string | undefined>((resolve) => {
          socketOf(second).once("end", () => resolve(second!.conn.problem()))
          socketOf(second).push(null)
        })
      )
      expect(seen).toBe("the router half-closed the connection")
      yield* h.roundTrip(1)
      expect(h.pool.connections()).not.toContain(second)
      expect(poolMetrics(h.target())).toMatchObject({ created: 3, validationFailures: 2 })
    }))

  it.live("acquisition is bounded (AcquireTimeout) and failures are typed and name the target", () =>
    Effect.gen(function*() {
      const h = yield* harness({ maxPerTarget: 1, maxStreamsPerConnection: 1, acquireTimeoutMs: 200 })
      const a = yield* h.open
      a.writer.prologue()
      const start = Date.now()
      const timedOut = yield* Effect.flip(h.open)
      expect(Date.now() - start).toBeGreaterThanOrEqual(150)
      expect(Date.now() - start).toBeLessThan(1000)
      expect(timedOut._tag).toBe("TransportTimeoutError")
      if (timedOut._tag === "TransportTimeoutError") {
        expect(timedOut.reason).toBe("AcquireTimeout")
        expect(timedOut.target).toBe(h.target())
      }
      a.writer.complete()
      yield* Effect.promise(() => a.rec.done)
      yield* h.roundTrip(1)

      // Nobody listening: ConnectFailed naming the address.
      const dead = net.createServer()
      yield* Effect.promise(() => new Promise<void>((resolve) => dead.listen(0, "127.0.0.1", () => resolve())))
      const port = (dead.address() as net.AddressInfo).port
      yield* Effect.promise(() => new Promise<void>((resolve) => dead.close(() => resolve())))
      const info = (address: string, frontend = crypto.randomUUID()) =>
        muxConnectionInfo({ address, frontend_server_id: frontend, stream_id: crypto.randomUUID(), context: "rq" })
      const refused = yield* Effect.flip(h.client.connect({ connectionInfo: info(`127.0.0.1:${port}`), requestId: "rq", codec: "json" }))
      expect(refused._tag).toBe("TransportConnectionError")
      if (refused._tag === "TransportConnectionError") {
        expect(refused.reason).toBe("ConnectFailed")
        expect(refused.target).toBe(`127.0.0.1:${port}`)
      }
      // A live router that is not the one the info names: it refuses the handshake.
      const stale = yield* Effect.flip(h.client.connect({ connectionInfo: info(h.target()), requestId: "rq", codec: "json" }))
      expect(stale._tag).toBe("TransportConnectionError")
      if (stale._tag === "TransportConnectionError") {
        expect(stale.reason).toBe("Refused")
        expect(stale.target).toBe(h.target())
      }
      // Bad info: a protocol error before any I/O.
      const bad = yield* Effect.flip(
        h.client.connect({ connectionInfo: { transport: "tcp_response_mux_v1", info: "{}" }, requestId: "rq", codec: "json" })
      )
      expect(bad._tag).toBe("TransportProtocolError")
    }))

  it.live("evicts a target nobody uses any more, with all its connections", () =>
    Effect.gen(function*() {
      const h = yield* harness({ minIdle: 2, targetIdleTimeoutMs: 150 })
      yield* h.roundTrip(1)
      // right after the stream the target has its connections (min idle may still be filling)
      expect(h.pool.connections().length).toBeGreaterThanOrEqual(1)
      expect(yield* eventually(() => h.pool.stats().length === 0 && CallHomeServer.muxDrill(h.server).connectionCount() === 0)).toBe(true)
      // the gauges follow each worker-side socket's close event, which can trail the router's
      expect(yield* eventually(() => {
        const m = poolMetrics(h.target())
        return m.active === 0 && m.idle === 0
      })).toBe(true)
      expect(poolMetrics(h.target())).toMatchObject({ active: 0, idle: 0, validationFailures: 0 })
      // The per-address gauge bookkeeping is dropped with the target.
      expect(yield* eventually(() => h.pool.gaugedAddresses().length === 0)).toBe(true)
      yield* h.roundTrip(1)
      expect(h.pool.stats().length).toBe(1)
      expect(h.pool.gaugedAddresses()).toEqual([h.target()])

      // Many targets come and go: the bookkeeping follows the live ones and does not grow.
      const others = yield* Effect.forEach(Array.from({ length: 5 }), () =>
        CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 5000, maxMessageSize: MAX, mux: true }))
      const addresses: Array<string> = []
      for (const srv of others) {
        const rec = recordingSink()
        const requestId = crypto.randomUUID()
        const pending = yield* srv.open({ requestId, endpoint: "ns.pool.e", codec: "json", sink: rec.sink })
        addresses.push(addressOf(pending.connectionInfo))
        const writer = yield* h.client.connect({ connectionInfo: pending.connectionInfo, requestId, codec: "json" })
        writer.prologue()
        writer.complete()
        yield* Effect.promise(() => rec.done)
        pending.close()
      }
      expect(h.pool.gaugedAddresses().length).toBeGreaterThanOrEqual(1)
      expect(h.pool.gaugedAddresses().length).toBeLessThanOrEqual(6)
      expect(yield* eventually(() => h.pool.stats().length === 0 && h.pool.gaugedAddresses().length === 0)).toBe(true)
      for (const address of [h.target(), ...addresses]) expect(poolMetrics(address)).toMatchObject({ active: 0, idle: 0 })
    }))

  it.live("closing the scope closes every pooled connection and stream; no socket stays open", () =>
    Effect.gen(function*() {
      yield* realSleep(50) // let sockets of earlier tests finish closing
      const baseline = tcpSockets()
      let during = 0
      const disconnects: Array<string> = []
      const rec = recordingSink()
      yield* Effect.gen(function*() {
        const h = yield* harness({ minIdle: 3 })
        yield* h.roundTrip(1)
        const live = yield* h.open
        live.writer.prologue()
        live.writer.onDisconnect((e) => disconnects.push(`${e._tag}:${e.reason}`))
        expect(yield* eventually(() => h.pool.connections().length === 3)).toBe(true)
        // The same for a whole stack, with a stream that never ends.
        yield* Effect.gen(function*() {
          yield* Endpoint.serveEmit("ns.pool.forever", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) =>
            Effect.andThen(Effect.sync(() => emit(1)), Effect.never))
          const client = yield* Endpoint.client<unknown, number>("ns.pool.forever")
          const started = yield* Deferred.make<void>()
          yield* Effect.forkScoped(client.call({}, () => Deferred.doneUnsafe(started, Effect.void)))
          yield* Deferred.await(started)
          const registry = yield* TransportRegistry.TransportRegistry
          const server = yield* registry.getResponseServer("tcp")
          yield* server.open({ requestId: "probe", endpoint: "x", codec: "json", sink: rec.sink })
          during = tcpSockets()
        }).pipe(Effect.scoped, Effect.provide(poolStack({ DYN_TCP_POOL_MIN_IDLE: "2" })))
      }).pipe(Effect.scoped)
      expect(during).toBeGreaterThanOrEqual(baseline + 8)
      expect(disconnects).toEqual(["TransportConnectionError:ConnectionClosed"])
      expect(yield* eventually(() => tcpSockets() === baseline, 3000)).toBe(true)
    }))
})

// ---- dropped connections ----------------------------------------------------------------------

/** "ns.pool.lost" handlers interrupted so far. */
let lostInterrupted = 0

/** Serves "ns.pool.lost": two items, then it hangs ("hang") or completes ("done"). */
const serveLost = Endpoint.serveEmit("ns.pool.lost", (req: { mode: "hang" | "done" }, _ctx, emit: Endpoint.Emit<number>) =>
  Effect.andThen(
    Effect.sync(() => {
      emit(1)
      emit(2)
    }),
    req.mode === "hang" ? Effect.never : Effect.void
  ).pipe(Effect.onInterrupt(() => Effect.sync(() => lostInterrupted++))))

/**
 * Makes a pooled connection die as it queues its next Prologue: its socket is destroyed in the
 * same tick, so that frame (and whatever the stream queues after it) never reaches the socket.
 */
const dieOnNextPrologue = (pc: PooledConnection) => {
  const target = pc.conn as unknown as { enqueue: (s: unknown, kind: MuxKind, payload: Uint8Array | undefined) => void }
  const enqueue = target.enqueue.bind(pc.conn)
  let prologues = 0
  target.enqueue = (s, kind, payload) => {
    enqueue(s, kind, payload)
    if (kind === MuxKind.Prologue && prologues++ === 0) socketOf(pc).destroy(new Error("simulated link failure"))
  }
  return { prologues: () => prologues }
}

/** The router's error for a stream the worker reset before the router read its Prologue. */
const expectResetBeforePrologue = (e: TransportError | HandlerError | { readonly _tag: string }) => {
  expect(e._tag).toBe("TransportConnectionError")
  if (e._tag !== "TransportConnectionError") return
  const error = e as TransportError
  // ConnectionClosed: the router never had the stream on a connection (so not StreamEndedEarly).
  expect(error.reason).toBe("ConnectionClosed")
  expect(error.detail).toContain("the worker reset the stream before its prologue reached the router: call-home connection to 127.0.0.1:")
  expect(error.detail).toContain("died before the stream finished")
  expect(error.detail).toContain("simulated link failure")
}

describe("a dropped pooled connection", () => {
  it.live("fails every stream on it with a typed error within 1 s, on both sides; the pool replaces it", () =>
    Effect.gen(function*() {
      const { pool, server } = yield* planes
      let interrupted = 0
      let started = 0
      yield* Endpoint.serveEmit("ns.pool.hang", (req: { id: number }, _ctx, emit: Endpoint.Emit<number>) =>
        Effect.andThen(
          Effect.sync(() => {
            started++
            emit(req.id)
          }),
          Effect.never
        ).pipe(Effect.onInterrupt(() => Effect.sync(() => interrupted++))))
      yield* Endpoint.serveEmit("ns.pool.ok", (_req: unknown, _ctx, emit: Endpoint.Emit<string>) => Effect.sync(() => emit("ok")))
      const hang = yield* Endpoint.client<{ id: number }, number>("ns.pool.hang")
      const ok = yield* Endpoint.client<unknown, string>("ns.pool.ok")
      expect(yield* Stream.runCollect(ok.generate({}))).toEqual(["ok"])

      for (const side of ["router", "worker"] as const) {
        started = 0
        interrupted = 0
        let flowing = 0
        const fibers = yield* Effect.forEach(Array.from({ length: 20 }, (_, id) => id), (id) =>
          Effect.forkChild(Effect.flip(hang.call({ id }, () => void flowing++)).pipe(Effect.map((e) => ({ e, at: performance.now() })))))
        // Every stream is on the connection from the router's point of view: its first item arrived.
        expect(yield* eventually(() => started === 20 && flowing === 20)).toBe(true)
        expect(pool.connections().length).toBe(1) // all twenty share one connection
        const droppedAt = performance.now()
        if (side === "router") CallHomeServer.muxDrill(server).dropConnections()
        else for (const c of pool.connections()) c.conn.destroy()
        const results = yield* Effect.forEach(fibers, Fiber.join)
        for (const { at, e } of results) {
          expect(at - droppedAt).toBeLessThan(1000)
          expect(e._tag).toBe("TransportConnectionError")
          if (e._tag === "TransportConnectionError") {
            expect(e.reason).toBe("StreamEndedEarly")
            expect(e.detail).toBe("stream ended before generation completed")
          }
        }
        // Worker side: every writer heard onDisconnect, so every handler was interrupted.
        expect(yield* eventually(() => interrupted === 20, 1000)).toBe(true)
        // Replaced: the next stream works.
        expect(yield* Stream.runCollect(ok.generate({}))).toEqual(["ok"])
      }
    }).pipe(Effect.provide(poolStack({ DYN_TCP_POOL_MIN_IDLE: "0" }))))

  it.live("fails a stream whose Prologue never reached the router within 1 s (a Reset on a new connection), not at the call-home timeout", () =>
    Effect.gen(function*() {
      const { pool } = yield* planes
      yield* serveLost
      const lost = yield* Endpoint.client<{ mode: "hang" | "done" }, number>("ns.pool.lost")
      expect(yield* Stream.runCollect(lost.generate({ mode: "done" }))).toEqual([1, 2])

      // "hang": the stream is still open when its connection dies; "done": it completed in the same
      // tick, its End queued behind the Prologue and lost with it.
      for (const mode of ["hang", "done"] as const) {
        lostInterrupted = 0
        const conns = pool.connections()
        expect(conns.length).toBe(1) // the only connection: the Reset needs a new one
        const drill = dieOnNextPrologue(conns[0]!)
        const items: Array<number> = []
        const start = performance.now()
        const e = yield* Effect.flip(lost.call({ mode }, (batch) => void items.push(...batch)))
        expect(performance.now() - start).toBeLessThan(1000)
        expect(drill.prologues()).toBe(1)
        expect(items).toEqual([])
        expectResetBeforePrologue(e)
        if (mode === "hang") expect(yield* eventually(() => lostInterrupted === 1, 1000)).toBe(true)
        // The Reset went out on a fresh connection, which serves the next call.
        expect(pool.connections()).not.toContain(conns[0])
        expect(yield* Stream.runCollect(lost.generate({ mode: "done" }))).toEqual([1, 2])
      }
    }).pipe(Effect.provide(poolStack({ DYN_TCP_POOL_MIN_IDLE: "0", DYN_TCP_CALL_HOME_TIMEOUT_SECS: "30" }))))

  it.live("a stream written just before its connection died is reset on another open connection: it fails within 1 s too", () =>
    Effect.gen(function*() {
      const { pool } = yield* planes
      yield* serveLost
      const lost = yield* Endpoint.client<{ mode: "hang" | "done" }, number>("ns.pool.lost")
      expect(yield* Stream.runCollect(lost.generate({ mode: "done" }))).toEqual([1, 2])
      expect(yield* eventually(() => pool.connections().length === 2)).toBe(true)
      const before = pool.connections()
      // Whichever connection carries the stream dies inside the write of its frames: the bytes were
      // handed to the socket (no ConnectionAck covers them) but never reach the router.
      let armed = true
      let swallowed = 0
      for (const conn of before) {
        const socket = socketOf(conn)
        const write = socket.write.bind(socket) as (chunk: Uint8Array) => boolean
        socket.write = ((chunk: Uint8Array) => {
          if (!armed) return write(chunk)
          armed = false
          swallowed += chunk.length
          socket.destroy(new Error("simulated link failure"))
          return false
        }) as typeof socket.write
      }
      const start = performance.now()
      const e = yield* Effect.flip(lost.call({ mode: "done" }, () => {}))
      expect(performance.now() - start).toBeLessThan(1000)
      expect(swallowed).toBeGreaterThan(0)
      expectResetBeforePrologue(e)
      expect(yield* Stream.runCollect(lost.generate({ mode: "done" }))).toEqual([1, 2])
      expect(pool.connections().filter((c) => before.includes(c)).length).toBe(1)
    }).pipe(Effect.provide(poolStack({ DYN_TCP_POOL_MIN_IDLE: "2", DYN_TCP_CALL_HOME_TIMEOUT_SECS: "30" }))))
})

// ---- the Endpoint API on the pooled plane -------------------------------------------------------

describe("Endpoint round trip with DYN_TCP_POOL_ENABLED=true", () => {
  it.live("flow control: a slow generate consumer stops granting credit, so the worker's handler stalls; then everything arrives in order", () =>
    Effect.gen(function*() {
      const n = 400
      const r = yield* slowConsumer("ns.pool.slow", n, 16)
      // 20 consumed + 16 buffered + one 256 KiB stream window (8 items) + a chunk or two in flight.
      expect(r.stalledAt).toBeLessThan(80)
      expect(r.stalledLater).toBe(r.stalledAt)
      expect(r.produced).toBe(n)
      expect(r.received).toEqual(Array.from({ length: n }, (_, k) => k + 1))
      expect(r.handlerFinished).toBe(true)
    }).pipe(Effect.provide(poolStack({ DYN_TCP_POOL_MIN_IDLE: "0" }))))

  it.live("streams sequential and concurrent responses over pooled connections; metrics count the pool", () =>
    Effect.gen(function*() {
      const { pool, server } = yield* planes
      const registry = yield* TransportRegistry.TransportRegistry
      expect(registry.registrations().find((r) => r.plane_type === "response")?.capabilities.persistent_connections).toBe(true)
      yield* Endpoint.serveEmit("ns.pool.seq", (req: { i: number }, _ctx, emit: Endpoint.Emit<number>) =>
        Effect.sync(() => {
          for (let k = 0; k < 10; k++) emit(req.i * 10 + k)
        }))
      const client = yield* Endpoint.client<{ i: number }, number>("ns.pool.seq")
      // Metrics live in the process-wide registry, keyed by target (host:port): an earlier test
      // in this file may have used the same ephemeral port, so counters are compared as deltas.
      expect(yield* Stream.runCollect(client.generate({ i: 0 }))).toEqual(Array.from({ length: 10 }, (_, k) => k))
      const m0 = poolMetrics(pool.stats()[0]!.target)
      for (let i = 1; i < 300; i++) {
        const items = yield* Stream.runCollect(client.generate({ i }))
        expect(items).toEqual(Array.from({ length: 10 }, (_, k) => i * 10 + k))
      }
      const results = yield* Effect.forEach(Array.from({ length: 200 }, (_, i) => i), (i) => Stream.runCollect(client.generate({ i })), {
        concurrency: "unbounded"
      })
      results.forEach((items, i) => expect(items).toEqual(Array.from({ length: 10 }, (_, k) => i * 10 + k)))
      const target = pool.stats()[0]!.target
      const m = poolMetrics(target)
      // min idle 2; a burst of 200 may briefly open a few more (how many depends on timing),
      // but never beyond the per-target max, and the rest of the streams reuse them
      const max = defaults.tcpPool.maxPerTarget
      const created = m.created - m0.created
      expect(pool.connections().length).toBeGreaterThanOrEqual(2)
      expect(pool.connections().length).toBeLessThanOrEqual(max)
      expect(created).toBeLessThanOrEqual(max)
      expect(m.acquisitions - m0.acquisitions).toBe(499)
      expect(m.reused - m0.reused).toBeGreaterThanOrEqual(499 - created)
      expect(m).toMatchObject({ active: 0, idle: pool.connections().length })
      expect(m.validationFailures - m0.validationFailures).toBe(0)
      expect(CallHomeServer.muxDrill(server).connectionCount()).toBe(pool.connections().length)
      for (const name of ["created_total", "reused_total"]) expect(m.scrape).toContain(`# TYPE tcp_pool_connections_${name} counter`)
      expect(m.scrape).toContain("# TYPE tcp_pool_acquisition_latency_seconds histogram")
      expect(m.scrape).toContain("# TYPE tcp_pool_active_connections gauge")
    }).pipe(Effect.provide(poolStack({ DYN_TCP_POOL_MIN_IDLE: "2" }))))

  it.live("keeps the one-shot semantics: msgpack, stop on cancel, handler and prologue errors, call-home timeout", () =>
    Effect.gen(function*() {
      const seen: Array<RequestMessage> = []
      const registry = yield* TransportRegistry.TransportRegistry
      const memory = yield* registry.getRequestServer("memory")
      const discovery = yield* Discovery
      const path = { namespace: "ns", component: "raw", endpoint: "mute" }
      const transport = yield* memory.register({ path, instanceId: 5n }, (m) => void seen.push(m))
      yield* discovery.register({ type: "Endpoint", ...path, instance_id: 5n, transport })

      yield* Endpoint.serve("ns.pool.mp", (req: { n: number }) => Stream.range(1, req.n).pipe(Stream.map((n) => ({ n, s: `#${n}` }))))
      const interrupted = yield* Deferred.make<number>()
      yield* Endpoint.serveEmit("ns.pool.slow", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) =>
        Effect.gen(function*() {
          for (let i = 0;; i++) {
            emit(i)
            yield* Effect.sleep(5)
          }
        }).pipe(Effect.onInterrupt(() => Deferred.succeed(interrupted, Date.now()))))
      yield* Endpoint.serveEmit("ns.pool.fail", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) =>
        Effect.gen(function*() {
          emit(1)
          emit(2)
          return yield* Effect.fail(new Error("model exploded"))
        }))
      yield* Endpoint.serve("ns.pool.typed", (req: { n: number }) => Stream.make(req.n), { requestSchema: Schema.Struct({ n: Schema.Number }) })

      const mp = yield* Endpoint.client<{ n: number }, { n: number; s: string }>("ns.pool.mp")
      expect(yield* Stream.runCollect(mp.generate({ n: 100 }))).toEqual(Array.from({ length: 100 }, (_, i) => ({ n: i + 1, s: `#${i + 1}` })))

      const slow = yield* Endpoint.client<unknown, number>("ns.pool.slow")
      expect(yield* Stream.runCollect(slow.generate({}).pipe(Stream.take(3)))).toEqual([0, 1, 2])
      const cancelledAt = Date.now()
      const at = yield* Deferred.await(interrupted).pipe(Effect.timeout(1000))
      expect(at - cancelledAt).toBeLessThan(100)

      const failing = yield* Endpoint.client<unknown, number>("ns.pool.fail")
      const items: Array<number> = []
      const error = yield* Effect.flip(failing.call({}, (batch) => items.push(...batch)))
      expect(items).toEqual([1, 2])
      expect(error._tag).toBe("HandlerError")
      if (error._tag === "HandlerError") expect([error.detail, error.phase]).toEqual(["model exploded", "stream"])

      const typed = yield* Endpoint.client<unknown, number>("ns.pool.typed")
      expect(yield* Stream.runCollect(typed.generate({ n: 7 }))).toEqual([7])
      const prologue = yield* Effect.flip(Stream.runCollect(typed.generate({ n: "seven" })))
      expect(prologue._tag).toBe("HandlerError")
      if (prologue._tag === "HandlerError") {
        expect(prologue.phase).toBe("prologue")
        expect(prologue.detail).toContain("invalid request")
      }

      const mute = yield* Endpoint.client<unknown, number>("ns.raw.mute")
      const timeout = yield* Effect.flip(Stream.runCollect(mute.generate({})))
      expect(timeout._tag).toBe("TransportTimeoutError")
      if (timeout._tag === "TransportTimeoutError") expect(timeout.reason).toBe("CallHomeTimeout")
      const ci = seen[0]!.control.connection_info
      expect(ci.transport).toBe("tcp_response_mux_v1")
      expect(Object.keys(JSON.parse(ci.info))).toEqual(["address", "frontend_server_id", "stream_id", "context"])
    }).pipe(Effect.provide(poolStack({ DYN_REQUEST_PLANE_CODEC: "msgpack", DYN_TCP_CALL_HOME_TIMEOUT_SECS: "0.3" }))))

  it.live("with the flag off, nothing changes: tcp_server info, and a mux handshake is refused", () =>
    Effect.gen(function*() {
      const server = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 5000, maxMessageSize: MAX })
      const pending = yield* server.open({ requestId: "r", endpoint: "e", codec: "json", sink: recordingSink().sink })
      expect(pending.connectionInfo.transport).toBe("tcp_server")
      const peer = yield* Effect.promise(() => rawConnect(addressOf(pending.connectionInfo)))
      peer.socket.write(encodeMuxHandshake(crypto.randomUUID(), crypto.randomUUID()))
      yield* Effect.promise(() => peer.closed).pipe(Effect.timeout(1000))
      expect(peer.bytes()).toEqual(Buffer.alloc(0))
      pending.close()
    }))
})

// ---- raw peers --------------------------------------------------------------------------------

interface RawPeer {
  readonly socket: net.Socket
  /** Every byte received. */
  readonly bytes: () => Buffer
  /** Resolves when the socket has closed. */
  readonly closed: Promise<void>
}

const rawAttach = (socket: net.Socket): RawPeer => {
  const chunks: Array<Buffer> = []
  socket.on("data", (c: Buffer) => chunks.push(Buffer.from(c)))
  socket.on("error", () => {})
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()))
  return { socket, bytes: () => Buffer.concat(chunks), closed }
}

const rawConnect = (address: string): Promise<RawPeer> =>
  new Promise((resolve, reject) => {
    const colon = address.lastIndexOf(":")
    const socket = net.connect({ host: address.slice(0, colon), port: Number(address.slice(colon + 1)), noDelay: true })
    socket.once("error", reject)
    socket.once("connect", () => {
      socket.off("error", reject)
      resolve(rawAttach(socket))
    })
  })

interface DecodedMux {
  readonly kind: number
  readonly id: string
  readonly payload: Uint8Array
}

/** Decodes compact frames from `bytes` (after skipping `skip` bytes). */
const muxFrames = (bytes: Uint8Array, skip = 0): Array<DecodedMux> => {
  const out: Array<DecodedMux> = []
  const error = makeMuxDecoder({ maxMessageSize: MAX }).decode(bytes.subarray(skip), (kind, id, payload) =>
    out.push({ kind, id: uuidFromStreamId(id), payload: payload.slice() }))
  if (error !== undefined) throw error
  return out
}

const describeFrame = (f: DecodedMux): string =>
  f.kind === MuxKind.ConnectionAck
    ? `ack:${decodeConnectionAck(f.payload)}`
    : f.kind === MuxKind.WindowUpdate
    ? `window:${decodeWindowUpdate(f.payload)}`
    : `${["", "prologue", "data", "end", "stop", "kill", "window", "reset", "ack"][f.kind]}:${text(f.payload)}`

/** A hand-scripted mux router on loopback: it acks each handshake and keeps every later byte. */
const rawMuxRouter = Effect.gen(function*() {
  const sockets: Array<{ socket: net.Socket; bytes: () => Buffer; handshake: Promise<string> }> = []
  const srv = net.createServer({ noDelay: true }, (socket) => {
    const chunks: Array<Buffer> = []
    let resolveHandshake: (s: string) => void = () => {}
    const handshake = new Promise<string>((resolve) => (resolveHandshake = resolve))
    const decoder = makeDecoder({ maxMessageSize: MAX })
    let acked = false
    socket.on("data", (c: Buffer) => {
      if (!acked) {
        acked = true
        // The first chunk is exactly the handshake frame (the worker waits for the ack).
        decoder.decode(c, (header) => resolveHandshake(text(header)))
        socket.write(encodeConnectionAck(0))
        return
      }
      chunks.push(Buffer.from(c))
    })
    socket.on("error", () => {})
    sockets.push({ socket, bytes: () => Buffer.concat(chunks), handshake })
  })
  yield* Effect.acquireRelease(
    Effect.promise(() => new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", () => resolve()))),
    () => Effect.promise(() => {
      for (const s of sockets) s.socket.destroy()
      return new Promise<void>((resolve) => srv.close(() => resolve()))
    })
  )
  return { address: `127.0.0.1:${(srv.address() as net.AddressInfo).port}`, sockets }
})

describe("response mux v1 wire bytes", () => {
  it.live("router: acks the handshake, demultiplexes interleaved streams, sends Stop/Kill/Reset, grants credits", () =>
    Effect.gen(function*() {
      const frontend = crypto.randomUUID()
      const server = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 5000, maxMessageSize: MAX, mux: true, frontendServerId: frontend })
      const recA = recordingSink()
      const recB = recordingSink()
      const a = yield* server.open({ requestId: "ra", endpoint: "ns.c.e", codec: "json", sink: recA.sink })
      const b = yield* server.open({ requestId: "rb", endpoint: "ns.c.e", codec: "json", sink: recB.sink })
      const infoA = JSON.parse(a.connectionInfo.info) as { address: string; frontend_server_id: string; stream_id: string; context: string }
      const infoB = JSON.parse(b.connectionInfo.info) as typeof infoA
      expect(infoA.frontend_server_id).toBe(frontend)
      expect(infoA.context).toBe("ra")
      const idA = streamIdFromUuid(infoA.stream_id)!
      const idB = streamIdFromUuid(infoB.stream_id)!
      a.control("stop") // before the worker claims it: queued

      const peer = yield* Effect.promise(() => rawConnect(infoA.address))
      peer.socket.write(encodeMuxHandshake(frontend, crypto.randomUUID()))
      yield* eventually(() => peer.bytes().length >= 32)
      // ConnectionAck(0): 24-byte header with the nil UUID, then a u64 zero.
      expect(toHex(peer.bytes())).toBe("00000008" + "08" + "00" + "0000" + "0".repeat(32) + "0".repeat(16))

      const item = (data: unknown) => encodeStreamItem(jsonCodec, data)
      /** Compact frames written so far: what the router's ConnectionAck counts. */
      let written = 0
      const send = (bytes: Uint8Array) => {
        written += bytes.length
        peer.socket.write(bytes)
      }
      send(Buffer.concat([
        encodeMuxFrame(MuxKind.Prologue, idA, utf8(`{"error":null}`)),
        encodeMuxFrame(MuxKind.Prologue, idB, utf8(`{}`)),
        encodeMuxFrame(MuxKind.Data, idA, item("a1")),
        encodeMuxFrame(MuxKind.Data, idB, item("b1")),
        encodeMuxFrame(MuxKind.Data, idA, item("a2")),
        encodeMuxFrame(MuxKind.End, idB)
      ]))
      yield* Effect.promise(() => recB.done)
      expect(recB.events).toEqual(["start", "end"])
      expect(recB.items).toEqual(["b1"])
      expect(recA.items).toEqual(["a1", "a2"])
      // The stop queued before the claim went out after it, as a bare Stop frame.
      yield* eventually(() => muxFrames(peer.bytes(), 32).some((f) => f.kind === MuxKind.Stop))
      a.control("kill")
      yield* eventually(() => muxFrames(peer.bytes(), 32).some((f) => f.kind === MuxKind.Kill))
      const stopAt = peer.bytes().indexOf(Buffer.from(encodeMuxFrame(MuxKind.Stop, idA)))
      expect(stopAt).toBeGreaterThanOrEqual(32)

      // 70 KiB for stream a: a WindowUpdate of at least 64 KiB, and a ConnectionAck of every byte decoded.
      const big = "x".repeat(1000)
      const bigFrames = Buffer.concat(Array.from({ length: 70 }, () => encodeMuxFrame(MuxKind.Data, idA, item(big))))
      send(bigFrames)
      const sent = written
      yield* eventually(() => recA.items.length === 72)
      expect(
        yield* eventually(() => {
          const fs = muxFrames(peer.bytes(), 32)
          return fs.some((f) => f.kind === MuxKind.WindowUpdate && f.id === infoA.stream_id && decodeWindowUpdate(f.payload) >= 64 * 1024) &&
            fs.some((f) => f.kind === MuxKind.ConnectionAck && decodeConnectionAck(f.payload) === sent)
        })
      ).toBe(true)

      // close() of a live stream: a Reset to the worker, and the connection stays.
      a.close()
      yield* eventually(() => muxFrames(peer.bytes(), 32).some((f) => f.kind === MuxKind.Reset))
      const reset = muxFrames(peer.bytes(), 32).find((f) => f.kind === MuxKind.Reset)!
      expect([reset.id, text(reset.payload)]).toEqual([infoA.stream_id, "cancelled by the router"])
      expect(peer.socket.destroyed).toBe(false)
      expect(CallHomeServer.muxDrill(server).connectionCount()).toBe(1)

      // A Prologue for a stream nobody opened: answered with a Reset; the connection stays.
      const stranger = crypto.randomUUID()
      send(encodeMuxFrame(MuxKind.Prologue, streamIdFromUuid(stranger)!, utf8(`{"error":null}`)))
      yield* eventually(() => muxFrames(peer.bytes(), 32).some((f) => f.kind === MuxKind.Reset && f.id === stranger))

      // Per-stream failures: a prologue error, a bad body (Reset back), a worker Reset.
      const recC = recordingSink()
      const recD = recordingSink()
      const recE = recordingSink()
      const c = yield* server.open({ requestId: "rc", endpoint: "ns.c.e", codec: "json", sink: recC.sink })
      const d = yield* server.open({ requestId: "rd", endpoint: "ns.c.e", codec: "json", sink: recD.sink })
      const e = yield* server.open({ requestId: "re", endpoint: "ns.c.e", codec: "json", sink: recE.sink })
      const idOf = (p: typeof c) => streamIdFromUuid((JSON.parse(p.connectionInfo.info) as { stream_id: string }).stream_id)!
      send(Buffer.concat([
        encodeMuxFrame(MuxKind.Prologue, idOf(c), utf8(`{"error":"no GPU"}`)),
        encodeMuxFrame(MuxKind.Prologue, idOf(d), utf8(`{"error":null}`)),
        encodeMuxFrame(MuxKind.Data, idOf(d), utf8("not json{")),
        encodeMuxFrame(MuxKind.Prologue, idOf(e), utf8(`{"error":null}`)),
        encodeMuxFrame(MuxKind.Data, idOf(e), item(1)),
        encodeMuxFrame(MuxKind.Reset, idOf(e), utf8("stopped"))
      ]))
      yield* Effect.promise(() => Promise.all([recC.done, recD.done, recE.done]))
      expect(recC.error()).toMatchObject({ _tag: "HandlerError", phase: "prologue", detail: "no GPU" })
      expect(recD.error()).toMatchObject({ _tag: "TransportProtocolError", reason: "BadPayload" })
      expect(recE.items).toEqual([1])
      expect(recE.error()).toMatchObject({ _tag: "TransportConnectionError", reason: "StreamEndedEarly", detail: "stream ended before generation completed" })
      yield* eventually(() => muxFrames(peer.bytes(), 32).some((f) => f.kind === MuxKind.Reset && f.id === uuidFromStreamId(idOf(d))))
      expect(CallHomeServer.muxDrill(server).connectionCount()).toBe(1)

      // A framing error kills the connection: every stream on it fails at once.
      const recF = recordingSink()
      const f = yield* server.open({ requestId: "rf", endpoint: "ns.c.e", codec: "json", sink: recF.sink })
      send(encodeMuxFrame(MuxKind.Prologue, idOf(f), utf8(`{"error":null}`)))
      yield* eventually(() => recF.events.includes("start"))
      const badFlags = encodeMuxFrame(MuxKind.Data, idOf(f), item(1))
      badFlags[5] = 1
      peer.socket.write(badFlags)
      yield* Effect.promise(() => recF.done)
      expect(recF.error()).toMatchObject({ _tag: "TransportProtocolError", reason: "MalformedFrame" })
      yield* Effect.promise(() => peer.closed).pipe(Effect.timeout(1000))
      expect(yield* eventually(() => CallHomeServer.muxDrill(server).connectionCount() === 0)).toBe(true)
      for (const p of [a, b, c, d, e, f]) p.close()
    }))

  it.live("router: a worker's Reset fails a pending unclaimed stream at once (ConnectionClosed); Resets for unknown streams are ignored", () =>
    Effect.gen(function*() {
      const frontend = crypto.randomUUID()
      const server = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 30_000, maxMessageSize: MAX, mux: true, frontendServerId: frontend })
      const idOf = (p: { connectionInfo: { info: string } }) => streamIdFromUuid((JSON.parse(p.connectionInfo.info) as { stream_id: string }).stream_id)!
      const recA = recordingSink()
      const recB = recordingSink()
      const recC = recordingSink()
      const a = yield* server.open({ requestId: "ra", endpoint: "ns.c.e", codec: "json", sink: recA.sink })
      const b = yield* server.open({ requestId: "rb", endpoint: "ns.c.e", codec: "json", sink: recB.sink })
      const c = yield* server.open({ requestId: "rc", endpoint: "ns.c.e", codec: "json", sink: recC.sink })
      const address = addressOf(a.connectionInfo)
      const handshake = (peer: RawPeer) =>
        Effect.gen(function*() {
          peer.socket.write(encodeMuxHandshake(frontend, crypto.randomUUID()))
          expect(yield* eventually(() => peer.bytes().length >= 32)).toBe(true)
        })
      const first = yield* Effect.promise(() => rawConnect(address))
      const second = yield* Effect.promise(() => rawConnect(address))
      yield* handshake(first)
      yield* handshake(second)

      // c is claimed on the first connection; a and b are still waiting for their call-home.
      first.socket.write(encodeMuxFrame(MuxKind.Prologue, idOf(c), utf8(`{"error":null}`)))
      yield* eventually(() => recC.events.includes("start"))

      // A Reset for pending a, on the second connection: a fails now, naming the worker's reason.
      const started = performance.now()
      second.socket.write(encodeMuxFrame(MuxKind.Reset, idOf(a), utf8("call-home connection to w:1 died before the stream finished: ECONNRESET")))
      yield* Effect.promise(() => recA.done)
      expect(recA.doneAt() - started).toBeLessThan(1000)
      expect(recA.events).toEqual(["error:TransportConnectionError"])
      expect(recA.error()).toMatchObject({
        _tag: "TransportConnectionError",
        reason: "ConnectionClosed",
        detail: "the worker reset the stream before its prologue reached the router: call-home connection to w:1 died before the stream finished: ECONNRESET"
      })
      expect(a.isDone()).toBe(true)
      // Its Prologue arriving late is refused like any already-served stream.
      second.socket.write(encodeMuxFrame(MuxKind.Prologue, idOf(a), utf8(`{"error":null}`)))
      yield* eventually(() => muxFrames(second.bytes(), 32).some((f) => f.kind === MuxKind.Reset))

      // A Reset on the second connection for c, claimed on the first: c fails as if the first had closed.
      second.socket.write(encodeMuxFrame(MuxKind.Reset, idOf(c), utf8("died")))
      yield* Effect.promise(() => recC.done)
      expect(recC.error()).toMatchObject({ _tag: "TransportConnectionError", reason: "StreamEndedEarly", detail: "stream ended before generation completed" })

      // Resets for streams the router no longer knows (failed, unknown): ignored, no Reset back.
      const before = muxFrames(second.bytes(), 32).length
      const beforeFirst = muxFrames(first.bytes(), 32).filter((f) => f.kind !== MuxKind.ConnectionAck).length
      second.socket.write(Buffer.concat([
        encodeMuxFrame(MuxKind.Reset, idOf(a), utf8("again")),
        encodeMuxFrame(MuxKind.Reset, idOf(c), utf8("again")),
        encodeMuxFrame(MuxKind.Reset, streamIdFromUuid(crypto.randomUUID())!, utf8("never heard of it"))
      ]))
      yield* realSleep(50)
      expect(muxFrames(second.bytes(), 32).filter((f) => f.kind !== MuxKind.ConnectionAck).length).toBe(
        muxFrames(second.bytes(), 32).slice(0, before).filter((f) => f.kind !== MuxKind.ConnectionAck).length
      )
      expect(muxFrames(first.bytes(), 32).filter((f) => f.kind === MuxKind.Reset)).toEqual([])
      // (a ConnectionAck of what the first connection carried may still be on its way: CREDIT_UPDATE_MS)
      expect(muxFrames(first.bytes(), 32).filter((f) => f.kind !== MuxKind.ConnectionAck).length).toBe(beforeFirst)
      expect(CallHomeServer.muxDrill(server).connectionCount()).toBe(2)

      // b was untouched and both connections still work.
      expect(recB.events).toEqual([])
      second.socket.write(Buffer.concat([
        encodeMuxFrame(MuxKind.Prologue, idOf(b), utf8(`{"error":null}`)),
        encodeMuxFrame(MuxKind.Data, idOf(b), encodeStreamItem(jsonCodec, "b1")),
        encodeMuxFrame(MuxKind.End, idOf(b))
      ]))
      yield* Effect.promise(() => recB.done)
      expect([recB.events, recB.items]).toEqual([["start", "end"], ["b1"]])
      for (const p of [a, b, c]) p.close()
      first.socket.destroy()
      second.socket.destroy()
    }))

  it.live("router: accepted call-home connections, mux and one-shot, get TCP keepalive (DYN_TCP_POOL_KEEPALIVE_SECS)", () =>
    Effect.gen(function*() {
      const calls: Array<{ local: number | undefined; args: Array<unknown> }> = []
      const original = net.Socket.prototype.setKeepAlive
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          net.Socket.prototype.setKeepAlive = function(this: net.Socket, ...args: Array<unknown>) {
            calls.push({ local: this.localPort, args })
            return original.apply(this, args as Parameters<typeof original>)
          }
        }),
        () => Effect.sync(() => {
          net.Socket.prototype.setKeepAlive = original
        })
      )
      const h = yield* harness({}, { muxKeepaliveMs: 12_345 })
      yield* h.roundTrip(1)
      const port = Number(h.target().split(":")[1])
      // Router-side sockets are those whose local port is the server's.
      expect(calls.filter((c) => c.local === port).map((c) => c.args)).toEqual([[true, 12_345]])

      // A one-shot call-home on the same port that is still open one keepalive sweep later gets the
      // same keepalive (a network cut must not hang it); one that ends at once never pays for it.
      const subjectOf = (p: { readonly connectionInfo: { readonly info: string } }) => (JSON.parse(p.connectionInfo.info) as { stream_id: string }).stream_id
      const quick = recordingSink()
      const quickPending = yield* h.server.open({ requestId: "r0", endpoint: "ns.c.e", codec: "json", sink: quick.sink })
      const quickSocket = yield* Effect.promise(() => rawConnect(h.target()))
      quickSocket.socket.write(Buffer.concat([
        encodeHeaderOnlyJson({ subject: subjectOf(quickPending), stream_type: "response" }),
        encodeHeaderOnlyJson({ error: null }),
        encodeFrame(undefined, encodeStreamComplete(jsonCodec)),
        encodeHeaderOnlyJson("sentinel")
      ]))
      yield* Effect.promise(() => quick.done)
      yield* Effect.promise(() => quickSocket.closed).pipe(Effect.timeout(1000))

      const rec = recordingSink()
      const pending = yield* h.server.open({ requestId: "r1", endpoint: "ns.c.e", codec: "json", sink: rec.sink })
      const oneShot = yield* Effect.promise(() => rawConnect(h.target()))
      const claimedAt = performance.now()
      oneShot.socket.write(Buffer.concat([
        encodeHeaderOnlyJson({ subject: subjectOf(pending), stream_type: "response" }),
        encodeHeaderOnlyJson({ error: null })
      ]))
      const routerCalls = () => calls.filter((c) => c.local === port).map((c) => c.args)
      for (let waited = 0; waited < 3000 && routerCalls().length < 2; waited += 20) yield* Effect.sleep(20)
      expect(routerCalls()).toEqual([[true, 12_345], [true, 12_345]])
      expect(performance.now() - claimedAt).toBeLessThan(CallHomeServer.ONE_SHOT_KEEPALIVE_WITHIN_MS + 500)
      oneShot.socket.write(Buffer.concat([encodeFrame(undefined, encodeStreamComplete(jsonCodec)), encodeHeaderOnlyJson("sentinel")]))
      yield* Effect.promise(() => rec.done)
      expect(routerCalls()).toHaveLength(2)
      pending.close()

      // The layer wires DYN_TCP_POOL_KEEPALIVE_SECS to the router's mux sockets.
      calls.length = 0
      const fromConfig = yield* Effect.gen(function*() {
        const { server } = yield* planes
        yield* Endpoint.serveEmit("ns.pool.ka", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) => Effect.sync(() => emit(1)))
        const client = yield* Endpoint.client<unknown, number>("ns.pool.ka")
        expect(yield* Stream.runCollect(client.generate({}))).toEqual([1])
        expect(CallHomeServer.muxDrill(server).connectionCount()).toBe(1)
        return calls.map((c) => c.args)
      }).pipe(Effect.provide(poolStack({ DYN_TCP_POOL_MIN_IDLE: "0", DYN_TCP_POOL_KEEPALIVE_SECS: "7" })))
      // Both ends of the one pooled connection: the worker's and the router's.
      expect(fromConfig).toEqual([[true, 7000], [true, 7000]])
    }))

  it.live("router: the same port takes one-shot call-homes (subject = stream id) and refuses a stale frontend id", () =>
    Effect.gen(function*() {
      const server = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 5000, maxMessageSize: MAX, mux: true })
      const rec = recordingSink()
      const pending = yield* server.open({ requestId: "r1", endpoint: "ns.c.e", codec: "json", sink: rec.sink })
      const info = JSON.parse(pending.connectionInfo.info) as { address: string; stream_id: string }
      const oneShot = yield* Effect.promise(() => rawConnect(info.address))
      oneShot.socket.write(Buffer.concat([
        encodeHeaderOnlyJson({ subject: info.stream_id, stream_type: "response" }),
        encodeHeaderOnlyJson({ error: null }),
        encodeFrame(undefined, encodeStreamItem(jsonCodec, "one-shot")),
        encodeFrame(undefined, encodeStreamComplete(jsonCodec)),
        encodeHeaderOnlyJson("sentinel")
      ]))
      yield* Effect.promise(() => rec.done)
      expect([rec.events, rec.items]).toEqual([["start", "end"], ["one-shot"]])
      yield* Effect.promise(() => oneShot.closed).pipe(Effect.timeout(1000))

      const stale = yield* Effect.promise(() => rawConnect(info.address))
      stale.socket.write(encodeMuxHandshake(crypto.randomUUID(), crypto.randomUUID()))
      yield* Effect.promise(() => stale.closed).pipe(Effect.timeout(1000))
      expect(stale.bytes().length).toBe(0)
      const v2 = yield* Effect.promise(() => rawConnect(info.address))
      v2.socket.write(encodeHeaderOnlyJson({ kind: "response_mux", version: 2, frontend_server_id: crypto.randomUUID(), connection_id: "x" }))
      yield* Effect.promise(() => v2.closed).pipe(Effect.timeout(1000))
      expect(v2.bytes().length).toBe(0)
      pending.close()
    }))

  it.live("worker: handshake, then Prologue, Data, End in one write; fail, close, Stop/Kill and Reset; credits hold it back", () =>
    Effect.gen(function*() {
      const frontend = crypto.randomUUID()
      const { address, sockets } = yield* rawMuxRouter
      const client = yield* CallHomeClient.make({ maxMessageSize: MAX, pool: { minIdle: 0 } })
      const connect = (requestId: string) => {
        const streamId = crypto.randomUUID()
        return Effect.map(
          client.connect({ connectionInfo: muxConnectionInfo({ address, frontend_server_id: frontend, stream_id: streamId, context: requestId }), requestId, codec: "json" }),
          (writer) => ({ writer, streamId, id: streamIdFromUuid(streamId)! })
        )
      }
      const frames = () => muxFrames(sockets[0]!.bytes())
      const of = (streamId: string) => frames().filter((f) => f.id === streamId).map(describeFrame)

      const s1 = yield* connect("r1")
      expect(sockets.length).toBe(1)
      const hs = JSON.parse(yield* Effect.promise(() => sockets[0]!.handshake)) as Record<string, unknown>
      // "ping": 1 offers heartbeats (docs/protocol.md section 6, "Heartbeats"); a router may ignore it.
      expect(Object.keys(hs)).toEqual(["kind", "version", "frontend_server_id", "connection_id", "ping"])
      expect([hs.kind, hs.version, hs.frontend_server_id, hs.ping]).toEqual(["response_mux", 1, frontend, 1])
      s1.writer.prologue()
      s1.writer.send({ text: "hello" })
      s1.writer.sendAll([2, 3])
      s1.writer.complete()
      s1.writer.send("too late")
      yield* eventually(() => of(s1.streamId).length === 5)
      expect(of(s1.streamId)).toEqual([
        `prologue:{"error":null}`,
        `data:{"data":{"text":"hello"},"complete_final":false}`,
        `data:{"data":2,"complete_final":false}`,
        `data:{"data":3,"complete_final":false}`,
        "end:"
      ])
      // One tick's frames left in one write: one chunk (loopback delivers it whole).
      expect(sockets[0]!.bytes().subarray(0, 24)).toEqual(Buffer.from(encodeMuxFrame(MuxKind.Prologue, s1.id, utf8(`{"error":null}`)).subarray(0, 24)))

      // fail → the in-band error body; close → Reset; an error prologue ends the stream.
      const s2 = yield* connect("r2")
      s2.writer.prologue()
      s2.writer.fail("boom")
      const s3 = yield* connect("r3")
      s3.writer.prologue()
      s3.writer.close()
      const s4 = yield* connect("r4")
      s4.writer.prologue("cannot start")
      s4.writer.send(1)
      yield* eventually(() => of(s2.streamId).length === 2 && of(s3.streamId).length === 2 && of(s4.streamId).length === 1)
      expect(of(s2.streamId)).toEqual([`prologue:{"error":null}`, `data:{"complete_final":false,"error":"boom"}`])
      expect(of(s3.streamId)).toEqual([`prologue:{"error":null}`, "reset:closed by the worker"])
      expect(of(s4.streamId)).toEqual([`prologue:{"error":"cannot start"}`])
      expect(sockets.length).toBe(1) // one connection carried them all

      // Stop and Kill reach onControl; a Reset reaches onDisconnect.
      const s5 = yield* connect("r5")
      s5.writer.prologue()
      const controls: Array<string> = []
      const disconnects: Array<string> = []
      s5.writer.onControl((m) => controls.push(m))
      s5.writer.onDisconnect((e) => disconnects.push(`${e._tag}:${e.reason}:${e.detail}`))
      sockets[0]!.socket.write(Buffer.concat([encodeMuxFrame(MuxKind.Stop, s5.id), encodeMuxFrame(MuxKind.Kill, s5.id)]))
      yield* eventually(() => controls.length === 2)
      expect(controls).toEqual(["stop", "kill"])
      sockets[0]!.socket.write(encodeMuxFrame(MuxKind.Reset, s5.id, utf8("cancelled")))
      yield* eventually(() => disconnects.length === 1)
      expect(disconnects).toEqual(["TransportConnectionError:ConnectionClosed:the router reset the stream: cancelled"])

      // Credits: 40 items of 10 KiB; without credit updates at most 256 KiB of Data leave.
      const s6 = yield* connect("r6")
      s6.writer.prologue()
      const body = "y".repeat(10 * 1024)
      for (let i = 0; i < 40; i++) s6.writer.send(body)
      s6.writer.complete()
      const payloadBytes = () => frames().filter((f) => f.id === s6.streamId && f.kind === MuxKind.Data).reduce((n, f) => n + f.payload.length, 0)
      yield* eventually(() => payloadBytes() > 0)
      yield* realSleep(50)
      const first = payloadBytes()
      expect(first).toBeLessThanOrEqual(256 * 1024)
      expect(first).toBeGreaterThan(200 * 1024)
      // Grant the stream's credit back and ack every byte: the rest follows, then End.
      const total = sockets[0]!.bytes().length
      sockets[0]!.socket.write(Buffer.concat([encodeWindowUpdate(s6.id, first), encodeConnectionAck(total)]))
      yield* eventually(() => of(s6.streamId).at(-1) === "end:" || payloadBytes() > first + 200 * 1024)
      const more = () => {
        const t = sockets[0]!.bytes().length
        sockets[0]!.socket.write(Buffer.concat([encodeWindowUpdate(s6.id, 256 * 1024), encodeConnectionAck(t)]))
      }
      more()
      expect(yield* eventually(() => of(s6.streamId).at(-1) === "end:")).toBe(true)
      const items = frames().filter((f) => f.id === s6.streamId && f.kind === MuxKind.Data)
      expect(items.length).toBe(40)
      expect(items.every((f) => JSON.parse(text(f.payload)).data === body)).toBe(true)
      expect(items.every((f) => f.payload.length + MUX_HEADER_SIZE < MAX)).toBe(true)
    }))

  it.live("worker: whenWritable holds a stream back while its frames wait for credit, and calls back once credit arrives", () =>
    Effect.gen(function*() {
      const frontend = crypto.randomUUID()
      const { address, sockets } = yield* rawMuxRouter
      const client = yield* CallHomeClient.make({ maxMessageSize: MAX, pool: { minIdle: 0 } })
      const streamId = crypto.randomUUID()
      const id = streamIdFromUuid(streamId)!
      const writer = yield* client.connect({
        connectionInfo: muxConnectionInfo({ address, frontend_server_id: frontend, stream_id: streamId, context: "bp" }),
        requestId: "bp",
        codec: "json"
      })
      writer.prologue()
      // Within the 256 KiB stream window: writable.
      const body = "z".repeat(10 * 1024)
      let woken = 0
      for (let i = 0; i < 20; i++) writer.send(body)
      expect(writer.whenWritable!(() => woken++)).toBe(true)
      // Past it, with no credit update from the router: held back, and told so.
      for (let i = 0; i < 20; i++) writer.send(body)
      expect(writer.whenWritable!(() => woken++)).toBe(false)
      yield* realSleep(50)
      expect(woken).toBe(0)
      // Credit and an ack for every byte: the held-back frames leave, and the callback runs once.
      yield* eventually(() => sockets.length === 1 && sockets[0]!.bytes().length > 200 * 1024)
      sockets[0]!.socket.write(Buffer.concat([encodeWindowUpdate(id, 512 * 1024), encodeConnectionAck(sockets[0]!.bytes().length)]))
      expect(yield* eventually(() => woken === 1)).toBe(true)
      expect(writer.whenWritable!(() => woken++)).toBe(true)
      // A stream that is over never holds anyone back, and a waiting callback is released when it ends.
      for (let i = 0; i < 80; i++) writer.send(body)
      expect(writer.whenWritable!(() => woken++)).toBe(false)
      writer.close()
      expect(yield* eventually(() => woken === 2)).toBe(true)
      expect(writer.whenWritable!(() => woken++)).toBe(true)
      // close() does not wait for credit: its Reset leaves at once, and the held-back items never do.
      const frames = () => muxFrames(sockets[0]!.bytes()).filter((f) => f.id === streamId)
      expect(yield* eventually(() => frames().some((f) => f.kind === MuxKind.Reset))).toBe(true)
      const data = frames().filter((f) => f.kind === MuxKind.Data).length
      expect(data).toBeLessThan(20 + 20 + 80)
      expect(frames().at(-1)!.kind).toBe(MuxKind.Reset)
    }))
})
