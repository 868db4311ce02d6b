/**
 * The worker's outbound connects (transport/tcp/worker/Dialer.ts and MuxConnect.ts) against
 * hand-scripted loopback peers: typed errors that name the address (ConnectFailed, ConnectTimeout,
 * Refused, BadHandshake), the connect bound, the socket handed over inside the connect handler,
 * interruption destroying the socket, and a mux connection reporting its handshake, then its
 * death with the streams the router may not have seen finish.
 */
import * as net from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { encodeConnectionAck, streamIdFromUuid } from "../src/protocol/MuxCodec.ts"
import { json } from "../src/protocol/PayloadCodec.ts"
import { makeDecoder } from "../src/protocol/TwoPartCodec.ts"
import type { TransportError } from "../src/TransportError.ts"
import { dial } from "../src/transport/tcp/worker/Dialer.ts"
import { connectMux } from "../src/transport/tcp/worker/MuxConnect.ts"
import type { MuxConnection, MuxConnectionEvents } from "../src/transport/tcp/worker/MuxConnection.ts"
import { blackhole } from "./support/blackhole.ts"

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** A loopback server that runs `onSocket` for each connection; closed with the scope. */
const server = (onSocket: (socket: net.Socket) => void) =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<{ port: number; address: string; server: net.Server }>((resolve) => {
        const srv = net.createServer(onSocket)
        srv.listen(0, "127.0.0.1", () => {
          const port = (srv.address() as net.AddressInfo).port
          resolve({ port, address: `127.0.0.1:${port}`, server: srv })
        })
      })
    ),
    ({ server }) => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
  )

/** A port nobody listens on. */
const closedPort = Effect.promise(() =>
  new Promise<number>((resolve) => {
    const srv = net.createServer()
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port
      srv.close(() => resolve(port))
    })
  })
)

/** Reads the worker's handshake header (JSON) from `socket`, then calls `then`. */
const onHandshake = (socket: net.Socket, then: (handshake: Record<string, unknown>) => void) => {
  const decoder = makeDecoder({ maxMessageSize: 1 << 20 })
  let done = false
  socket.on("data", (chunk: Buffer) => {
    if (done) return
    decoder.decode(chunk, (header) => {
      if (done) return
      done = true
      then(JSON.parse(new TextDecoder().decode(header)) as Record<string, unknown>)
    })
  })
  socket.on("error", () => {})
}

const muxOptions = (port: number, connectTimeoutMs = 1000) => ({
  host: "127.0.0.1",
  port,
  address: `127.0.0.1:${port}`,
  frontendServerId: crypto.randomUUID(),
  maxMessageSize: 1 << 20,
  connectTimeoutMs,
  keepaliveMs: 60_000,
  lingerMs: 100,
  streamWindow: 256 * 1024,
  connectionWindow: 256 * 1024,
  flush: "tick" as const
})

/** Events that record what the connection reports. */
const recordingEvents = () => {
  const usage: Array<boolean> = []
  const closes: Array<{ error: TransportError; byUs: boolean; unfinished: Array<string>; unconfirmed: number }> = []
  const events: MuxConnectionEvents = {
    onUsage: (busy) => void usage.push(busy),
    onClose: (error, byUs, unfinished, unconfirmed) =>
      void closes.push({ error, byUs, unfinished: unfinished.map((id) => Buffer.from(id).toString("hex")), unconfirmed: unconfirmed.length })
  }
  return { events, usage, closes }
}

describe("Dialer", () => {
  it.live("hands the connected socket to onConnect inside the connect handler, and tracks it from the start", () =>
    Effect.gen(function*() {
      const { port, address } = yield* server((socket) => socket.on("error", () => {}).resume())
      const sockets = new Set<net.Socket>()
      const fiber = yield* Effect.forkChild(dial({ host: "127.0.0.1", port, address, timeoutMs: 1000 }, (socket) => {
        expect(socket.readyState).toBe("open")
        return { socket, tracked: sockets.has(socket) }
      }, sockets), { startImmediately: true })
      expect(sockets.size).toBe(1) // tracked while connecting
      const result = yield* Fiber.join(fiber)
      expect(result.tracked).toBe(true)
      result.socket.destroy()
    }).pipe(Effect.scoped))

  it.live("a refused connect is ConnectFailed naming the address; the socket is no longer tracked", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const sockets = new Set<net.Socket>()
      const error = yield* Effect.flip(dial({ host: "127.0.0.1", port, address: `127.0.0.1:${port}`, timeoutMs: 1000 }, () => "never", sockets))
      expect(error._tag).toBe("TransportConnectionError")
      expect(error.reason).toBe("ConnectFailed")
      expect(error.target).toBe(`127.0.0.1:${port}`)
      expect(error.detail).toContain("ECONNREFUSED")
      expect(sockets.size).toBe(0)
    }))

  it.live("a connect that hangs is ConnectTimeout after timeoutMs; interrupting one destroys its socket", () =>
    Effect.gen(function*() {
      const hole = yield* blackhole
      const sockets = new Set<net.Socket>()
      const start = Date.now()
      const error = yield* Effect.flip(dial({ host: hole.host, port: hole.port, address: hole.address, timeoutMs: 150 }, () => "never", sockets))
      expect(Date.now() - start).toBeGreaterThanOrEqual(140)
      expect(Date.now() - start).toBeLessThan(1000)
      expect(error._tag).toBe("TransportTimeoutError")
      expect(error.reason).toBe("ConnectTimeout")
      expect(error.target).toBe(hole.address)
      expect(error.detail).toBe("no connection within 150 ms")
      expect(sockets.size).toBe(0)

      const fiber = yield* Effect.forkChild(dial({ host: hole.host, port: hole.port, address: hole.address, timeoutMs: 5000 }, () => "never", sockets), {
        startImmediately: true
      })
      const [socket] = [...sockets]
      expect(socket!.destroyed).toBe(false)
      yield* Fiber.interrupt(fiber)
      expect(socket!.destroyed).toBe(true)
      expect(sockets.size).toBe(0)
    }).pipe(Effect.scoped))
})

describe("connectMux", () => {
  it.live("sends the handshake, and succeeds with onReady's value once the router acks it with ConnectionAck(0)", () =>
    Effect.gen(function*() {
      const handshakes: Array<Record<string, unknown>> = []
      const { port } = yield* server((socket) =>
        onHandshake(socket, (hs) => {
          handshakes.push(hs)
          socket.write(encodeConnectionAck(0))
        })
      )
      const options = muxOptions(port)
      const { events } = recordingEvents()
      let readyWith: MuxConnection | undefined
      const conn = yield* connectMux(options, events, (c) => {
        readyWith = c
        return c
      })
      // A failed expectation must not leave the connection holding the scope's server open.
      yield* Effect.addFinalizer(() => Effect.sync(() => conn.destroy()))
      expect(readyWith).toBe(conn)
      expect(conn.problem()).toBeUndefined()
      expect(handshakes).toEqual([{ kind: "response_mux", version: 1, frontend_server_id: options.frontendServerId, connection_id: conn.id, ping: 1 }])
      conn.destroy()
    }).pipe(Effect.scoped))

  it.live("the router closing during the handshake is Refused; any first frame but ConnectionAck(0) is BadHandshake", () =>
    Effect.gen(function*() {
      const closing = yield* server((socket) => onHandshake(socket, () => socket.destroy()))
      const refused = yield* Effect.flip(connectMux(muxOptions(closing.port), recordingEvents().events, () => "never"))
      expect(refused._tag).toBe("TransportConnectionError")
      expect(refused.reason).toBe("Refused")
      expect(refused.target).toBe(closing.address)

      const nonZero = yield* server((socket) => onHandshake(socket, () => socket.write(encodeConnectionAck(5))))
      const bad = yield* Effect.flip(connectMux(muxOptions(nonZero.port), recordingEvents().events, () => "never"))
      expect(bad._tag).toBe("TransportProtocolError")
      expect(bad.reason).toBe("BadHandshake")
      expect(bad.target).toBe(nonZero.address)
      expect(bad.detail).toContain("ConnectionAck with a non-zero offset")
    }).pipe(Effect.scoped))

  it.live("a router that never acks is ConnectTimeout within connectTimeoutMs, naming the missing ack", () =>
    Effect.gen(function*() {
      const silent = yield* server((socket) => socket.on("error", () => {}).resume()) // reads, never answers
      const start = Date.now()
      const error = yield* Effect.flip(connectMux(muxOptions(silent.port, 150), recordingEvents().events, () => "never"))
      expect(Date.now() - start).toBeLessThan(1000)
      expect(error._tag).toBe("TransportTimeoutError")
      expect(error.reason).toBe("ConnectTimeout")
      expect(error.detail).toBe("no mux ConnectionAck within 150 ms")
    }).pipe(Effect.scoped))

  it.live("after the handshake: usage goes busy with its first stream, a duplicate id is refused; the router's close reports the open ones as unfinished", () =>
    Effect.gen(function*() {
      const routerSockets: Array<net.Socket> = []
      const { port } = yield* server((socket) => {
        routerSockets.push(socket)
        onHandshake(socket, () => socket.write(encodeConnectionAck(0)))
      })
      const { closes, events, usage } = recordingEvents()
      const conn = yield* connectMux(muxOptions(port), events, (c) => c)
      const a = streamIdFromUuid(crypto.randomUUID())!
      const b = streamIdFromUuid(crypto.randomUUID())!
      const wa = conn.openStream(a, json, () => {})
      const wb = conn.openStream(b, json, () => {})
      if (wa instanceof Error || wb instanceof Error) throw new Error("openStream failed")
      expect(conn.openStream(a, json, () => {})).toMatchObject({ _tag: "TransportProtocolError", reason: "BadHandshake" })
      wa.prologue()
      wa.complete()
      expect(usage).toEqual([true])
      const disconnects: Array<string> = []
      wb.onDisconnect((e) => disconnects.push(e.reason))
      yield* Effect.promise(() => sleep(20))
      routerSockets[0]!.destroy()
      yield* Effect.promise(async () => {
        for (let i = 0; i < 100 && closes.length === 0; i++) await sleep(10)
      })
      expect(closes).toHaveLength(1)
      expect(closes[0]!.byUs).toBe(false)
      expect(closes[0]!.error.reason).toBe("ConnectionClosed")
      // b was open; a ended with its frames written but never acknowledged.
      expect(closes[0]!.unfinished).toEqual([Buffer.from(b).toString("hex")])
      expect(closes[0]!.unconfirmed).toBe(1)
      expect(disconnects).toEqual(["ConnectionClosed"])
      expect(conn.problem()).toBe("the socket is destroyed")
    }).pipe(Effect.scoped))
})
