/**
 * Fault injection: slowloris. On every listening port, a client that opens a connection and sends
 * nothing, or dribbles the first bytes of a valid exchange one at a time (never finishing it), is
 * closed after the port's connection timeout, however often it sends a byte; meanwhile other
 * clients are served as usual.
 *
 * The ports, each built here with a short timeout (T = 600 ms) through its options:
 * - the HTTP request server (`HttpRequestServer`, which also carries the pure HTTP mode's inline
 *   responses): HTTP/1.1 headers dribbled, the HTTP/2 preface dribbled, and the preface sent whole
 *   but no request after it (`firstRequestTimeoutMs`: the first request must arrive within T);
 * - the seed's HTTP response server (`HttpResponseServer`), HTTP/1.1 headers dribbled;
 * - the TCP call-home server (`CallHomeServer`), its handshake frame dribbled (`handshakeTimeoutMs`);
 * - the TCP request server (`TcpRequestServer`) in Dynamo's framing, its first bytes dribbled
 *   (`connectionTimeoutMs`), and in the full mode's framing, its hello dribbled (`helloTimeoutMs`);
 * - the metrics server (`MetricsServer`), HTTP/1.1 headers dribbled (`connectionTimeoutMs`).
 * Each also gets a client that sends nothing at all. The HTTP request server also gets one that
 * makes a whole request on a kept-alive HTTP/1.1 connection, then dribbles the next one's headers
 * (node:http's `headersTimeout`, set to T by `h1Timeouts`, as the response server's is; that
 * server closes the connection after the answers a test can get without a stream).
 *
 * A slow client sends one byte every 100 ms (well inside T, so that an inactivity timer alone
 * would never fire). Bound: closed within T + 1.5 s of connecting (the margin is for a loaded
 * machine), and before its dribble was done. The normal client (a request that gets its answer)
 * runs while the slow ones are connected.
 */
import * as net from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as MetricsServer from "../../src/observability/MetricsServer.ts"
import { encodeCallHomeHandshake, PROLOGUE_OK_FRAME, SENTINEL_FRAME } from "../../src/protocol/CallHome.ts"
import { encodeHello } from "../../src/protocol/FullModeHello.ts"
import { payloadCodec } from "../../src/protocol/PayloadCodec.ts"
import { encodeStreamComplete, encodeStreamItem } from "../../src/protocol/RequestMessage.ts"
import { encodeTcpRequestFrame } from "../../src/protocol/TcpRequestFrame.ts"
import { encodeFrame } from "../../src/protocol/TwoPartCodec.ts"
import * as HttpRequestServer from "../../src/transport/http/HttpRequestServer.ts"
import * as HttpResponseServer from "../../src/transport/http/HttpResponseServer.ts"
import * as FullMode from "../../src/transport/tcp/full/FullMode.ts"
import { makeHub } from "../../src/transport/tcp/full/FullModeHub.ts"
import * as TcpRequestServer from "../../src/transport/tcp/request/TcpRequestServer.ts"
import * as CallHomeServer from "../../src/transport/tcp/router/CallHomeServer.ts"
import { baseOptions } from "../support/tcpFull.ts"

const T = 600
const BOUND_MS = T + 1500
const DRIBBLE_EVERY_MS = 100
const json = payloadCodec("json")

/** What happened to one slow client. */
interface Slow {
  readonly name: string
  /** ms from connect to close, or undefined when still open at the end. */
  readonly closedAfter: number | undefined
  readonly sent: number
  readonly total: number
}

/**
 * Connects to `port`, sends `bytes` one at a time every DRIBBLE_EVERY_MS; resolves once closed,
 * or after `giveUpMs`. With `first` (a whole HTTP/1.1 request, kept alive), that goes at once,
 * and the dribble (and its clock) starts when its answer has come.
 */
const dribble = (name: string, port: number, bytes: Uint8Array, first?: Uint8Array, giveUpMs = BOUND_MS + 2000): Promise<Slow> =>
  new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port }, () => first !== undefined && socket.write(first))
    socket.on("error", () => {})
    let started: number | undefined
    let sent = 0
    let timer: ReturnType<typeof setInterval> | undefined
    const start = () => {
      started = performance.now()
      timer = setInterval(() => {
        if (sent < bytes.length && !socket.destroyed) socket.write(bytes.subarray(sent, ++sent))
      }, DRIBBLE_EVERY_MS)
    }
    if (first === undefined) start()
    socket.on("data", () => started === undefined && start())
    const finish = (closedAfter: number | undefined) => {
      clearInterval(timer)
      clearTimeout(giveUp)
      socket.destroy()
      resolve({ name, closedAfter, sent, total: bytes.length })
    }
    const giveUp = setTimeout(() => finish(undefined), giveUpMs)
    socket.once("close", () => finish(started === undefined ? undefined : performance.now() - started))
  })

/** A whole HTTP/1.1 request on a kept-alive connection. */
const wholeRequest = (method: string, path: string) =>
  new TextEncoder().encode(`${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n`)

/** Checks every slow client: closed within the bound, before its dribble was done. */
const expectClosed = (slow: ReadonlyArray<Slow>) => {
  for (const s of slow) {
    expect(s.closedAfter, `${s.name}: still open after ${BOUND_MS + 2000} ms (sent ${s.sent}/${s.total} bytes)`).toBeDefined()
    expect(s.closedAfter!, s.name).toBeLessThan(BOUND_MS)
    expect(s.closedAfter!, `${s.name}: closed only ${s.closedAfter} ms in`).toBeGreaterThanOrEqual(T - 50)
    if (s.total > 0) expect(s.sent, `${s.name}: its whole dribble went through`).toBeLessThan(s.total)
  }
  console.log(`slowloris: ${slow.map((s) => `${s.name} closed after ${s.closedAfter?.toFixed(0)} ms (${s.sent}/${s.total} bytes)`).join("; ")}`)
}

/** A plain HTTP/1.1 GET or POST on a fresh connection: the status. */
const h1Status = (port: number, method: string, path: string) =>
  fetch(`http://127.0.0.1:${port}${path}`, { method, headers: { connection: "close" }, ...(method === "POST" ? { body: "x" } : {}) }).then(async (r) => {
    await r.arrayBuffer()
    return r.status
  })

/** Headers that never end. */
const slowHeaders = (path: string) => new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ${"a".repeat(200)}`)
const H2_PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

/** Runs the slow clients and, while they are connected, `normal` (which must succeed). */
const attack = (slow: ReadonlyArray<() => Promise<Slow>>, normal: () => Promise<void>) =>
  Effect.promise(async () => {
    const running = slow.map((s) => s())
    await new Promise((r) => setTimeout(r, T / 2))
    await normal()
    return Promise.all(running)
  })

describe("slowloris", () => {
  it.live("the HTTP request server (HTTP/1.1 and h2c on one port): slow clients are closed after the first-request timeout", () =>
    Effect.gen(function*() {
      const server = yield* HttpRequestServer.make({ host: "127.0.0.1", port: 0, rootPath: "/v1/rpc", maxMessageSize: 1 << 20, firstRequestTimeoutMs: T })
      const form = yield* server.register({ path: { namespace: "ns", component: "c", endpoint: "e" }, instanceId: 1n }, () => {})
      const port = Number(/:(\d+)\//.exec((form as { http: string }).http)![1])
      const slow = yield* attack([
        () => dribble("silent", port, new Uint8Array()),
        () => dribble("HTTP/1.1 headers dribbled", port, slowHeaders("/v1/rpc/x")),
        () => dribble("h2 preface dribbled", port, concat(H2_PREFACE, new Uint8Array(40))),
        // node:http's headersTimeout, for a later request on a kept-alive connection
        () => dribble("HTTP/1.1 second request's headers dribbled", port, slowHeaders("/v1/rpc/x"), wholeRequest("POST", "/v1/rpc/unknown")),
        () => {
          // The preface at once, then nothing: a session that never opens a stream.
          const socket = net.connect({ host: "127.0.0.1", port }, () => socket.write(H2_PREFACE))
          socket.on("error", () => {})
          socket.on("data", () => {})
          const started = performance.now()
          return new Promise<Slow>((resolve) => {
            const giveUp = setTimeout(() => (socket.destroy(), resolve({ name: "h2 preface whole, then no request", closedAfter: undefined, sent: 24, total: 0 })), BOUND_MS + 2000)
            socket.once("close", () => (clearTimeout(giveUp), resolve({ name: "h2 preface whole, then no request", closedAfter: performance.now() - started, sent: 24, total: 0 })))
          })
        }
      ], async () => {
        expect(await h1Status(port, "POST", "/v1/rpc/unknown")).toBe(404)
      })
      expectClosed(slow)
    }).pipe(Effect.scoped))

  it.live("the HTTP response server: slow clients are closed after the first-request timeout", () =>
    Effect.gen(function*() {
      const server = yield* HttpResponseServer.make({ host: "127.0.0.1", port: 0, rootPath: "/v1/rpc/response", streamFormat: "sse", timeoutMs: 10_000, firstRequestTimeoutMs: T })
      const created = yield* server.createResponseStream()
      const port = Number(new URL(created.address.url).port)
      const slow = yield* attack([
        () => dribble("silent", port, new Uint8Array()),
        () => dribble("HTTP/1.1 headers dribbled", port, slowHeaders("/v1/rpc/response/x"))
      ], async () => {
        expect(await h1Status(port, "GET", "/v1/rpc/response/unknown")).toBe(404)
      })
      created.writer.close()
      expectClosed(slow)
    }).pipe(Effect.scoped))

  it.live("the TCP call-home server: a dribbled handshake is closed after the handshake timeout", () =>
    Effect.gen(function*() {
      const server = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 10_000, maxMessageSize: 1 << 20, handshakeTimeoutMs: T })
      let settled: (ok: boolean) => void = () => {}
      const done = new Promise<boolean>((r) => (settled = r))
      const items: Array<unknown> = []
      const pending = yield* server.open({
        requestId: crypto.randomUUID(),
        endpoint: "faults.slow.callhome",
        codec: "json",
        sink: { onItems: (b) => void items.push(...b), onEnd: () => settled(true), onError: () => settled(false) }
      })
      const info = JSON.parse(pending.connectionInfo.info) as { address: string; subject: string }
      const port = Number(info.address.slice(info.address.lastIndexOf(":") + 1))
      const slow = yield* attack([
        () => dribble("silent", port, new Uint8Array()),
        () => dribble("handshake dribbled", port, encodeCallHomeHandshake(crypto.randomUUID()))
      ], async () => {
        const socket = net.connect({ host: "127.0.0.1", port })
        socket.on("error", () => {})
        socket.end(concat(
          encodeCallHomeHandshake(info.subject),
          PROLOGUE_OK_FRAME,
          encodeFrame(undefined, encodeStreamItem(json, "ok")),
          encodeFrame(undefined, encodeStreamComplete(json)),
          SENTINEL_FRAME
        ))
        expect(await done).toBe(true)
        expect(items).toEqual(["ok"])
      })
      expectClosed(slow)
    }).pipe(Effect.scoped))

  it.live("the TCP request server: Dynamo's framing and the full mode's hello, dribbled, are closed after their timeouts", () =>
    Effect.gen(function*() {
      const fullMode = yield* FullMode.make({ ...baseOptions, helloTimeoutMs: T }, makeHub())
      const server = yield* TcpRequestServer.make({
        host: "127.0.0.1",
        port: 0,
        maxMessageSize: 1 << 20,
        maxConnections: 100,
        connectionTimeoutMs: T,
        fullMode: fullMode.acceptor
      })
      yield* server.register({ path: { namespace: "ns", component: "c", endpoint: "e" }, instanceId: 1n }, () => {})
      const address = server.address()!
      const port = Number(address.slice(address.lastIndexOf(":") + 1))
      const frame = encodeTcpRequestFrame("1/ns/c/unknown", {}, new Uint8Array(100)) as Uint8Array
      const slow = yield* attack([
        () => dribble("silent", port, new Uint8Array()),
        () => dribble("Dynamo request frame dribbled", port, frame),
        () => dribble("full-mode hello dribbled", port, encodeHello())
      ], async () => {
        // A Dynamo-framed request for an endpoint nobody serves: answered with a rejection ack.
        const answered = await new Promise<boolean>((resolve) => {
          const socket = net.connect({ host: "127.0.0.1", port }, () => socket.write(frame))
          socket.on("error", () => resolve(false))
          socket.once("data", () => (socket.destroy(), resolve(true)))
        })
        expect(answered).toBe(true)
      })
      expectClosed(slow)
    }).pipe(Effect.scoped))

  it.live("the metrics server: slow clients are closed after the connection timeout", () =>
    Effect.gen(function*() {
      const server = yield* MetricsServer.make({ host: "127.0.0.1", port: 0, connectionTimeoutMs: T })
      const slow = yield* attack([
        () => dribble("silent", server.port, new Uint8Array()),
        () => dribble("HTTP/1.1 headers dribbled", server.port, slowHeaders("/metrics"))
      ], async () => {
        expect(await h1Status(server.port, "GET", "/health")).toBe(200)
      })
      expectClosed(slow)
    }).pipe(Effect.scoped))
})

function concat(...parts: ReadonlyArray<Uint8Array>): Uint8Array {
  return Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)))
}
