/**
 * The full TCP mode when things go wrong, over real loopback sockets: missed heartbeats on either
 * side, a worker killed mid-stream (its socket reset, or its process SIGKILLed), garbage and
 * oversized frames (each closing only the connection that sent them), cancellation both ways,
 * refusals (admission, unknown endpoint, draining, the hello's answer), connect failures with
 * backoff, and the ack timeout. Fake peers are raw sockets speaking the frames by hand.
 */
import { spawn } from "node:child_process"
import * as net from "node:net"
import { CREDIT_UPDATE_MS } from "../src/protocol/MuxHandshake.ts"
import { afterEach, describe, expect, it } from "vitest"
import { encodeHello, encodeHelloAnswer, HelloStatus, readHello, readHelloAnswer } from "../src/protocol/FullModeHello.ts"
import { decodeErrorText, decodeFullRequestPayload, encodeFullRequestPayload, encodeMuxFrame, encodeMuxHeader, makeMuxDecoder, MuxKind, NIL_STREAM_ID } from "../src/protocol/MuxCodec.ts"
import { decodeRequestMessage, encodeRequestMessage } from "../src/protocol/RequestMessage.ts"
import { FULL_MODE_CONNECTION_INFO } from "../src/transport/tcp/request/FullModeHooks.ts"
import { parseTcpAddress, tcpWirePath } from "../src/protocol/TcpAddress.ts"
import type { ResponseWriter } from "../src/ResponsePlane.ts"
import type { TransportError } from "../src/TransportError.ts"
import { counter, sleep, startRouter, startWorker, until } from "./support/tcpFull.ts"
import type { Call, TestRouter, TestWorker } from "./support/tcpFull.ts"

let cleanups: Array<() => void | Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.reverse()) await c()
  cleanups = []
})

const worker = async (options: Parameters<typeof startWorker>[0] = {}): Promise<TestWorker> => {
  const w = await startWorker(options)
  cleanups.push(w.close)
  return w
}
const router = async (options: Parameters<typeof startRouter>[0] = {}): Promise<TestRouter> => {
  const r = await startRouter(options)
  cleanups.push(r.close)
  return r
}

/** A frame seen by a fake peer. */
interface Seen {
  readonly kind: MuxKind
  readonly text: string
  readonly at: number
  /** The frame's payload, as text. */
  readonly payload: string
}

/** A fake worker: answers the hello with `status`, then records frames and (unless `silent`) answers nothing. */
const fakeWorker = async (status: HelloStatus = HelloStatus.Accepted, reason = "", after?: (socket: net.Socket) => void) => {
  const frames: Array<Seen> = []
  const sockets: Array<net.Socket> = []
  const server = net.createServer((socket) => {
    sockets.push(socket)
    socket.on("error", () => {})
    let head = Buffer.alloc(0)
    const decoder = makeMuxDecoder({ maxMessageSize: 1 << 20, fullMode: true })
    let helloDone = false
    socket.on("data", (chunk: Buffer) => {
      let bytes: Uint8Array = chunk
      if (!helloDone) {
        head = Buffer.concat([head, chunk])
        const hello = readHello(head)
        if (!("_tag" in hello) || hello._tag !== "Hello") return
        helloDone = true
        socket.write(encodeHelloAnswer(status, reason))
        if (status !== HelloStatus.Accepted) return void socket.end()
        after?.(socket)
        bytes = head.subarray(hello.size)
      }
      decoder.decode(bytes, (kind, _id, payload) => void frames.push({ kind, text: kind === MuxKind.Error ? decodeErrorText(payload) : "", at: performance.now(), payload: Buffer.from(payload).toString("latin1") }))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as net.AddressInfo).port
  cleanups.push(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  return { port, frames, sockets, address: `127.0.0.1:${port}/1/ns/comp/ep` }
}

/** A fake router: dials `port`, sends the hello, reads the answer, records frames, answers nothing. */
const fakeRouter = async (port: number) => {
  const socket = net.connect({ host: "127.0.0.1", port })
  socket.on("error", () => {})
  const frames: Array<Seen> = []
  const decoder = makeMuxDecoder({ maxMessageSize: 1 << 20, fullMode: true })
  let head = Buffer.alloc(0)
  let answered: ((status: number) => void) | undefined
  const answer = new Promise<number>((resolve) => (answered = resolve))
  const closed = new Promise<number>((resolve) => socket.once("close", () => resolve(performance.now())))
  socket.on("data", (chunk: Buffer) => {
    if (answered !== undefined) {
      head = Buffer.concat([head, chunk])
      const a = readHelloAnswer(head)
      if (!("_tag" in a) || a._tag !== "Answer") return
      answered(a.status)
      answered = undefined
      chunk = head.subarray(a.size)
    }
    decoder.decode(chunk, (kind, _id, payload) => void frames.push({ kind, text: kind === MuxKind.Error ? decodeErrorText(payload) : "", at: performance.now(), payload: Buffer.from(payload).toString("latin1") }))
  })
  socket.write(encodeHello())
  cleanups.push(() => void socket.destroy())
  return { socket, frames, answer, closed }
}

/** A handler that sends an item every 5 ms until the router stops it; records what it saw. */
const endless = (seen: Array<string>): ((message: unknown, writer: ResponseWriter) => void) => (_m, writer) => {
  writer.prologue()
  let i = 0
  const timer = setInterval(() => writer.send(i++), 5)
  writer.onControl((m) => {
    seen.push(m)
    clearInterval(timer)
    writer.close()
  })
  writer.onDisconnect((e) => {
    seen.push(`disconnect:${e.reason}`)
    clearInterval(timer)
  })
}

const errorOf = async (call: Call) => (await call.done).error

describe("full mode: heartbeats", () => {
  it("the router detects a worker that stops answering within two intervals: every stream fails HeartbeatTimeout", async () => {
    const interval = 150
    const fake = await fakeWorker()
    const r = await router({ heartbeatIntervalMs: interval })
    const calls = await Promise.all([1, 2, 3].map(() => r.call(fake.address, {})))
    const opened = performance.now()
    const acks = await Promise.all(calls.map((c) => c.acked))
    const elapsed = performance.now() - opened
    for (const a of acks) expect(a).toMatchObject({ _tag: "TransportTimeoutError", reason: "HeartbeatTimeout" })
    expect(elapsed).toBeGreaterThanOrEqual(2 * interval - 20)
    expect(elapsed).toBeLessThan(2 * interval + 100)
    for (const c of calls) expect(await errorOf(c)).toMatchObject({ _tag: "TransportTimeoutError", reason: "HeartbeatTimeout" })
    // It pinged once silent for an interval, and said why it closed.
    expect(fake.frames.filter((f) => f.kind === MuxKind.Ping).length).toBeGreaterThanOrEqual(1)
    await until(() => fake.frames.some((f) => f.kind === MuxKind.Error))
    expect(fake.frames.at(-1)).toMatchObject({ kind: MuxKind.Error })
    expect(fake.frames.at(-1)!.text).toContain("missed heartbeats")
  })

  it("the worker pings every interval and drops a router silent for two, saying why", async () => {
    const interval = 150
    const w = await worker({ heartbeatIntervalMs: interval })
    const peer = await fakeRouter(w.port)
    expect(await peer.answer).toBe(HelloStatus.Accepted)
    const start = performance.now()
    const closedAt = await peer.closed
    expect(closedAt - start).toBeGreaterThanOrEqual(2 * interval - 20)
    expect(closedAt - start).toBeLessThan(2 * interval + 100)
    const kinds = peer.frames.map((f) => f.kind)
    expect(kinds.filter((k) => k === MuxKind.Ping).length).toBeGreaterThanOrEqual(1)
    expect(peer.frames.at(-1)!.kind).toBe(MuxKind.Error)
    expect(peer.frames.at(-1)!.text).toContain("missed heartbeats")
  })

  it("the worker drops a router silent for its idle timeout when that is shorter than two intervals, saying why", async () => {
    const w = await worker({ heartbeatIntervalMs: 1000, idleTimeoutMs: 150 })
    const peer = await fakeRouter(w.port)
    expect(await peer.answer).toBe(HelloStatus.Accepted)
    const start = performance.now()
    const closedAt = await peer.closed
    expect(closedAt - start).toBeGreaterThanOrEqual(130)
    expect(closedAt - start).toBeLessThan(400)
    expect(peer.frames.at(-1)!.text).toContain("idle timeout")
  })

  it("a live pair stays up across many intervals: pings and pongs keep both sides alive while idle", async () => {
    const interval = 50
    const w = await worker({ heartbeatIntervalMs: interval })
    const r = await router({ heartbeatIntervalMs: interval })
    w.serve("ns/comp/ep", counter(3))
    expect((await (await r.call(w.address("ns/comp/ep"), {})).done).error).toBeUndefined()
    await sleep(8 * interval)
    expect(r.fullMode.sender.connections()).toHaveLength(1)
    expect((await (await r.call(w.address("ns/comp/ep"), {})).done).items).toHaveLength(3)
    expect(w.sockets()).toHaveLength(1)
  })
})

describe("full mode: a worker killed mid-stream", () => {
  it("its socket reset: every stream on the connection fails typed within 1 s", async () => {
    const w = await worker()
    const r = await router()
    const seen: Array<string> = []
    w.serve("ns/comp/ep", endless(seen))
    const calls = await Promise.all(Array.from({ length: 100 }, () => r.call(w.address("ns/comp/ep"), {})))
    await until(() => calls.every((c) => c.items.length > 2))
    const killed = performance.now()
    for (const s of w.sockets()) s.resetAndDestroy()
    const errors = await Promise.all(calls.map(errorOf))
    expect(performance.now() - killed).toBeLessThan(1000)
    for (const e of errors) expect(e).toMatchObject({ _tag: "TransportConnectionError", reason: "StreamEndedEarly" })
    // The worker's handlers heard it too.
    await until(() => seen.length === 100)
    // A new request dials again.
    const again = await r.call(w.address("ns/comp/ep"), {})
    expect(await again.acked).toBeUndefined()
    again.pending.close()
  })

  it("its process SIGKILLed: every stream fails typed within 1 s", async () => {
    const child = spawn(process.execPath, ["--experimental-strip-types", "--no-warnings", new URL("./support/tcpFullWorker.ts", import.meta.url).pathname], {
      stdio: ["ignore", "pipe", "inherit"]
    })
    cleanups.push(() => void child.kill("SIGKILL"))
    const port = await new Promise<number>((resolve, reject) => {
      let out = ""
      child.stdout!.on("data", (c: Buffer) => {
        out += c.toString()
        if (out.includes("\n")) resolve(Number(out.trim()))
      })
      child.once("exit", () => reject(new Error(`worker exited early: ${out}`)))
    })
    const r = await router()
    const calls = await Promise.all(Array.from({ length: 50 }, () => r.call(`127.0.0.1:${port}/1/ns/comp/ep`, {})))
    await until(() => calls.every((c) => c.items.length > 2))
    const killed = performance.now()
    child.kill("SIGKILL")
    const errors = await Promise.all(calls.map(errorOf))
    expect(performance.now() - killed).toBeLessThan(1000)
    for (const e of errors) expect(e).toMatchObject({ _tag: "TransportConnectionError", reason: "StreamEndedEarly" })
  })
})

describe("full mode: bad bytes close only the connection that sent them", () => {
  const garbageAfterHello = async (w: TestWorker, bytes: Uint8Array) => {
    const peer = await fakeRouter(w.port)
    expect(await peer.answer).toBe(HelloStatus.Accepted)
    peer.socket.write(bytes)
    await peer.closed
    return peer
  }

  it("garbage from a router: the worker names the protocol error and closes that connection; another router's stream goes on", async () => {
    const w = await worker()
    const r = await router()
    const seen: Array<string> = []
    w.serve("ns/comp/ep", endless(seen))
    const call = await r.call(w.address("ns/comp/ep"), {})
    await until(() => call.items.length > 0)
    const peer = await garbageAfterHello(w, new Uint8Array(64).fill(0xff))
    expect(peer.frames.at(-1)).toMatchObject({ kind: MuxKind.Error })
    expect(peer.frames.at(-1)!.text).toContain("protocol error")
    const before = call.items.length
    await sleep(50)
    expect(call.items.length).toBeGreaterThan(before) // still streaming
    call.pending.control("stop")
    expect(await errorOf(call)).toMatchObject({ reason: "StreamEndedEarly" })
  })

  it("an oversized frame from a router: refused from its header alone, that connection only", async () => {
    const w = await worker({ maxMessageSize: 64 * 1024 })
    const r = await router({ maxMessageSize: 64 * 1024 })
    w.serve("ns/comp/ep", counter(5))
    const header = encodeMuxHeader(MuxKind.Request, new Uint8Array(16).fill(7), 64 * 1024)
    const peer = await garbageAfterHello(w, header)
    expect(peer.frames.at(-1)!.text).toMatch(/exceeds the maximum message size/)
    expect((await (await r.call(w.address("ns/comp/ep"), {})).done).items).toHaveLength(5)
  })

  it("garbage from a worker fails that connection's streams with a TransportProtocolError; another worker's go on", async () => {
    // A header of a small frame of kind 0xee: not a kind of the full mode.
    const garbage = new Uint8Array(40).fill(0xee)
    garbage.set([0, 0, 0, 4], 0)
    const fake = await fakeWorker(HelloStatus.Accepted, "", (socket) => setTimeout(() => socket.write(garbage), 20))
    const w = await worker()
    w.serve("ns/comp/ep", counter(5))
    const r = await router()
    const bad = await r.call(fake.address, {})
    expect(await bad.acked).toMatchObject({ _tag: "TransportProtocolError", reason: "MalformedFrame" })
    await until(() => fake.frames.some((f) => f.kind === MuxKind.Error))
    expect(fake.frames.at(-1)!.text).toContain("protocol error")
    expect((await (await r.call(w.address("ns/comp/ep"), {})).done).items).toHaveLength(5)
  })

  it("an oversized frame from a worker: refused from its header alone", async () => {
    const fake = await fakeWorker(HelloStatus.Accepted, "", (socket) => socket.write(encodeMuxHeader(MuxKind.Data, new Uint8Array(16).fill(1), 2 << 20)))
    const r = await router()
    const call = await r.call(fake.address, {})
    expect(await call.acked).toMatchObject({ _tag: "TransportProtocolError", reason: "MessageTooLarge" })
  })
})

describe("full mode: cancellation", () => {
  it("router → worker: stop reaches the handler's onControl, kill too, and closing the stream resets it", async () => {
    const w = await worker()
    const r = await router()
    const seen: Array<string> = []
    w.serve("ns/comp/ep", endless(seen))
    const address = w.address("ns/comp/ep")

    const stopped = await r.call(address, {})
    await until(() => stopped.items.length > 0)
    stopped.pending.control("stop")
    await until(() => seen.includes("stop"))
    expect(await errorOf(stopped)).toMatchObject({ reason: "StreamEndedEarly" }) // the handler closed without completing

    const killed = await r.call(address, {})
    await until(() => killed.items.length > 0)
    killed.pending.control("kill")
    await until(() => seen.includes("kill"))

    const closed = await r.call(address, {})
    await until(() => closed.items.length > 0)
    closed.pending.close()
    await until(() => seen.some((s) => s.startsWith("disconnect:")))
    expect(seen.at(-1)).toBe("disconnect:ConnectionClosed")
    await until(() => w.fullMode.acceptor.connections()[0]!.load() === 0)
  })

  it("router → worker: a stop sent before the worker's Prologue is delivered once the stream starts", async () => {
    const w = await worker()
    const r = await router()
    const seen: Array<string> = []
    const handler = endless(seen)
    w.serve("ns/comp/ep", (m, writer) => setTimeout(() => handler(m, writer), 30))
    const call = await r.call(w.address("ns/comp/ep"), {})
    call.pending.control("stop")
    await until(() => seen.includes("stop"))
  })

  it("worker → router: a writer closed mid-stream fails the router's stream typed; a handler failure is a HandlerError", async () => {
    const w = await worker()
    const r = await router()
    w.serve("ns/comp/reset", (_m, writer) => {
      writer.prologue()
      writer.send(1)
      setTimeout(() => writer.close(), 10)
    })
    w.serve("ns/comp/fail", (_m, writer) => {
      writer.prologue()
      writer.send(1)
      writer.fail("boom")
    })
    const reset = await r.call(w.address("ns/comp/reset"), {})
    expect(await errorOf(reset)).toMatchObject({ _tag: "TransportConnectionError", reason: "StreamEndedEarly" })
    expect(reset.items).toEqual([1])
    const failed = await r.call(w.address("ns/comp/fail"), {})
    expect(await errorOf(failed)).toMatchObject({ _tag: "HandlerError", detail: "boom" })
  })

  it("a request queued for a stream slot fails AckTimeout at the ack timeout, naming the slots; the held stream goes on", async () => {
    const w = await worker()
    const r = await router({ maxStreamsPerConnection: 1, maxConnectionsPerTarget: 1, ackTimeoutMs: 300 })
    const held: Array<ResponseWriter> = []
    w.serve("ns/comp/ep", (_m, writer) => {
      writer.prologue()
      held.push(writer)
    })
    const first = await r.call(w.address("ns/comp/ep"), {})
    expect(await first.acked).toBeUndefined()
    const queuedAt = performance.now()
    const second = await r.call(w.address("ns/comp/ep"), {})
    const ack = await second.acked
    const waited = performance.now() - queuedAt
    expect(ack).toMatchObject({ _tag: "TransportTimeoutError", reason: "AckTimeout" })
    expect((ack as TransportError).detail).toMatch(/no stream slot on 127\.0\.0\.1:\d+ within 300 ms/)
    expect(waited).toBeGreaterThanOrEqual(280)
    expect(waited).toBeLessThan(2000)
    expect((await second.done).error).toMatchObject({ _tag: "TransportTimeoutError", reason: "AckTimeout" })
    expect(held).toHaveLength(1)
    held[0]!.send(1)
    held[0]!.complete()
    expect(await first.done).toMatchObject({ items: [1], error: undefined })
  })

  it("cancelling the wait for the ack drops a request still queued for a slot", async () => {
    const w = await worker()
    const r = await router({ maxStreamsPerConnection: 1, maxConnectionsPerTarget: 1 })
    let started = 0
    const held: Array<ResponseWriter> = []
    w.serve("ns/comp/ep", (_m, writer) => {
      started++
      writer.prologue()
      held.push(writer)
    })
    const first = await r.call(w.address("ns/comp/ep"), {})
    const second = await r.call(w.address("ns/comp/ep"), {})
    await until(() => started === 1)
    second.cancelAck()
    second.pending.close()
    held[0]!.complete()
    expect(await errorOf(first)).toBeUndefined()
    await sleep(50)
    expect(started).toBe(1)
  })
})

describe("full mode: refusals", () => {
  it("admission, unknown endpoint and draining refuse with an Error frame: the send fails typed and the connection stays", async () => {
    const w = await worker()
    const r = await router()
    let refuse: "overloaded" | "unavailable" | undefined = "overloaded"
    w.serve("ns/comp/ep", counter(2), () => (refuse === undefined ? undefined : { refuse, detail: "at its in-flight cap of 1" }))
    const overloaded = await r.call(w.address("ns/comp/ep"), {})
    expect(await overloaded.acked).toMatchObject({ _tag: "TransportConnectionError", reason: "Overloaded" })
    expect(String((await overloaded.acked as TransportError).detail)).toBe("Server overloaded: at its in-flight cap of 1")
    expect(await errorOf(overloaded)).toMatchObject({ _tag: "TransportConnectionError" })
    refuse = "unavailable"
    expect(await (await r.call(w.address("ns/comp/ep"), {})).acked).toMatchObject({ _tag: "TransportConnectionError", reason: "ServerUnavailable" })
    refuse = undefined
    expect(await (await r.call(w.address("ns/comp/nope"), {}, { endpoint: "ns.comp.nope" })).acked).toMatchObject({ _tag: "EndpointNotFound", endpoint: "ns.comp.nope" })
    w.setDraining(true)
    expect(await (await r.call(w.address("ns/comp/ep"), {})).acked).toMatchObject({ _tag: "TransportConnectionError", reason: "ServerUnavailable" })
    w.setDraining(false)
    expect((await (await r.call(w.address("ns/comp/ep"), {})).done).items).toHaveLength(2)
    expect(r.fullMode.sender.connections()).toHaveLength(1)
    expect(w.sockets()).toHaveLength(1)
  })

  it("a hello refused or a version not spoken fails the send typed with the worker's reason", async () => {
    const refused = await fakeWorker(HelloStatus.Refused, "too many connections (1000)")
    const other = await fakeWorker(HelloStatus.VersionNotSupported, "this worker speaks tcp_mux version 2")
    const r = await router()
    const a = await (await r.call(refused.address, {})).acked
    expect(a).toMatchObject({ _tag: "TransportConnectionError", reason: "Refused" })
    expect((a as TransportError).detail).toContain("too many connections (1000)")
    const b = await (await r.call(other.address, {})).acked
    expect(b).toMatchObject({ _tag: "TransportProtocolError", reason: "BadHandshake" })
    expect((b as TransportError).detail).toContain("tcp_mux version 2")
  })

  it("a draining worker refuses the hello; a worker shutting down tells its routers why", async () => {
    const w = await worker()
    const r = await router()
    const seen: Array<string> = []
    w.serve("ns/comp/ep", endless(seen))
    const call = await r.call(w.address("ns/comp/ep"), {})
    await until(() => call.items.length > 0)
    w.fullMode.acceptor.shutdown("the worker is shutting down")
    const error = await errorOf(call)
    expect(error).toMatchObject({ _tag: "TransportConnectionError", reason: "StreamEndedEarly" })
    expect(String((error as { cause?: Error }).cause?.message)).toContain("the worker is shutting down")
    const again = await (await r.call(w.address("ns/comp/ep"), {})).acked
    expect(again).toMatchObject({ _tag: "TransportConnectionError", reason: "Refused" })
    expect((again as TransportError).detail).toContain("draining")
  })

  it("a failed connect is ConnectFailed; the next attempts back off and fail at once, naming when the next is", async () => {
    const probe = net.createServer()
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve))
    const port = (probe.address() as net.AddressInfo).port
    await new Promise<void>((resolve) => probe.close(() => resolve()))
    const r = await router()
    const first = await (await r.call(`127.0.0.1:${port}/1/ns/comp/ep`, {})).acked
    expect(first).toMatchObject({ _tag: "TransportConnectionError", reason: "ConnectFailed" })
    const second = await (await r.call(`127.0.0.1:${port}/1/ns/comp/ep`, {})).acked
    expect(second).toMatchObject({ _tag: "TransportConnectionError", reason: "ConnectFailed" })
    expect((second as TransportError).detail).toContain("backing off")
  })

  it("no answer within the ack timeout fails the send AckTimeout and resets the stream", async () => {
    const fake = await fakeWorker(HelloStatus.Accepted, "", (socket) => {
      // Answer pings so the connection stays alive; never answer a request.
      const decoder = makeMuxDecoder({ maxMessageSize: 1 << 20, fullMode: true })
      socket.on("data", (chunk: Buffer) =>
        decoder.decode(chunk, (kind, _id, payload) => {
          if (kind === MuxKind.Ping) socket.write(Buffer.concat([encodeMuxHeader(MuxKind.Pong, NIL_STREAM_ID, 8), payload]))
        })
      )
    })
    const r = await router({ ackTimeoutMs: 150, heartbeatIntervalMs: 100 })
    const sent = performance.now()
    const call = await r.call(fake.address, {})
    expect(await call.acked).toMatchObject({ _tag: "TransportTimeoutError", reason: "AckTimeout" })
    expect(performance.now() - sent).toBeGreaterThanOrEqual(140)
    await until(() => fake.frames.some((f) => f.kind === MuxKind.Reset))
    expect(r.fullMode.sender.connections()).toHaveLength(1)
  })

  it("a router busy for longer than its timeouts right after dialling does not blame the worker: the hello's answer and the acks still count", async () => {
    const w = await worker()
    w.serve("ns/comp/ep", counter(3))
    const r = await router({ connectTimeoutMs: 150, ackTimeoutMs: 150 })
    // The first call dials; then the router's loop is blocked (as by thousands of requests
    // submitted in one synchronous stretch) for longer than both timeouts, before the connect.
    const first = r.call(w.address("ns/comp/ep"), {})
    const until = performance.now() + 400
    while (performance.now() < until) {
      // busy
    }
    const call = await first
    expect(await call.acked).toBeUndefined()
    expect((await call.done).items).toHaveLength(3)
  })

  it("a worker that accepts the connection but never answers the hello: ConnectTimeout once the hello has waited connectTimeoutMs", async () => {
    const server = net.createServer((socket) => void socket.on("error", () => {}))
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanups.push(() => void server.close())
    const port = (server.address() as net.AddressInfo).port
    const r = await router({ connectTimeoutMs: 150 })
    const sent = performance.now()
    const acked = await (await r.call(`127.0.0.1:${port}/1/ns/comp/ep`, {})).acked
    expect(acked).toMatchObject({ _tag: "TransportTimeoutError", reason: "ConnectTimeout" })
    expect((acked as TransportError).detail).toContain("hello answer")
    expect(performance.now() - sent).toBeGreaterThanOrEqual(140)
  })
})

describe("full mode: credit for a stream that is over", () => {
  it("a request sent from a stream's onEnd carries no WindowUpdate for that stream, only the ConnectionAck of the bytes decoded", async () => {
    // A fake worker that answers each Request with a Prologue, 3 items and End, in one write.
    const seen: Array<{ kind: MuxKind; id: string; chunk: number }> = []
    let chunks = 0
    const server = net.createServer((socket) => {
      socket.on("error", () => {})
      const decoder = makeMuxDecoder({ maxMessageSize: 1 << 20, fullMode: true })
      let head: Buffer | undefined = Buffer.alloc(0)
      socket.on("data", (chunk: Buffer) => {
        let bytes: Uint8Array = chunk
        if (head !== undefined) {
          head = Buffer.concat([head, chunk])
          const hello = readHello(head)
          if (!("_tag" in hello) || hello._tag !== "Hello") return
          socket.write(encodeHelloAnswer(HelloStatus.Accepted, ""))
          bytes = head.subarray(hello.size)
          head = undefined
        }
        const n = ++chunks
        decoder.decode(bytes, (kind, id, _payload) => {
          seen.push({ kind, id: Buffer.from(id).toString("hex"), chunk: n })
          if (kind !== MuxKind.Request) return
          const body = (text: string) => new TextEncoder().encode(text)
          socket.write(Buffer.concat([
            encodeMuxFrame(MuxKind.Prologue, id, body(`{"error":null}`)),
            ...[1, 2, 3].map((i) => encodeMuxFrame(MuxKind.Data, id, body(`{"data":${i},"complete_final":false}`))),
            encodeMuxFrame(MuxKind.End, id)
          ]))
        })
      })
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanups.push(() => void server.close())
    const address = `127.0.0.1:${(server.address() as net.AddressInfo).port}/1/ns/comp/ep`
    const r = await router()
    let second: Promise<Call> | undefined
    const first = await r.call(address, { q: 1 }, { onEnd: () => void (second = r.call(address, { q: 2 })) })
    expect((await first.done).items).toEqual([1, 2, 3])
    const next = await second!
    expect((await next.done).items).toEqual([1, 2, 3])
    await sleep(CREDIT_UPDATE_MS + 30) // past the credit timer: anything still owed has gone out by now
    const requests = seen.filter((f) => f.kind === MuxKind.Request)
    expect(requests).toHaveLength(2)
    const firstId = requests[0]!.id
    // The second request went out while the first stream's End was being decoded: in the same
    // write as the acknowledgement of the bytes decoded so far, and with no credit for the first
    // stream, which is over.
    const withSecond = seen.filter((f) => f.chunk === requests[1]!.chunk)
    expect(withSecond.map((f) => f.kind).sort()).toEqual([MuxKind.ConnectionAck, MuxKind.Request].sort())
    expect(seen.filter((f) => f.kind === MuxKind.WindowUpdate && f.id === firstId)).toEqual([])
  })
})

describe("full mode: the request's control header", () => {
  it("the router sends a fixed connection_info, never its call-home address, that an older worker's strict decoder accepts", async () => {
    const fake = await fakeWorker()
    const r = await router()
    // both ways a stream can be handed to the sender: as the Endpoint layer does, and by its ConnectionInfo
    const calls = [await r.call(fake.address, { q: 1 }), await r.call(fake.address, { q: 2 }, { viaConnectionInfo: true })]
    await until(() => fake.frames.filter((f) => f.kind === MuxKind.Request).length === 2)
    const requests = fake.frames.filter((f) => f.kind === MuxKind.Request)
    for (const [i, request] of requests.entries()) {
      const head = decodeFullRequestPayload(Buffer.from(request.payload, "latin1"))
      if (head instanceof Error) throw head
      // no absentConnectionInfo: the decoder of a worker from before the change
      const message = decodeRequestMessage(head.message, { maxMessageSize: 1 << 20 })
      if (message instanceof Error) throw message
      expect(message.control.id).toBe(calls[i]!.requestId)
      expect(message.payload).toEqual({ q: i + 1 })
      expect(message.control.connection_info).toEqual(FULL_MODE_CONNECTION_INFO)
      expect(request.payload).not.toContain("subject")
    }
    for (const c of calls) c.cancelAck()
  })

  it("a stream the caller names only by its connection_info (no responseStream) is served too", async () => {
    const w = await worker()
    w.serve("ns/comp/ep", counter(4))
    const r = await router()
    expect(await (await r.call(w.address("ns/comp/ep"), {}, { viaConnectionInfo: true })).done).toMatchObject({ items: [{ i: 0 }, { i: 1 }, { i: 2 }, { i: 3 }], error: undefined })
  })

  it("a worker still serves a request whose control header carries connection_info (an older router), built by hand", async () => {
    const w = await worker()
    w.serve("ns/comp/ep", counter(3))
    const parsed = parseTcpAddress(w.address("ns/comp/ep"))
    if (parsed instanceof Error) throw parsed
    const control = {
      id: crypto.randomUUID(),
      request_type: "single_in" as const,
      response_type: "many_out" as const,
      payload_codec: "json" as const,
      connection_info: { transport: "tcp_server", info: JSON.stringify({ address: "127.0.0.1:1", subject: "s", context: "c", stream_type: "response" }) }
    }
    const payload = encodeFullRequestPayload(tcpWirePath(parsed), { "x-request-id": control.id }, encodeRequestMessage(control, {}))
    if (!(payload instanceof Uint8Array)) throw payload
    const peer = await fakeRouter(w.port)
    expect(await peer.answer).toBe(HelloStatus.Accepted)
    peer.socket.write(Buffer.concat([encodeMuxHeader(MuxKind.Request, new Uint8Array(16).fill(9), payload.length), payload]))
    await until(() => peer.frames.some((f) => f.kind === MuxKind.End))
    expect(peer.frames.filter((f) => f.kind !== MuxKind.ConnectionAck && f.kind !== MuxKind.WindowUpdate).map((f) => f.kind))
      .toEqual([MuxKind.Prologue, MuxKind.Data, MuxKind.Data, MuxKind.Data, MuxKind.End])
  })
})
