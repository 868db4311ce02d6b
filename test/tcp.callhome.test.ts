/**
 * The TCP call-home response plane over real loopback sockets: the in-memory request plane
 * carries requests, TcpResponseTransport carries the response streams. Hand-scripted raw
 * `net.Socket` peers play Dynamo-style workers and routers to check the bytes on the wire.
 */
import * as net from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Stream } from "effect"
import { json as jsonCodec } from "../src/protocol/PayloadCodec.ts"
import { encodeStreamComplete, encodeStreamItem } from "../src/protocol/RequestMessage.ts"
import { encodeFrame, encodeHeaderOnlyJson, makeDecoder } from "../src/protocol/TwoPartCodec.ts"
import { tcpConnectionInfo } from "../src/ConnectionInfo.ts"
import { Discovery } from "../src/Discovery.ts"
import * as Endpoint from "../src/Endpoint.ts"
import { requestTransportOf } from "../src/Instance.ts"
import type { RequestMessage } from "../src/RequestPlane.ts"
import type { ResponseSink } from "../src/ResponsePlane.ts"
import * as CallHomeClient from "../src/transport/tcp/worker/CallHomeClient.ts"
import * as CallHomeServer from "../src/transport/tcp/router/CallHomeServer.ts"
import { blackhole } from "./support/blackhole.ts"
import type { HandlerError, TransportError } from "../src/TransportError.ts"
import * as TransportRegistry from "../src/registry/index.ts"
import { slowConsumer } from "./support/slowConsumer.ts"
import { tcpStack } from "./support/stack.ts"

// ---- stacks -----------------------------------------------------------------------------------

const MAX = 32 * 1024 * 1024

// ---- raw peers --------------------------------------------------------------------------------

interface RawFrame {
  readonly header: Uint8Array
  readonly body: Uint8Array
}

/** A hand-scripted socket: every frame it receives is decoded and kept, with the raw chunks. */
interface RawPeer {
  readonly socket: net.Socket
  readonly frames: Array<RawFrame>
  readonly chunks: Array<Buffer>
  /** Resolves when the socket has closed. */
  readonly closed: Promise<void>
  /** Resolves when at least `n` frames have arrived. */
  readonly waitFrames: (n: number) => Promise<void>
}

const attach = (socket: net.Socket): RawPeer => {
  const frames: Array<RawFrame> = []
  const chunks: Array<Buffer> = []
  const waiters: Array<{ n: number; resolve: () => void }> = []
  const decoder = makeDecoder({ maxMessageSize: MAX })
  socket.on("data", (chunk: Buffer) => {
    chunks.push(Buffer.from(chunk))
    decoder.decode(chunk, (header, body) => frames.push({ header: header.slice(), body: body.slice() }))
    for (const w of waiters.splice(0)) {
      if (frames.length >= w.n) w.resolve()
      else waiters.push(w)
    }
  })
  socket.on("error", () => {})
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()))
  return {
    socket,
    frames,
    chunks,
    closed,
    waitFrames: (n) =>
      frames.length >= n ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ n, resolve }))
  }
}

const connectRaw = (address: string): Promise<RawPeer> =>
  new Promise((resolve, reject) => {
    const colon = address.lastIndexOf(":")
    const socket = net.connect({ host: address.slice(0, colon), port: Number(address.slice(colon + 1)), noDelay: true })
    socket.once("error", reject)
    socket.once("connect", () => {
      socket.off("error", reject)
      resolve(attach(socket))
    })
  })

const infoOf = (message: RequestMessage) =>
  JSON.parse(message.control.connection_info.info) as { address: string; subject: string; context: string; stream_type: string }

const handshake = (subject: string) => encodeHeaderOnlyJson({ subject, stream_type: "response" })
const item = (data: unknown) => encodeFrame(undefined, encodeStreamItem(jsonCodec, data))
const completeFrame = () => encodeFrame(undefined, encodeStreamComplete(jsonCodec))
const sentinel = () => encodeHeaderOnlyJson("sentinel")
const bytes = (...frames: Array<Uint8Array>) => Buffer.concat(frames)
const text = (b: Uint8Array) => new TextDecoder().decode(b)
const parse = (b: Uint8Array) => JSON.parse(text(b))
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Serves `ns.raw.<name>` on the in-memory request plane with a hand-written request handler. */
const rawEndpoint = (name: string, onRequest: (message: RequestMessage) => void, instanceId = 77n) =>
  Effect.gen(function*() {
    const registry = yield* TransportRegistry.TransportRegistry
    const server = yield* registry.getRequestServer("memory")
    const discovery = yield* Discovery
    const path = { namespace: "ns", component: "raw", endpoint: name }
    const transport = yield* server.register({ path, instanceId }, onRequest)
    yield* discovery.register({ type: "Endpoint", ...path, instance_id: instanceId, transport })
  })

/** Calls home like a worker: connect to the ConnectionInfo's address and send the handshake. */
const rawCallHome = async (message: RequestMessage): Promise<RawPeer> => {
  const info = infoOf(message)
  const peer = await connectRaw(info.address)
  peer.socket.write(handshake(info.subject))
  return peer
}

/** A sink that records what the server tells it. */
const recordingSink = () => {
  const events: Array<string> = []
  const items: Array<unknown> = []
  let onItemsCalls = 0
  let error: TransportError | HandlerError | undefined
  let resolveDone: () => void = () => {}
  const done = new Promise<void>((resolve) => (resolveDone = resolve))
  const sink: ResponseSink = {
    onStart: () => events.push("start"),
    onItems: (batch) => {
      onItemsCalls++
      items.push(...batch)
    },
    onEnd: () => {
      events.push("end")
      resolveDone()
    },
    onError: (e) => {
      events.push(`error:${e._tag}`)
      error = e
      resolveDone()
    }
  }
  return { sink, events, items, done, onItemsCalls: () => onItemsCalls, error: () => error }
}

const tcpSockets = () =>
  process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap" || r === "TCPServerWrap").length

/** Polls until `f()` holds, at most `ms`. */
const eventually = (f: () => boolean, ms = 1000) =>
  Effect.promise(async () => {
    const deadline = Date.now() + ms
    while (!f() && Date.now() < deadline) await sleep(5)
    return f()
  })

// ---- tests ------------------------------------------------------------------------------------

describe("TCP call-home response plane, end to end", () => {
  it.live("streams 1,000 sequential responses, every item in order", () =>
    Effect.gen(function*() {
      const registry = yield* TransportRegistry.TransportRegistry
      expect(registry.selectUnsafe("response", { streaming: true, persistent_connections: false, bidirectional: false })).toBe("tcp")
      yield* Endpoint.serveEmit("ns.comp.seq", (req: { i: number }, _ctx, emit: Endpoint.Emit<number>) =>
        Effect.sync(() => {
          for (let k = 0; k < 10; k++) emit(req.i * 10 + k)
        }))
      const client = yield* Endpoint.client<{ i: number }, number>("ns.comp.seq")
      for (let i = 0; i < 1000; i++) {
        const items = yield* Stream.runCollect(client.generate({ i }))
        expect(items).toEqual(Array.from({ length: 10 }, (_, k) => i * 10 + k))
      }
    }).pipe(Effect.provide(tcpStack())))

  it.live("streams with the msgpack payload codec", () =>
    Effect.gen(function*() {
      yield* Endpoint.serve("ns.comp.mp", (req: { n: number }) => Stream.range(1, req.n).pipe(Stream.map((n) => ({ n, s: `#${n}` }))))
      const client = yield* Endpoint.client<{ n: number }, { n: number; s: string }>("ns.comp.mp")
      const items = yield* Stream.runCollect(client.generate({ n: 100 }))
      expect(items).toEqual(Array.from({ length: 100 }, (_, i) => ({ n: i + 1, s: `#${i + 1}` })))
    }).pipe(Effect.provide(tcpStack({ DYN_REQUEST_PLANE_CODEC: "msgpack" }))))

  it.live("fails with StreamEndedEarly within 1 s when the worker's socket dies mid-stream", () =>
    Effect.gen(function*() {
      let mode: "destroy" | "reset" = "destroy"
      yield* rawEndpoint("dies", (message) => {
        const how = mode
        void (async () => {
          const peer = await rawCallHome(message)
          peer.socket.write(bytes(encodeHeaderOnlyJson({ error: null }), item(1), item(2), item(3)))
          await sleep(30)
          if (how === "reset") peer.socket.resetAndDestroy()
          else peer.socket.destroy()
        })()
      })
      const client = yield* Endpoint.client<unknown, number>("ns.raw.dies")
      for (const how of ["destroy", "reset"] as const) {
        mode = how
        const seen: Array<number> = []
        const start = Date.now()
        const error = yield* Effect.flip(client.call({}, (items) => seen.push(...items))).pipe(Effect.timeout(2000))
        expect(Date.now() - start).toBeLessThan(1000)
        expect(seen).toEqual([1, 2, 3])
        expect(error._tag).toBe("TransportConnectionError")
        if (error._tag === "TransportConnectionError") {
          expect(error.reason).toBe("StreamEndedEarly")
          expect(error.detail).toBe("stream ended before generation completed")
          expect(error.transport).toBe("tcp")
        }
      }
    }).pipe(Effect.provide(tcpStack())))

  it.live("times out with CallHomeTimeout when the worker never calls home", () =>
    Effect.gen(function*() {
      yield* rawEndpoint("mute", () => {})
      const client = yield* Endpoint.client<unknown, number>("ns.raw.mute")
      const start = Date.now()
      const error = yield* Effect.flip(Stream.runCollect(client.generate({})))
      expect(Date.now() - start).toBeLessThan(1000)
      expect(error._tag).toBe("TransportTimeoutError")
      if (error._tag === "TransportTimeoutError") expect(error.reason).toBe("CallHomeTimeout")
    }).pipe(Effect.provide(tcpStack({ DYN_TCP_CALL_HOME_TIMEOUT_SECS: "0.2" }))))

  it.live("accepts a Dynamo-style worker: {} prologue, data frames, complete_final, sentinel; then closes the socket", () =>
    Effect.gen(function*() {
      const peers: Array<RawPeer> = []
      yield* rawEndpoint("dynamo", (message) => {
        void (async () => {
          const peer = await rawCallHome(message)
          peers.push(peer)
          peer.socket.write(encodeHeaderOnlyJson({}))
          await sleep(5)
          // Items in separate writes, then complete_final and the sentinel together.
          peer.socket.write(bytes(item({ token: "a" }), item({ token: "b" })))
          await sleep(5)
          peer.socket.write(bytes(item({ token: "c" }), completeFrame(), sentinel()))
          // A Dynamo worker now waits for the router to close the socket.
        })()
      })
      const client = yield* Endpoint.client<unknown, { token: string }>("ns.raw.dynamo")
      const items = yield* Stream.runCollect(client.generate({}))
      expect(items).toEqual([{ token: "a" }, { token: "b" }, { token: "c" }])
      yield* Effect.promise(() => peers[0]!.closed).pipe(Effect.timeout(1000))
      expect(peers[0]!.socket.destroyed).toBe(true)
    }).pipe(Effect.provide(tcpStack())))

  it.live("a garbage frame, an unknown subject or a reused subject closes only that socket", () =>
    Effect.gen(function*() {
      const registry = yield* TransportRegistry.TransportRegistry
      const server = yield* registry.getResponseServer("tcp")
      // A stream served to completion by a raw worker: its subject is then used up.
      const first = recordingSink()
      const pending = yield* server.open({ requestId: "r-1", endpoint: "ns.raw.x", codec: "json", sink: first.sink })
      const info = JSON.parse(pending.connectionInfo.info) as { address: string; subject: string }
      const worker = yield* Effect.promise(() => connectRaw(info.address))
      worker.socket.write(bytes(handshake(info.subject), encodeHeaderOnlyJson({ error: null }), item(1), completeFrame(), sentinel()))
      yield* Effect.promise(() => first.done)
      expect(first.items).toEqual([1])
      pending.close()

      // A slow, concurrent stream through the Endpoint API.
      yield* Endpoint.serveEmit("ns.comp.steady", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) =>
        Effect.gen(function*() {
          for (let i = 0; i < 10; i++) {
            emit(i)
            yield* Effect.sleep(10)
          }
        }))
      const client = yield* Endpoint.client<unknown, number>("ns.comp.steady")
      const steady = yield* Effect.forkChild(Stream.runCollect(client.generate({})))

      const garbage = yield* Effect.promise(() => connectRaw(info.address))
      garbage.socket.write("GET / HTTP/1.1\r\nHost: example\r\n\r\n")
      const unknown = yield* Effect.promise(() => connectRaw(info.address))
      unknown.socket.write(handshake(crypto.randomUUID()))
      const reused = yield* Effect.promise(() => connectRaw(info.address))
      reused.socket.write(handshake(info.subject))
      const notJson = yield* Effect.promise(() => connectRaw(info.address))
      notJson.socket.write(encodeHeaderOnlyJson("sentinel"))
      for (const peer of [garbage, unknown, reused, notJson]) {
        yield* Effect.promise(() => peer.closed).pipe(Effect.timeout(1000))
        expect(peer.frames).toEqual([])
      }
      expect(yield* Fiber.join(steady)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    }).pipe(Effect.provide(tcpStack())))

  it.live("fails a stream with a TransportProtocolError on an oversized frame or a bad body", () =>
    Effect.gen(function*() {
      let body: Uint8Array = new Uint8Array(0)
      const closed: Array<Promise<void>> = []
      yield* rawEndpoint("bad", (message) => {
        const frame = body
        void (async () => {
          const peer = await rawCallHome(message)
          closed.push(peer.closed)
          peer.socket.write(bytes(encodeHeaderOnlyJson({ error: null }), item("ok"), frame))
        })()
      })
      const client = yield* Endpoint.client<unknown, string>("ns.raw.bad")
      const cases = [
        { frame: encodeFrame(undefined, new Uint8Array(2000)), reason: "MessageTooLarge" },
        { frame: encodeFrame(undefined, new TextEncoder().encode("not json{")), reason: "BadPayload" },
        { frame: encodeFrame(undefined, new TextEncoder().encode(`{"data": 1}`)), reason: "BadPayload" },
        { frame: encodeHeaderOnlyJson({ hello: "there" }), reason: "UnexpectedMessage" }
      ]
      for (const c of cases) {
        body = c.frame
        const seen: Array<string> = []
        const error = yield* Effect.flip(client.call({}, (items) => seen.push(...items)))
        expect(seen).toEqual(["ok"])
        expect(error._tag).toBe("TransportProtocolError")
        if (error._tag === "TransportProtocolError") expect(error.reason).toBe(c.reason)
        yield* Effect.promise(() => closed.at(-1)!).pipe(Effect.timeout(1000))
      }
    }).pipe(Effect.provide(tcpStack({ DYN_TCP_MAX_MESSAGE_SIZE: "1024" }))))

  it.live("closes every socket and the listener when the scope closes", () =>
    Effect.gen(function*() {
      yield* eventually(() => false, 50) // let sockets of earlier tests finish closing
      const baseline = tcpSockets()
      let during = 0
      yield* Effect.gen(function*() {
        yield* Endpoint.serveEmit("ns.comp.n", (req: { n: number }, _ctx, emit: Endpoint.Emit<number>) =>
          Effect.sync(() => {
            for (let i = 0; i < req.n; i++) emit(i)
          }))
        yield* Endpoint.serveEmit("ns.comp.forever", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) =>
          Effect.andThen(Effect.sync(() => emit(1)), Effect.never))
        const client = yield* Endpoint.client<{ n: number }, number>("ns.comp.n")
        yield* Effect.forEach(Array.from({ length: 20 }, (_, i) => i), (n) => Stream.runCollect(client.generate({ n })), {
          concurrency: 5
        })
        // Leave work in flight: a stream that never ends, and a socket that never says hello.
        const forever = yield* Endpoint.client<unknown, number>("ns.comp.forever")
        const started = yield* Deferred.make<void>()
        yield* Effect.forkScoped(client.call({ n: 1 }, () => {}).pipe(Effect.andThen(forever.call({}, () => Deferred.doneUnsafe(started, Effect.void)))))
        yield* Deferred.await(started)
        const registry = yield* TransportRegistry.TransportRegistry
        const server = yield* registry.getResponseServer("tcp")
        const probe = yield* server.open({ requestId: "probe", endpoint: "x", codec: "json", sink: recordingSink().sink })
        yield* Effect.promise(() => connectRaw((JSON.parse(probe.connectionInfo.info) as { address: string }).address))
        during = tcpSockets()
      }).pipe(Effect.scoped, Effect.provide(tcpStack()))
      expect(during).toBeGreaterThanOrEqual(baseline + 4) // listener + forever stream (2) + idle socket (2)
      expect(yield* eventually(() => tcpSockets() === baseline, 2000)).toBe(true)
    }))
})

describe("TCP call-home wire bytes", () => {
  it.live("the router sends stop/kill as header-only frames (queued until the worker calls home) and closes after the sentinel", () =>
    Effect.gen(function*() {
      const server = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 5000, maxMessageSize: MAX })
      const rec = recordingSink()
      const pending = yield* server.open({ requestId: "req-1", endpoint: "ns.c.e", codec: "json", sink: rec.sink })
      expect(pending.connectionInfo.transport).toBe("tcp_server")
      const info = JSON.parse(pending.connectionInfo.info)
      expect(Object.keys(info)).toEqual(["address", "subject", "context", "stream_type"])
      expect(info.context).toBe("req-1")
      expect(info.stream_type).toBe("response")
      expect(info.subject).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
      expect(info.address).toMatch(/^127\.0\.0\.1:\d+$/)

      pending.control("stop") // before the worker connects: queued
      const peer = yield* Effect.promise(() => connectRaw(info.address))
      peer.socket.write(handshake(info.subject))
      yield* Effect.promise(() => peer.waitFrames(1)).pipe(Effect.timeout(1000))
      const stopBytes = Buffer.concat([
        Buffer.from([0, 0, 0, 0, 0, 0, 0, 6]), // header_len 6
        Buffer.alloc(8), // body_len 0
        Buffer.alloc(8), // checksum 0
        Buffer.from(`"stop"`)
      ])
      expect(Buffer.concat(peer.chunks)).toEqual(stopBytes)
      pending.control("kill")
      yield* Effect.promise(() => peer.waitFrames(2)).pipe(Effect.timeout(1000))
      const killBytes = Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0, 6]), Buffer.alloc(16), Buffer.from(`"kill"`)])
      expect(Buffer.concat(peer.chunks)).toEqual(Buffer.concat([stopBytes, killBytes]))
      expect(peer.frames.map((f) => [text(f.header), f.body.length])).toEqual([[`"stop"`, 0], [`"kill"`, 0]])

      // Fifty items in one write: one onItems batch.
      peer.socket.write(bytes(encodeHeaderOnlyJson({ error: null }), ...Array.from({ length: 50 }, (_, i) => item(i))))
      yield* eventually(() => rec.items.length === 50)
      expect(rec.onItemsCalls()).toBe(1)
      expect(rec.events).toEqual(["start"])
      peer.socket.write(bytes(completeFrame(), sentinel()))
      yield* Effect.promise(() => rec.done).pipe(Effect.timeout(1000))
      expect(rec.events).toEqual(["start", "end"])
      expect(rec.items).toEqual(Array.from({ length: 50 }, (_, i) => i))
      yield* Effect.promise(() => peer.closed).pipe(Effect.timeout(1000))
      expect(pending.isDone()).toBe(true)
      pending.close()
      pending.close()
    }))

  it.live("starts the listener lazily, once, shared by concurrent first opens; subjects are fresh uuids", () =>
    Effect.gen(function*() {
      const listeners = () => process.getActiveResourcesInfo().filter((r) => r === "TCPServerWrap").length
      const before = listeners()
      const server = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 5000, maxMessageSize: MAX })
      expect(listeners()).toBe(before)
      const opened = yield* Effect.forEach(
        Array.from({ length: 20 }, (_, i) => i),
        (i) => server.open({ requestId: `r${i}`, endpoint: "ns.c.e", codec: "json", sink: recordingSink().sink }),
        { concurrency: "unbounded" }
      )
      const infos = opened.map((p) => JSON.parse(p.connectionInfo.info) as { address: string; subject: string; context: string })
      expect(new Set(infos.map((i) => i.address)).size).toBe(1)
      expect(new Set(infos.map((i) => i.subject)).size).toBe(20)
      expect(infos.map((i) => i.context)).toEqual(Array.from({ length: 20 }, (_, i) => `r${i}`))
      expect(listeners()).toBe(before + 1)
      for (const p of opened) p.close()
    }))

  it.live("fails open with ListenFailed when the port is taken, and retries on the next open", () =>
    Effect.gen(function*() {
      const blocker = net.createServer()
      yield* Effect.promise(() => new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", () => resolve())))
      const port = (blocker.address() as net.AddressInfo).port
      const server = yield* CallHomeServer.make({ host: "127.0.0.1", port, callHomeTimeoutMs: 5000, maxMessageSize: MAX })
      const open = server.open({ requestId: "r", endpoint: "ns.c.e", codec: "json", sink: recordingSink().sink })
      const error = yield* Effect.flip(open)
      expect(error._tag).toBe("TransportConnectionError")
      if (error._tag === "TransportConnectionError") {
        expect(error.reason).toBe("ListenFailed")
        expect(error.target).toBe(`127.0.0.1:${port}`)
      }
      yield* Effect.promise(() => new Promise<void>((resolve) => blocker.close(() => resolve())))
      const pending = yield* open
      expect(JSON.parse(pending.connectionInfo.info).address).toBe(`127.0.0.1:${port}`)
      pending.close()
    }))

  it.live("closes an accepted socket that never sends its handshake", () =>
    Effect.gen(function*() {
      const server = yield* CallHomeServer.make({
        host: "127.0.0.1",
        port: 0,
        callHomeTimeoutMs: 5000,
        maxMessageSize: MAX,
        handshakeTimeoutMs: 100
      })
      const rec = recordingSink()
      const pending = yield* server.open({ requestId: "idle", endpoint: "ns.c.e", codec: "json", sink: rec.sink })
      const peer = yield* Effect.promise(() => connectRaw(JSON.parse(pending.connectionInfo.info).address))
      const start = Date.now()
      yield* Effect.promise(() => peer.closed).pipe(Effect.timeout(1000))
      expect(Date.now() - start).toBeGreaterThanOrEqual(50)
      expect(rec.events).toEqual([]) // the pending stream itself is untouched
      pending.close()
    }))

  it.live("closes the socket within the bound when the sentinel never follows complete_final", () =>
    Effect.gen(function*() {
      const server = yield* CallHomeServer.make({
        host: "127.0.0.1",
        port: 0,
        callHomeTimeoutMs: 5000,
        maxMessageSize: MAX,
        sentinelTimeoutMs: 100
      })
      const rec = recordingSink()
      const pending = yield* server.open({ requestId: "req-2", endpoint: "ns.c.e", codec: "json", sink: rec.sink })
      const info = JSON.parse(pending.connectionInfo.info)
      const peer = yield* Effect.promise(() => connectRaw(info.address))
      peer.socket.write(bytes(handshake(info.subject), encodeHeaderOnlyJson({ error: null }), item("x"), completeFrame()))
      yield* Effect.promise(() => rec.done)
      pending.close() // after complete_final: leaves the socket to the sentinel bound
      const start = Date.now()
      yield* Effect.promise(() => peer.closed).pipe(Effect.timeout(1000))
      expect(Date.now() - start).toBeLessThan(500)
      expect(rec.events).toEqual(["start", "end"])
    }))

  it.live("an error prologue fails the stream with a prologue HandlerError", () =>
    Effect.gen(function*() {
      const server = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 5000, maxMessageSize: MAX })
      const rec = recordingSink()
      const pending = yield* server.open({ requestId: "req-3", endpoint: "ns.c.e", codec: "json", sink: rec.sink })
      const info = JSON.parse(pending.connectionInfo.info)
      const peer = yield* Effect.promise(() => connectRaw(info.address))
      peer.socket.write(bytes(handshake(info.subject), encodeHeaderOnlyJson({ error: "no GPU" })))
      yield* Effect.promise(() => rec.done)
      const error = rec.error()
      expect(error?._tag).toBe("HandlerError")
      if (error?._tag === "HandlerError") {
        expect(error.phase).toBe("prologue")
        expect(error.detail).toBe("no GPU")
      }
      yield* Effect.promise(() => peer.closed).pipe(Effect.timeout(1000))
      pending.close()
    }))

  it.live("the worker writes handshake, prologue, items, complete_final and sentinel exactly as PROTOCOL.md section 3", () =>
    Effect.gen(function*() {
      const received: Array<RawPeer> = []
      const srv = net.createServer((socket) => {
        const peer = attach(socket)
        received.push(peer)
        // Like the router: close once the sentinel has arrived.
        void peer.waitFrames(7).then(() => socket.destroy())
      })
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", () => resolve()))),
        () => Effect.promise(() => new Promise<void>((resolve) => srv.close(() => resolve())))
      )
      const port = (srv.address() as net.AddressInfo).port
      const client = yield* CallHomeClient.make({ maxMessageSize: MAX })
      const connectionInfo = tcpConnectionInfo({ address: `127.0.0.1:${port}`, subject: "subj-1", context: "req-1", stream_type: "response" })
      const writer = yield* client.connect({ connectionInfo, requestId: "req-1", codec: "json" })
      let disconnected = false
      writer.onDisconnect(() => (disconnected = true))
      writer.prologue()
      writer.send({ text: "hello" })
      writer.sendAll([2, 3])
      writer.complete()
      writer.send("too late") // dropped
      yield* eventually(() => received.length === 1)
      const peer = received[0]!
      yield* Effect.promise(() => peer.closed).pipe(Effect.timeout(1000))
      const frames = peer.frames.map((f) => ({
        header: f.header.length === 0 ? null : text(f.header),
        body: f.body.length === 0 ? null : parse(f.body)
      }))
      expect(frames).toEqual([
        { header: `{"subject":"subj-1","stream_type":"response"}`, body: null },
        { header: `{"error":null}`, body: null },
        { header: null, body: { data: { text: "hello" }, complete_final: false } },
        { header: null, body: { data: 2, complete_final: false } },
        { header: null, body: { data: 3, complete_final: false } },
        { header: null, body: { complete_final: true } },
        { header: `"sentinel"`, body: null }
      ])
      // Everything after the handshake was written in one tick: one write, at most two reads.
      expect(peer.chunks.length).toBeLessThanOrEqual(2)
      // Checksums are 0, as Dynamo's release builds send.
      expect(peer.chunks[0]!.subarray(16, 24)).toEqual(Buffer.alloc(8))
      yield* eventually(() => client.openSockets() === 0)
      expect(client.openSockets()).toBe(0)
      expect(disconnected).toBe(false)
    }))

  it.live("the worker's fail, error prologue and close write what the router expects, and it hears stop/kill", () =>
    Effect.gen(function*() {
      const received: Array<RawPeer> = []
      const srv = net.createServer((socket) => void received.push(attach(socket)))
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", () => resolve()))),
        () =>
          Effect.promise(() => {
            for (const p of received) p.socket.destroy()
            return new Promise<void>((resolve) => srv.close(() => resolve()))
          })
      )
      const address = `127.0.0.1:${(srv.address() as net.AddressInfo).port}`
      const client = yield* CallHomeClient.make({ maxMessageSize: MAX })
      const connect = (subject: string) =>
        client.connect({
          connectionInfo: tcpConnectionInfo({ address, subject, context: "rq", stream_type: "response" }),
          requestId: "rq",
          codec: "json"
        })
      const decoded = (peer: RawPeer) =>
        peer.frames.map((f) => (f.header.length > 0 ? parse(f.header) : { body: parse(f.body) }))

      // fail: the error data frame, then the socket ends with no sentinel.
      const w1 = yield* connect("s1")
      w1.prologue()
      w1.send(1)
      w1.fail("boom")
      yield* eventually(() => received.length === 1)
      const p1 = received[0]!
      yield* Effect.promise(() => new Promise<void>((resolve) => p1.socket.once("end", () => resolve()))).pipe(Effect.timeout(1000))
      expect(decoded(p1)).toEqual([
        { subject: "s1", stream_type: "response" },
        { error: null },
        { body: { data: 1, complete_final: false } },
        { body: { complete_final: false, error: "boom" } }
      ])

      // error prologue: {"error": msg}, then the socket ends.
      const w2 = yield* connect("s2")
      w2.prologue("cannot start")
      w2.send(1) // dropped
      yield* eventually(() => received.length === 2)
      const p2 = received[1]!
      yield* Effect.promise(() => new Promise<void>((resolve) => p2.socket.once("end", () => resolve()))).pipe(Effect.timeout(1000))
      expect(decoded(p2)).toEqual([{ subject: "s2", stream_type: "response" }, { error: "cannot start" }])

      // control: stop and kill reach onControl (queued until it is registered); close ends with nothing more.
      const w3 = yield* connect("s3")
      w3.prologue()
      yield* eventually(() => received.length === 3)
      const p3 = received[2]!
      p3.socket.write(bytes(encodeHeaderOnlyJson("stop")))
      yield* Effect.sleep(20)
      const controls: Array<string> = []
      w3.onControl((m) => controls.push(m))
      p3.socket.write(encodeHeaderOnlyJson("kill"))
      yield* eventually(() => controls.length === 2)
      expect(controls).toEqual(["stop", "kill"])
      w3.close()
      yield* Effect.promise(() => new Promise<void>((resolve) => p3.socket.once("end", () => resolve()))).pipe(Effect.timeout(1000))
      expect(decoded(p3)).toEqual([{ subject: "s3", stream_type: "response" }, { error: null }])

      // disconnect: the router goes away before complete.
      const w4 = yield* connect("s4")
      w4.prologue()
      const disconnects: Array<string> = []
      w4.onDisconnect((e) => disconnects.push(`${e._tag}:${e.reason}`))
      yield* eventually(() => received.length === 4)
      received[3]!.socket.destroy()
      yield* eventually(() => disconnects.length > 0)
      expect(disconnects).toEqual(["TransportConnectionError:ConnectionClosed"])
      w4.send(1) // dropped silently
      w4.complete()
      yield* Effect.sleep(10)
      expect(disconnects.length).toBe(1)
    }))

  it.live("the worker destroys its socket when the router never closes after the sentinel", () =>
    Effect.gen(function*() {
      const received: Array<RawPeer> = []
      // allowHalfOpen: this router keeps its side open after the worker's FIN.
      const srv = net.createServer({ allowHalfOpen: true }, (socket) => void received.push(attach(socket)))
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((resolve) => srv.listen({ port: 0, host: "127.0.0.1" }, () => resolve()))),
        () =>
          Effect.promise(() => {
            for (const p of received) p.socket.destroy()
            return new Promise<void>((resolve) => srv.close(() => resolve()))
          })
      )
      const address = `127.0.0.1:${(srv.address() as net.AddressInfo).port}`
      const client = CallHomeClient.makeUnsafe({ maxMessageSize: MAX, lingerMs: 100 })
      const writer = yield* client.connect({
        connectionInfo: tcpConnectionInfo({ address, subject: "s", context: "rq", stream_type: "response" }),
        requestId: "rq",
        codec: "json"
      })
      writer.prologue()
      writer.complete()
      const start = Date.now()
      expect(client.openSockets()).toBe(1)
      yield* eventually(() => received.length === 1 && received[0]!.frames.length === 4)
      expect(yield* eventually(() => client.openSockets() === 0, 1000)).toBe(true)
      expect(Date.now() - start).toBeGreaterThanOrEqual(80)
    }))

  it.live("the worker refuses bad connection info and reports unreachable routers", () =>
    Effect.gen(function*() {
      const client = CallHomeClient.makeUnsafe({ maxMessageSize: MAX })
      const good = { address: "127.0.0.1:1", subject: "s", context: "rq", stream_type: "response" as const }
      const attempt = (connectionInfo: { transport: string; info: string }, requestId = "rq") =>
        Effect.flip(client.connect({ connectionInfo, requestId, codec: "json" }))
      const cases: Array<[{ transport: string; info: string }, string]> = [
        [{ transport: "nats", info: JSON.stringify(good) }, "not \"tcp_server\""],
        [{ transport: "tcp_server", info: "{not json" }, "not JSON"],
        [{ transport: "tcp_server", info: JSON.stringify({ ...good, stream_type: "request" }) }, "stream_type"],
        [{ transport: "tcp_server", info: JSON.stringify({ ...good, context: "other" }) }, "is not the request id"],
        [{ transport: "tcp_server", info: JSON.stringify({ ...good, address: "nowhere" }) }, "host:port"]
      ]
      for (const [info, detail] of cases) {
        const error = yield* attempt(info)
        expect(error._tag).toBe("TransportProtocolError")
        if (error._tag === "TransportProtocolError") {
          expect(error.reason).toBe("BadHandshake")
          expect(error.detail).toContain(detail)
        }
      }
      // A port with nobody listening: ConnectFailed naming the address.
      const srv = net.createServer()
      yield* Effect.promise(() => new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", () => resolve())))
      const port = (srv.address() as net.AddressInfo).port
      yield* Effect.promise(() => new Promise<void>((resolve) => srv.close(() => resolve())))
      const refused = yield* attempt(tcpConnectionInfo({ ...good, address: `127.0.0.1:${port}` }))
      expect(refused._tag).toBe("TransportConnectionError")
      if (refused._tag === "TransportConnectionError") {
        expect(refused.reason).toBe("ConnectFailed")
        expect(refused.target).toBe(`127.0.0.1:${port}`)
      }
      expect(client.openSockets()).toBe(0)
    }))

  it.live("flow control: a slow generate consumer pauses the call-home socket, so the worker's handler stalls; then everything arrives in order", () =>
    Effect.gen(function*() {
      const n = 1500
      const r = yield* slowConsumer("ns.bp.slow", n, 16)
      // 20 consumed + 16 buffered + what the two socket buffers hold (measured: ~200 items in all).
      expect(r.stalledAt).toBeLessThan(n / 2)
      expect(r.stalledLater).toBe(r.stalledAt)
      expect(r.produced).toBe(n)
      expect(r.received).toEqual(Array.from({ length: n }, (_, k) => k + 1))
      expect(r.handlerFinished).toBe(true)
    }).pipe(Effect.provide(tcpStack())))

  it.live("a consumer that stops early while the stream is paused releases it at once, not after the cancel grace", () =>
    Effect.gen(function*() {
      const token = "x".repeat(32 * 1024)
      let interrupted = false
      yield* Endpoint.serve("ns.bp.cancel", () =>
        Stream.range(1, 100_000, 4).pipe(
          Stream.map((i) => ({ i, token })),
          Stream.onExit((exit) => Effect.sync(() => (interrupted = Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause))))
        ))
      const registry = yield* TransportRegistry.TransportRegistry
      const worker = registry.responseClientFor("tcp_server") as CallHomeClient.CallHomeClient
      const client = yield* Endpoint.client<unknown, { i: number; token: string }>("ns.bp.cancel", { maxBufferedItems: 4 })
      // Pull 10 items slowly enough that the stream is paused, then stop.
      const got = yield* client.generate({}).pipe(
        Stream.tap(() => Effect.sleep(20)),
        Stream.take(10),
        Stream.runCollect
      )
      expect(got.map((x) => x.i)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
      const stoppedAt = performance.now()
      // The grace is 2 s: stop reaches the handler, and the router reads the worker's close at once.
      expect(yield* eventually(() => interrupted && worker.openSockets() === 0, 1000)).toBe(true)
      expect(performance.now() - stoppedAt).toBeLessThan(1000)
    }).pipe(Effect.provide(tcpStack({ DYN_CANCEL_GRACE_MS: "2000" }))))

  it.live("a consumer that stalls longer than the worker's linger loses nothing: the linger starts once every byte is written", () =>
    Effect.gen(function*() {
      const n = 400
      const token = "x".repeat(32 * 1024)
      // An emit handler that ignores emit.ready: all 12.5 MiB sit in the worker's socket buffer.
      yield* Endpoint.serveEmit("ns.bp.linger", (_req: unknown, _ctx, emit: Endpoint.Emit<{ i: number; token: string }>) =>
        Effect.sync(() => {
          for (let i = 1; i <= n; i++) emit({ i, token })
        }))
      const client = yield* Endpoint.client<unknown, { i: number; token: string }>("ns.bp.linger", { maxBufferedItems: 16 })
      const received: Array<number> = []
      yield* Stream.runForEach(client.generate({}), (item) =>
        Effect.suspend(() => {
          received.push(item.i)
          // Stall three lingers long, with the stream paused and the worker's side already ended.
          return received.length === 20 ? Effect.sleep(600) : Effect.void
        }))
      expect(received).toEqual(Array.from({ length: n }, (_, k) => k + 1))
    }).pipe(Effect.provide(tcpStack({}, { client: { lingerMs: 200 } }))))

  it.live("backpressure: a Stream handler waits while the router does not read, and finishes once it does; nothing is lost", () =>
    Effect.gen(function*() {
      // A router that takes the call-home connection but reads nothing until told to.
      const peers: Array<RawPeer> = []
      const srv = net.createServer((socket) => {
        const peer = attach(socket)
        socket.pause()
        peers.push(peer)
      })
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", () => resolve()))),
        () => Effect.promise(() => new Promise<void>((resolve) => srv.close(() => resolve())))
      )
      const port = (srv.address() as net.AddressInfo).port
      const N = 2000
      const token = "x".repeat(32 * 1024) // 2,000 items of 32 KiB: 64 MiB in all
      let produced = 0
      let finished = false
      const served = yield* Endpoint.serve("ns.bp.gen", () =>
        Stream.range(1, N, 8).pipe(
          Stream.tap(() => Effect.sync(() => produced++)),
          Stream.map((i) => ({ i, token })),
          Stream.ensuring(Effect.sync(() => (finished = true)))
        ))
      const registry = yield* TransportRegistry.TransportRegistry
      const memory = yield* registry.getRequestClient("memory")
      const target = { address: requestTransportOf(served.instance.transport).address, endpoint: "ns.bp.gen" }
      const message: RequestMessage = {
        control: {
          id: "bp-1",
          request_type: "single_in",
          response_type: "many_out",
          connection_info: tcpConnectionInfo({ address: `127.0.0.1:${port}`, subject: "bp-subject", context: "bp-1", stream_type: "response" })
        },
        payload: {},
        headers: {}
      }
      yield* memory.send(target, message)
      expect(yield* eventually(() => peers.length === 1 && produced > 0)).toBe(true)
      // Held back: the socket buffers fill, then the handler stops pulling from its Stream.
      yield* Effect.sleep(300)
      const stalledAt = produced
      yield* Effect.sleep(300)
      expect(produced).toBe(stalledAt)
      expect(stalledAt).toBeLessThan(N / 4) // at most a few MiB buffered, not 64
      expect(finished).toBe(false)
      // The router reads again: everything arrives, in order, and the stream completes.
      const peer = peers[0]!
      peer.socket.resume()
      yield* Effect.promise(() => peer.waitFrames(1 + 1 + N + 1)).pipe(Effect.timeout(10_000))
      expect(produced).toBe(N)
      const bodies = peer.frames.slice(2, 2 + N + 1).map((f) => parse(f.body) as { data?: { i: number }; complete_final: boolean })
      expect(bodies.slice(0, N).map((b) => b.data?.i)).toEqual(Array.from({ length: N }, (_, k) => k + 1))
      expect(bodies[N]).toEqual({ complete_final: true })
      expect(yield* eventually(() => finished)).toBe(true)
    }).pipe(Effect.provide(tcpStack())))

  it.live("the worker's connect is bounded: ConnectTimeout naming the router when the connect never completes", () =>
    Effect.gen(function*() {
      const hole = yield* blackhole
      const client = CallHomeClient.makeUnsafe({ maxMessageSize: MAX, connectTimeoutMs: 200 })
      const connectionInfo = tcpConnectionInfo({ address: hole.address, subject: "s", context: "rq", stream_type: "response" })
      const t0 = performance.now()
      const error = yield* Effect.flip(client.connect({ connectionInfo, requestId: "rq", codec: "json" }))
      const elapsed = performance.now() - t0
      expect(error._tag).toBe("TransportTimeoutError")
      if (error._tag === "TransportTimeoutError") {
        expect(error.reason).toBe("ConnectTimeout")
        expect(error.target).toBe(hole.address)
        expect(error.detail).toContain("200 ms")
      }
      expect(elapsed).toBeGreaterThanOrEqual(190)
      expect(elapsed).toBeLessThan(2000)
      // The abandoned socket is destroyed, not left half-open.
      expect(client.openSockets()).toBe(0)
    }).pipe(Effect.scoped))
})
