/**
 * The full mode's socket-free pieces: the frame batcher (what it writes decodes to exactly the
 * frames queued, whatever the sizes; one write per tick; nothing queued rewritten), the receiver's
 * credit (credit frames are never acknowledged, so idle peers go quiet), and the worker's request
 * items (credit handed back as the consumer reads, failures after the buffered items).
 */
import { describe, expect, it } from "vitest"
import * as fc from "fast-check"
import { Effect, Exit, Stream } from "effect"
import { decodeConnectionAck, decodeWindowUpdate, makeMuxDecoder, MUX_HEADER_SIZE, MuxKind } from "../src/protocol/MuxCodec.ts"
import { CREDIT_UPDATE_MS } from "../src/protocol/MuxHandshake.ts"
import { json } from "../src/protocol/PayloadCodec.ts"
import { TransportConnectionError } from "../src/TransportError.ts"
import { encodeRequestItem, RequestItems } from "../src/transport/tcp/full/RequestItems.ts"
import { owedCredit, ReceiveCredit } from "../src/transport/tcp/router/ReceiveCredit.ts"
import { BATCH_BUFFER_BYTES, BY_REFERENCE_BYTES, FrameBatcher, MAX_BATCH_BUFFER_BYTES, mostUtf8Bytes } from "../src/transport/tcp/worker/FrameBatcher.ts"

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

describe("FrameBatcher", () => {
  it("what it writes decodes to the frames queued, in order, for any mix of sizes (copied, by reference, across buffers) and of text payloads encoded in place", () => {
    const frame = fc.record({
      kind: fc.constantFrom(MuxKind.Data, MuxKind.Prologue, MuxKind.End, MuxKind.Reset),
      id: fc.uint8Array({ minLength: 16, maxLength: 16 }).map((id) => (id[0] = 1, id)),
      size: fc.oneof(fc.integer({ min: 0, max: 200 }), fc.integer({ min: BY_REFERENCE_BYTES - 2, max: BY_REFERENCE_BYTES + 2 }), fc.integer({ min: 20_000, max: 70_000 })),
      two: fc.boolean(),
      // frameText instead: a text payload, small or around BY_REFERENCE_BYTES once encoded
      // (ASCII text is written as Latin-1, any other as UTF-8)
      text: fc.option(
        fc.oneof(fc.string({ unit: "binary", maxLength: 60 }), fc.string({ unit: "binary-ascii", maxLength: 60 }), fc.string({ unit: "binary", minLength: 5_300, maxLength: 5_600 })),
        { freq: 3 }
      ),
      // how a text goes in: measured (frameText), unmeasured (frameTextUnmeasured, where its most
      // fits), or unmeasured then taken back (takeBack: nothing of it is written)
      how: fc.constantFrom("measured", "unmeasured", "takenBack")
    })
    fc.assert(
      fc.property(fc.array(fc.array(frame, { maxLength: 12 }), { minLength: 1, maxLength: 6 }), (ticks) => {
        const written: Array<Uint8Array> = []
        const batcher = new FrameBatcher((chunks) => {
          for (const c of chunks) written.push(Uint8Array.from(c))
        }, () => {})
        const expected: Array<{ kind: number; id: string; payload: string }> = []
        let writes = 0
        let ticksWithFrames = 0
        for (const tick of ticks) {
          const queuedBefore = expected.length
          for (const f of tick) {
            const kind = f.kind === MuxKind.End ? MuxKind.End : f.kind
            const size = kind === MuxKind.End ? 0 : f.size
            const payload = Uint8Array.from({ length: size }, (_, i) => (i * 7 + size) & 0xff)
            if (f.text !== null && kind === MuxKind.Data) {
              const prefix = Buffer.from("<"), suffix = Buffer.from(">!")
              if (f.how !== "measured" && 3 + mostUtf8Bytes(f.text) < BY_REFERENCE_BYTES) {
                const plen = batcher.frameTextUnmeasured(kind, f.id, prefix, f.text, suffix)
                expect(plen).toBe(3 + Buffer.byteLength(f.text))
                if (f.how === "takenBack") {
                  batcher.takeBack(MUX_HEADER_SIZE + plen)
                  continue
                }
              } else batcher.frameText(kind, f.id, prefix, f.text, Buffer.byteLength(f.text), suffix)
              expected.push({ kind, id: Buffer.from(f.id).toString("hex"), payload: Buffer.concat([prefix, Buffer.from(f.text), suffix]).toString("base64") })
              continue
            }
            if (f.two && size > 1) batcher.frame2(kind, f.id, payload.subarray(0, size >> 1), payload.subarray(size >> 1))
            else batcher.frame(kind, f.id, size === 0 ? undefined : payload)
            expected.push({ kind, id: Buffer.from(f.id).toString("hex"), payload: Buffer.from(payload).toString("base64") })
          }
          const before = written.length
          batcher.flush()
          writes += written.length > before ? 1 : 0
          if (expected.length > queuedBefore) ticksWithFrames++
        }
        const decoded: Array<{ kind: number; id: string; payload: string }> = []
        const decoder = makeMuxDecoder({ maxMessageSize: 1 << 20 })
        for (const chunk of written) {
          expect(decoder.decode(chunk, (kind, id, payload) => void decoded.push({ kind, id: Buffer.from(id).toString("hex"), payload: Buffer.from(payload).toString("base64") }))).toBeUndefined()
        }
        expect(decoded).toEqual(expected)
        // one write per tick that kept a frame (a tick whose frames were all taken back writes nothing)
        expect(writes).toBe(ticksWithFrames)
      }),
      { numRuns: 150 }
    )
  })

  it("one write per tick, and a view already handed to the socket is never rewritten", async () => {
    const writes: Array<ReadonlyArray<Uint8Array>> = []
    const batcher = new FrameBatcher((chunks) => void writes.push(chunks))
    const id = new Uint8Array(16).fill(9)
    for (let i = 0; i < 100; i++) batcher.frame(MuxKind.Data, id, new Uint8Array(100).fill(i))
    await sleep(0)
    expect(writes).toHaveLength(1)
    const first = Uint8Array.from(writes[0]![0]!)
    for (let i = 0; i < 100; i++) batcher.frame(MuxKind.Data, id, new Uint8Array(100).fill(200))
    await sleep(0)
    expect(writes).toHaveLength(2)
    expect(Uint8Array.from(writes[0]![0]!)).toEqual(first)
    expect(writes[0]![0]!.length + writes[1]![0]!.length).toBe(200 * (MUX_HEADER_SIZE + 100))
    expect(BATCH_BUFFER_BYTES).toBeGreaterThan(200 * 124)
  })

  it("a busy connection's ticks each leave as one piece: a tick that would not fit in the room left starts on a fresh, larger buffer", () => {
    const writes: Array<ReadonlyArray<Uint8Array>> = []
    const batcher = new FrameBatcher((chunks) => void writes.push(chunks), () => {})
    const id = new Uint8Array(16).fill(3)
    // 64 responses of about 1.4 KB, as a worker's tick at 64 in flight: 90 KB, more than one buffer.
    const tick = (fill: number) => {
      for (let i = 0; i < 64; i++) batcher.frame(MuxKind.Data, id, new Uint8Array(1400 - MUX_HEADER_SIZE).fill(fill))
      batcher.flush()
    }
    tick(1)
    expect(writes[0]).toHaveLength(2) // the first tick outgrew the first 64 KiB buffer
    const views: Array<Uint8Array> = []
    for (let t = 2; t <= 12; t++) {
      tick(t)
      const chunks = writes.at(-1)!
      expect(chunks).toHaveLength(1)
      expect(chunks[0]!.length).toBe(64 * 1400)
      views.push(chunks[0]!)
    }
    // no view handed out was rewritten by a later tick
    views.forEach((v, k) => expect(v.every((b, j) => j % 1400 < MUX_HEADER_SIZE || b === k + 2)).toBe(true))
    expect(MAX_BATCH_BUFFER_BYTES).toBeGreaterThanOrEqual(2 * 64 * 1400)
  })
})

describe("ReceiveCredit", () => {
  const harness = () => {
    const frames: Array<{ kind: "WindowUpdate" | "ConnectionAck"; n: number }> = []
    let decoded = 0
    const credit = new ReceiveCredit((frame) => {
      const kind = frame[4] === MuxKind.WindowUpdate ? "WindowUpdate" : "ConnectionAck"
      frames.push({ kind, n: kind === "WindowUpdate" ? decodeWindowUpdate(frame.subarray(24)) : decodeConnectionAck(frame.subarray(24)) })
    }, () => decoded)
    return { credit, frames, decode: (n: number) => (decoded += n) }
  }

  it("acknowledges decoded bytes within CREDIT_UPDATE_MS (20 ms), but never credit frames: a peer's ack alone is not acknowledged back", async () => {
    const h = harness()
    h.decode(500)
    h.credit.chunkDecoded()
    await sleep(CREDIT_UPDATE_MS + 20)
    expect(h.frames).toEqual([{ kind: "ConnectionAck", n: 500 }])
    // The peer's ConnectionAck (32 bytes) arrives: nothing is owed for it.
    h.decode(32)
    h.credit.creditFrameDecoded(32)
    h.credit.chunkDecoded()
    await sleep(CREDIT_UPDATE_MS + 20)
    expect(h.frames).toHaveLength(1)
    // Real bytes again: acked, without the credit frame's bytes in the offset.
    h.decode(100)
    h.credit.chunkDecoded()
    await sleep(CREDIT_UPDATE_MS + 20)
    expect(h.frames.at(-1)).toEqual({ kind: "ConnectionAck", n: 600 })
    h.credit.stop()
  })

  it("grants per stream: at 64 KiB at once, else with the next send (piggyback) or after CREDIT_UPDATE_MS; nothing for a stream forgotten", async () => {
    const h = harness()
    const a = owedCredit(new Uint8Array(16).fill(1))
    const b = owedCredit(new Uint8Array(16).fill(2))
    h.credit.grant(a, 64 * 1024)
    expect(h.frames).toEqual([{ kind: "WindowUpdate", n: 64 * 1024 }])
    h.credit.grant(a, 10)
    h.credit.grant(b, 20)
    h.credit.forget(b)
    h.credit.piggyback()
    expect(h.frames.slice(1)).toEqual([{ kind: "WindowUpdate", n: 10 }])
    // The timer armed by the grants fires with nothing owed: no frame of its own.
    await sleep(CREDIT_UPDATE_MS + 20)
    expect(h.frames).toHaveLength(2)
    // Owed again later: the same timer, restarted, sends it.
    h.credit.grant(a, 5)
    await sleep(CREDIT_UPDATE_MS + 20)
    expect(h.frames.slice(2)).toEqual([{ kind: "WindowUpdate", n: 5 }])
    h.credit.stop()
  })

  it("starts no timer when a write of the same tick took the credit, and acknowledges every byte decoded so far in that write", async () => {
    const real = globalThis.setTimeout
    // The credit timers started (the test's own sleeps are longer).
    let started = 0
    globalThis.setTimeout = ((f: () => void, ms?: number) => {
      if (ms === CREDIT_UPDATE_MS) started++
      return real(f, ms)
    }) as typeof setTimeout
    try {
      const h = harness()
      const a = owedCredit(new Uint8Array(16).fill(1))
      // One chunk, as at one call in flight: items consumed, then the next request written while the
      // chunk is still being decoded (its last frame counted), then the chunk's end.
      h.decode(300)
      h.credit.grant(a, 120)
      h.decode(24)
      h.credit.piggyback()
      h.credit.chunkDecoded()
      expect(h.frames).toEqual([{ kind: "WindowUpdate", n: 120 }, { kind: "ConnectionAck", n: 324 }])
      await sleep(CREDIT_UPDATE_MS + 20)
      // Nothing was left owed at the end of the tick: no timer was started (an idle process waits
      // with no short timeout), and nothing more was sent.
      expect(started).toBe(0)
      expect(h.frames).toHaveLength(2)
      // A write with nothing owed and nothing new decoded adds nothing.
      h.credit.piggyback()
      expect(h.frames).toHaveLength(2)
      // Bytes decoded and no write in that tick: the timer is started at the tick's end.
      h.decode(50)
      h.credit.chunkDecoded()
      expect(started).toBe(0)
      await sleep(CREDIT_UPDATE_MS + 20)
      expect(started).toBe(1)
      expect(h.frames.at(-1)).toEqual({ kind: "ConnectionAck", n: 374 })
      h.credit.stop()
    } finally {
      globalThis.setTimeout = real
    }
  })
})

describe("RequestItems", () => {
  it("hands the consumer everything buffered per pull, grants its bytes back as consumed, and ends after RequestEnd", async () => {
    const consumed: Array<number> = []
    const items = new RequestItems(json, (n) => void consumed.push(n))
    const payloads = [1, 2, 3].map((i) => encodeRequestItem(json, { i }))
    const bytes = payloads.reduce((n, p) => n + p.length, 0)
    for (const p of payloads) expect(items.push(p)).toBeUndefined()
    expect(items.outstanding()).toBe(bytes)
    items.end()
    expect(await Effect.runPromise(Stream.runCollect(items.stream))).toEqual([{ i: 1 }, { i: 2 }, { i: 3 }])
    expect(consumed).toEqual([bytes]) // one pull took all three
    expect(items.outstanding()).toBe(0)
  })

  it("a failure comes after the buffered items (or at once with `now`); a payload that is not an item is refused", async () => {
    const items = new RequestItems(json, () => {})
    items.push(encodeRequestItem(json, "a"))
    items.fail(new TransportConnectionError({ reason: "StreamEndedEarly", transport: "tcp", target: "t", detail: "boom" }))
    const seen: Array<unknown> = []
    const exit = await Effect.runPromiseExit(Stream.runForEach(items.stream, (x) => Effect.sync(() => void seen.push(x))))
    expect(seen).toEqual(["a"])
    expect(Exit.isFailure(exit)).toBe(true)
    const bad = new RequestItems(json, () => {})
    expect(bad.push(new TextEncoder().encode(`{"nodata":1}`))?.reason).toBe("BadPayload")
    expect(bad.push(new TextEncoder().encode(`not json`))?.reason).toBe("BadPayload")
  })
})
