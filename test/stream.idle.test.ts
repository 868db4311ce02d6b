/**
 * Inactivity timeouts, in one process (`DYN_STREAM_IDLE_TIMEOUT_SECS`, docs/reliability.md
 * "Inactivity timeouts and heartbeats"): a slow but healthy handler, silent for longer than the
 * idle timeout before its first item, still succeeds on every mode that has heartbeats (pooled
 * call-home: the router's Ping, the worker's Pong; pure HTTP: HTTP/2 PING; the full TCP mode: its
 * Ping/Pong); on Dynamo's one-shot call-home, which has none, the same silence fails typed
 * (TransportTimeoutError "StreamIdle", naming the worker and the seconds) and the worker's handler
 * is told to stop. The memory transport has no idle timeout (one process: nothing to freeze).
 *
 * On the wire (pooled call-home, a hand-scripted worker): the router pings only a worker whose
 * handshake offered heartbeats (`"ping": 1`), so an older worker never sees a kind it would refuse;
 * such a worker's silent stream times out, while Pongs keep the other's alive until they stop.
 *
 * The idle timeout is 1 s (0.6 s on the wire) and the silence 2.5 s; the bounds are generous (a
 * loaded machine).
 */
import * as net from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Scope } from "effect"
import * as Endpoint from "../src/Endpoint.ts"
import { defaults, fromRecord } from "../src/TransportConfig.ts"
import { encodeMuxFrame, encodePong, makeMuxDecoder, MuxKind, streamIdFromUuid, uuidFromStreamId } from "../src/protocol/MuxCodec.ts"
import { encodeMuxHandshake } from "../src/protocol/MuxHandshake.ts"
import type { ResponseSink } from "../src/ResponsePlane.ts"
import * as CallHomeServer from "../src/transport/tcp/router/CallHomeServer.ts"
import { outcomeOf } from "./contract/transportContract.ts"
import { configStack } from "./support/stacks.ts"
import type { ContractStack, StackServices } from "./support/stacks.ts"

const IDLE = { DYN_STREAM_IDLE_TIMEOUT_SECS: "1" }

describe("DYN_STREAM_IDLE_TIMEOUT_SECS", () => {
  it("defaults to 300 s, takes fractions and 0 (off), and a bad value fails the config naming the variable", () => {
    expect(defaults.streamIdleTimeoutMs).toBe(300_000)
    const ok = (text: string) => {
      const r = fromRecord({ DYN_STREAM_IDLE_TIMEOUT_SECS: text })
      return r._tag === "ok" ? r.settings.streamIdleTimeoutMs : undefined
    }
    expect(ok("0")).toBe(0)
    expect(ok("0.0")).toBe(0)
    expect(ok("2.5")).toBe(2500)
    expect(ok("600")).toBe(600_000)
    for (const bad of ["soon", "-1", "1e3", "0x0", "5s"]) {
      const r = fromRecord({ DYN_STREAM_IDLE_TIMEOUT_SECS: bad })
      expect(r._tag, bad).toBe("error")
      if (r._tag === "error") {
        expect(r.error.problems.map((p) => p.variable)).toEqual(["DYN_STREAM_IDLE_TIMEOUT_SECS"])
        expect(r.error.message).toContain(`DYN_STREAM_IDLE_TIMEOUT_SECS=${JSON.stringify(bad)}`)
      }
    }
  })
})
const SILENCE_MS = 2500

const onStack = <A, E>(stack: ContractStack, effect: Effect.Effect<A, E, Scope.Scope | StackServices>) =>
  effect.pipe(Effect.scoped, Effect.provide(stack.layer))

/** A handler that says nothing for `SILENCE_MS` (a long prefill), then streams 3 items. */
const slowStart = (_req: unknown, _ctx: unknown, emit: Endpoint.Emit<number>) =>
  Effect.gen(function*() {
    yield* Effect.sleep(SILENCE_MS)
    emit(1)
    emit(2)
    emit(3)
  })

const healthy: ReadonlyArray<ContractStack> = [
  configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_POOL_ENABLED: "true", ...IDLE }),
  configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_STREAM_FORMAT: "sse", ...IDLE }),
  configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_STREAM_FORMAT: "ndjson", ...IDLE }),
  configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_STREAM_FORMAT: "binary", ...IDLE }),
  configStack(
    { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "true", DYN_TCP_REQUEST_HEARTBEAT_INTERVAL_SECS: "0.2", ...IDLE },
    { name: "tcp full mode" }
  ),
  configStack({ DYN_REQUEST_PLANE: "memory", DYN_RESPONSE_PLANE: "memory", ...IDLE })
]

describe("inactivity timeouts: a slow but healthy worker is kept alive by heartbeats", () => {
  for (const stack of healthy) {
    it.live(`${stack.name}: silent for 2.5 s with a 1 s idle timeout, then 3 items: success`, () =>
      onStack(stack, Effect.gen(function*() {
        yield* Endpoint.serveEmit("idle.slow.start", slowStart)
        const client = yield* Endpoint.client<unknown, number>("idle.slow.start")
        const items: Array<number> = []
        const o = yield* outcomeOf(client.call({}, (batch) => void items.push(...batch)), 15_000)
        expect(o.kind, o.kind === "fail" ? `${o.error._tag}: ${o.error.message}` : o.kind).toBe("success")
        expect(items).toEqual([1, 2, 3])
      })), 20_000)
  }
})

const silent: ReadonlyArray<ContractStack> = [
  configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", ...IDLE }),
  configStack({ DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "false", ...IDLE }, { name: "tcp (Dynamo framing)+tcp" })
]

describe("inactivity timeouts: Dynamo's one-shot call-home has no heartbeat", () => {
  for (const stack of silent) {
    it.live(`${stack.name}: a handler silent past the 1 s idle timeout fails typed (StreamIdle), and its handler is stopped`, () =>
      onStack(stack, Effect.gen(function*() {
        const stopped = yield* Deferred.make<void>()
        yield* Endpoint.serveEmit("idle.test.silent", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) =>
          Effect.gen(function*() {
            emit(0)
            yield* Effect.sleep(60_000)
          }).pipe(Effect.onInterrupt(() => Deferred.succeed(stopped, undefined))))
        const client = yield* Endpoint.client<unknown, number>("idle.test.silent")
        const items: Array<number> = []
        const started = performance.now()
        const o = yield* outcomeOf(client.call({}, (batch) => void items.push(...batch)), 15_000)
        const took = performance.now() - started
        expect(o.kind, o.kind).toBe("fail")
        if (o.kind !== "fail") return
        expect(o.error).toMatchObject({ _tag: "TransportTimeoutError", reason: "StreamIdle", transport: "tcp" })
        expect(o.error.message).toMatch(/127\.0\.0\.1:\d+/) // the worker
        expect(o.error.message).toContain("the idle timeout is 1 s")
        expect(items).toEqual([0])
        expect(took).toBeGreaterThanOrEqual(1000)
        expect(took).toBeLessThan(8000)
        // The worker heard the router let go (its socket closed after a kill): the handler stops.
        const heard = yield* Effect.timeoutOption(Deferred.await(stopped), 5000)
        expect(heard._tag, "the worker's handler was not interrupted").toBe("Some")
      })), 20_000)
  }

  it.live("off (0): the same silence is waited out", () =>
    onStack(configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", DYN_STREAM_IDLE_TIMEOUT_SECS: "0" }), Effect.gen(function*() {
      yield* Endpoint.serveEmit("idle.test.off", slowStart)
      const client = yield* Endpoint.client<unknown, number>("idle.test.off")
      const items: Array<number> = []
      const o = yield* outcomeOf(client.call({}, (batch) => void items.push(...batch)), 15_000)
      expect(o.kind).toBe("success")
      expect(items).toEqual([1, 2, 3])
    })), 20_000)
})

// ---- pooled call-home on the wire: heartbeats are negotiated --------------------------------------

/** A hand-scripted pooled worker: handshake (with or without `"ping": 1`), the frames it got, Pongs while `answering`. */
const scriptedWorker = (address: string, frontend: string, offersPing: boolean) =>
  new Promise<{ socket: net.Socket; frames: Array<{ kind: number; id: string }>; stopAnswering: () => void }>((resolve, reject) => {
    const colon = address.lastIndexOf(":")
    const socket = net.connect({ host: address.slice(0, colon), port: Number(address.slice(colon + 1)), noDelay: true })
    const frames: Array<{ kind: number; id: string }> = []
    // It reads every kind, so that a Ping sent to a worker that did not offer them is seen, not refused.
    const decoder = makeMuxDecoder({ maxMessageSize: 1 << 20, fullMode: true })
    let answering = true
    socket.on("data", (chunk: Buffer) => {
      const error = decoder.decode(chunk, (kind, id, payload) => {
        frames.push({ kind, id: uuidFromStreamId(id) })
        if (kind === MuxKind.Ping && answering) socket.write(encodePong(payload))
      })
      if (error !== undefined) socket.destroy(error)
    })
    socket.once("error", reject)
    socket.once("connect", () => {
      socket.write(encodeMuxHandshake(frontend, crypto.randomUUID(), offersPing))
      resolve({ socket, frames, stopAnswering: () => void (answering = false) })
    })
  })

const recording = () => {
  const seen: { errors: Array<{ _tag: string; reason?: string; message: string }>; ended: boolean } = { errors: [], ended: false }
  const sink: ResponseSink = {
    onItems: () => {},
    onEnd: () => void (seen.ended = true),
    onError: (e) => void seen.errors.push(e as never)
  }
  return { seen, sink }
}

const until = (f: () => boolean, limitMs: number) =>
  Effect.gen(function*() {
    const end = performance.now() + limitMs
    while (!f() && performance.now() < end) yield* Effect.sleep(20)
    return f()
  })

describe("inactivity timeouts: pooled call-home heartbeats on the wire", () => {
  it.live("the router pings only a worker that offered heartbeats; Pongs keep its silent stream alive; an older worker's silent stream times out", () =>
    Effect.gen(function*() {
      const frontend = crypto.randomUUID()
      const server = yield* CallHomeServer.make({
        host: "127.0.0.1",
        port: 0,
        callHomeTimeoutMs: 10_000,
        maxMessageSize: 1 << 20,
        mux: true,
        frontendServerId: frontend,
        idleTimeoutMs: 600
      })
      const open = (requestId: string) =>
        Effect.gen(function*() {
          const rec = recording()
          const stream = yield* server.open({ requestId, endpoint: "ns.c.e", codec: "json", sink: rec.sink })
          const info = JSON.parse(stream.connectionInfo.info) as { address: string; stream_id: string }
          return { rec, info, id: streamIdFromUuid(info.stream_id)! }
        })
      const older = yield* open("older")
      const newer = yield* open("newer")
      const oldPeer = yield* Effect.promise(() => scriptedWorker(older.info.address, frontend, false))
      const newPeer = yield* Effect.promise(() => scriptedWorker(newer.info.address, frontend, true))
      yield* Effect.addFinalizer(() => Effect.sync(() => (oldPeer.socket.destroy(), newPeer.socket.destroy())))
      expect(yield* until(() => oldPeer.frames.length > 0 && newPeer.frames.length > 0, 5000)).toBe(true) // ConnectionAck(0)
      const prologue = new TextEncoder().encode(`{"error":null}`)
      oldPeer.socket.write(encodeMuxFrame(MuxKind.Prologue, older.id, prologue))
      newPeer.socket.write(encodeMuxFrame(MuxKind.Prologue, newer.id, prologue))
      const claimedAt = performance.now()

      // The older worker's stream: no Ping ever, StreamIdle, then Kill and Reset for it.
      expect(yield* until(() => older.rec.seen.errors.length > 0, 6000)).toBe(true)
      expect(older.rec.seen.errors[0]).toMatchObject({ _tag: "TransportTimeoutError", reason: "StreamIdle" })
      expect(performance.now() - claimedAt).toBeGreaterThanOrEqual(600)
      expect(yield* until(() => oldPeer.frames.some((f) => f.kind === MuxKind.Reset && f.id === older.info.stream_id), 3000)).toBe(true)
      expect(oldPeer.frames.some((f) => f.kind === MuxKind.Kill && f.id === older.info.stream_id)).toBe(true)
      expect(oldPeer.frames.filter((f) => f.kind === MuxKind.Ping)).toEqual([])

      // The newer worker's stream, as silent: alive for 2 s thanks to its Pongs.
      yield* Effect.sleep(Math.max(0, 2000 - (performance.now() - claimedAt)))
      expect(newer.rec.seen.errors).toEqual([])
      expect(newPeer.frames.filter((f) => f.kind === MuxKind.Ping).length).toBeGreaterThanOrEqual(2)

      // Its Pongs stop (frozen): StreamIdle within the timeout plus a margin.
      newPeer.stopAnswering()
      const stoppedAt = performance.now()
      expect(yield* until(() => newer.rec.seen.errors.length > 0, 6000)).toBe(true)
      expect(newer.rec.seen.errors[0]).toMatchObject({ _tag: "TransportTimeoutError", reason: "StreamIdle" })
      expect(performance.now() - stoppedAt).toBeLessThan(600 + 4000)
    }).pipe(Effect.scoped), 20_000)
})
