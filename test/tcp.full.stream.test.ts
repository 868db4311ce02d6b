/**
 * The full TCP mode over real loopback sockets: requests and their response streams on one
 * persistent connection, credit flow control both ways, streamed requests. The worker is a plain
 * net.Server handing connections to the full mode's acceptor; the router is a call-home server
 * whose streams the full mode's sender feeds (test/support/tcpFull.ts).
 */
import { CREDIT_UPDATE_MS } from "../src/protocol/MuxHandshake.ts"
import { afterEach, describe, expect, it } from "vitest"
import { Effect, Stream } from "effect"
import { counter, sleep, startRouter, startWorker, until } from "./support/tcpFull.ts"
import type { ResponseWriter } from "../src/ResponsePlane.ts"
import { wireHeaders } from "../src/transport/tcp/full/Sender.ts"
import { makeMuxDecoder, MuxKind } from "../src/protocol/MuxCodec.ts"

let cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.reverse()) await c()
  cleanups = []
})

const pair = async (worker: Parameters<typeof startWorker>[0] = {}, router: Parameters<typeof startRouter>[0] = {}) => {
  const w = await startWorker(worker)
  const r = await startRouter(router)
  cleanups.push(w.close, r.close)
  return { w, r }
}

describe("full mode: streams", () => {
  it("a request is acked by the worker's Prologue, and its items and end come back on the same connection", async () => {
    const { w, r } = await pair()
    let seen: unknown
    w.serve("ns/comp/ep", (message, writer) => {
      seen = { payload: message.payload, headers: message.headers, type: message.control.request_type, items: message.items }
      counter(10)(message, writer)
    })
    const call = await r.call(w.address("ns/comp/ep"), { prompt: "hi" })
    expect(await call.acked).toBeUndefined()
    const { items, error } = await call.done
    expect(error).toBeUndefined()
    expect(items).toEqual(Array.from({ length: 10 }, (_, i) => ({ i })))
    expect(seen).toEqual({ payload: { prompt: "hi" }, headers: { "x-request-id": call.requestId }, type: "single_in", items: undefined })
    expect(r.fullMode.sender.connections()).toHaveLength(1)
    expect(w.fullMode.acceptor.connections()).toHaveLength(1)
    // A second request reuses the connection. Its x-request-id is the control's id, so it does
    // not travel as a header (Sender.wireHeaders); the worker gives it to the handler from there.
    const wire: Array<Buffer> = []
    w.sockets()[0]!.on("data", (chunk: Buffer) => wire.push(chunk))
    const again = await r.call(w.address("ns/comp/ep"), {})
    expect((await again.done).items).toHaveLength(10)
    expect(seen).toMatchObject({ headers: { "x-request-id": again.requestId } })
    const bytes = Buffer.concat(wire)
    expect(bytes.includes(again.requestId)).toBe(true) // in the control header
    expect(bytes.includes("x-request-id")).toBe(false)
    expect(r.fullMode.sender.connections()).toHaveLength(1)
    expect(w.sockets()).toHaveLength(1)
  })

  it("a Request leaves out x-request-id only when it is the control's id, and keeps every other header", () => {
    const id = "7b0e2c4a-1f35-4d7e-9a0b-3c5d6e7f8a9b"
    expect(wireHeaders({ "x-request-id": id }, id)).toEqual({})
    expect(wireHeaders({ "x-request-id": id, traceparent: "00-ab-cd-01" }, id)).toEqual({ traceparent: "00-ab-cd-01" })
    expect(wireHeaders({ "x-request-id": "theirs" }, id)).toEqual({ "x-request-id": "theirs" })
    expect(wireHeaders({ traceparent: "00-ab-cd-01" }, id)).toEqual({ traceparent: "00-ab-cd-01" })
  })

  it("idle peers go quiet: once a stream is over, credit frames are not acknowledged back and forth", async () => {
    const { w, r } = await pair()
    w.serve("ns/comp/ep", counter(10))
    expect((await (await r.call(w.address("ns/comp/ep"), {})).done).error).toBeUndefined()
    await sleep(CREDIT_UPDATE_MS * 3) // the last acks (CREDIT_UPDATE_MS) have gone
    const socket = w.sockets()[0]!
    const before = [socket.bytesRead, socket.bytesWritten]
    await sleep(150) // well below the 1 s heartbeat
    expect([socket.bytesRead, socket.bytesWritten]).toEqual(before)
  })

  it("10,000 concurrent streams on one connection all complete, each in order", async () => {
    // Router and worker share this process: on a loaded machine (2 vCPUs at load 9) the worker's
    // side of 10,000 streams has taken more than the 5 s ack timeout of the base options. The ack
    // timeout is not what this test is about (tcp.full.faults.test.ts is): a minute here.
    const { w, r } = await pair({}, { maxStreamsPerConnection: 10_000, ackTimeoutMs: 60_000 })
    // Each stream answers on a later turn, interleaving all of them on the wire.
    w.serve("ns/comp/ep", (message, writer) => {
      const n = (message.payload as { n: number }).n
      setImmediate(() => {
        writer.prologue()
        for (let i = 0; i < 5; i++) writer.send([n, i])
        setImmediate(() => {
          for (let i = 5; i < 10; i++) writer.send([n, i])
          writer.complete()
        })
      })
    })
    const address = w.address("ns/comp/ep")
    const calls = await Promise.all(Array.from({ length: 10_000 }, (_, n) => r.call(address, { n })))
    const results = await Promise.all(calls.map((c) => c.done))
    results.forEach(({ items, error }, n) => {
      expect(error).toBeUndefined()
      expect(items).toEqual(Array.from({ length: 10 }, (_, i) => [n, i]))
    })
    expect(await Promise.all(calls.map((c) => c.acked))).toEqual(Array(10_000).fill(undefined))
    expect(r.fullMode.sender.connections()).toHaveLength(1)
    expect(w.sockets()).toHaveLength(1)
    expect(w.fullMode.acceptor.connections()[0]!.load()).toBe(0)
    expect(r.hub.streams.size).toBe(0)
    expect(w.hub.writers.size).toBe(0)
  }, 90_000)

  it("streams ending within one turn leave every 16 (ENDED_STREAMS_PER_WRITE), not all at the turn's end", async () => {
    const { w, r } = await pair()
    w.serve("ns/comp/ep", counter(1))
    const address = w.address("ns/comp/ep")
    expect((await (await r.call(address, {})).done).items).toEqual([{ i: 0 }]) // the connection is up
    // What the worker writes, as End frames per socket write.
    const socket = w.sockets()[0]!
    const decoder = makeMuxDecoder({ maxMessageSize: 1 << 20, fullMode: true })
    const endsPerWrite: Array<number> = []
    const write = socket.write.bind(socket) as (chunk: Uint8Array) => boolean
    socket.write = ((chunk: Uint8Array) => {
      let ends = 0
      decoder.decode(chunk, (kind) => void (kind === MuxKind.End && ends++))
      if (ends > 0) endsPerWrite.push(ends)
      return write(chunk)
    }) as typeof socket.write
    // 40 requests sent in one turn leave in one write of the router's and reach the worker in one
    // read, which serves them all at once.
    const calls = await Promise.all(Array.from({ length: 40 }, () => r.call(address, {})))
    for (const { items, error } of await Promise.all(calls.map((c) => c.done))) {
      expect(error).toBeUndefined()
      expect(items).toEqual([{ i: 0 }])
    }
    expect(endsPerWrite.reduce((a, b) => a + b, 0)).toBe(40)
    expect(Math.max(...endsPerWrite)).toBe(16)
  })

  it("beyond maxStreamsPerConnection a second connection opens; beyond maxConnectionsPerTarget requests wait for a slot", async () => {
    const { w, r } = await pair({}, { maxStreamsPerConnection: 2, maxConnectionsPerTarget: 2 })
    const held: Array<() => void> = []
    w.serve("ns/comp/ep", (_m, writer) => {
      writer.prologue()
      held.push(() => writer.complete())
    })
    const address = w.address("ns/comp/ep")
    const calls = await Promise.all(Array.from({ length: 6 }, () => r.call(address, {})))
    await until(() => held.length === 4)
    await sleep(50)
    expect(held).toHaveLength(4) // two connections of two streams; two requests wait
    expect(r.fullMode.sender.connections()).toHaveLength(2)
    held.splice(0).forEach((f) => f())
    await until(() => held.length === 2)
    held.splice(0).forEach((f) => f())
    for (const c of calls) expect((await c.done).error).toBeUndefined()
    expect(w.sockets()).toHaveLength(2)
  })

  it("a slow consumer: a paused stream holds the worker's buffered bytes below one stream window plus one flush (320 KiB) while it would send 16 MiB", async () => {
    const { w, r } = await pair()
    const TOTAL = 16 * 1024 // items of about 1 KiB
    const pad = "p".repeat(1000)
    let produced = 0
    let writer: (ResponseWriter & { held?: Array<{ payload?: Uint8Array }> }) | undefined
    w.serve("ns/comp/ep", (_m, wr) => {
      writer = wr
      wr.prologue()
      let i = 0
      const pump = () => {
        while (i < TOTAL) {
          wr.send({ i, pad })
          produced++
          i++
          if (!wr.whenWritable!(pump)) return
        }
        wr.complete()
      }
      pump()
    })
    let paused = false
    const call = await r.call(w.address("ns/comp/ep"), {}, {
      onItems: () => {
        if (!paused) {
          paused = true
          call.pending.pause!()
        }
      }
    })
    await until(() => paused)
    const buffered = () => {
      const held = (writer?.held ?? []).reduce((n, f) => n + 24 + (f.payload?.length ?? 0), 0)
      return held + w.sockets().reduce((n, s) => n + s.writableLength, 0)
    }
    let maxBuffered = 0
    for (let t = 0; t < 60; t++) {
      maxBuffered = Math.max(maxBuffered, buffered())
      await sleep(5)
    }
    const producedWhilePaused = produced
    expect(maxBuffered).toBeLessThan(320 * 1024)
    // Credit stops the handler itself: about one 256 KiB stream window of items, not 16 MiB.
    expect(producedWhilePaused).toBeLessThan(400)
    expect(call.items.length).toBeLessThanOrEqual(producedWhilePaused)
    call.pending.resume!()
    const { items, error } = await call.done
    expect(error).toBeUndefined()
    expect(items).toHaveLength(TOTAL)
    expect(items.every((item, i) => (item as { i: number }).i === i)).toBe(true)
  })

  it("a bidirectional echo: request items stream to the handler and come back as response items", async () => {
    const { w, r } = await pair()
    w.serve("ns/comp/ep", (message, writer) => {
      writer.prologue()
      Effect.runFork(
        Stream.runForEach(message.items!, (item) => Effect.sync(() => writer.send({ echo: item }))).pipe(
          Effect.matchEffect({
            onFailure: (e) => Effect.sync(() => writer.fail(String(e))),
            onSuccess: () => Effect.sync(() => writer.complete())
          })
        )
      )
    })
    const input = Array.from({ length: 500 }, (_, i) => ({ i, text: "x".repeat(i % 50) }))
    const call = await r.call(w.address("ns/comp/ep"), { start: true }, { items: Stream.fromIterable(input).pipe(Stream.rechunk(7)) })
    expect(await call.acked).toBeUndefined()
    const { items, error } = await call.done
    expect(error).toBeUndefined()
    expect(items).toEqual(input.map((item) => ({ echo: item })))
  })

  it("a request stream that fails at the router fails the handler's items with a TransportError", async () => {
    const { w, r } = await pair()
    let failure: unknown
    w.serve("ns/comp/ep", (message, writer) => {
      writer.prologue()
      Effect.runFork(
        Stream.runCollect(message.items!).pipe(
          Effect.matchEffect({
            onFailure: (e) => Effect.sync(() => {
              failure = e
              writer.fail(`items failed: ${(e as Error).message}`)
            }),
            onSuccess: () => Effect.sync(() => writer.complete())
          })
        )
      )
    })
    const items = Stream.concat(Stream.make(1, 2, 3), Stream.fail(new Error("the producer broke")))
    const call = await r.call(w.address("ns/comp/ep"), {}, { items })
    const { error } = await call.done
    expect(error?._tag).toBe("HandlerError")
    expect(failure).toMatchObject({ _tag: "TransportConnectionError", reason: "StreamEndedEarly" })
    expect(String((failure as Error).message)).toContain("the producer broke")
  })

  it("request items obey the worker's credit: a handler that does not read holds the router's pump at one stream window", async () => {
    const { w, r } = await pair({ streamWindow: 64 * 1024 }, { streamWindow: 64 * 1024 })
    let items: Stream.Stream<unknown, unknown> | undefined
    w.serve("ns/comp/ep", (message, writer) => {
      writer.prologue()
      items = message.items // not read until the test reads it
    })
    let produced = 0
    const source = Stream.unfold(0, (i) =>
      Effect.sync(() => {
        if (i === 1000) return undefined
        produced++
        return ["y".repeat(1000) + i, i + 1] as const
      })
    )
    const call = await r.call(w.address("ns/comp/ep"), {}, { items: source })
    expect(await call.acked).toBeUndefined()
    await sleep(200)
    // 64 KiB of credit holds about 64 items of ~1 KiB (one more waits, held for credit).
    expect(produced).toBeGreaterThanOrEqual(60)
    expect(produced).toBeLessThanOrEqual(70)
    // Read about 300 items, chunk by chunk (each chunk is everything buffered), counting exactly.
    const consumed = await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function*() {
          const pull = yield* Stream.toPull(items!)
          let n = 0
          while (n < 300) n += (yield* pull).length
          return n
        })
      )
    )
    await sleep(100)
    // Consumed items granted their credit back: the pump went on, still one window ahead at most.
    expect(produced).toBeGreaterThan(consumed)
    expect(produced - consumed).toBeLessThanOrEqual(70)
    call.pending.close()
  })
})
