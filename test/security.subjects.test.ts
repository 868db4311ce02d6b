/**
 * Response subjects are unguessable and single-use (issue 15 item 7, docs/security.md "Subjects"),
 * over real loopback sockets, on each response plane that takes a subject from a peer:
 * - TCP one-shot call-home: a handshake naming an unknown subject, a subject already served (or
 *   being served), or one that does not match exactly (case, stream_type, a mux handshake on a
 *   one-shot server) is refused and its socket closed with nothing written; the refusal does not
 *   use the real subject up.
 * - TCP pooled call-home (response mux v1): a handshake for another frontend_server_id closes the
 *   socket; a Prologue for an unknown, finished or live-elsewhere stream id is answered with a
 *   Reset of that stream, while the connection keeps carrying its other streams.
 * - HTTP: the seed's response server answers a GET for an unknown, mismatched or used subject with
 *   404 / 409 and closes the HTTP/1.1 connection; in the pure HTTP mode a request whose id already
 *   has a kept response stream is refused with 409 (it would have taken the other's stream).
 */
import { describe, expect, it } from "@effect/vitest"
import * as http2 from "node:http2"
import * as net from "node:net"
import { Effect } from "effect"
import { encodeMuxFrame, makeMuxDecoder, MuxKind, streamIdFromUuid, uuidFromStreamId } from "../src/protocol/MuxCodec.ts"
import { encodeMuxHandshake } from "../src/protocol/MuxHandshake.ts"
import { json as jsonCodec } from "../src/protocol/PayloadCodec.ts"
import { encodeRequestMessage, encodeStreamComplete, encodeStreamItem } from "../src/protocol/RequestMessage.ts"
import { encodeFrame, encodeHeaderOnlyJson } from "../src/protocol/TwoPartCodec.ts"
import type { RequestMessage } from "../src/RequestPlane.ts"
import type { ResponseSink } from "../src/ResponsePlane.ts"
import { HTTP_INLINE, inlineInfo } from "../src/transport/http/HttpInlineHub.ts"
import type { HttpInlineHubShape } from "../src/transport/http/HttpInlineHub.ts"
import * as HttpRequestServer from "../src/transport/http/HttpRequestServer.ts"
import * as HttpResponseServer from "../src/transport/http/HttpResponseServer.ts"
import * as CallHomeServer from "../src/transport/tcp/router/CallHomeServer.ts"
import { EntryTable } from "../src/internal/EntryTable.ts"

const MAX = 32 * 1024 * 1024
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const utf8 = (s: string) => new TextEncoder().encode(s)

// ---- raw peers --------------------------------------------------------------------------------

interface RawPeer {
  readonly socket: net.Socket
  readonly bytes: () => Buffer
  readonly closed: Promise<void>
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
      let closedNow = false
      socket.on("data", (c: Buffer) => chunks.push(Buffer.from(c)))
      socket.on("error", () => {})
      const closed = new Promise<void>((r) => socket.once("close", () => {
        closedNow = true
        r()
      }))
      resolve({ socket, bytes: () => Buffer.concat(chunks), closed, isClosed: () => closedNow })
    })
  })

/** Polls until `f()` holds, at most `ms`; returns whether it held. */
const eventually = (f: () => boolean, ms = 2000) =>
  Effect.promise(async () => {
    const deadline = Date.now() + ms
    while (!f() && Date.now() < deadline) await sleep(5)
    return f()
  })

/** Resolves true when the peer's socket closed within `ms`. */
const closesWithin = (peer: RawPeer, ms = 2000) => eventually(() => peer.isClosed(), ms)

const recordingSink = () => {
  const events: Array<string> = []
  const items: Array<unknown> = []
  let resolveDone: () => void = () => {}
  const done = new Promise<void>((resolve) => (resolveDone = resolve))
  const sink: ResponseSink = {
    onStart: () => events.push("start"),
    onItems: (batch) => items.push(...batch),
    onEnd: () => {
      events.push("end")
      resolveDone()
    },
    onError: (e) => {
      events.push(`error:${e._tag}`)
      resolveDone()
    }
  }
  return { sink, events, items, done }
}

const handshake = (subject: string, streamType = "response") => encodeHeaderOnlyJson({ subject, stream_type: streamType })
const prologueOk = () => encodeHeaderOnlyJson({ error: null })
const item = (data: unknown) => encodeFrame(undefined, encodeStreamItem(jsonCodec, data))
const complete = () => encodeFrame(undefined, encodeStreamComplete(jsonCodec))
const sentinel = () => encodeHeaderOnlyJson("sentinel")

// ---- TCP one-shot -----------------------------------------------------------------------------

describe("subjects on the TCP one-shot call-home plane", () => {
  it.live("subjects are fresh uuid v4s (122 random bits), never repeated", () =>
    Effect.gen(function*() {
      const server = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 5000, maxMessageSize: MAX })
      const subjects = new Set<string>()
      for (let i = 0; i < 500; i++) {
        const p = yield* server.open({ requestId: `r${i}`, endpoint: "ns.c.e", codec: "json", sink: recordingSink().sink })
        const subject = (JSON.parse(p.connectionInfo.info) as { subject: string }).subject
        expect(subject).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
        subjects.add(subject)
        p.close()
      }
      expect(subjects.size).toBe(500)
    }))

  it.live("unknown, reused and mismatched subjects are refused, their sockets closed with nothing written; real streams are unharmed", () =>
    Effect.gen(function*() {
      const server = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 10_000, maxMessageSize: MAX })
      const open = (requestId: string) =>
        Effect.map(
          Effect.sync(recordingSink),
          (rec) => rec
        ).pipe(Effect.flatMap((rec) =>
          Effect.map(server.open({ requestId, endpoint: "ns.c.e", codec: "json", sink: rec.sink }), (pending) => ({
            rec,
            pending,
            info: JSON.parse(pending.connectionInfo.info) as { address: string; subject: string }
          }))
        ))
      const done = yield* open("done")
      const live = yield* open("live")
      const waiting = yield* open("waiting")
      const address = done.info.address

      // A stream served to completion: its subject is used up.
      const w1 = yield* Effect.promise(() => rawConnect(address))
      w1.socket.write(Buffer.concat([handshake(done.info.subject), prologueOk(), item(1), complete(), sentinel()]))
      yield* Effect.promise(() => done.rec.done)
      expect(done.rec.items).toEqual([1])
      // A stream being served right now.
      const w2 = yield* Effect.promise(() => rawConnect(address))
      w2.socket.write(Buffer.concat([handshake(live.info.subject), prologueOk(), item("a")]))
      expect(yield* eventually(() => live.rec.items.length === 1)).toBe(true)

      const attempts: Record<string, Uint8Array> = {
        unknown: handshake(crypto.randomUUID()),
        "reused after completion": handshake(done.info.subject),
        "reused while live": handshake(live.info.subject),
        "mismatched case": handshake(waiting.info.subject.toUpperCase()),
        "mismatched stream_type": handshake(waiting.info.subject, "request"),
        "with a prefix": handshake(` ${waiting.info.subject}`),
        "a mux handshake on a one-shot server": encodeMuxHandshake(crypto.randomUUID(), crypto.randomUUID())
      }
      for (const [what, bytes] of Object.entries(attempts)) {
        const peer = yield* Effect.promise(() => rawConnect(address))
        peer.socket.write(bytes)
        expect([what, yield* closesWithin(peer)]).toEqual([what, true])
        expect([what, peer.bytes().length]).toEqual([what, 0])
      }

      // None of the refusals used the waiting subject up, or touched the live stream.
      const w3 = yield* Effect.promise(() => rawConnect(address))
      w3.socket.write(Buffer.concat([handshake(waiting.info.subject), prologueOk(), item("w"), complete(), sentinel()]))
      yield* Effect.promise(() => waiting.rec.done)
      expect([waiting.rec.events, waiting.rec.items]).toEqual([["start", "end"], ["w"]])
      w2.socket.write(Buffer.concat([item("b"), complete(), sentinel()]))
      yield* Effect.promise(() => live.rec.done)
      expect([live.rec.events, live.rec.items]).toEqual([["start", "end"], ["a", "b"]])
      for (const p of [done, live, waiting]) p.pending.close()
    }))
})

// ---- TCP pooled (response mux v1) -------------------------------------------------------------

/** The mux frames a peer received, after the 32-byte ConnectionAck(0). */
const muxFramesOf = (peer: RawPeer) => {
  const out: Array<{ kind: number; id: string; payload: string }> = []
  const bytes = peer.bytes()
  makeMuxDecoder({ maxMessageSize: MAX }).decode(bytes.subarray(32), (kind, id, payload) =>
    out.push({ kind, id: uuidFromStreamId(id), payload: new TextDecoder().decode(payload) }))
  return out
}

const resetsFor = (peer: RawPeer, streamId: string) => muxFramesOf(peer).filter((f) => f.kind === MuxKind.Reset && f.id === streamId)

describe("subjects on the TCP pooled call-home plane", () => {
  it.live("a stale frontend id closes the socket; unknown, finished and live-elsewhere stream ids get a Reset; the connection carries on", () =>
    Effect.gen(function*() {
      const frontend = crypto.randomUUID()
      const server = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 10_000, maxMessageSize: MAX, mux: true, frontendServerId: frontend })
      const open = (requestId: string) =>
        Effect.gen(function*() {
          const rec = recordingSink()
          const pending = yield* server.open({ requestId, endpoint: "ns.c.e", codec: "json", sink: rec.sink })
          const info = JSON.parse(pending.connectionInfo.info) as { address: string; stream_id: string; frontend_server_id: string }
          expect(info.frontend_server_id).toBe(frontend)
          return { rec, pending, info, id: streamIdFromUuid(info.stream_id)! }
        })
      const a = yield* open("a")
      const b = yield* open("b")
      const address = a.info.address
      const data = (v: unknown) => encodeStreamItem(jsonCodec, v)

      // Another router's frontend id: refused, socket closed, nothing written.
      const stale = yield* Effect.promise(() => rawConnect(address))
      stale.socket.write(encodeMuxHandshake(crypto.randomUUID(), crypto.randomUUID()))
      expect(yield* closesWithin(stale)).toBe(true)
      expect(stale.bytes().length).toBe(0)

      const c1 = yield* Effect.promise(() => rawConnect(address))
      c1.socket.write(encodeMuxHandshake(frontend, "c1"))
      const c2 = yield* Effect.promise(() => rawConnect(address))
      c2.socket.write(encodeMuxHandshake(frontend, "c2"))
      expect(yield* eventually(() => c1.bytes().length >= 32 && c2.bytes().length >= 32)).toBe(true)

      // Unknown stream id: a Reset for it.
      const unknown = crypto.randomUUID()
      c1.socket.write(encodeMuxFrame(MuxKind.Prologue, streamIdFromUuid(unknown)!, utf8(`{"error":null}`)))
      expect(yield* eventually(() => resetsFor(c1, unknown).length === 1)).toBe(true)

      // Stream A, served to completion on c1; its id is then refused on c1 and on c2.
      c1.socket.write(Buffer.concat([
        encodeMuxFrame(MuxKind.Prologue, a.id, utf8(`{"error":null}`)),
        encodeMuxFrame(MuxKind.Data, a.id, data(1)),
        encodeMuxFrame(MuxKind.End, a.id)
      ]))
      yield* Effect.promise(() => a.rec.done)
      expect([a.rec.events, a.rec.items]).toEqual([["start", "end"], [1]])
      c1.socket.write(encodeMuxFrame(MuxKind.Prologue, a.id, utf8(`{"error":null}`)))
      c2.socket.write(encodeMuxFrame(MuxKind.Prologue, a.id, utf8(`{"error":null}`)))
      expect(yield* eventually(() => resetsFor(c1, a.info.stream_id).length === 1 && resetsFor(c2, a.info.stream_id).length === 1)).toBe(true)

      // Stream B, live on c1: a Prologue for it on c2 is refused, and B goes on on c1.
      c1.socket.write(Buffer.concat([encodeMuxFrame(MuxKind.Prologue, b.id, utf8(`{"error":null}`)), encodeMuxFrame(MuxKind.Data, b.id, data("x"))]))
      expect(yield* eventually(() => b.rec.items.length === 1)).toBe(true)
      c2.socket.write(Buffer.concat([encodeMuxFrame(MuxKind.Prologue, b.id, utf8(`{"error":null}`)), encodeMuxFrame(MuxKind.Data, b.id, data("forged"))]))
      expect(yield* eventually(() => resetsFor(c2, b.info.stream_id).length === 1)).toBe(true)
      // A one-shot call-home naming a used or live stream id: refused and closed.
      for (const id of [a.info.stream_id, b.info.stream_id]) {
        const oneShot = yield* Effect.promise(() => rawConnect(address))
        oneShot.socket.write(handshake(id))
        expect(yield* closesWithin(oneShot)).toBe(true)
        expect(oneShot.bytes().length).toBe(0)
      }
      c1.socket.write(Buffer.concat([encodeMuxFrame(MuxKind.Data, b.id, data("y")), encodeMuxFrame(MuxKind.End, b.id)]))
      yield* Effect.promise(() => b.rec.done)
      expect([b.rec.events, b.rec.items]).toEqual([["start", "end"], ["x", "y"]])
      // Both connections are still open: a refused stream is not a reason to drop the others.
      expect(c1.isClosed() || c2.isClosed()).toBe(false)
      c1.socket.destroy()
      c2.socket.destroy()
      a.pending.close()
      b.pending.close()
    }))
})

// ---- HTTP -------------------------------------------------------------------------------------

/** One HTTP/1.1 request on a raw socket: the response text, and whether the server closed the socket after it. */
const rawGet = (host: string, port: number, path: string) =>
  Effect.promise(async () => {
    const peer = await rawConnect(`${host}:${port}`)
    peer.socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nAccept: application/x-ndjson\r\n\r\n`)
    const deadline = Date.now() + 2000
    while (!peer.isClosed() && Date.now() < deadline) await sleep(5)
    const text = peer.bytes().toString("latin1")
    const closed = peer.isClosed()
    peer.socket.destroy()
    return { status: Number(text.slice(9, 12)), closed, text }
  })

describe("subjects on the HTTP response planes", () => {
  it.live("the response server: subjects are 128 random bits; unknown, mismatched and used subjects get 404/409 and a closed connection", () =>
    Effect.gen(function*() {
      const s = yield* HttpResponseServer.make({ host: "127.0.0.1", port: 0, rootPath: "/v1/rpc/response", streamFormat: "ndjson", timeoutMs: 10_000 })
      const subjects = new Set<string>()
      for (let i = 0; i < 200; i++) {
        const created = yield* s.createResponseStream({ timeoutMs: 60_000 })
        expect(created.subject).toMatch(/^[0-9a-f]{32}$/)
        subjects.add(created.subject)
      }
      expect(subjects.size).toBe(200)
      const { address, subject, writer } = yield* s.createResponseStream()
      const url = new URL(address.url)
      const port = Number(url.port)
      const root = url.pathname.slice(0, url.pathname.lastIndexOf("/"))

      for (const [what, path, expected] of [
        ["unknown", `${root}/${"0".repeat(32)}`, 404],
        ["mismatched case", `${root}/${subject.toUpperCase()}`, 404],
        ["mismatched: truncated", `${root}/${subject.slice(0, 31)}`, 404],
        ["mismatched: a suffix", `${root}/${subject}x`, 404]
      ] as const) {
        const r = yield* rawGet("127.0.0.1", port, path)
        expect([what, r.status, r.closed]).toEqual([what, expected, true])
      }
      // The real subject is still there: it streams, then is used up.
      writer.send(1)
      writer.complete()
      const first = yield* rawGet("127.0.0.1", port, url.pathname)
      expect(first.status).toBe(200)
      expect(first.text).toContain(`{"data":1}`)
      const again = yield* rawGet("127.0.0.1", port, url.pathname)
      expect([again.status, again.closed]).toEqual([409, true])

      // Over h2c the refused stream ends with its status; the session stays usable.
      const session = http2.connect(`http://127.0.0.1:${port}`)
      session.on("error", () => {})
      const h2status = (path: string) =>
        Effect.promise(() =>
          new Promise<number>((resolve, reject) => {
            const req = session.request({ ":path": path, accept: "application/x-ndjson" })
            req.on("response", (h) => resolve(Number(h[":status"])))
            req.on("error", reject)
            req.resume()
            req.end()
          })
        )
      expect(yield* h2status(`${root}/${"f".repeat(32)}`)).toBe(404)
      expect(yield* h2status(url.pathname)).toBe(409)
      expect(session.closed || session.destroyed).toBe(false)
      session.close()
    }))

  it.live("the pure HTTP mode: a request whose id already has a kept response stream is refused with 409; the first keeps its own", () =>
    Effect.gen(function*() {
      const hub: HttpInlineHubShape = { pending: new EntryTable(), exchanges: new EntryTable() }
      const server = yield* HttpRequestServer.make({
        host: "127.0.0.1",
        port: 0,
        rootPath: "/v1/rpc",
        maxMessageSize: MAX,
        inline: { hub, fallbackFormat: "ndjson" }
      })
      const served: Array<RequestMessage> = []
      const transport = yield* server.register(
        { path: { namespace: "ns", component: "c", endpoint: "e" }, instanceId: 7n },
        (message) => void served.push(message)
      )
      const url = new URL((transport as { http: string }).http)
      const session = http2.connect(url.origin)
      session.on("error", () => {})
      /** POSTs a pure-HTTP request message; resolves with the status, or "kept" if no answer came within 500 ms. */
      const post = (id: string, payload: unknown) =>
        Effect.promise(() =>
          new Promise<number | "kept">((resolve, reject) => {
            const body = encodeRequestMessage({
              id,
              request_type: "single_in",
              response_type: "many_out",
              connection_info: { transport: HTTP_INLINE, info: inlineInfo("ndjson") }
            }, payload)
            const req = session.request({ ":method": "POST", ":path": url.pathname, "content-type": "application/octet-stream" })
            const timer = setTimeout(() => resolve("kept"), 500)
            req.on("response", (h) => {
              clearTimeout(timer)
              resolve(Number(h[":status"]))
            })
            req.on("error", reject)
            req.resume()
            req.end(body)
          })
        )
      expect(yield* post("same-id", "first")).toBe("kept")
      const kept = hub.exchanges.get("same-id")
      expect(kept).toBeDefined()
      expect(yield* post("same-id", "second")).toBe(409)
      expect(hub.exchanges.get("same-id")).toBe(kept)
      expect(served.map((m) => m.payload)).toEqual(["first"])
      // Another id is kept as usual.
      expect(yield* post("other-id", "third")).toBe("kept")
      expect(served.map((m) => m.payload)).toEqual(["first", "third"])
      session.destroy()
    }))
})
