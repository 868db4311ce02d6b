/**
 * Fault injection: a peer that accepts (or connects) but never reads. Whatever the server then
 * writes to it is bounded by flow control or by the socket buffers, a timeout fires and ends the
 * exchange, and the process serves others meanwhile.
 *
 * - The TCP request server in Dynamo's framing (worker): a fake router pipelines request frames
 *   and never reads their acks. The worker stops reading its requests once its acks back up (the
 *   fake's own writes then back up too: it could not send everything), so the acks held are
 *   bounded by the buffers; the connection, silent from then on, is dropped after the connection
 *   timeout (`connectionTimeoutMs`, 1 s here). Bound: closed within 8 s of the start.
 * - The full TCP mode (worker): a fake router says hello, sends one Request, then neither reads
 *   nor writes. The handler's response is held to the stream's credit (256 KiB: its writer says
 *   "wait" beyond it), and the connection is dropped after two heartbeat intervals without a
 *   word from the router (500 ms intervals here); the handler learns it (`onDisconnect`).
 *   Bound: within 5 s of the request.
 * - The TCP call-home server (router): a fake worker calls home, sends its prologue and an item,
 *   then neither reads nor writes. The stream's inactivity timeout (`idleTimeoutMs`, 500 ms here)
 *   fails it with `TransportTimeoutError` "StreamIdle"; the router's writes to that worker are a
 *   few bytes of control frames (read afterwards: at most 1 KiB), then it closes the socket.
 *   Bound: within 3 s.
 * Meanwhile, on each, a normal exchange completes.
 *
 * The pure HTTP mode's reader that stops reading is in never-reads-http.test.ts.
 */
import * as net from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as Endpoint from "../../src/Endpoint.ts"
import { encodeCallHomeHandshake, PROLOGUE_OK_FRAME, SENTINEL_FRAME } from "../../src/protocol/CallHome.ts"
import { encodeHello } from "../../src/protocol/FullModeHello.ts"
import { encodeRequestFrame, streamIdFromUuid } from "../../src/protocol/MuxCodec.ts"
import { payloadCodec } from "../../src/protocol/PayloadCodec.ts"
import { encodeRequestMessage, encodeStreamComplete, encodeStreamItem } from "../../src/protocol/RequestMessage.ts"
import { encodeTcpRequestFrame } from "../../src/protocol/TcpRequestFrame.ts"
import { encodeFrame } from "../../src/protocol/TwoPartCodec.ts"
import * as CallHomeServer from "../../src/transport/tcp/router/CallHomeServer.ts"
import { configStack } from "../support/stacks.ts"
import { startRouter, startWorker } from "../support/tcpFull.ts"

const json = payloadCodec("json")

/** Resolves with ms until `socket` closed, or undefined after `ms`. */
const closedWithin = (socket: net.Socket, ms: number, since = performance.now()) =>
  new Promise<number | undefined>((resolve) => {
    const timer = setTimeout(() => resolve(undefined), ms)
    if (socket.destroyed) return resolve(performance.now() - since)
    socket.once("close", () => (clearTimeout(timer), resolve(performance.now() - since)))
  })

const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)))

describe("never reads", () => {
  it.live("the TCP request server (Dynamo's framing): a router that never reads its acks is held by the buffers, then dropped", () =>
    Effect.gen(function*() {
      const served = yield* Endpoint.serveEmit("faults.never.dynamo", (n: number, _ctx, emit: Endpoint.Emit<number>) =>
        Effect.sync(() => {
          for (let i = 0; i < n; i++) emit(i)
        }))
      const client = yield* Endpoint.client<number, number>("faults.never.dynamo")
      const address = JSON.stringify(served.instance.transport)
      const port = Number(/127\.0\.0\.1:(\d+)/.exec(address)![1])
      // 300,000 requests for an endpoint nobody serves: each is answered with a rejection ack (~70 bytes).
      const one = encodeTcpRequestFrame("1/nobody/serves/this", {}, new Uint8Array(0)) as Uint8Array
      const batch = Buffer.concat(Array.from({ length: 10_000 }, () => one))
      const total = batch.length * 30
      const started = performance.now()
      const socket = net.connect({ host: "127.0.0.1", port })
      socket.on("error", () => {})
      socket.pause() // never reads
      let queued = 0
      const write = () => {
        while (queued < total && !socket.destroyed) {
          queued += batch.length
          if (!socket.write(batch)) return void socket.once("drain", write)
        }
      }
      socket.once("connect", write)
      // Meanwhile: a normal call.
      const items = yield* Stream.runCollect(client.generate(5))
      expect([...items]).toEqual([0, 1, 2, 3, 4])
      const closedAfter = yield* Effect.promise(() => closedWithin(socket, 8000, started))
      const unsent = socket.writableLength
      const sent = socket.bytesWritten
      console.log(`never reads, Dynamo framing: closed after ${closedAfter?.toFixed(0)} ms; ${sent} of ${total} request bytes went out, ${unsent} still queued in the fake router`)
      expect(closedAfter, "the connection was never dropped").toBeDefined()
      // The worker stopped reading: the fake router could not send everything.
      expect(sent).toBeLessThan(total)
      socket.destroy()
    }).pipe(Effect.provide(configStack({ DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "false", DYN_TCP_REQUEST_CONNECTION_TIMEOUT_SECS: "1" }).layer)))

  it.live("the full TCP mode: a router that stops reading holds the response to its credit, and is dropped after two heartbeat intervals", () =>
    Effect.gen(function*() {
      const worker = yield* Effect.acquireRelease(Effect.promise(() => startWorker({ heartbeatIntervalMs: 500 })), (w) => Effect.promise(() => w.close()))
      const router = yield* Effect.acquireRelease(Effect.promise(() => startRouter({ heartbeatIntervalMs: 500 })), (r) => Effect.promise(() => r.close()))
      const item = "x".repeat(16 * 1024)
      let sentBytes = 0
      let disconnectedAt: number | undefined
      let stalled = false
      worker.serve("ns/comp/flood", (_message, writer) => {
        writer.prologue()
        writer.onDisconnect(() => void (disconnectedAt = performance.now()))
        const pump = () => {
          for (;;) {
            if (disconnectedAt !== undefined) return
            writer.send(item)
            sentBytes += item.length
            if (writer.whenWritable?.(pump) === true) return void (stalled = true)
            if (sentBytes > 64 * 1024 * 1024) return
          }
        }
        pump()
      })
      worker.serve("ns/comp/ep", (_message, writer) => {
        writer.prologue()
        for (let i = 0; i < 3; i++) writer.send(i)
        writer.complete()
      })
      const requestId = crypto.randomUUID()
      const message = encodeRequestMessage(
        { id: requestId, request_type: "single_in", response_type: "many_out", payload_codec: "json", connection_info: { transport: "tcp_server", info: "{}" } },
        1
      )
      const started = performance.now()
      const socket = net.connect({ host: "127.0.0.1", port: worker.port })
      socket.on("error", () => {})
      socket.pause() // never reads
      socket.write(concat(encodeHello(), encodeRequestFrame(streamIdFromUuid(requestId)!, "1/ns/comp/flood", {}, message) as Uint8Array))
      // Meanwhile: a normal call on the same worker.
      const call = yield* Effect.promise(() => router.call(worker.address("ns/comp/ep"), 1))
      const done = yield* Effect.promise(() => call.done)
      expect(done.error).toBeUndefined()
      expect(done.items).toEqual([0, 1, 2])
      // The fake never reads, so it cannot see the close: the worker's side of its socket is watched instead.
      const closedAfter = yield* Effect.promise(async () => {
        while (worker.sockets().some((s) => s.remotePort === socket.localPort)) {
          if (performance.now() - started > 5000) return undefined
          await new Promise((r) => setTimeout(r, 10))
        }
        return performance.now() - started
      })
      console.log(`never reads, full TCP mode: the handler sent ${sentBytes} bytes before its writer said wait (stalled ${stalled}); connection dropped after ${closedAfter?.toFixed(0)} ms, handler told after ${disconnectedAt === undefined ? "never" : (disconnectedAt - started).toFixed(0)} ms`)
      expect(stalled).toBe(true)
      expect(sentBytes).toBeLessThanOrEqual(512 * 1024)
      expect(closedAfter, "the connection was never dropped").toBeDefined()
      expect(disconnectedAt).toBeDefined()
      socket.destroy()
    }).pipe(Effect.scoped))

  it.live("the TCP call-home server: a worker that stops reading and writing is timed out by the stream's idle timeout", () =>
    Effect.gen(function*() {
      const server = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 10_000, maxMessageSize: 1 << 20, idleTimeoutMs: 500 })
      const open = (endpoint: string) =>
        Effect.gen(function*() {
          const items: Array<unknown> = []
          let settle!: (r: { ok: boolean; error?: string; reason?: string }) => void
          const settled = new Promise<{ ok: boolean; error?: string; reason?: string }>((r) => (settle = r))
          const pending = yield* server.open({
            requestId: crypto.randomUUID(),
            endpoint,
            codec: "json",
            sink: {
              onItems: (b) => void items.push(...b),
              onEnd: () => settle({ ok: true }),
              onError: (e) => settle({ ok: false, error: `${e._tag}: ${e.message}`, reason: (e as { reason?: string }).reason })
            }
          })
          const info = JSON.parse(pending.connectionInfo.info) as { address: string; subject: string }
          const port = Number(info.address.slice(info.address.lastIndexOf(":") + 1))
          return { items, settled, pending, info, port }
        })
      const stuck = yield* open("faults.never.callhome")
      const started = performance.now()
      const socket = net.connect({ host: "127.0.0.1", port: stuck.port })
      socket.on("error", () => {})
      socket.pause() // never reads
      socket.write(concat(encodeCallHomeHandshake(stuck.info.subject), PROLOGUE_OK_FRAME, encodeFrame(undefined, encodeStreamItem(json, "first"))))
      // Meanwhile: a normal stream.
      const normal = yield* open("faults.never.normal")
      const good = net.connect({ host: "127.0.0.1", port: normal.port })
      good.on("error", () => {})
      good.end(concat(
        encodeCallHomeHandshake(normal.info.subject),
        PROLOGUE_OK_FRAME,
        encodeFrame(undefined, encodeStreamItem(json, "ok")),
        encodeFrame(undefined, encodeStreamComplete(json)),
        SENTINEL_FRAME
      ))
      expect(yield* Effect.promise(() => normal.settled)).toEqual({ ok: true })
      expect(normal.items).toEqual(["ok"])

      const result = yield* Effect.promise(() => Promise.race([stuck.settled, new Promise<undefined>((r) => setTimeout(() => r(undefined), 3000))]))
      const after = performance.now() - started
      expect(result, "the stream was never timed out").toBeDefined()
      expect(result!.ok).toBe(false)
      expect(result!.error).toMatch(/^TransportTimeoutError/)
      expect(result!.reason).toBe("StreamIdle")
      expect(stuck.items).toEqual(["first"])
      // What the router wrote to the worker that never read it (read now): a few control bytes, then the close.
      let received = 0
      socket.on("data", (c: Buffer) => void (received += c.length))
      const closed = closedWithin(socket, 3000)
      socket.resume()
      const closedAfter = yield* Effect.promise(() => closed)
      console.log(`never reads, call-home: the stream failed after ${after.toFixed(0)} ms (${result!.error}); the router had written ${received} bytes to the worker, and closed its socket`)
      expect(closedAfter, "the router never closed the socket").toBeDefined()
      expect(received).toBeLessThanOrEqual(1024)
      socket.destroy()
    }).pipe(Effect.scoped))
})
