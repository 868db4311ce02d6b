/**
 * Fault injection: truncation. A fake worker written here speaks a response's exact bytes and
 * stops at every byte offset of its last frames, then closes (a FIN, or the HTTP/2 stream's clean
 * END_STREAM); the router is ours. A cut response must be an error, never a shorter success.
 *
 * For each framing, the response is a prologue, 3 items, and the end:
 * - one-shot call-home (TwoPartCodec): handshake, prologue, 3 item frames, the `complete_final`
 *   frame, the sentinel. Cut at every offset of the last item frame and of the `complete_final`
 *   frame: an error. Cut inside the sentinel: the generation was complete (`complete_final`
 *   arrived; the router waits `sentinelTimeoutMs` for the sentinel, then ends), so the call may
 *   succeed, but only with every item.
 * - pooled call-home (mux v1): handshake, Prologue, 3 Data frames, End. Cut at every offset of
 *   the last Data frame and of the End frame: an error.
 * - the full TCP mode: the hello answer, then Prologue, 3 Data frames and End on the request's
 *   stream. Cut at every offset of the last Data frame and of the End frame: an error.
 * - the pure HTTP mode, in each format (SSE, NDJSON, binary): 200, 3 items, the end marker. Cut at
 *   every offset of the last item and of the end marker, the stream then ended cleanly: an error.
 * A cut at offset 0 of a frame is the stream ending right after the frame before it.
 *
 * Bound: every call settles within 5 s (the cuts of one framing run at once).
 */
import * as http2 from "node:http2"
import * as net from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Scope, Stream } from "effect"
import { Discovery } from "../../src/discovery/index.ts"
import * as Endpoint from "../../src/Endpoint.ts"
import { encodeCallHomeHandshake, PROLOGUE_OK_BYTES, PROLOGUE_OK_FRAME, SENTINEL_FRAME } from "../../src/protocol/CallHome.ts"
import { encodeHelloAnswer, HELLO_SIZE, HelloStatus } from "../../src/protocol/FullModeHello.ts"
import { contentTypeOf, makeEncoder } from "../../src/protocol/HttpStreamFormat.ts"
import type { StreamFormat } from "../../src/protocol/HttpStreamFormat.ts"
import { encodeMuxFrame, makeMuxDecoder, MuxKind } from "../../src/protocol/MuxCodec.ts"
import { encodeMuxHandshake, parseMuxInfo } from "../../src/protocol/MuxHandshake.ts"
import { payloadCodec } from "../../src/protocol/PayloadCodec.ts"
import { encodeStreamComplete, encodeStreamItem } from "../../src/protocol/RequestMessage.ts"
import { encodeFrame } from "../../src/protocol/TwoPartCodec.ts"
import type { ResponseSink } from "../../src/ResponsePlane.ts"
import * as CallHomeServer from "../../src/transport/tcp/router/CallHomeServer.ts"
import { startRouter } from "../support/tcpFull.ts"
import { configStack } from "../support/stacks.ts"

const ITEMS = ["a", "bb", "ccc"]
const SETTLE_MS = 5000
const json = payloadCodec("json")

/** How one call ended. */
type Settled = { readonly ok: boolean; readonly items: ReadonlyArray<unknown>; readonly error?: string }

/** A sink that records items and settles once. */
const recordingSink = () => {
  const items: Array<unknown> = []
  let settle!: (s: Settled) => void
  const settled = new Promise<Settled>((r) => (settle = r))
  const sink: ResponseSink = {
    onItems: (batch) => void items.push(...batch),
    onEnd: () => settle({ ok: true, items }),
    onError: (e) => settle({ ok: false, items, error: `${e._tag}: ${e.message}` })
  }
  return { sink, settled }
}

/** Resolves with `p`, or with a hang after `ms`. */
const bounded = (p: Promise<Settled>, ms = SETTLE_MS): Promise<Settled | "hang"> =>
  Promise.race([p, new Promise<"hang">((r) => setTimeout(() => r("hang"), ms))])

/** Frames of a response, and which of them may be cut. */
interface Cuts {
  /** Bytes that always arrive (everything before the first frame that is cut). */
  readonly head: Uint8Array
  /** The frames cut at each offset, in order; a cut in frame i sends frames before it whole. */
  readonly frames: ReadonlyArray<{ readonly name: string; readonly bytes: Uint8Array; readonly completeAfter?: boolean }>
}

/** Every cut: the bytes sent, and what the call must do. */
const cutsOf = (c: Cuts) => {
  const out: Array<{ readonly where: string; readonly bytes: Uint8Array; readonly mayComplete: boolean }> = []
  let before = c.head
  for (const frame of c.frames) {
    for (let k = 0; k < frame.bytes.length; k++) {
      out.push({ where: `${frame.name} cut at ${k}/${frame.bytes.length}`, bytes: concat(before, frame.bytes.subarray(0, k)), mayComplete: frame.completeAfter === true })
    }
    before = concat(before, frame.bytes)
  }
  return out
}

const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)))

/** Checks every result: an error, or (where allowed) a success with every item; never a hang. */
const expectNoShortSuccess = (results: ReadonlyArray<{ readonly where: string; readonly mayComplete: boolean; readonly result: Settled | "hang" }>) => {
  let errors = 0
  for (const { where, mayComplete, result } of results) {
    expect(result, where).not.toBe("hang")
    if (result === "hang") continue
    if (result.ok) {
      expect(mayComplete, `${where}: a cut response succeeded with ${JSON.stringify(result.items)}`).toBe(true)
      expect(result.items, where).toEqual(ITEMS)
    } else errors++
  }
  return errors
}

/** Opens one socket to `address` ("host:port"), writes `bytes`, then ends it (FIN) and waits for the close. */
const speak = (address: string, bytes: Uint8Array) => {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))]
  const socket = net.connect({ host, port })
  socket.on("error", () => {})
  socket.on("data", () => {})
  socket.end(bytes)
  return socket
}

/** The router's call-home server, listening (so that every later `open` is synchronous). */
const callHomeServer = (mux: boolean) =>
  Effect.gen(function*() {
    const server = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 10_000, maxMessageSize: 1 << 20, sentinelTimeoutMs: 200, mux })
    const warmUp = yield* server.open({ requestId: crypto.randomUUID(), endpoint: "warm-up", codec: "json", sink: recordingSink().sink })
    warmUp.close()
    return server
  })

describe("truncation: one-shot call-home", () => {
  it.live("a response cut at every offset of its last item, complete_final and sentinel frames is an error, never a shorter success", () =>
    Effect.gen(function*() {
      const server = yield* callHomeServer(false)
      const itemFrames = ITEMS.map((i) => encodeFrame(undefined, encodeStreamItem(json, i)))
      const cuts = cutsOf({
        head: concat(PROLOGUE_OK_FRAME, ...itemFrames.slice(0, -1)),
        frames: [
          { name: "last item frame", bytes: itemFrames.at(-1)! },
          { name: "complete_final frame", bytes: encodeFrame(undefined, encodeStreamComplete(json)) },
          { name: "sentinel frame", bytes: SENTINEL_FRAME, completeAfter: true }
        ]
      })
      const results = yield* Effect.promise(() =>
        Promise.all(cuts.map(async (cut) => {
          const rec = recordingSink()
          const pending = Effect.runSync(server.open({ requestId: crypto.randomUUID(), endpoint: "faults.trunc.oneshot", codec: "json", sink: rec.sink }))
          const info = JSON.parse(pending.connectionInfo.info) as { address: string; subject: string }
          const socket = speak(info.address, concat(encodeCallHomeHandshake(info.subject), cut.bytes))
          const result = await bounded(rec.settled)
          socket.destroy()
          pending.close()
          return { ...cut, result }
        })))
      const errors = expectNoShortSuccess(results)
      expect(errors).toBeGreaterThanOrEqual(results.filter((r) => !r.mayComplete).length)
      console.log(`truncation, one-shot call-home: ${results.length} cuts, ${errors} errors, ${results.length - errors} complete successes (cuts in the sentinel)`)
    }).pipe(Effect.scoped))
})

describe("truncation: pooled call-home (mux v1)", () => {
  it.live("a response cut at every offset of its last Data frame and End frame is an error, never a shorter success", () =>
    Effect.gen(function*() {
      const server = yield* callHomeServer(true)
      const results = yield* Effect.promise(async () => {
        // Each cut on a stream (and a mux connection) of its own: `one(undefined)` counts the cuts.
        const one = async (cutIndex: number | undefined) => {
          const requestId = crypto.randomUUID()
          const rec = recordingSink()
          const pending = Effect.runSync(server.open({ requestId, endpoint: "faults.trunc.mux", codec: "json", sink: rec.sink }))
          const info = parseMuxInfo(pending.connectionInfo, requestId)
          if (!("streamIdBytes" in info)) throw new Error(String(info))
          const id = info.streamIdBytes
          const dataFrames = ITEMS.map((i) => encodeMuxFrame(MuxKind.Data, id, encodeStreamItem(json, i)))
          const cuts = cutsOf({
            head: concat(
              encodeMuxHandshake(info.frontendServerId, crypto.randomUUID()),
              encodeMuxFrame(MuxKind.Prologue, id, PROLOGUE_OK_BYTES),
              ...dataFrames.slice(0, -1)
            ),
            frames: [
              { name: "last Data frame", bytes: dataFrames.at(-1)! },
              { name: "End frame", bytes: encodeMuxFrame(MuxKind.End, id) }
            ]
          })
          if (cutIndex === undefined) {
            pending.close()
            return cuts.length
          }
          const cut = cuts[cutIndex]!
          const socket = speak(info.address, cut.bytes)
          const result = await bounded(rec.settled)
          socket.destroy()
          pending.close()
          return { where: cut.where, mayComplete: cut.mayComplete, result }
        }
        const count = (await one(undefined)) as number
        return (await Promise.all(Array.from({ length: count }, (_, i) => one(i)))) as Array<{ where: string; mayComplete: boolean; result: Settled | "hang" }>
      })
      const errors = expectNoShortSuccess(results)
      expect(errors).toBe(results.length)
      console.log(`truncation, pooled call-home: ${results.length} cuts, ${errors} errors`)
    }).pipe(Effect.scoped))
})

describe("truncation: the full TCP mode", () => {
  it.live("a response cut at every offset of its last Data frame and End frame is an error, never a shorter success", () =>
    Effect.gen(function*() {
      // The fake worker: answers the hello, reads the Request frame, and sends the response cut at `cut`.
      let nextCut: (id: Uint8Array) => Uint8Array = () => new Uint8Array()
      const sockets = new Set<net.Socket>()
      const fake = net.createServer((socket) => {
        sockets.add(socket)
        socket.once("close", () => sockets.delete(socket))
        socket.on("error", () => {})
        let hello = true
        let buffered = Buffer.alloc(0)
        const decoder = makeMuxDecoder({ maxMessageSize: 1 << 20, fullMode: true })
        socket.on("data", (chunk: Buffer) => {
          if (hello) {
            buffered = Buffer.concat([buffered, chunk])
            if (buffered.length < HELLO_SIZE) return
            hello = false
            socket.write(encodeHelloAnswer(HelloStatus.Accepted))
            chunk = buffered.subarray(HELLO_SIZE)
          }
          decoder.decode(chunk, (kind, streamId) => {
            if (kind === MuxKind.Request) socket.end(nextCut(Uint8Array.from(streamId)))
          })
        })
      })
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((r) => fake.listen(0, "127.0.0.1", () => r()))),
        () => Effect.promise(() => new Promise<void>((r) => {
          for (const s of sockets) s.destroy()
          fake.close(() => r())
        }))
      )
      const port = (fake.address() as net.AddressInfo).port
      const router = yield* Effect.acquireRelease(Effect.promise(() => startRouter()), (r) => Effect.promise(() => r.close()))
      const cutsFor = (id: Uint8Array) => {
        const dataFrames = ITEMS.map((i) => encodeMuxFrame(MuxKind.Data, id, encodeStreamItem(json, i)))
        return cutsOf({
          head: concat(encodeMuxFrame(MuxKind.Prologue, id, PROLOGUE_OK_BYTES), ...dataFrames.slice(0, -1)),
          frames: [
            { name: "last Data frame", bytes: dataFrames.at(-1)! },
            { name: "End frame", bytes: encodeMuxFrame(MuxKind.End, id) }
          ]
        })
      }
      const count = cutsFor(new Uint8Array(16)).length
      const results: Array<{ where: string; mayComplete: boolean; result: Settled | "hang" }> = []
      // One call at a time: each cut ends its connection, and the next call dials a new one.
      for (let i = 0; i < count; i++) {
        let where = ""
        nextCut = (id) => {
          const cut = cutsFor(id)[i]!
          where = cut.where
          return cut.bytes
        }
        const call = yield* Effect.promise(() => router.call(`127.0.0.1:${port}/1/ns/comp/ep`, 1))
        const result = yield* Effect.promise(() =>
          bounded(call.done.then((d) => (d.error === undefined ? { ok: true, items: d.items } : { ok: false, items: d.items, error: d.error.message }))))
        call.pending.close()
        results.push({ where, mayComplete: false, result })
      }
      const errors = expectNoShortSuccess(results)
      expect(errors).toBe(count)
      console.log(`truncation, full TCP mode: ${results.length} cuts, ${errors} errors`)
    }).pipe(Effect.scoped))
})

/** The pure HTTP mode in `format`: a fake h2c worker answers every POST with the body cut at the next offset. */
const httpTruncation = (format: StreamFormat) =>
  it.live(`${format}: a body cut at every offset of its last item and end marker, then ended cleanly, is an error`, () =>
    Effect.gen(function*() {
      const encoder = makeEncoder(format)
      const items = ITEMS.map((i) => encoder.item(i))
      const cuts = cutsOf({
        head: concat(...items.slice(0, -1)),
        frames: [
          { name: "last item", bytes: items.at(-1)! },
          { name: "end marker", bytes: encoder.done() }
        ]
      })
      let next = 0
      const fake = http2.createServer()
      fake.on("stream", (stream) => {
        stream.on("error", () => {})
        const cut = cuts[Number(next++)]!
        stream.on("data", () => {})
        stream.on("end", () => {
          stream.respond({ ":status": 200, "content-type": contentTypeOf(format) })
          stream.end(Buffer.from(cut.bytes))
        })
      })
      fake.on("sessionError", () => {})
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((r) => fake.listen(0, "127.0.0.1", () => r()))),
        () => Effect.promise(() => new Promise<void>((r) => fake.close(() => r())))
      )
      const port = (fake.address() as net.AddressInfo).port
      // A real worker's record, pointed at the fake worker once the real one has stopped.
      const worker = yield* Scope.fork(yield* Scope.Scope, "sequential")
      const served = yield* Endpoint.serveEmit("faults.trunc.http", () => Effect.void).pipe(Scope.provide(worker))
      yield* Scope.close(worker, Exit.void)
      const record = JSON.parse(JSON.stringify(served.instance, (_k, v) => (typeof v === "bigint" ? `${v}n` : v)).replace(/127\.0\.0\.1:\d+/g, `127.0.0.1:${port}`), (_k, v) =>
        typeof v === "string" && /^\d+n$/.test(v) ? BigInt(v.slice(0, -1)) : v)
      yield* (yield* Discovery).register(record)
      const client = yield* Endpoint.client<unknown, string>("faults.trunc.http")
      const results: Array<{ where: string; mayComplete: boolean; result: Settled | "hang" }> = []
      for (let i = 0; i < cuts.length; i++) {
        const exit = yield* Effect.exit(Effect.timeout(Stream.runCollect(client.generate(i)), SETTLE_MS))
        const result: Settled | "hang" = Exit.isSuccess(exit)
          ? { ok: true, items: [...exit.value] }
          : Cause.hasInterruptsOnly(exit.cause) ? "hang" : { ok: false, items: [], error: String(Cause.squash(exit.cause)) }
        if (result !== "hang" && !result.ok && /TimeoutError|timed out/i.test(result.error ?? "")) results.push({ where: cuts[i]!.where, mayComplete: false, result: "hang" })
        else results.push({ where: cuts[i]!.where, mayComplete: false, result })
      }
      const errors = expectNoShortSuccess(results)
      expect(errors).toBe(cuts.length)
      console.log(`truncation, pure HTTP ${format}: ${results.length} cuts, ${errors} errors`)
    }).pipe(Effect.scoped, Effect.provide(configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_STREAM_FORMAT: format, DYN_ROUTER_MAX_ATTEMPTS: "1" }).layer)))

describe("truncation: the pure HTTP mode", () => {
  httpTruncation("sse")
  httpTruncation("ndjson")
  httpTruncation("binary")
})
