/**
 * Fuzzing the response mux v1 decoders (protocol/MuxCodec.ts), pooled (kinds 1-8) and full mode
 * (kinds 1-14): `makeMuxDecoder`, `decodeMuxFrame`, and the full mode's payload readers
 * (`decodeFullRequestPayload`, `decodeErrorText`, `decodePingNonce`).
 *
 * Properties: random bytes and half-valid headers in random chunks never throw, never hold more
 * than the maximum message size, and hand out only frames that obey the header rules of the mode;
 * valid frames round-trip through any chunking; truncation at every offset yields the frames wholly
 * before the cut; a payload_len up to 2^32-1 is refused from the header alone with no buffer
 * allocated; the one-shot decoder and the incremental one agree on every input.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  decodeErrorText,
  decodeFullRequestPayload,
  decodeMuxFrame,
  decodePingNonce,
  encodeErrorFrame,
  encodeFullRequestPayload,
  encodeMuxFrame,
  encodeMuxHeader,
  encodePing,
  encodePong,
  makeMuxDecoder,
  MAX_FULL_MODE_KIND,
  MAX_POOLED_KIND,
  MuxKind,
  NIL_STREAM_ID
} from "../../src/protocol/MuxCodec.ts"
import type { MuxFrameHandler } from "../../src/protocol/MuxCodec.ts"
import { ProtocolParseError } from "../../src/protocol/ProtocolError.ts"
import { DEFAULT_MAX_MESSAGE_SIZE } from "../../src/protocol/TwoPartCodec.ts"
import { arrayBufferGrowth, bytesArb, concat, cutsArb, feedChecked, noThrow, RUNS, splitAt } from "./fuzzSupport.ts"

const idArb = fc.uint8Array({ minLength: 16, maxLength: 16 }).filter((b) => b.some((x) => x !== 0))

interface F {
  readonly kind: MuxKind
  readonly id: Uint8Array
  readonly payload: Uint8Array
}

const pooledFrameArb: fc.Arbitrary<F> = fc.oneof(
  fc.record({ kind: fc.constantFrom(MuxKind.Prologue, MuxKind.Data, MuxKind.Reset), id: idArb, payload: fc.uint8Array({ maxLength: 64 }) }),
  fc.record({ kind: fc.constantFrom(MuxKind.End, MuxKind.Stop, MuxKind.Kill), id: idArb, payload: fc.constant(new Uint8Array(0)) }),
  fc.record({ kind: fc.constant(MuxKind.WindowUpdate), id: idArb, payload: fc.uint8Array({ minLength: 4, maxLength: 4 }) }),
  fc.record({ kind: fc.constant(MuxKind.ConnectionAck), id: fc.constant(NIL_STREAM_ID), payload: fc.uint8Array({ minLength: 8, maxLength: 8 }) })
)

const fullFrameArb: fc.Arbitrary<F> = fc.oneof(
  pooledFrameArb,
  fc.record({ kind: fc.constant(MuxKind.Request), id: idArb, payload: fc.uint8Array({ minLength: 4, maxLength: 64 }) }),
  fc.record({ kind: fc.constant(MuxKind.RequestData), id: idArb, payload: fc.uint8Array({ maxLength: 64 }) }),
  fc.record({ kind: fc.constant(MuxKind.RequestEnd), id: idArb, payload: fc.constant(new Uint8Array(0)) }),
  fc.record({ kind: fc.constant(MuxKind.Error), id: fc.oneof(idArb, fc.constant(NIL_STREAM_ID)), payload: fc.uint8Array({ maxLength: 64 }) }),
  fc.record({ kind: fc.constantFrom(MuxKind.Ping, MuxKind.Pong), id: fc.constant(NIL_STREAM_ID), payload: fc.uint8Array({ minLength: 8, maxLength: 8 }) })
)

/** Headers that are almost right: small lengths, kinds 0-15, sometimes flags or reserved bits. */
const nearHeaderArb = fc
  .tuple(fc.nat({ max: 40 }), fc.nat({ max: 15 }), fc.constantFrom(0, 0, 0, 1), fc.constantFrom(0, 0, 0, 1), fc.oneof(idArb, fc.constant(NIL_STREAM_ID)))
  .map(([len, kind, flags, reserved, id]) => {
    const h = encodeMuxHeader(MuxKind.Data, id, len)
    h[4] = kind
    h[5] = flags
    h[7] = reserved
    return h
  })

const garbageArb = fc.array(fc.oneof(bytesArb(60), nearHeaderArb), { maxLength: 10 }).map((parts) => concat(...parts))

const plain = (f: F) => ({ kind: f.kind, id: [...f.id], payload: [...f.payload] })

const collector = () => {
  const frames: Array<ReturnType<typeof plain>> = []
  const onFrame: MuxFrameHandler = (kind, id, payload) => frames.push({ kind, id: [...id], payload: [...payload] })
  return { frames, onFrame }
}

/** The header rules, restated independently of the decoder. */
const obeysRules = (f: ReturnType<typeof plain>, fullMode: boolean): boolean => {
  const nil = f.id.every((b) => b === 0)
  const n = f.payload.length
  if (f.kind < 1 || f.kind > (fullMode ? MAX_FULL_MODE_KIND : MAX_POOLED_KIND)) return false
  switch (f.kind) {
    case MuxKind.ConnectionAck:
      return n === 8 && nil
    case MuxKind.WindowUpdate:
      return n === 4 && !nil
    case MuxKind.Stop:
    case MuxKind.Kill:
    case MuxKind.End:
    case MuxKind.RequestEnd:
      return n === 0 && !nil
    case MuxKind.Request:
      return n >= 4 && !nil
    case MuxKind.Ping:
    case MuxKind.Pong:
      return n === 8 && nil
    case MuxKind.Error:
      return true
    default:
      return !nil
  }
}

for (const fullMode of [false, true]) {
  const mode = fullMode ? "full mode" : "pooled"
  const frameArb = fullMode ? fullFrameArb : pooledFrameArb

  describe(`MuxCodec ${mode} decoder (fuzz)`, () => {
    it("random and near-valid bytes in random chunks: no throw, bounded buffering, only frames that obey the rules", () => {
      fc.assert(
        fc.property(garbageArb, cutsArb, fc.integer({ min: 24, max: 300 }), (bytes, cuts, max) => {
          const d = makeMuxDecoder({ maxMessageSize: max, fullMode })
          const { frames, onFrame } = collector()
          feedChecked(d, splitAt(bytes, cuts), onFrame, max)
          for (const f of frames) {
            expect(obeysRules(f, fullMode)).toBe(true)
            expect(24 + f.payload.length).toBeLessThanOrEqual(max)
          }
        }),
        { numRuns: RUNS }
      )
    })

    it("agrees with decodeMuxFrame on every single-frame input", () => {
      fc.assert(
        fc.property(fc.oneof(garbageArb, frameArb.map((f) => encodeMuxFrame(f.kind, f.id, f.payload))), (bytes) => {
          const options = { maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE, fullMode }
          const one = noThrow("decodeMuxFrame", () => decodeMuxFrame(bytes, options))
          const d = makeMuxDecoder(options)
          const { frames, onFrame } = collector()
          const error = d.decode(bytes, onFrame)
          if (one instanceof ProtocolParseError) {
            // Incremental: the same error from the first header, or (truncation, trailing bytes) not one whole frame alone.
            if (error !== undefined && frames.length === 0) expect(error.reason).toBe(one.reason)
            else expect(error === undefined && frames.length === 1 && d.isIdle()).toBe(false)
          } else {
            expect(error).toBeUndefined()
            expect(frames).toEqual([{ kind: one.kind, id: [...one.streamId], payload: [...one.payload] }])
          }
        }),
        { numRuns: RUNS }
      )
    })

    it("valid frames round-trip through any chunking", () => {
      fc.assert(
        fc.property(fc.array(frameArb, { maxLength: 10 }), cutsArb, (fs, cuts) => {
          const wire = concat(...fs.map((f) => encodeMuxFrame(f.kind, f.id, f.payload)))
          const d = makeMuxDecoder({ maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE, fullMode })
          const { frames, onFrame } = collector()
          expect(feedChecked(d, splitAt(wire, cuts), onFrame, DEFAULT_MAX_MESSAGE_SIZE)).toBeUndefined()
          expect(frames).toEqual(fs.map(plain))
          expect(d.isIdle()).toBe(true)
          expect(d.bytesDecoded()).toBe(wire.length)
        }),
        { numRuns: RUNS }
      )
    })

    it("truncation at every offset: the frames wholly before the cut, never a partial one", () => {
      fc.assert(
        fc.property(fc.array(frameArb, { minLength: 1, maxLength: 4 }), fc.nat({ max: 30 }), (fs, step) => {
          const encoded = fs.map((f) => encodeMuxFrame(f.kind, f.id, f.payload))
          const wire = concat(...encoded)
          const ends: Array<number> = []
          let o = 0
          for (const e of encoded) ends.push((o += e.length))
          for (let k = 0; k < wire.length; k++) {
            const d = makeMuxDecoder({ maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE, fullMode })
            const { frames, onFrame } = collector()
            const cuts = Array.from({ length: Math.floor(k / (step + 1)) }, (_, i) => (i + 1) * (step + 1))
            expect(feedChecked(d, splitAt(wire.subarray(0, k), cuts), onFrame, DEFAULT_MAX_MESSAGE_SIZE)).toBeUndefined()
            expect(frames).toEqual(fs.slice(0, ends.filter((e) => e <= k).length).map(plain))
            expect(d.isIdle()).toBe(k === 0 || ends.includes(k))
          }
        }),
        { numRuns: 50 }
      )
    })

    it("a payload_len up to 2^32-1 beyond the maximum is refused from the header, before any buffer", () => {
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 24, max: 1 << 20 }), cutsArb, (len, max, cuts) => {
          fc.pre(24 + len > max)
          const header = encodeMuxHeader(MuxKind.Data, Uint8Array.from({ length: 16 }, (_, i) => i + 1), len)
          const d = makeMuxDecoder({ maxMessageSize: max, fullMode })
          const { growth, result } = arrayBufferGrowth(() => {
            let error: ProtocolParseError | undefined
            for (const c of splitAt(concat(header, new Uint8Array(64)), cuts)) error ??= d.decode(c, () => {})
            return error
          })
          expect(result?.reason).toBe("MessageTooLarge")
          expect(d.bufferedBytes()).toBeLessThanOrEqual(24)
          expect(growth).toBeLessThan(1024 * 1024)
        }),
        { numRuns: RUNS }
      )
    })
  })
}

describe("full mode payload readers (fuzz)", () => {
  it("decodeFullRequestPayload never throws; valid payloads round-trip", () => {
    fc.assert(
      fc.property(bytesArb(300), (bytes) => {
        const r = noThrow("decodeFullRequestPayload", () => decodeFullRequestPayload(bytes))
        if (!(r instanceof ProtocolParseError)) {
          expect(typeof r.path).toBe("string")
          for (const v of Object.values(r.headers)) expect(typeof v).toBe("string")
        } else expect(r.reason).toBe("MalformedFrame")
      }),
      { numRuns: RUNS }
    )
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 40, unit: "binary" }),
        fc.dictionary(fc.string({ maxLength: 10 }), fc.string({ maxLength: 20 }), { maxKeys: 4 }),
        fc.uint8Array({ maxLength: 100 }),
        (path, headers, message) => {
          const payload = encodeFullRequestPayload(path, headers, message)
          if (payload instanceof ProtocolParseError) throw payload
          const r = decodeFullRequestPayload(payload)
          if (r instanceof ProtocolParseError) throw r
          // Lone surrogates do not survive UTF-8: compare with what UTF-8 keeps.
          expect(r.path).toBe(new TextDecoder().decode(new TextEncoder().encode(path)))
          expect(r.headers).toEqual(JSON.parse(JSON.stringify(headers)))
          expect([...r.message]).toEqual([...message])
          for (let k = 0; k < payload.length - message.length; k++) {
            expect(noThrow("decodeFullRequestPayload", () => decodeFullRequestPayload(payload.subarray(0, k)))).toBeInstanceOf(ProtocolParseError)
          }
        }
      ),
      { numRuns: RUNS }
    )
  })

  it("Error texts and Ping nonces never throw and round-trip", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 60 }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), bytesArb(100), (text, nonce, junk) => {
        const err = decodeMuxFrame(encodeErrorFrame(NIL_STREAM_ID, text), { maxMessageSize: 4096, fullMode: true })
        if (err instanceof ProtocolParseError) throw err
        expect(decodeErrorText(err.payload)).toBe(text)
        noThrow("decodeErrorText", () => decodeErrorText(junk))
        const ping = decodeMuxFrame(encodePing(nonce), { maxMessageSize: 4096, fullMode: true })
        if (ping instanceof ProtocolParseError) throw ping
        expect(decodePingNonce(ping.payload)).toBe(nonce)
        const pong = decodeMuxFrame(encodePong(ping.payload), { maxMessageSize: 4096, fullMode: true })
        if (pong instanceof ProtocolParseError) throw pong
        expect(decodePingNonce(pong.payload)).toBe(nonce)
      }),
      { numRuns: RUNS }
    )
  })
})
