/**
 * The caps added by issue 15 item 7 (docs/security.md, "Caps"), over real loopback sockets:
 * - the call-home listener reads an accepted socket's first frame with a 64 KiB limit, so a peer
 *   that has not said who it is cannot claim a 32 MiB buffer: a larger claim closes the socket at
 *   once, long before the handshake timeout;
 * - connection caps: the call-home server (`DYN_TCP_RESPONSE_MAX_CONNECTIONS`), the HTTP request
 *   server (`DYN_HTTP_RPC_MAX_CONNECTIONS`) and the HTTP response server
 *   (`DYN_HTTP_RESPONSE_MAX_CONNECTIONS`) close a connection beyond the cap at once, keep serving
 *   the ones they hold, and take new ones once under the cap again;
 * - the variables, their defaults and their validation.
 */
import { describe, expect, it } from "@effect/vitest"
import * as net from "node:net"
import { Effect } from "effect"
import { json as jsonCodec } from "../src/protocol/PayloadCodec.ts"
import { encodeStreamComplete, encodeStreamItem } from "../src/protocol/RequestMessage.ts"
import { encodeFrame, encodeHeaderOnlyJson } from "../src/protocol/TwoPartCodec.ts"
import type { ResponseSink } from "../src/ResponsePlane.ts"
import { fromRecord } from "../src/TransportConfig.ts"
import * as HttpRequestServer from "../src/transport/http/HttpRequestServer.ts"
import * as HttpResponseServer from "../src/transport/http/HttpResponseServer.ts"
import { MAX_HANDSHAKE_FRAME_SIZE } from "../src/transport/tcp/router/CallHomeListener.ts"
import * as CallHomeServer from "../src/transport/tcp/router/CallHomeServer.ts"

const MAX = 32 * 1024 * 1024
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

interface RawPeer {
  readonly socket: net.Socket
  readonly bytes: () => Buffer
  readonly isClosed: () => boolean
}

const rawConnect = (address: string): Promise<RawPeer> =>
  new Promise((resolve, reject) => {
    const colon = address.lastIndexOf(":")
    const socket = net.connect({ host: address.slice(0, colon), port: Number(address.slice(colon + 1)), noDelay: true })
    socket.once("error", reject)
    socket.once("connect", () => {
      socket.off("error", reject)
      const chunks: Array<Buffer> = []
      let closed = false
      socket.on("data", (c: Buffer) => chunks.push(Buffer.from(c)))
      socket.on("error", () => {})
      socket.once("close", () => void (closed = true))
      resolve({ socket, bytes: () => Buffer.concat(chunks), isClosed: () => closed })
    })
  })

const connect = (address: string) => Effect.promise(() => rawConnect(address))

/** Polls until `f()` holds, at most `ms`; returns whether it held. */
const eventually = (f: () => boolean, ms = 2000) =>
  Effect.promise(async () => {
    const deadline = Date.now() + ms
    while (!f() && Date.now() < deadline) await sleep(5)
    return f()
  })

/** True when the peer is still open after `ms` (a held connection, not a refused one). */
const staysOpen = (peer: RawPeer, ms = 300) => Effect.promise(() => sleep(ms).then(() => !peer.isClosed()))

const sink = () => {
  const items: Array<unknown> = []
  let resolveDone: () => void = () => {}
  const done = new Promise<void>((resolve) => (resolveDone = resolve))
  const s: ResponseSink = { onItems: (b) => items.push(...b), onEnd: () => resolveDone(), onError: () => resolveDone() }
  return { sink: s, items, done }
}

describe("the call-home listener's caps", () => {
  it.live("a first frame claiming more than 64 KiB closes the socket at once, not at the handshake timeout", () =>
    Effect.gen(function*() {
      const server = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 5000, maxMessageSize: MAX, handshakeTimeoutMs: 10_000 })
      const pending = yield* server.open({ requestId: "r", endpoint: "ns.c.e", codec: "json", sink: sink().sink })
      const address = (JSON.parse(pending.connectionInfo.info) as { address: string }).address
      for (const claim of [MAX_HANDSHAKE_FRAME_SIZE, 1024 * 1024, MAX - 24]) {
        const prefix = new Uint8Array(24)
        new DataView(prefix.buffer).setBigUint64(0, BigInt(claim))
        const peer = yield* connect(address)
        peer.socket.write(prefix)
        expect([claim, yield* eventually(() => peer.isClosed(), 1500)]).toEqual([claim, true])
        expect(peer.bytes().length).toBe(0)
      }
      // A handshake within the limit still works.
      const ok = yield* connect(address)
      ok.socket.write(encodeHeaderOnlyJson({ subject: crypto.randomUUID(), stream_type: "response", pad: "x".repeat(1000) }))
      expect(yield* eventually(() => ok.isClosed(), 1500)).toBe(true) // unknown subject: refused, but read
      pending.close()
    }))

  it.live("DYN_TCP_RESPONSE_MAX_CONNECTIONS: a connection beyond the cap is closed at once; held ones are served; room comes back", () =>
    Effect.gen(function*() {
      const server = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 5000, maxMessageSize: MAX, maxConnections: 3 })
      const rec = sink()
      const pending = yield* server.open({ requestId: "r", endpoint: "ns.c.e", codec: "json", sink: rec.sink })
      const info = JSON.parse(pending.connectionInfo.info) as { address: string; subject: string }
      const held = [yield* connect(info.address), yield* connect(info.address)]
      const worker = yield* connect(info.address)
      for (const p of [...held, worker]) expect(yield* staysOpen(p, 100)).toBe(true)
      const beyond = yield* connect(info.address)
      expect(yield* eventually(() => beyond.isClosed(), 1000)).toBe(true)
      // The held worker connection is served as usual.
      worker.socket.write(Buffer.concat([
        encodeHeaderOnlyJson({ subject: info.subject, stream_type: "response" }),
        encodeHeaderOnlyJson({ error: null }),
        encodeFrame(undefined, encodeStreamItem(jsonCodec, "under the cap")),
        encodeFrame(undefined, encodeStreamComplete(jsonCodec)),
        encodeHeaderOnlyJson("sentinel")
      ]))
      yield* Effect.promise(() => rec.done)
      expect(rec.items).toEqual(["under the cap"])
      // Once one leaves, a new connection is held again.
      held[0]!.socket.destroy()
      expect(yield* eventually(() => worker.isClosed())).toBe(true)
      const again = yield* connect(info.address)
      expect(yield* staysOpen(again)).toBe(true)
      for (const p of [...held, again]) p.socket.destroy()
      pending.close()
    }))
})

describe("the HTTP servers' connection caps", () => {
  it.live("DYN_HTTP_RPC_MAX_CONNECTIONS: the request server closes a connection beyond the cap at once; held ones are served", () =>
    Effect.gen(function*() {
      const server = yield* HttpRequestServer.make({ host: "127.0.0.1", port: 0, rootPath: "/v1/rpc", maxMessageSize: MAX, maxConnections: 2 })
      const transport = yield* server.register({ path: { namespace: "ns", component: "c", endpoint: "e" }, instanceId: 1n }, () => {})
      const url = new URL((transport as { http: string }).http)
      const address = `127.0.0.1:${url.port}`
      const a = yield* connect(address)
      const b = yield* connect(address)
      expect(yield* staysOpen(b, 100)).toBe(true)
      const beyond = yield* connect(address)
      expect(yield* eventually(() => beyond.isClosed(), 1000)).toBe(true)
      // A held connection still gets answers (404 for a path nobody serves).
      a.socket.write(`GET /v1/rpc/nobody HTTP/1.1\r\nHost: x\r\n\r\n`)
      expect(yield* eventually(() => a.bytes().toString("latin1").startsWith("HTTP/1.1 404"))).toBe(true)
      b.socket.destroy()
      expect(yield* eventually(() => !a.isClosed())).toBe(true)
      yield* Effect.promise(() => sleep(50))
      const again = yield* connect(address)
      expect(yield* staysOpen(again)).toBe(true)
      for (const p of [a, again]) p.socket.destroy()
    }))

  it.live("DYN_HTTP_RESPONSE_MAX_CONNECTIONS: the response server closes a connection beyond the cap at once", () =>
    Effect.gen(function*() {
      const s = yield* HttpResponseServer.make({
        host: "127.0.0.1",
        port: 0,
        rootPath: "/r",
        streamFormat: "ndjson",
        timeoutMs: 10_000,
        maxConnections: 2
      })
      const { address } = yield* s.createResponseStream()
      const url = new URL(address.url)
      const hostPort = `127.0.0.1:${url.port}`
      const a = yield* connect(hostPort)
      const b = yield* connect(hostPort)
      expect(yield* staysOpen(b, 100)).toBe(true)
      const beyond = yield* connect(hostPort)
      expect(yield* eventually(() => beyond.isClosed(), 1000)).toBe(true)
      a.socket.write(`GET ${url.pathname} HTTP/1.1\r\nHost: x\r\nAccept: application/x-ndjson\r\n\r\n`)
      expect(yield* eventually(() => a.bytes().toString("latin1").startsWith("HTTP/1.1 200"))).toBe(true)
      for (const p of [a, b]) p.socket.destroy()
    }))
})

describe("the cap variables", () => {
  it("have their defaults, take positive integers, and refuse the rest", () => {
    const ok = fromRecord({})
    if (ok._tag !== "ok") throw ok.error
    expect(ok.settings.connectionCaps).toEqual({ tcpResponse: 50_000, httpRpc: 10_000, httpResponse: 10_000 })
    const set = fromRecord({
      DYN_TCP_RESPONSE_MAX_CONNECTIONS: "7",
      DYN_HTTP_RPC_MAX_CONNECTIONS: "8",
      DYN_HTTP_RESPONSE_MAX_CONNECTIONS: "9"
    })
    if (set._tag !== "ok") throw set.error
    expect(set.settings.connectionCaps).toEqual({ tcpResponse: 7, httpRpc: 8, httpResponse: 9 })
    const bad = fromRecord({ DYN_TCP_RESPONSE_MAX_CONNECTIONS: "0", DYN_HTTP_RPC_MAX_CONNECTIONS: "many", DYN_HTTP_RESPONSE_MAX_CONNECTIONS: "-1" })
    expect(bad._tag).toBe("error")
    if (bad._tag === "error") {
      expect(bad.error.problems.map((p) => p.variable).sort()).toEqual([
        "DYN_HTTP_RESPONSE_MAX_CONNECTIONS",
        "DYN_HTTP_RPC_MAX_CONNECTIONS",
        "DYN_TCP_RESPONSE_MAX_CONNECTIONS"
      ])
    }
  })
})
