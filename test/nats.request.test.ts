/**
 * The NATS request plane (PROTOCOL.md sections 2 and 4) on a real nats-server (started here, on a
 * free loopback port, stopped by pid).
 *
 * - Legacy mode end to end through the Endpoint API (`DYN_REQUEST_PLANE=nats`,
 *   `DYN_RESPONSE_PLANE=tcp`, one-shot and pooled call-home), with the record Dynamo reads.
 * - Worker side, driven by hand: a Dynamo-style request built here byte by byte and sent with a raw
 *   nats.js request is acked with an empty reply, then the worker calls home; rejections (at the
 *   cap, draining, a bad message) are non-empty replies in Dynamo's texts.
 * - Router side, against hand-written NATS workers: acks, rejections mapped to typed errors, the
 *   ack timeout, no responder (fast and typed), a payload above max_payload refused before sending.
 * - The connection: nats-server killed and restarted on the same port; requests fail typed while
 *   it is down and succeed again after, with log lines for both; nats-server unreachable at start.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import * as net from "node:net"
import { connect, headers as natsHeaders } from "@nats-io/transport-node"
import type { Msg, NatsConnection } from "@nats-io/transport-node"
import { Cause, Deferred, Effect, Exit, Fiber, Logger, Result, Scope, Stream } from "effect"
import fc from "fast-check"
import { Discovery } from "../src/Discovery.ts"
import * as Endpoint from "../src/Endpoint.ts"
import { makeLogger, parseSpec } from "../src/observability/Logging.ts"
import type { Admission, RequestMessage, RequestTarget } from "../src/RequestPlane.ts"
import * as NatsConnectionModule from "../src/transport/nats/NatsConnection.ts"
import * as NatsRequestClient from "../src/transport/nats/NatsRequestClient.ts"
import * as NatsRequestServer from "../src/transport/nats/NatsRequestServer.ts"
import * as NatsRequestTransport from "../src/transport/nats/NatsRequestTransport.ts"
import { defaults } from "../src/TransportConfig.ts"
import type { EndpointNotFound, TransportError } from "../src/TransportError.ts"
import * as TransportRegistry from "../src/registry/index.ts"
import { startNatsServer } from "./support/servers.ts"
import { configuredStack } from "./support/stack.ts"

const nats = await startNatsServer()
afterAll(() => nats.stop())

// ---- bytes by hand ----------------------------------------------------------------------------

/** A TwoPartCodec frame (section 1): u64 header_len, u64 body_len, u64 checksum 0, header, body. */
const twoPart = (header: Buffer, body: Buffer) => {
  const prefix = Buffer.alloc(24)
  prefix.writeBigUInt64BE(BigInt(header.length), 0)
  prefix.writeBigUInt64BE(BigInt(body.length), 8)
  return Buffer.concat([prefix, header, body])
}

/** A section 2 request message asking for a TCP call-home to `callHome`. */
const requestMessage = (id: string, payload: unknown, callHome = "127.0.0.1:9", subject: string = crypto.randomUUID()) =>
  twoPart(
    Buffer.from(
      JSON.stringify({
        id,
        request_type: "single_in",
        response_type: "many_out",
        connection_info: {
          transport: "tcp_server",
          info: JSON.stringify({ address: callHome, subject, context: id, stream_type: "response" })
        }
      })
    ),
    Buffer.from(JSON.stringify(payload))
  )

/** Decodes a section 2 message by hand: its control header and its JSON body. */
const readMessage = (payload: Uint8Array) => {
  const b = Buffer.from(payload)
  const h = Number(b.readBigUInt64BE(0))
  const n = Number(b.readBigUInt64BE(8))
  return {
    control: JSON.parse(b.subarray(24, 24 + h).toString("utf8")),
    body: JSON.parse(b.subarray(24 + h, 24 + h + n).toString("utf8"))
  }
}

/** Reads TwoPartCodec frames. */
const twoPartReader = (onFrame: (header: Buffer, body: Buffer) => void) => {
  let buf = Buffer.alloc(0)
  return (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk])
    while (buf.length >= 24) {
      const h = Number(buf.readBigUInt64BE(0))
      const b = Number(buf.readBigUInt64BE(8))
      if (buf.length < 24 + h + b) return
      onFrame(buf.subarray(24, 24 + h), buf.subarray(24 + h, 24 + h + b))
      buf = buf.subarray(24 + h + b)
    }
  }
}

/** Calls home by hand (section 3) and streams `items`. */
const callHome = (info: { address: string; subject: string }, items: ReadonlyArray<unknown>) => {
  const colon = info.address.lastIndexOf(":")
  const socket = net.connect({ host: info.address.slice(0, colon), port: Number(info.address.slice(colon + 1)), noDelay: true })
  socket.on("error", () => {})
  const header = (v: unknown) => twoPart(Buffer.from(JSON.stringify(v)), Buffer.alloc(0))
  const data = (v: unknown) => twoPart(Buffer.alloc(0), Buffer.from(JSON.stringify(v)))
  socket.write(
    Buffer.concat([
      header({ subject: info.subject, stream_type: "response" }),
      header({ error: null }),
      ...items.map((item) => data({ data: item, complete_final: false })),
      data({ complete_final: true }),
      header("sentinel")
    ])
  )
  socket.on("data", () => {})
}

/** Polls `check` every 5 ms until it holds, at most `ms`; fails with `what` otherwise. */
const until = (check: () => boolean, what: string, ms = 3000) =>
  Effect.promise(() =>
    new Promise<void>((resolve, reject) => {
      const deadline = Date.now() + ms
      const tick = () => {
        if (check()) return resolve()
        if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`))
        setTimeout(tick, 5)
      }
      tick()
    })
  )

const sleep = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))

// ---- a call-home listener (the router's side of section 3, by hand) ---------------------------

interface CallHome {
  readonly address: string
  /** Streams in order of arrival: each is the list of its frames' headers and bodies as text. */
  readonly streams: Array<Array<{ header: string; body: string }>>
}

const callHomeListener: Effect.Effect<CallHome, never, Scope.Scope> = Effect.acquireRelease(
  Effect.promise(() =>
    new Promise<CallHome & { server: net.Server; sockets: Set<net.Socket> }>((resolve) => {
      const streams: CallHome["streams"] = []
      const sockets = new Set<net.Socket>()
      const server = net.createServer((socket) => {
        sockets.add(socket)
        const frames: Array<{ header: string; body: string }> = []
        streams.push(frames)
        socket.on("error", () => {})
        socket.on(
          "data",
          twoPartReader((h, b) => {
            frames.push({ header: h.toString("utf8"), body: b.toString("utf8") })
            if (h.toString("utf8") === "\"sentinel\"") socket.end()
          })
        )
        socket.once("close", () => sockets.delete(socket))
      })
      server.listen(0, "127.0.0.1", () =>
        resolve({ address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, streams, server, sockets }))
    })
  ),
  ({ server, sockets }) =>
    Effect.sync(() => {
      for (const s of sockets) s.destroy()
      server.close()
    })
)

// ---- raw nats.js ------------------------------------------------------------------------------

/** A plain nats.js connection of the test's own (the "Dynamo" side), closed with the scope. */
const rawNats = (url: string = nats.url): Effect.Effect<NatsConnection, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(() => connect({ servers: url })),
    (nc) => Effect.promise(() => nc.close())
  )

/** A raw request; resolves with the reply's payload as text, or the error's message. */
const rawRequest = (nc: NatsConnection, subject: string, payload: Uint8Array, h?: Record<string, string>) =>
  Effect.promise(async () => {
    const hs = natsHeaders()
    for (const [k, v] of Object.entries(h ?? {})) hs.set(k, v)
    try {
      const reply = await nc.request(subject, payload, { timeout: 3000, ...(h === undefined ? {} : { headers: hs }) })
      return { ok: true as const, length: reply.data.length, text: reply.string() }
    } catch (e) {
      return { ok: false as const, length: -1, text: (e as Error).message }
    }
  })

// ---- stacks and helpers -----------------------------------------------------------------------

const natsEnv = (url: string = nats.url, extra: Record<string, string> = {}) => ({
  DYN_REQUEST_PLANE: "nats",
  DYN_RESPONSE_PLANE: "tcp",
  NATS_SERVER: url,
  DYN_CANCEL_GRACE_MS: "100",
  DYN_LOG: "warn",
  ...extra
})

const settings = (url: string, extra: Partial<typeof defaults> = {}) => ({ ...defaults, natsServer: url, ...extra })

const message = (id: string = crypto.randomUUID(), extra: Partial<RequestMessage> = {}): RequestMessage => ({
  control: {
    id,
    request_type: "single_in",
    response_type: "many_out",
    connection_info: { transport: "tcp_server", info: JSON.stringify({ address: "127.0.0.1:9", subject: crypto.randomUUID(), context: id, stream_type: "response" }) }
  },
  payload: { hello: "world" },
  headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "x-request-id": id },
  ...extra
})

type AckResult = TransportError | EndpointNotFound | undefined

/** `sendCallback` as a Promise of what `onAck` received. */
const sendAck = (client: NatsRequestClient.NatsRequestClient, target: RequestTarget, m: RequestMessage = message()) =>
  Effect.promise(() => new Promise<AckResult>((resolve) => void client.sendCallback(target, m, resolve)))

const describeAck = (r: AckResult) => (r === undefined ? "accepted" : `${r._tag}${"reason" in r ? ` ${r.reason}` : ""}`)

/** Connection, client and server of the NATS request plane on `url`, without a registry. */
const plane = (url: string = nats.url, extra: Partial<typeof defaults> = {}) => NatsRequestTransport.make(settings(url, extra))

/** A server with one endpoint ("ns.comp.ep", instance 0xabc) whose handler records requests. */
const serving = (admit?: Admission, url: string = nats.url) =>
  Effect.gen(function*() {
    const p = yield* plane(url)
    const handled: Array<RequestMessage> = []
    const transport = yield* p.server.register(
      { path: { namespace: "ns", component: "comp", endpoint: "ep" }, instanceId: 0xabcn },
      (m) => void handled.push(m),
      { admit }
    )
    return { ...p, handled, subject: (transport as { nats_tcp: string }).nats_tcp }
  })

// ---- legacy mode end to end -------------------------------------------------------------------

describe("NATS request plane: legacy mode end to end (nats + tcp call-home)", () => {
  for (const pooled of [false, true]) {
    it.live(`streams through the Endpoint API${pooled ? ", pooled call-home" : ""}; the record is Dynamo's {"nats_tcp": subject}`, () =>
      Effect.gen(function*() {
        const registry = yield* TransportRegistry.TransportRegistry
        expect(yield* registry.select("request")).toBe("nats")
        const served = yield* Endpoint.serveEmit("legacy.backend.generate", (req: { id: number; n: number }, ctx, emit: Endpoint.Emit<string>) =>
          Effect.sync(() => {
            for (let i = 0; i < req.n; i++) emit(`${req.id}:${i}:${ctx.headers["x-request-id"] === undefined ? "no-id" : "id"}`)
          }))
        const id = served.instance.instance_id
        expect(served.instance.transport).toEqual({ nats_tcp: `legacy_backend.generate-${id.toString(16)}` })
        const client = yield* Endpoint.client<{ id: number; n: number }, string>("legacy.backend.generate")
        for (let i = 0; i < 50; i++) {
          expect(yield* Stream.runCollect(client.generate({ id: i, n: 3 }))).toEqual([0, 1, 2].map((k) => `${i}:${k}:id`))
        }
        const many = yield* Effect.forEach(
          Array.from({ length: 300 }, (_, i) => i),
          (i) => Stream.runCollect(client.generate({ id: i, n: 10 })),
          { concurrency: "unbounded" }
        )
        many.forEach((items, i) => expect(items).toEqual(Array.from({ length: 10 }, (_, k) => `${i}:${k}:id`)))
      }).pipe(Effect.scoped, Effect.provide(configuredStack(natsEnv(nats.url, pooled ? { DYN_TCP_POOL_ENABLED: "true" } : {})))), 30_000)
  }

  it.live("an unknown endpoint fails EndpointNotFound, and a stale instance (nobody subscribed) too, naming the subject, at once", () =>
    Effect.gen(function*() {
      const worker = yield* Scope.fork(yield* Scope.Scope, "sequential")
      const served = yield* Endpoint.serveEmit("legacy.stale.gen", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) => Effect.sync(() => emit(1))).pipe(
        Scope.provide(worker)
      )
      const subject = (served.instance.transport as { nats_tcp: string }).nats_tcp
      const client = yield* Endpoint.client<unknown, number>("legacy.stale.gen")
      expect(yield* Stream.runCollect(client.generate({}))).toEqual([1])
      yield* Scope.close(worker, Exit.void)
      const p = yield* plane()
      const started = performance.now()
      const r = yield* sendAck(p.client, { address: subject, endpoint: "legacy.stale.gen" })
      expect(performance.now() - started).toBeLessThan(1000)
      expect(r).toMatchObject({ _tag: "EndpointNotFound", endpoint: "legacy.stale.gen", target: subject })
      expect(r!.message).toContain(`nobody serves the NATS subject ${subject}`)
    }).pipe(Effect.scoped, Effect.provide(configuredStack(natsEnv()))))
})

// ---- worker side, by hand ---------------------------------------------------------------------

describe("NATS request server (requests built by hand, sent with raw nats.js)", () => {
  it.live("a Dynamo-style request is acked with an empty reply, then the worker calls home with the headers' request id", () =>
    Effect.gen(function*() {
      const home = yield* callHomeListener
      const served = yield* Endpoint.serveEmit("dyn.hand.gen", (req: { n: number }, ctx, emit: Endpoint.Emit<string>) =>
        Effect.sync(() => {
          for (let i = 0; i < req.n; i++) emit(`${ctx.headers["x-request-id"]}:${ctx.headers.traceparent?.slice(0, 2)}:${i}`)
        }))
      const subject = `dyn_hand.gen-${served.instance.instance_id.toString(16)}`
      expect(served.instance.transport).toEqual({ nats_tcp: subject })
      const nc = yield* rawNats()
      const id = crypto.randomUUID()
      const callSubject = crypto.randomUUID()
      const reply = yield* rawRequest(nc, subject, requestMessage(id, { n: 3 }, home.address, callSubject), {
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "x-request-id": id
      })
      expect(reply).toEqual({ ok: true, length: 0, text: "" })
      yield* until(() => home.streams.length === 1 && home.streams[0]!.at(-1)?.header === "\"sentinel\"", "the call-home stream")
      expect(home.streams[0]).toEqual([
        { header: JSON.stringify({ subject: callSubject, stream_type: "response" }), body: "" },
        { header: JSON.stringify({ error: null }), body: "" },
        ...[0, 1, 2].map((i) => ({ header: "", body: JSON.stringify({ data: `${id}:00:${i}`, complete_final: false }) })),
        { header: "", body: JSON.stringify({ complete_final: true }) },
        { header: "\"sentinel\"", body: "" }
      ])
    }).pipe(Effect.scoped, Effect.provide(configuredStack(natsEnv()))))

  it.live("headers reach the handler (Dynamo's request-id as x-request-id too); a request without headers is served", () =>
    Effect.gen(function*() {
      const nc = yield* rawNats()
      const p = yield* plane()
      const handled: Array<RequestMessage> = []
      const transport = yield* p.server.register(
        { path: { namespace: "ns", component: "comp", endpoint: "order" }, instanceId: 0x1fn },
        (m) => void handled.push(m)
      )
      expect(transport).toEqual({ nats_tcp: "ns_comp.order-1f" })
      expect(NatsRequestServer.serviceGroup({ namespace: "ns", component: "comp" })).toBe("ns_comp")
      const acks = [
        yield* rawRequest(nc, "ns_comp.order-1f", requestMessage("r1", { i: 1 }), { "x-request-id": "abc", tracestate: "k=v", "X-Other": "dropped" }),
        yield* rawRequest(nc, "ns_comp.order-1f", requestMessage("r2", {}), { "request-id": "dyn-1" }),
        yield* rawRequest(nc, "ns_comp.order-1f", requestMessage("r3", {}))
      ]
      expect(acks.map((a) => a.length)).toEqual([0, 0, 0])
      yield* until(() => handled.length === 3, "three handled")
      expect(handled.map((m) => m.control.id)).toEqual(["r1", "r2", "r3"])
      expect(handled[0]!.payload).toEqual({ i: 1 })
      expect(handled[0]!.headers).toEqual({ "x-request-id": "abc", tracestate: "k=v" })
      expect(handled[1]!.headers).toEqual({ "x-request-id": "dyn-1" })
      expect(handled[2]!.headers).toEqual({})
    }).pipe(Effect.scoped))

  it.live("serveMessage acks (empty respond) before it calls the handler", () =>
    Effect.sync(() => {
      const events: Array<string> = []
      const msg = {
        subject: "s",
        sid: 1,
        reply: "r",
        data: requestMessage("x", { a: 1 }),
        headers: undefined,
        respond: (payload?: Uint8Array) => (events.push(`respond ${payload?.length}`), true),
        json: () => ({}),
        string: () => ""
      } as unknown as Msg
      expect(NatsRequestServer.serveMessage(msg, () => void events.push("handler"), undefined, 1 << 20)).toBeUndefined()
      expect(events).toEqual(["respond 0", "handler"])
    }))

  it.live("rejections are non-empty replies in Dynamo's texts: at the cap `Server overloaded:`, draining `Server unavailable:`, a bad message names the problem", () =>
    Effect.gen(function*() {
      let inFlight = 0
      let draining = false
      const admit: Admission = () =>
        draining
          ? { refuse: "unavailable", detail: "draining" }
          : inFlight >= 2
          ? { refuse: "overloaded", detail: `${inFlight} requests in flight (max 2)` }
          : undefined
      const s = yield* serving(admit)
      const onHandled = s.handled.push.bind(s.handled)
      s.handled.push = (...m: Array<RequestMessage>) => ((inFlight += m.length), onHandled(...m))
      const nc = yield* rawNats()
      const texts: Array<string> = []
      for (let i = 0; i < 4; i++) texts.push((yield* rawRequest(nc, s.subject, requestMessage(`r${i}`, {}))).text)
      expect(texts).toEqual(["", "", "Server overloaded: 2 requests in flight (max 2)", "Server overloaded: 2 requests in flight (max 2)"])
      draining = true
      expect((yield* rawRequest(nc, s.subject, requestMessage("r4", {}))).text).toBe("Server unavailable: draining")
      draining = false
      inFlight = 0
      const garbage = yield* rawRequest(nc, s.subject, Buffer.from("not a two-part frame"))
      expect(garbage.text).toMatch(/^Server unavailable: bad request message: /)
      const empty = yield* rawRequest(nc, s.subject, new Uint8Array(0))
      expect(empty.text).toMatch(/^Server unavailable: bad request message: /)
      const badJson = yield* rawRequest(nc, s.subject, twoPart(Buffer.from("{"), Buffer.from("{}")))
      expect(badJson.text).toMatch(/^Server unavailable: bad request message: .*not valid JSON/)
      expect(s.handled.length).toBe(2)
      // our router reads them typed
      const target = { address: s.subject, endpoint: "ns.comp.ep" }
      inFlight = 2
      expect(describeAck(yield* sendAck(s.client, target))).toBe("TransportConnectionError Overloaded")
      draining = true
      expect(describeAck(yield* sendAck(s.client, target))).toBe("TransportConnectionError ServerUnavailable")
    }).pipe(Effect.scoped))

  it.live("through the Endpoint API: with maxInFlight 1, a second concurrent request fails Overloaded (Dynamo's text), before any ack", () =>
    Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      const running = yield* Deferred.make<void>()
      yield* Endpoint.serveEmit("cap.one.gen", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) =>
        Effect.gen(function*() {
          emit(1)
          yield* Deferred.succeed(running, undefined)
          yield* Deferred.await(release)
        }), { maxInFlight: 1 })
      const client = yield* Endpoint.client<unknown, number>("cap.one.gen")
      const first = yield* Effect.forkChild(Stream.runCollect(client.generate({})))
      yield* Deferred.await(running).pipe(Effect.timeout(5000))
      const second = yield* Effect.exit(Stream.runCollect(client.generate({})))
      const error = Exit.isFailure(second) ? Cause.findError(second.cause) : undefined
      expect(error !== undefined && Result.isSuccess(error) ? error.success : second).toMatchObject({
        _tag: "TransportConnectionError",
        reason: "Overloaded",
        transport: "nats"
      })
      expect(String(error !== undefined && Result.isSuccess(error) ? error.success.message : "")).toContain("Server overloaded")
      yield* Deferred.succeed(release, undefined)
      expect(yield* Fiber.join(first).pipe(Effect.timeout(5000))).toEqual([1])
    }).pipe(Effect.scoped, Effect.provide(configuredStack(natsEnv()))))

  it("fast-check: any payload is answered exactly once, never throws; the handler runs only after an empty ack", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 200 }),
          fc.record({ id: fc.string(), n: fc.integer() }).map((v) => new Uint8Array(requestMessage(v.id, v)))
        ),
        (data) => {
          const answers: Array<number> = []
          let handled = 0
          const msg = {
            subject: "s",
            reply: "r",
            data,
            headers: undefined,
            respond: (payload?: Uint8Array) => (answers.push(payload?.length ?? 0), true)
          } as unknown as Msg
          const text = NatsRequestServer.serveMessage(msg, () => void handled++, undefined, 1 << 20)
          expect(answers.length).toBe(1)
          if (text === undefined) {
            expect(answers[0]).toBe(0)
            expect(handled).toBe(1)
          } else {
            expect(text).toMatch(/^Server unavailable: bad request message: /)
            expect(answers[0]).toBeGreaterThan(0)
            expect(handled).toBe(0)
          }
        }
      ),
      { numRuns: 500 }
    )
  })
})

// ---- router side, against hand-written workers -------------------------------------------------

describe("NATS request client (hand-written NATS workers)", () => {
  it.live("publishes the section 2 message with headers to the subject; an empty reply is the ack", () =>
    Effect.gen(function*() {
      const nc = yield* rawNats()
      const seen: Array<Msg> = []
      nc.subscribe("dyn_backend.generate-49bc31f2a0c3e5c3", { callback: (_e, m) => (seen.push(m), void m.respond(new Uint8Array(0))) })
      yield* Effect.promise(() => nc.flush())
      const p = yield* plane()
      const m = message("req-1")
      const r = yield* sendAck(p.client, { address: "dyn_backend.generate-49bc31f2a0c3e5c3", endpoint: "dyn.backend.generate" }, m)
      expect(describeAck(r)).toBe("accepted")
      expect(seen.length).toBe(1)
      expect(readMessage(seen[0]!.data)).toEqual({ control: m.control, body: { hello: "world" } })
      expect(seen[0]!.headers?.get("traceparent")).toBe(m.headers.traceparent)
      expect(seen[0]!.headers?.get("x-request-id")).toBe("req-1")
      expect(p.client.pendingCount()).toBe(0)
    }).pipe(Effect.scoped))

  it.live("our router drives a Dynamo-style NATS worker end to end: it acks empty, calls home by hand, and the stream arrives", () =>
    Effect.gen(function*() {
      const nc = yield* rawNats()
      const subject = "dyn_fake.generate-49bc31f2a0c3e5c3"
      const got: Array<{ control: any; body: any; requestId: string }> = []
      nc.subscribe(subject, {
        callback: (_e, m) => {
          const { control, body } = readMessage(m.data)
          got.push({ control, body, requestId: m.headers?.get("x-request-id") ?? "" })
          m.respond(new Uint8Array(0))
          const info = JSON.parse(control.connection_info.info)
          callHome(info, Array.from({ length: body.n }, (_, i) => `dyn:${i}`))
        }
      })
      yield* Effect.promise(() => nc.flush())
      const discovery = yield* Discovery
      yield* discovery.register({
        type: "Endpoint",
        namespace: "dyn",
        component: "fake",
        endpoint: "generate",
        instance_id: 0x49bc31f2a0c3e5c3n,
        transport: { nats_tcp: subject }
      })
      const client = yield* Endpoint.client<{ n: number }, string>("dyn.fake.generate")
      expect(yield* Stream.runCollect(client.generate({ n: 3 }))).toEqual(["dyn:0", "dyn:1", "dyn:2"])
      expect(got.length).toBe(1)
      expect(got[0]!.control).toMatchObject({ request_type: "single_in", response_type: "many_out", connection_info: { transport: "tcp_server" } })
      expect(JSON.parse(got[0]!.control.connection_info.info)).toMatchObject({ stream_type: "response", context: got[0]!.control.id })
      expect(got[0]!.requestId).toBe(got[0]!.control.id)
    }).pipe(Effect.scoped, Effect.provide(configuredStack(natsEnv()))))

  it.live("maps rejection replies to typed errors: Overloaded, ServerUnavailable, EndpointNotFound, BadPayload, Refused", () =>
    Effect.gen(function*() {
      const nc = yield* rawNats()
      const texts: Record<string, string> = {
        over: "Server overloaded: worker at capacity",
        unav: "Server unavailable: draining",
        unknown: "Unknown endpoint: x/y",
        bad: "Server unavailable: bad request message: nope",
        other: "something else"
      }
      for (const [k, text] of Object.entries(texts)) {
        nc.subscribe(`rej.${k}`, { callback: (_e, m) => void m.respond(new TextEncoder().encode(text)) })
      }
      yield* Effect.promise(() => nc.flush())
      const p = yield* plane()
      const results: Record<string, string> = {}
      for (const k of Object.keys(texts)) {
        const r = yield* sendAck(p.client, { address: `rej.${k}`, endpoint: "rej.x.y" })
        results[k] = describeAck(r)
        expect(r?.message).toContain(texts[k])
      }
      expect(results).toEqual({
        over: "TransportConnectionError Overloaded",
        unav: "TransportConnectionError ServerUnavailable",
        unknown: "EndpointNotFound",
        bad: "TransportProtocolError BadPayload",
        other: "TransportConnectionError Refused"
      })
    }).pipe(Effect.scoped))

  it("fast-check: every non-empty reply text maps to exactly one typed error, by Dynamo's prefixes", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ minLength: 1 }),
          fc.string().map((t) => `Server overloaded: ${t}`),
          fc.string().map((t) => `Server unavailable: ${t}`)
        ),
        (text) => {
          const e = NatsRequestClient.rejectionError(text, "a_b.c-1", "a.b.c")
          expect(e.message).toContain(text)
          const kind = e._tag === "EndpointNotFound" ? "EndpointNotFound" : `${e._tag} ${e.reason}`
          if (text.startsWith("Server overloaded")) expect(kind).toBe("TransportConnectionError Overloaded")
          else if (/unknown endpoint/i.test(text)) expect(kind).toBe("EndpointNotFound")
          else if (/bad request message/i.test(text)) expect(kind).toBe("TransportProtocolError BadPayload")
          else if (text.startsWith("Server unavailable")) expect(kind).toBe("TransportConnectionError ServerUnavailable")
          else expect(kind).toBe("TransportConnectionError Refused")
        }
      ),
      { numRuns: 500 }
    )
  })

  it.live("no responder fails fast (well under 1 s, the ack timeout is 5 s) with EndpointNotFound naming the subject", () =>
    Effect.gen(function*() {
      const p = yield* plane()
      for (let i = 0; i < 3; i++) {
        const started = performance.now()
        const r = yield* sendAck(p.client, { address: "nobody_here.gen-1", endpoint: "nobody.here.gen" })
        expect(performance.now() - started).toBeLessThan(1000)
        expect(r).toMatchObject({ _tag: "EndpointNotFound", endpoint: "nobody.here.gen", target: "nobody_here.gen-1" })
        expect(r!.message).toContain("no responders")
      }
      // The Effect form says the same.
      const exit = yield* Effect.exit(p.client.send({ address: "nobody_here.gen-2", endpoint: "nobody.here.gen" }, message()))
      expect(Exit.isFailure(exit) && JSON.stringify(exit.cause)).toContain("EndpointNotFound")
    }).pipe(Effect.scoped))

  it.live("a worker that never replies fails AckTimeout after DYN_NATS_REQUEST_TIMEOUT; its late reply is dropped", () =>
    Effect.gen(function*() {
      const nc = yield* rawNats()
      const held: Array<Msg> = []
      nc.subscribe("slow.worker", { callback: (_e, m) => void held.push(m) })
      yield* Effect.promise(() => nc.flush())
      const p = yield* plane(nats.url, { natsRequestTimeoutMs: 300 })
      const started = performance.now()
      const r = yield* sendAck(p.client, { address: "slow.worker", endpoint: "slow.x.y" })
      const took = performance.now() - started
      expect(describeAck(r)).toBe("TransportTimeoutError AckTimeout")
      expect(took).toBeGreaterThanOrEqual(290)
      expect(took).toBeLessThan(1500)
      held[0]!.respond(new Uint8Array(0))
      yield* sleep(50)
      expect(p.client.pendingCount()).toBe(0)
      // and a cancelled request leaves nothing behind
      const cancel = p.client.sendCallback({ address: "slow.worker", endpoint: "slow.x.y" }, message(), () => {
        throw new Error("cancelled: must not be called")
      })
      yield* until(() => held.length === 2, "the second request")
      cancel()
      expect(p.client.pendingCount()).toBe(0)
      held[1]!.respond(new Uint8Array(0))
      yield* sleep(350)
    }).pipe(Effect.scoped))

  it.live("refuses a payload above nats-server's max_payload before sending (MessageTooLarge); below it goes through", () =>
    Effect.gen(function*() {
      const small = yield* Effect.acquireRelease(
        Effect.promise(() => startNatsServer({ maxPayload: 2048 })),
        (s) => Effect.promise(() => s.stop())
      )
      const nc = yield* rawNats(small.url)
      const seen: Array<number> = []
      nc.subscribe("big.worker", { callback: (_e, m) => (seen.push(m.data.length), void m.respond(new Uint8Array(0))) })
      yield* Effect.promise(() => nc.flush())
      const p = yield* plane(small.url)
      const target = { address: "big.worker", endpoint: "big.x.y" }
      expect(describeAck(yield* sendAck(p.client, target, message("ok", { payload: "x".repeat(1000) })))).toBe("accepted")
      const r = yield* sendAck(p.client, target, message("big", { payload: "x".repeat(4000) }))
      expect(describeAck(r)).toBe("TransportProtocolError MessageTooLarge")
      expect(r!.message).toContain("max_payload of 2048 bytes")
      // just under max_payload, with the headers on top: refused too, typed
      const body = 2048 - 300
      const near = yield* sendAck(p.client, target, message("near", { payload: "x".repeat(body), headers: { "x-request-id": "y".repeat(400) } }))
      expect(describeAck(near)).toBe("TransportProtocolError MessageTooLarge")
      yield* sleep(100)
      expect(seen.length).toBe(1) // nothing above the limit reached the worker
      expect(p.client.pendingCount()).toBe(0)
    }).pipe(Effect.scoped))

  it.live("nats-server unreachable: sends and register fail fast, typed ConnectFailed naming the servers", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(() =>
        new Promise<number>((resolve) => {
          const s = net.createServer().listen(0, "127.0.0.1", () => {
            const p = (s.address() as net.AddressInfo).port
            s.close(() => resolve(p))
          })
        })
      )
      const url = `nats://127.0.0.1:${port}`
      const p = yield* plane(url)
      const started = performance.now()
      const r = yield* sendAck(p.client, { address: "a.b", endpoint: "a.b.c" })
      expect(performance.now() - started).toBeLessThan(2000)
      expect(r).toMatchObject({ _tag: "TransportConnectionError", reason: "ConnectFailed", target: url })
      const reg = yield* Effect.exit(p.server.register({ path: { namespace: "a", component: "b", endpoint: "c" }, instanceId: 1n }, () => {}))
      expect(Exit.isFailure(reg) && JSON.stringify(reg.cause)).toContain("ConnectFailed")
    }).pipe(Effect.scoped))
})

// ---- the connection: nats-server restarted ----------------------------------------------------

describe("NATS connection: nats-server killed and restarted", () => {
  it.live("requests fail typed while nats-server is down, then succeed again once it is back on the same port (worker resubscribed)", () => {
    const lines: Array<string> = []
    return Effect.gen(function*() {
      const own = yield* Effect.acquireRelease(Effect.promise(() => startNatsServer()), (s) => Effect.promise(() => s.stop()))
      const stack = configuredStack(natsEnv(own.url, { DYN_LOG: "info" }))
      yield* Effect.gen(function*() {
        yield* Endpoint.serveEmit("restart.me.gen", (req: { n: number }, _ctx, emit: Endpoint.Emit<number>) =>
          Effect.sync(() => {
            for (let i = 0; i < req.n; i++) emit(i)
          }))
        const client = yield* Endpoint.client<{ n: number }, number>("restart.me.gen")
        expect(yield* Stream.runCollect(client.generate({ n: 3 }))).toEqual([0, 1, 2])

        const oldPid = own.pid()
        yield* Effect.promise(() => own.kill())
        // While it is down: typed failures, fast (no waiting for the 5 s ack timeout).
        yield* until(() => lines.some((l) => l.includes("disconnected from nats-server")), "the disconnect log line")
        const started = performance.now()
        const down = yield* Effect.exit(Stream.runCollect(client.generate({ n: 3 })))
        expect(performance.now() - started).toBeLessThan(1000)
        const error = Exit.isFailure(down) ? Cause.findError(down.cause) : undefined
        const failure = error !== undefined && Result.isSuccess(error) ? error.success : down
        expect(failure).toMatchObject({ _tag: "TransportConnectionError", transport: "nats" })
        expect(["ConnectFailed", "ConnectionClosed"]).toContain((failure as { reason?: string }).reason)

        yield* Effect.promise(() => own.restart())
        expect(own.pid()).not.toBe(oldPid)
        const back = performance.now()
        let ok: ReadonlyArray<number> | undefined
        while (ok === undefined && performance.now() - back < 10_000) {
          const exit = yield* Effect.exit(Stream.runCollect(client.generate({ n: 4 })))
          if (Exit.isSuccess(exit)) ok = exit.value
          else yield* sleep(50)
        }
        expect(ok).toEqual([0, 1, 2, 3])
        const recovered = performance.now() - back
        expect(recovered).toBeLessThan(5000)
        console.log(`nats-server restart: requests succeed again ${recovered.toFixed(0)} ms after it is back`)
        expect(lines.some((l) => l.includes("reconnected to nats-server"))).toBe(true)
        // and it stays good
        for (let i = 0; i < 20; i++) expect(yield* Stream.runCollect(client.generate({ n: 2 }))).toEqual([0, 1])
      }).pipe(Effect.scoped, Effect.provide(stack))
    }).pipe(Effect.scoped, Effect.provide(Logger.layer([makeLogger(parseSpec("info"), (l) => lines.push(l))])))
  }, 30_000)

  it.live("worker and router on separate connections: after a restart, the worker's subscription is back and acks resume", () =>
    Effect.gen(function*() {
      const own = yield* Effect.acquireRelease(Effect.promise(() => startNatsServer()), (s) => Effect.promise(() => s.stop()))
      const worker = yield* serving(undefined, own.url)
      const router = yield* plane(own.url)
      const target = { address: worker.subject, endpoint: "ns.comp.ep" }
      expect(describeAck(yield* sendAck(router.client, target))).toBe("accepted")
      yield* Effect.promise(() => own.kill())
      yield* until(() => worker.connection.state() === "reconnecting" && router.connection.state() === "reconnecting", "both reconnecting")
      const down = yield* sendAck(router.client, target)
      expect(describeAck(down)).toBe("TransportConnectionError ConnectFailed")
      yield* Effect.promise(() => own.restart())
      const back = performance.now()
      let last: AckResult | "none" = "none"
      while (last !== undefined && performance.now() - back < 10_000) {
        last = yield* sendAck(router.client, target)
        if (last !== undefined) yield* sleep(25)
      }
      expect(describeAck(last === "none" ? undefined : last)).toBe("accepted")
      expect(worker.connection.state()).toBe("connected")
      expect(worker.handled.length).toBeGreaterThanOrEqual(2)
    }).pipe(Effect.scoped), 20_000)

  it.live("the connection is opened on first use and closed with its scope", () =>
    Effect.gen(function*() {
      const handle = yield* Effect.scoped(
        Effect.gen(function*() {
          const h = yield* NatsConnectionModule.make({ servers: nats.url, connectTimeoutMs: 2000 })
          expect(h.state()).toBe("idle")
          const nc = yield* h.connect
          expect(h.state()).toBe("connected")
          expect(h.current()).toBe(nc)
          expect(nc.info?.max_payload).toBeGreaterThan(0)
          expect(yield* h.connect).toBe(nc) // one connection
          return { h, nc }
        })
      )
      expect(handle.h.state()).toBe("closed")
      expect(handle.nc.isClosed()).toBe(true)
      const again = yield* Effect.exit(handle.h.connect)
      expect(Exit.isFailure(again) && JSON.stringify(again.cause)).toContain("ConnectFailed")
    }))
})

