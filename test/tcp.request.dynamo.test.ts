/**
 * The TCP request plane in Dynamo's framing (PROTOCOL.md section 8), over real loopback sockets.
 *
 * Worker side: requests written by hand in this file (bytes built with Buffer, never the
 * project's encoders) to our `TcpRequestServer`, read back by hand: the empty ack and the TCP
 * call-home stream it triggers, acks in request order, every rejection text, garbage and oversized
 * frames, the connection cap and the idle timeout.
 *
 * Router side: our `DynamoRequestClient` against hand-written workers (plain `net.Server`s in this
 * file): a Dynamo-only worker that acks and calls home (the fallback a router takes with a worker
 * that speaks only Dynamo's framing), one that never acks (ack timeout, late acks), one that dies
 * (in-flight acks fail typed), one that comes back (reconnect after backoff), and pool growth.
 */
import { describe, expect, it } from "@effect/vitest"
import * as net from "node:net"
import { Effect, Layer, Logger, Scope, Stream } from "effect"
import { Discovery } from "../src/Discovery.ts"
import * as Endpoint from "../src/Endpoint.ts"
import type { Instance } from "../src/Instance.ts"
import { makeLogger, parseSpec } from "../src/observability/Logging.ts"
import type { Admission, RequestMessage, RequestTarget } from "../src/RequestPlane.ts"
import * as DynamoRequestClient from "../src/transport/tcp/request/DynamoRequestClient.ts"
import * as TcpRequestServer from "../src/transport/tcp/request/TcpRequestServer.ts"
import * as TcpRequestTransport from "../src/transport/tcp/request/TcpRequestTransport.ts"
import * as TcpResponseTransport from "../src/transport/tcp/TcpResponseTransport.ts"
import type { EndpointNotFound, TransportError } from "../src/TransportError.ts"
import { blackhole } from "./support/blackhole.ts"
import { stackOf } from "./support/stack.ts"

// ---- bytes by hand ----------------------------------------------------------------------------

const u16 = (n: number) => {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(n)
  return b
}
const u32 = (n: number) => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n)
  return b
}

/** A TwoPartCodec frame (section 1): u64 header_len, u64 body_len, u64 checksum 0, header, body. */
const twoPart = (header: Buffer, body: Buffer) => {
  const prefix = Buffer.alloc(24)
  prefix.writeBigUInt64BE(BigInt(header.length), 0)
  prefix.writeBigUInt64BE(BigInt(body.length), 8)
  return Buffer.concat([prefix, header, body])
}

/** A Dynamo request frame (section 8). */
const requestFrame = (path: string, headers: Record<string, string>, payload: Buffer) => {
  const p = Buffer.from(path, "utf8")
  const h = Buffer.from(JSON.stringify(headers), "utf8")
  return Buffer.concat([u16(p.length), p, u16(h.length), h, u32(payload.length), payload])
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

/** Reads u32-length-prefixed acks. */
const ackReader = (onAck: (text: string) => void) => {
  let buf = Buffer.alloc(0)
  return (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk])
    while (buf.length >= 4) {
      const n = buf.readUInt32BE(0)
      if (buf.length < 4 + n) return
      onAck(buf.subarray(4, 4 + n).toString("utf8"))
      buf = buf.subarray(4 + n)
    }
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

// ---- a raw client connection ------------------------------------------------------------------

interface Raw {
  readonly socket: net.Socket
  readonly acks: Array<string>
  /** Everything received, raw. */
  readonly received: () => Buffer
  readonly closed: () => boolean
  readonly closedAt: () => number
}

/** A plain TCP connection to `port` that collects the acks it receives; destroyed with the scope. */
const raw = (port: number): Effect.Effect<Raw, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<Raw>((resolve) => {
        const socket = net.connect({ host: "127.0.0.1", port, noDelay: true })
        const acks: Array<string> = []
        let bytes = Buffer.alloc(0)
        let closedAt = 0
        const read = ackReader((t) => acks.push(t))
        socket.on("data", (c: Buffer) => {
          bytes = Buffer.concat([bytes, c])
          read(c)
        })
        socket.on("error", () => {})
        socket.once("close", () => void (closedAt = performance.now()))
        socket.once("connect", () =>
          resolve({ socket, acks, received: () => bytes, closed: () => closedAt !== 0, closedAt: () => closedAt })
        )
      })
    ),
    (r) => Effect.sync(() => r.socket.destroy())
  )

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
      server.listen(0, "127.0.0.1", () => {
        const port = (server.address() as net.AddressInfo).port
        resolve({ address: `127.0.0.1:${port}`, streams, server, sockets })
      })
    })
  ),
  ({ server, sockets }) =>
    Effect.sync(() => {
      for (const s of sockets) s.destroy()
      server.close()
    })
)

// ---- hand-written workers (router-side tests) --------------------------------------------------

interface FakeWorker {
  readonly port: number
  /** Requests received: path, headers, payload. */
  readonly requests: Array<{ path: string; headers: Record<string, string>; payload: Buffer; socket: net.Socket }>
  readonly sockets: Set<net.Socket>
  readonly connections: () => number
  readonly close: () => void
}

/** A `net.Server` that parses Dynamo request frames by hand and calls `onRequest` for each. */
const fakeWorker = (
  onRequest: (r: FakeWorker["requests"][number]) => void = () => {},
  port = 0
): Effect.Effect<FakeWorker, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<FakeWorker>((resolve) => {
        const requests: FakeWorker["requests"] = []
        const sockets = new Set<net.Socket>()
        let accepted = 0
        const server = net.createServer((socket) => {
          accepted++
          sockets.add(socket)
          socket.on("error", () => {})
          socket.once("close", () => sockets.delete(socket))
          let buf = Buffer.alloc(0)
          socket.on("data", (c: Buffer) => {
            buf = Buffer.concat([buf, c])
            for (;;) {
              if (buf.length < 2) return
              const pl = buf.readUInt16BE(0)
              if (buf.length < 2 + pl + 2) return
              const hl = buf.readUInt16BE(2 + pl)
              const headEnd = 2 + pl + 2 + hl
              if (buf.length < headEnd + 4) return
              const n = buf.readUInt32BE(headEnd)
              if (buf.length < headEnd + 4 + n) return
              const r = {
                path: buf.subarray(2, 2 + pl).toString("utf8"),
                headers: hl === 0 ? {} : JSON.parse(buf.subarray(4 + pl, headEnd).toString("utf8")),
                payload: Buffer.from(buf.subarray(headEnd + 4, headEnd + 4 + n)),
                socket
              }
              buf = buf.subarray(headEnd + 4 + n)
              requests.push(r)
              onRequest(r)
            }
          })
        })
        const close = () => {
          for (const s of sockets) s.destroy()
          server.close()
        }
        server.listen(port, "127.0.0.1", () =>
          resolve({ port: (server.address() as net.AddressInfo).port, requests, sockets, connections: () => accepted, close })
        )
      })
    ),
    (w) => Effect.sync(w.close)
  )

/** Writes an ack by hand. */
const ack = (socket: net.Socket, text = "") => {
  const t = Buffer.from(text, "utf8")
  socket.write(Buffer.concat([u32(t.length), t]))
}

/** Decodes a section 2 message by hand: its control header and its JSON body. */
const readMessage = (payload: Buffer) => {
  const h = Number(payload.readBigUInt64BE(0))
  const b = Number(payload.readBigUInt64BE(8))
  return {
    control: JSON.parse(payload.subarray(24, 24 + h).toString("utf8")),
    body: JSON.parse(payload.subarray(24 + h, 24 + h + b).toString("utf8"))
  }
}

/** Calls home by hand (section 3) and streams `items`. */
const callHome = (info: { address: string; subject: string }, items: ReadonlyArray<unknown>) => {
  const [host, port] = [info.address.slice(0, info.address.lastIndexOf(":")), Number(info.address.slice(info.address.lastIndexOf(":") + 1))]
  const socket = net.connect({ host, port, noDelay: true })
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

// ---- stacks and helpers -----------------------------------------------------------------------

const tcpEnv = {
  DYN_REQUEST_PLANE: "tcp",
  DYN_RESPONSE_PLANE: "tcp",
  DYN_TCP_REQUEST_HOST: "127.0.0.1",
  DYN_TCP_REQUEST_PORT: "0",
  DYN_TCP_RESPONSE_HOST: "127.0.0.1",
  DYN_TCP_RESPONSE_PORT: "0",
  DYN_CANCEL_GRACE_MS: "100",
  DYN_LOG: "warn"
}
const tcpStack = (env: Record<string, string> = {}) =>
  stackOf(Layer.mergeAll(TcpRequestTransport.layer, TcpResponseTransport.layer), { ...tcpEnv, ...env })

const serverOptions = (extra: Partial<TcpRequestServer.TcpRequestServerOptions> = {}): TcpRequestServer.TcpRequestServerOptions => ({
  host: "127.0.0.1",
  port: 0,
  maxMessageSize: 4096,
  maxConnections: 100,
  connectionTimeoutMs: 10_000,
  ...extra
})

/** A server with one endpoint ("ns.comp.ep", instance 0xabc) whose handler records requests. */
const serving = (extra: Partial<TcpRequestServer.TcpRequestServerOptions> = {}, admit?: Admission) =>
  Effect.gen(function*() {
    const server = yield* TcpRequestServer.make(serverOptions(extra))
    const handled: Array<RequestMessage> = []
    const transport = yield* server.register(
      { path: { namespace: "ns", component: "comp", endpoint: "ep" }, instanceId: 0xabcn },
      (m) => void handled.push(m),
      { admit }
    )
    const address = (transport as { tcp: string }).tcp
    const slash = address.indexOf("/")
    const hostPort = address.slice(0, slash)
    return { server, handled, address, port: Number(hostPort.slice(hostPort.lastIndexOf(":") + 1)), path: address.slice(slash + 1) }
  })

const clientOptions = (extra: Partial<DynamoRequestClient.DynamoRequestClientOptions> = {}): DynamoRequestClient.DynamoRequestClientOptions => ({
  ackTimeoutMs: 2000,
  connectTimeoutMs: 1000,
  poolSize: 4,
  channelBuffer: 1024,
  maxMessageSize: 1024 * 1024,
  ...extra
})

const message = (id: string = crypto.randomUUID(), extra: Partial<RequestMessage> = {}): RequestMessage => ({
  control: {
    id,
    request_type: "single_in",
    response_type: "many_out",
    connection_info: { transport: "tcp_server", info: JSON.stringify({ address: "127.0.0.1:9", subject: crypto.randomUUID(), context: id, stream_type: "response" }) }
  },
  payload: { hello: "world" },
  headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
  ...extra
})

type AckResult = TransportError | EndpointNotFound | undefined

/** `sendCallback` as a Promise of what `onAck` received. */
const sendAck = (client: DynamoRequestClient.DynamoRequestClient, target: RequestTarget, m: RequestMessage = message()) =>
  new Promise<AckResult>((resolve) => void client.sendCallback(target, m, resolve))

const describeAck = (r: AckResult) => (r === undefined ? "accepted" : `${r._tag}${"reason" in r ? ` ${r.reason}` : ""}`)

// ---- worker side --------------------------------------------------------------------------------

describe("TCP request server, Dynamo framing (bytes by hand)", () => {
  it.live("a hand-written request is acked empty, then the worker calls home and streams the response", () =>
    Effect.gen(function*() {
      const home = yield* callHomeListener
      const served = yield* Endpoint.serveEmit("dyn.hand.gen", (req: { n: number }, ctx, emit: Endpoint.Emit<string>) =>
        Effect.sync(() => {
          for (let i = 0; i < req.n; i++) emit(`${ctx.headers["x-request-id"]}:${i}`)
        }))
      const address = (served.instance.transport as { tcp: string }).tcp
      expect(address).toMatch(new RegExp(`^127\\.0\\.0\\.1:\\d+/${served.instance.instance_id.toString(16)}/dyn/hand/gen$`))
      const hostPort = address.slice(0, address.indexOf("/"))
      const c = yield* raw(Number(hostPort.slice(hostPort.indexOf(":") + 1)))
      const id = crypto.randomUUID()
      const subject = crypto.randomUUID()
      // Dynamo's router sends the address's part after host:port as the path and x-endpoint-path.
      const path = address.slice(address.indexOf("/") + 1)
      c.socket.write(requestFrame(path, { "x-endpoint-path": path, "request-id": id }, requestMessage(id, { n: 3 }, home.address, subject)))
      yield* until(() => c.acks.length === 1, "the ack")
      expect(c.received()).toEqual(Buffer.from([0, 0, 0, 0]))
      yield* until(() => home.streams.length === 1 && home.streams[0]!.at(-1)?.header === "\"sentinel\"", "the call-home stream")
      expect(home.streams[0]).toEqual([
        { header: JSON.stringify({ subject, stream_type: "response" }), body: "" },
        { header: JSON.stringify({ error: null }), body: "" },
        ...[0, 1, 2].map((i) => ({ header: "", body: JSON.stringify({ data: `${id}:${i}`, complete_final: false }) })),
        { header: "", body: JSON.stringify({ complete_final: true }) },
        { header: "\"sentinel\"", body: "" }
      ])
    }).pipe(Effect.scoped, Effect.provide(tcpStack({ DYN_TCP_FULL_MODE: "false" }))))

  it.live("pipelined requests in one write are acked in order: accepted, unknown endpoint, bad message", () =>
    Effect.gen(function*() {
      const s = yield* serving()
      const c = yield* raw(s.port)
      const N = 60
      const expected: Array<string> = []
      const frames: Array<Buffer> = []
      for (let i = 0; i < N; i++) {
        if (i % 3 === 1) {
          frames.push(requestFrame(`abc/nope${i}`, {}, requestMessage(`r${i}`, {})))
          expected.push(`Server unavailable: unknown endpoint abc/nope${i}`)
        } else if (i % 3 === 2) {
          frames.push(requestFrame(s.path, {}, Buffer.from("not a two-part frame")))
          expected.push("bad request message")
        } else {
          frames.push(requestFrame(s.path, { "request-id": `r${i}` }, requestMessage(`r${i}`, { i })))
          expected.push("")
        }
      }
      c.socket.write(Buffer.concat(frames))
      yield* until(() => c.acks.length === N, `${N} acks`)
      c.acks.forEach((text, i) => {
        if (expected[i] === "bad request message") expect(text, `ack ${i}`).toMatch(/^Server unavailable: bad request message: /)
        else expect(text, `ack ${i}`).toBe(expected[i])
      })
      expect(s.handled.map((m) => m.control.id)).toEqual(Array.from({ length: N / 3 }, (_, k) => `r${k * 3}`))
      expect(s.handled[0]!.headers["x-request-id"]).toBe("r0") // Dynamo's request-id, under our name too
      expect(s.handled[3]!.payload).toEqual({ i: 9 })
      expect(c.closed()).toBe(false)
    }).pipe(Effect.scoped))

  it.live("a worker at its cap rejects with Dynamo's `Server overloaded:`, a draining one with `Server unavailable:`", () =>
    Effect.gen(function*() {
      let inFlight = 0
      let draining = false
      const admit: Admission = () =>
        draining
          ? { refuse: "unavailable", detail: "draining" }
          : inFlight >= 2
          ? { refuse: "overloaded", detail: `${inFlight} requests in flight (max 2)` }
          : undefined
      const s = yield* serving({}, admit)
      const c = yield* raw(s.port)
      const frame = (i: number) => requestFrame(s.path, {}, requestMessage(`r${i}`, {}))
      // The handler is where in-flight grows: two are admitted, the next two are refused.
      const onHandled = s.handled.push.bind(s.handled)
      s.handled.push = (...m: Array<RequestMessage>) => ((inFlight += m.length), onHandled(...m))
      c.socket.write(Buffer.concat([0, 1, 2, 3].map(frame)))
      yield* until(() => c.acks.length === 4, "4 acks")
      expect(c.acks).toEqual(["", "", "Server overloaded: 2 requests in flight (max 2)", "Server overloaded: 2 requests in flight (max 2)"])
      draining = true
      c.socket.write(frame(4))
      yield* until(() => c.acks.length === 5, "the fifth ack")
      expect(c.acks[4]).toBe("Server unavailable: draining")
      expect(s.handled.length).toBe(2)
    }).pipe(Effect.scoped))

  it.live("garbage and an oversized frame each close only their connection, with a reason and a log line", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const s = yield* serving().pipe(Effect.provide(Logger.layer([makeLogger(parseSpec("info"), (l) => lines.push(l))])))
      const good = yield* raw(s.port)
      const garbage = yield* raw(s.port)
      const oversized = yield* raw(s.port)
      // path "abc", then 5 bytes of headers that are not JSON
      garbage.socket.write(Buffer.concat([u16(3), Buffer.from("abc"), u16(5), Buffer.from("{{{{{"), u32(0)]))
      // a payload length beyond the 4096-byte maximum, announced before any payload byte
      oversized.socket.write(Buffer.concat([u16(s.path.length), Buffer.from(s.path), u16(0), u32(1_000_000)]))
      yield* until(() => garbage.closed() && oversized.closed(), "both bad connections closed")
      expect(garbage.acks).toEqual([expect.stringMatching(/^Server unavailable: closing the connection: request headers are not valid UTF-8 JSON/)])
      expect(oversized.acks).toEqual([expect.stringMatching(/^Server unavailable: closing the connection: .*exceeds the maximum message size of 4096 bytes/)])
      expect(lines.filter((l) => l.includes("closing a TCP request connection")).length).toBe(2)
      expect(lines.join("\n")).toContain("reason=MessageTooLarge")
      // the good connection still works
      good.socket.write(requestFrame(s.path, {}, requestMessage("ok", {})))
      yield* until(() => good.acks.length === 1, "the good connection's ack")
      expect(good.acks).toEqual([""])
      expect(good.closed()).toBe(false)
      expect(s.handled.map((m) => m.control.id)).toEqual(["ok"])
    }).pipe(Effect.scoped))

  it.live("beyond DYN_TCP_REQUEST_MAX_CONNECTIONS a connection is refused in its own framing with the reason, then closed", () =>
    Effect.gen(function*() {
      const s = yield* serving({ maxConnections: 2 })
      const a = yield* raw(s.port)
      const b = yield* raw(s.port)
      yield* until(() => s.server.connectionCount() === 2, "two counted connections")
      // Dynamo framing: a rejection ack
      const third = yield* raw(s.port)
      third.socket.write(requestFrame(s.path, {}, requestMessage("x", {})))
      yield* until(() => third.closed(), "the third connection closed")
      expect(third.acks).toEqual(["Server unavailable: too many connections (max 2)"])
      // full mode: the hello answer "refused" (status 2) with the reason
      const hello = yield* raw(s.port)
      hello.socket.write(Buffer.concat([u16(0), Buffer.from("DYNMUX"), u16(1), u16(0)]))
      yield* until(() => hello.closed(), "the hello connection closed")
      const answer = hello.received()
      expect(answer.subarray(0, 6).toString()).toBe("DYNMUX")
      expect(answer.readUInt16BE(8)).toBe(2)
      expect(answer.subarray(12, 12 + answer.readUInt16BE(10)).toString()).toBe("too many connections (max 2)")
      expect(s.server.connectionCount()).toBe(2)
      // once one leaves, a new one is served
      a.socket.destroy()
      yield* until(() => s.server.connectionCount() === 1, "the count to drop")
      const d = yield* raw(s.port)
      d.socket.write(requestFrame(s.path, {}, requestMessage("d", {})))
      yield* until(() => d.acks.length === 1, "d's ack")
      expect(d.acks).toEqual([""])
      expect(b.closed()).toBe(false)
    }).pipe(Effect.scoped))

  it.live("without a full mode, a hello is answered 'version not supported: full mode not available' and closed", () =>
    Effect.gen(function*() {
      const s = yield* serving()
      const c = yield* raw(s.port)
      c.socket.write(Buffer.concat([u16(0), Buffer.from("DYNMUX"), u16(1), u16(0)]))
      yield* until(() => c.closed(), "the connection closed")
      const answer = c.received()
      expect(answer.readUInt16BE(8)).toBe(1)
      expect(answer.subarray(12).toString()).toBe("full mode not available on this worker")
      // the transport form is Dynamo's: no full mode to advertise
      expect(s.address).toMatch(/^127\.0\.0\.1:\d+\/abc\/ns\/comp\/ep$/)
    }).pipe(Effect.scoped))

  it.live("a connection silent for longer than DYN_TCP_REQUEST_CONNECTION_TIMEOUT_SECS is dropped, with a log line; a busy one is not", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const s = yield* serving({ connectionTimeoutMs: 250 }).pipe(Effect.provide(Logger.layer([makeLogger(parseSpec("info"), (l) => lines.push(l))])))
      const silent = yield* raw(s.port)
      const busy = yield* raw(s.port)
      const opened = performance.now()
      for (let i = 0; i < 8; i++) {
        busy.socket.write(requestFrame(s.path, {}, requestMessage(`b${i}`, {})))
        yield* sleep(100)
      }
      expect(silent.closed()).toBe(true)
      expect(silent.closedAt() - opened).toBeGreaterThanOrEqual(240)
      expect(silent.closedAt() - opened).toBeLessThan(700)
      expect(busy.closed()).toBe(false)
      expect(busy.acks.length).toBe(8)
      expect(lines.some((l) => l.includes("silent for longer than the connection timeout") && l.includes("timeoutMs=250"))).toBe(true)
    }).pipe(Effect.scoped))

  it.live("scope close stops accepting and closes every connection", () =>
    Effect.gen(function*() {
      const outer = yield* Effect.scope
      const { s, c } = yield* Effect.gen(function*() {
        const s = yield* serving()
        const c = yield* raw(s.port).pipe(Scope.provide(outer))
        yield* until(() => s.server.connectionCount() === 1, "the connection")
        return { s, c }
      }).pipe(Effect.scoped)
      yield* until(() => c.closed(), "the connection closed by the scope")
      const refused = yield* Effect.promise(() =>
        new Promise<string>((resolve) => {
          const sock = net.connect({ host: "127.0.0.1", port: s.port })
          sock.once("error", (e: Error & { code?: string }) => resolve(e.code ?? e.message))
          sock.once("connect", () => (sock.destroy(), resolve("connected")))
        })
      )
      expect(refused).toBe("ECONNREFUSED")
    }))
})

// ---- router side ----------------------------------------------------------------------------------

describe("DynamoRequestClient against hand-written workers", () => {
  it.live("drives a Dynamo-only worker end to end: the router falls back to Dynamo's framing and receives the call-home stream", () =>
    Effect.gen(function*() {
      const worker = yield* fakeWorker((r) => {
        ack(r.socket)
        const { control, body } = readMessage(r.payload)
        callHome(JSON.parse(control.connection_info.info), Array.from({ length: body.n }, (_, i) => `${body.tag}-${i}`))
      })
      const instanceId = 0x1234abcdn
      const address = `127.0.0.1:${worker.port}/${instanceId.toString(16)}/dyn/only/gen`
      const instance: Instance = {
        type: "Endpoint",
        namespace: "dyn",
        component: "only",
        endpoint: "gen",
        instance_id: instanceId,
        transport: { tcp: address }
      }
      yield* (yield* Discovery).register(instance)
      const client = yield* Endpoint.client<{ n: number; tag: string }, string>("dyn.only.gen")
      expect(yield* Stream.runCollect(client.generate({ n: 3, tag: "a" }))).toEqual(["a-0", "a-1", "a-2"])
      const many = yield* Effect.forEach(Array.from({ length: 20 }, (_, i) => i), (i) => Stream.runCollect(client.generate({ n: 2, tag: `t${i}` })), {
        concurrency: "unbounded"
      })
      many.forEach((items, i) => expect(items).toEqual([`t${i}-0`, `t${i}-1`]))
      // what went on the wire: the path after host:port, Dynamo's headers, one persistent connection
      const first = worker.requests[0]!
      expect(first.path).toBe(`${instanceId.toString(16)}/dyn/only/gen`)
      expect(first.headers["x-endpoint-path"]).toBe(first.path)
      expect(first.headers["request-id"]).toBe(readMessage(first.payload).control.id)
      expect(Number(first.headers["x-frontend-send-ts-ns"])).toBeGreaterThan(0)
      expect(worker.connections()).toBe(1)
    }).pipe(Effect.scoped, Effect.provide(tcpStack())))

  it.live("maps rejection texts to typed errors: Overloaded, ServerUnavailable, EndpointNotFound, BadPayload, Refused", () =>
    Effect.gen(function*() {
      const texts = [
        "Server overloaded: worker at capacity",
        "Server unavailable: draining",
        "Server unavailable: unknown endpoint abc/x",
        "Unknown endpoint: abc/x",
        "Server unavailable: bad request message: nope",
        "go away",
        ""
      ]
      let i = 0
      const worker = yield* fakeWorker((r) => ack(r.socket, texts[i++] ?? "Server unavailable: again"))
      const client = yield* DynamoRequestClient.make(clientOptions())
      const target = { address: `127.0.0.1:${worker.port}/abc/ns/comp/ep`, endpoint: "ns.comp.ep" }
      const results: Array<AckResult> = []
      for (const _ of texts) results.push(yield* Effect.promise(() => sendAck(client, target)))
      expect(results.map(describeAck)).toEqual([
        "TransportConnectionError Overloaded",
        "TransportConnectionError ServerUnavailable",
        "EndpointNotFound",
        "EndpointNotFound",
        "TransportProtocolError BadPayload",
        "TransportConnectionError Refused",
        "accepted"
      ])
      expect(results[0]!.message).toContain("Server overloaded: worker at capacity")
      expect((results[2] as EndpointNotFound).endpoint).toBe("ns.comp.ep")
      // the Effect form agrees
      const failed = yield* Effect.flip(client.send(target, message()))
      expect(failed._tag).toBe("TransportConnectionError")
    }).pipe(Effect.scoped))

  it.live("our router against our worker: accepted, EndpointNotFound for an unknown endpoint, Overloaded at the cap", () =>
    Effect.gen(function*() {
      let full = false
      const s = yield* serving({}, () => (full ? { refuse: "overloaded", detail: "at the cap" } : undefined))
      const client = yield* DynamoRequestClient.make(clientOptions())
      const target = { address: s.address, endpoint: "ns.comp.ep" }
      expect(describeAck(yield* Effect.promise(() => sendAck(client, target, message("one"))))).toBe("accepted")
      expect(s.handled.map((m) => m.control.id)).toEqual(["one"])
      expect(s.handled[0]!.headers.traceparent).toBe("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
      const unknown = yield* Effect.promise(() => sendAck(client, { address: s.address.replace("/ep", "/nope"), endpoint: "ns.comp.nope" }))
      expect(describeAck(unknown)).toBe("EndpointNotFound")
      expect(unknown!.message).toContain("ns.comp.nope")
      full = true
      const overloaded = yield* Effect.promise(() => sendAck(client, target))
      expect(describeAck(overloaded)).toBe("TransportConnectionError Overloaded")
      expect(overloaded!.message).toContain("Server overloaded: at the cap")
    }).pipe(Effect.scoped))

  it.live("an ack that does not come in time fails AckTimeout; its late ack is consumed and dropped, the next request gets its own", () =>
    Effect.gen(function*() {
      const worker = yield* fakeWorker((r) => {
        // the first request is acked only when the second arrives: its ack is late
        if (worker_requests() === 2) {
          ack(r.socket, "Server overloaded: late ack of the first request")
          ack(r.socket, "")
        }
      })
      const worker_requests = () => worker.requests.length
      const client = yield* DynamoRequestClient.make(clientOptions({ ackTimeoutMs: 200 }))
      const target = { address: `127.0.0.1:${worker.port}/abc/ns/comp/ep`, endpoint: "ns.comp.ep" }
      const started = performance.now()
      const first = yield* Effect.promise(() => sendAck(client, target))
      const waited = performance.now() - started
      expect(describeAck(first)).toBe("TransportTimeoutError AckTimeout")
      expect(first!.message).toContain("no ack within 200 ms")
      expect(waited).toBeGreaterThanOrEqual(195)
      expect(waited).toBeLessThan(600)
      const second = yield* Effect.promise(() => sendAck(client, target))
      expect(describeAck(second)).toBe("accepted")
      expect(client.connections(`127.0.0.1:${worker.port}`)).toBe(1)
    }).pipe(Effect.scoped))

  it.live("a worker that dies fails every in-flight ack typed (ConnectionClosed) at once; the client reconnects with backoff when it is back", () =>
    Effect.gen(function*() {
      const outer = yield* Effect.scope
      const silent = yield* fakeWorker()
      const port = silent.port
      const client = yield* DynamoRequestClient.make(clientOptions({ ackTimeoutMs: 10_000 }))
      const target = { address: `127.0.0.1:${port}/abc/ns/comp/ep`, endpoint: "ns.comp.ep" }
      const inFlight = [0, 1, 2].map(() => sendAck(client, target))
      yield* until(() => silent.requests.length === 3, "three requests at the worker")
      const killedAt = performance.now()
      silent.close()
      const results = yield* Effect.promise(() => Promise.all(inFlight))
      expect(performance.now() - killedAt).toBeLessThan(1000)
      expect(results.map(describeAck)).toEqual(Array(3).fill("TransportConnectionError ConnectionClosed"))
      // nobody listens now: ConnectFailed, then the same failure at once while the backoff lasts
      const refused = yield* Effect.promise(() => sendAck(client, target))
      expect(describeAck(refused)).toBe("TransportConnectionError ConnectFailed")
      const backingOff = yield* Effect.promise(() => sendAck(client, target))
      expect(describeAck(backingOff)).toBe("TransportConnectionError ConnectFailed")
      expect(backingOff!.message).toContain("backoff")
      // the worker comes back on the same port: after the backoff, requests flow again
      const back = yield* fakeWorker((r) => ack(r.socket), port).pipe(Scope.provide(outer))
      yield* sleep(DynamoRequestClient.BACKOFF_BASE_MS * 2 + 20)
      expect(describeAck(yield* Effect.promise(() => sendAck(client, target)))).toBe("accepted")
      expect(back.requests.length).toBe(1)
    }).pipe(Effect.scoped))

  it.live("a connect that hangs fails ConnectTimeout within DYN_TCP_CONNECT_TIMEOUT", () =>
    Effect.gen(function*() {
      const hole = yield* blackhole
      const client = yield* DynamoRequestClient.make(clientOptions({ connectTimeoutMs: 150 }))
      const started = performance.now()
      const r = yield* Effect.promise(() => sendAck(client, { address: `${hole.address}/abc/ns/comp/ep`, endpoint: "ns.comp.ep" }))
      expect(describeAck(r)).toBe("TransportTimeoutError ConnectTimeout")
      expect(performance.now() - started).toBeLessThan(1000)
    }).pipe(Effect.scoped))

  it.live("opens another connection only when one has DYN_TCP_CHANNEL_BUFFER requests awaiting acks, up to DYN_TCP_POOL_SIZE; then requests wait", () =>
    Effect.gen(function*() {
      const worker = yield* fakeWorker()
      const client = yield* DynamoRequestClient.make(clientOptions({ channelBuffer: 2, poolSize: 2 }))
      const target = { address: `127.0.0.1:${worker.port}/abc/ns/comp/ep`, endpoint: "ns.comp.ep" }
      const pending = [0, 1, 2, 3, 4].map(() => sendAck(client, target))
      yield* until(() => worker.requests.length === 4, "four requests at the worker")
      yield* sleep(50)
      expect(worker.requests.length).toBe(4) // the fifth waits for a place
      expect(worker.connections()).toBe(2)
      expect(client.connections(`127.0.0.1:${worker.port}`)).toBe(2)
      const sockets = [...new Set(worker.requests.map((r) => r.socket))]
      expect(sockets.length).toBe(2)
      ack(sockets[0]!) // frees a place: the fifth goes out on that connection
      yield* until(() => worker.requests.length === 5, "the fifth request")
      expect(worker.requests[4]!.socket).toBe(sockets[0])
      for (const r of worker.requests.slice(1)) ack(r.socket)
      expect((yield* Effect.promise(() => Promise.all(pending))).map(describeAck)).toEqual(Array(5).fill("accepted"))
    }).pipe(Effect.scoped))

  it.live("refuses before sending: a frame above the maximum (MessageTooLarge), a streamed request (not bidirectional), a bad address", () =>
    Effect.gen(function*() {
      const worker = yield* fakeWorker((r) => ack(r.socket))
      const client = yield* DynamoRequestClient.make(clientOptions({ maxMessageSize: 2048 }))
      const target = { address: `127.0.0.1:${worker.port}/abc/ns/comp/ep`, endpoint: "ns.comp.ep" }
      const big = yield* Effect.promise(() => sendAck(client, target, message("big", { payload: "x".repeat(4096) })))
      expect(describeAck(big)).toBe("TransportProtocolError MessageTooLarge")
      const streamed = yield* Effect.promise(() => sendAck(client, target, message("s", { items: Stream.make(1, 2) })))
      expect(describeAck(streamed)).toBe("TransportProtocolError BadPayload")
      expect(streamed!.message).toContain("full TCP mode")
      const bad = yield* Effect.promise(() => sendAck(client, { address: "nowhere", endpoint: "ns.comp.ep" }))
      expect(bad?._tag).toBe("TransportProtocolError")
      expect(bad!.message).toContain("nowhere")
      expect(worker.requests.length).toBe(0)
      expect(describeAck(yield* Effect.promise(() => sendAck(client, target)))).toBe("accepted")
    }).pipe(Effect.scoped))

  it.live("closing the client's scope fails requests still waiting for their ack and closes its connections", () =>
    Effect.gen(function*() {
      const worker = yield* fakeWorker()
      const target = { address: `127.0.0.1:${worker.port}/abc/ns/comp/ep`, endpoint: "ns.comp.ep" }
      const waiting = yield* Effect.gen(function*() {
        const client = yield* DynamoRequestClient.make(clientOptions({ ackTimeoutMs: 10_000 }))
        const p = sendAck(client, target)
        yield* until(() => worker.requests.length === 1, "the request")
        return p
      }).pipe(Effect.scoped)
      expect(describeAck(yield* Effect.promise(() => waiting))).toBe("TransportConnectionError ConnectionClosed")
      yield* until(() => worker.sockets.size === 0, "the connection closed")
    }).pipe(Effect.scoped))
})
