/**
 * Fuzzing the TwoPartCodec decoders (protocol/TwoPartCodec.ts): `decodeFrame` (one whole frame)
 * and `makeDecoder` (incremental, on FrameAssembler).
 *
 * Properties: random bytes in random chunks never throw and never hold more than the maximum
 * message size; valid frames (checksum 0 or xxh3) round-trip through any chunking; a stream cut at
 * every offset yields exactly the frames wholly before the cut, and the decoder is idle exactly at
 * frame boundaries; a prefix claiming up to 2^64-1 bytes is refused as "MessageTooLarge" from the
 * prefix alone, before a buffer is allocated; a corrupted checksum is "ChecksumMismatch".
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { ProtocolParseError } from "../../src/protocol/ProtocolError.ts"
import {
  decodeFrame,
  DEFAULT_MAX_MESSAGE_SIZE,
  encodeFrame,
  encodeFrameWithChecksum,
  type FrameHandler,
  makeDecoder
} from "../../src/protocol/TwoPartCodec.ts"
import {
  arrayBufferGrowth,
  bytesArb,
  concat,
  cutsArb,
  feedChecked,
  hugeU64Arb,
  noThrow,
  putU64,
  RUNS,
  splitAt
} from "./fuzzSupport.ts"

interface Parts {
  readonly header: Uint8Array
  readonly body: Uint8Array
  readonly checked: boolean
}

const partsArb: fc.Arbitrary<Parts> = fc.record({
  header: fc.uint8Array({ maxLength: 40 }),
  body: fc.uint8Array({ maxLength: 80 }),
  checked: fc.boolean()
})

const encode = (p: Parts): Uint8Array => (p.checked ? encodeFrameWithChecksum(p.header, p.body) : encodeFrame(p.header, p.body))

const collector = () => {
  const frames: Array<{ header: Array<number>; body: Array<number> }> = []
  const onFrame: FrameHandler = (header, body) => frames.push({ header: [...header], body: [...body] })
  return { frames, onFrame }
}

const asPlain = (p: Parts) => ({ header: [...p.header], body: [...p.body] })

describe("TwoPartCodec decodeFrame (fuzz)", () => {
  it("never throws on random bytes; returns a frame or a ProtocolParseError", () => {
    fc.assert(
      fc.property(bytesArb(), fc.integer({ min: 24, max: 4096 }), (bytes, max) => {
        const r = noThrow("decodeFrame", () => decodeFrame(bytes, { maxMessageSize: max }))
        if (r instanceof ProtocolParseError) return
        expect(24 + r.header.length + r.body.length).toBe(bytes.length)
        expect(bytes.length).toBeLessThanOrEqual(max)
      }),
      { numRuns: RUNS }
    )
  })

  it("round-trips every valid frame, and refuses every truncation and every trailing byte", () => {
    fc.assert(
      fc.property(partsArb, fc.uint8Array({ minLength: 1, maxLength: 8 }), (p, extra) => {
        const frame = encode(p)
        const r = decodeFrame(frame, { maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE })
        if (r instanceof ProtocolParseError) throw r
        expect({ header: [...r.header], body: [...r.body] }).toEqual(asPlain(p))
        for (let k = 0; k < frame.length; k++) {
          const cut = noThrow("decodeFrame", () => decodeFrame(frame.subarray(0, k), { maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE }))
          expect(cut).toBeInstanceOf(ProtocolParseError)
          expect((cut as ProtocolParseError).reason).toBe("MalformedFrame")
        }
        const trailing = decodeFrame(concat(frame, extra), { maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE })
        expect((trailing as ProtocolParseError).reason).toBe("MalformedFrame")
      }),
      { numRuns: RUNS }
    )
  })
})

describe("TwoPartCodec incremental decoder (fuzz)", () => {
  it("random bytes in random chunks: no throw, never more than the maximum held, dead after its first error", () => {
    fc.assert(
      fc.property(bytesArb(1024), cutsArb, fc.integer({ min: 24, max: 600 }), (bytes, cuts, max) => {
        const d = makeDecoder({ maxMessageSize: max })
        const { frames, onFrame } = collector()
        feedChecked(d, splitAt(bytes, cuts), onFrame, max)
        for (const f of frames) expect(24 + f.header.length + f.body.length).toBeLessThanOrEqual(max)
      }),
      { numRuns: RUNS }
    )
  })

  it("valid frames round-trip through any chunking", () => {
    fc.assert(
      fc.property(fc.array(partsArb, { maxLength: 8 }), cutsArb, (parts, cuts) => {
        const stream = concat(...parts.map(encode))
        const d = makeDecoder({ maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE })
        const { frames, onFrame } = collector()
        expect(feedChecked(d, splitAt(stream, cuts), onFrame, DEFAULT_MAX_MESSAGE_SIZE)).toBeUndefined()
        expect(frames).toEqual(parts.map(asPlain))
        expect(d.isIdle()).toBe(true)
        expect(d.bytesDecoded()).toBe(stream.length)
      }),
      { numRuns: RUNS }
    )
  })

  it("truncation at every offset: the frames wholly before the cut, idle exactly at a frame boundary", () => {
    fc.assert(
      fc.property(fc.array(partsArb, { minLength: 1, maxLength: 4 }), fc.nat({ max: 40 }), (parts, chunk) => {
        const encoded = parts.map(encode)
        const stream = concat(...encoded)
        const ends: Array<number> = []
        let o = 0
        for (const e of encoded) ends.push((o += e.length))
        for (let k = 0; k < stream.length; k++) {
          const d = makeDecoder({ maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE })
          const { frames, onFrame } = collector()
          // The cut prefix, in chunks of `chunk + 1` bytes.
          const cuts = Array.from({ length: Math.floor(k / (chunk + 1)) }, (_, i) => (i + 1) * (chunk + 1))
          expect(feedChecked(d, splitAt(stream.subarray(0, k), cuts), onFrame, DEFAULT_MAX_MESSAGE_SIZE)).toBeUndefined()
          const whole = ends.filter((e) => e <= k).length
          expect(frames).toEqual(parts.slice(0, whole).map(asPlain))
          expect(d.isIdle()).toBe(k === 0 || ends.includes(k))
          expect(d.bytesDecoded() + d.bufferedBytes()).toBe(k)
        }
      }),
      { numRuns: 60 }
    )
  })

  it("a prefix claiming up to 2^64-1 bytes is refused from the prefix alone, with no buffer allocated", () => {
    fc.assert(
      fc.property(hugeU64Arb, fc.boolean(), cutsArb, (claim, inBody, cuts) => {
        const prefix = new Uint8Array(24)
        putU64(prefix, inBody ? 8 : 0, claim)
        const d = makeDecoder({ maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE })
        const { growth, result } = arrayBufferGrowth(() => {
          const chunks = splitAt(concat(prefix, new Uint8Array(100)), cuts)
          let error: ProtocolParseError | undefined
          for (const c of chunks) error ??= d.decode(c, () => {})
          return error
        })
        expect(result?.reason).toBe("MessageTooLarge")
        expect(d.bufferedBytes()).toBeLessThanOrEqual(24)
        expect(growth).toBeLessThan(1024 * 1024)
      }),
      { numRuns: RUNS }
    )
  })

  it("a frame within the maximum that spans chunks holds at most its own size", () => {
    fc.assert(
      fc.property(fc.integer({ min: 24, max: 1 << 16 }), fc.nat(), (max, n) => {
        const restLen = n % (max - 24 + 1)
        const prefix = new Uint8Array(24)
        putU64(prefix, 8, BigInt(restLen))
        const d = makeDecoder({ maxMessageSize: max })
        const { growth } = arrayBufferGrowth(() => d.decode(prefix, () => {}))
        expect(d.bufferedBytes()).toBe(restLen === 0 ? 0 : 24)
        expect(growth).toBeLessThanOrEqual(max + 64 * 1024)
      }),
      { numRuns: RUNS }
    )
  })

  it("a checksum that does not match is ChecksumMismatch, wherever the chunks fall", () => {
    fc.assert(
      fc.property(partsArb, fc.integer({ min: 1, max: 255 }), fc.nat({ max: 7 }), cutsArb, (p, flip, at, cuts) => {
        const frame = encodeFrameWithChecksum(p.header, p.body)
        frame[16 + at]! ^= flip
        const d = makeDecoder({ maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE })
        const { frames, onFrame } = collector()
        const error = feedChecked(d, splitAt(frame, cuts), onFrame, DEFAULT_MAX_MESSAGE_SIZE)
        // Flipping the checksum to 0 makes the frame unchecked, which is valid.
        const unchecked = frame.subarray(16, 24).every((b) => b === 0)
        if (unchecked) expect(frames).toHaveLength(1)
        else expect(error?.reason).toBe("ChecksumMismatch")
      }),
      { numRuns: RUNS }
    )
  })
})
