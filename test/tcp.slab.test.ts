import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { encodeFrame, makeDecoder } from "../src/protocol/TwoPartCodec.ts"
import { BY_REFERENCE_BYTES } from "../src/transport/tcp/worker/FrameBatcher.ts"
import { mostTextFrameBytes, SLAB_BYTES, SlabBatcher } from "../src/transport/tcp/worker/SlabBatcher.ts"

// What one socket's batcher is asked to queue: an encoded frame, a data frame, or a text item.
const op = fc.oneof(
  fc.record({
    op: fc.constant("bytes" as const),
    size: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: BY_REFERENCE_BYTES - 30, max: BY_REFERENCE_BYTES + 2 }))
  }),
  fc.record({
    op: fc.constant("data" as const),
    size: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: BY_REFERENCE_BYTES - 26, max: BY_REFERENCE_BYTES + 2 }), fc.integer({ min: 20_000, max: 70_000 }))
  }),
  fc.record({
    op: fc.constant("text" as const),
    text: fc.oneof(fc.string({ unit: "binary", maxLength: 60 }), fc.string({ unit: "binary-ascii", maxLength: 80 }), fc.string({ unit: "binary-ascii", minLength: 5_000, maxLength: 5_400 }))
  })
)

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex")
const bytesOf = (size: number, seed: number) => Uint8Array.from({ length: size }, (_, i) => (i * 7 + seed) & 0xff)

describe("SlabBatcher", () => {
  it("each socket's writes decode to the frames it queued, in order, whatever the other sockets queued in the same ticks (copied, by reference, across slabs)", () => {
    fc.assert(
      fc.property(
        // ticks; in each, (socket, op) steps in the order they happen
        fc.array(fc.array(fc.tuple(fc.integer({ min: 0, max: 2 }), op), { maxLength: 14 }), { minLength: 1, maxLength: 8 }),
        (ticks) => {
          const prefix = Buffer.from("{\"data\":"), suffix = Buffer.from(",\"x\":1}")
          const written: Array<Array<Uint8Array>> = [[], [], []]
          const expected: Array<Array<string>> = [[], [], []]
          const batchers = [0, 1, 2].map((s) => new SlabBatcher((chunk) => void written[s]!.push(Uint8Array.from(chunk)), () => {}))
          let seed = 0
          for (const tick of ticks) {
            const queued = new Set<number>()
            for (const [s, step] of tick) {
              const b = batchers[s]!
              seed++
              if (step.op === "bytes") {
                const frame = encodeFrame(bytesOf(step.size >> 1, seed), bytesOf(step.size - (step.size >> 1), seed + 1))
                b.bytes(frame)
                expected[s]!.push(hex(frame))
              } else if (step.op === "data") {
                const body = bytesOf(step.size, seed)
                b.data(body)
                expected[s]!.push(hex(encodeFrame(undefined, body)))
              } else {
                const body = Buffer.concat([prefix, Buffer.from(step.text), suffix])
                if (mostTextFrameBytes(step.text, prefix.length + suffix.length) < BY_REFERENCE_BYTES) {
                  expect(b.dataText(prefix, step.text, suffix)).toBe(body.length)
                } else b.data(body)
                expected[s]!.push(hex(encodeFrame(undefined, body)))
              }
              queued.add(s)
            }
            for (const [s, b] of batchers.entries()) {
              const before = written[s]!.length
              b.flush()
              // one write per tick in which the socket queued something, none otherwise
              expect(written[s]!.length - before).toBe(queued.has(s) ? 1 : 0)
            }
          }
          for (const s of [0, 1, 2]) {
            const decoded: Array<string> = []
            const decoder = makeDecoder({ maxMessageSize: 1 << 20 })
            for (const chunk of written[s]!) {
              expect(decoder.decode(chunk, (header, body) => void decoded.push(hex(encodeFrame(header, body))))).toBeUndefined()
            }
            expect(decoded).toEqual(expected[s])
          }
        }
      ),
      { numRuns: 150 }
    )
  })

  it("bytes handed to a socket are never rewritten by later frames, of any socket, even after the slab fills", () => {
    const kept: Array<{ view: Uint8Array; copy: string }> = []
    const a = new SlabBatcher((chunk) => void kept.push({ view: chunk, copy: hex(chunk) }), () => {})
    const b = new SlabBatcher(() => {}, () => {})
    const text = "t".repeat(900)
    // several slabs' worth of frames, flushed one at a time by `a` while `b` keeps writing
    for (let i = 0; i < (3 * SLAB_BYTES) / 900; i++) {
      a.dataText(Buffer.from("["), text + i, Buffer.from("]"))
      a.flush()
      b.dataText(Buffer.from("("), text, Buffer.from(")"))
      b.flush()
    }
    expect(kept.length).toBeGreaterThan(200)
    for (const k of kept) expect(hex(k.view)).toBe(k.copy)
  })

  it("clear drops what is queued; the next tick writes only what comes after it", () => {
    const written: Array<Uint8Array> = []
    const b = new SlabBatcher((chunk) => void written.push(Uint8Array.from(chunk)), () => {})
    b.data(Buffer.from("dropped"))
    b.clear()
    b.data(Buffer.from("kept"))
    b.flush()
    expect(written).toEqual([Uint8Array.from(encodeFrame(undefined, Buffer.from("kept")))])
  })
})
