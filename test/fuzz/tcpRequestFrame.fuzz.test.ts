/**
 * Fuzzing Dynamo's TCP request plane decoders: request frames (protocol/TcpRequestFrame.ts:
 * `makeTcpRequestDecoder`, `decodeTcpRequestHead`) and acks (protocol/TcpAck.ts:
 * `makeTcpAckDecoder`).
 *
 * Properties: random bytes in random chunks never throw and never hold more than the maximum
 * message size; valid requests and acks round-trip through any chunking; truncation at every
 * offset yields exactly the messages wholly before the cut; a payload_len or ack length up to
 * 2^32-1 beyond the maximum is refused from the length fields, before a buffer is allocated.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { ProtocolParseError } from "../../src/protocol/ProtocolError.ts"
import { encodeTcpAck, makeTcpAckDecoder } from "../../src/protocol/TcpAck.ts"
import { decodeTcpRequestHead, encodeTcpRequestFrame, makeTcpRequestDecoder } from "../../src/protocol/TcpRequestFrame.ts"
import type { TcpRequestFrameHandler } from "../../src/protocol/TcpRequestFrame.ts"
import { arrayBufferGrowth, bytesArb, concat, cutsArb, feedChecked, noThrow, RUNS, splitAt, utf8 } from "./fuzzSupport.ts"

const MAX = 1 << 20

interface Req {
  readonly path: string
  readonly headers: Record<string, string>
  readonly payload: Uint8Array
}

const reqArb: fc.Arbitrary<Req> = fc.record({
  path: fc.string({ minLength: 1, maxLength: 30, unit: "grapheme" }),
  headers: fc.dictionary(fc.string({ maxLength: 8, unit: "grapheme" }), fc.string({ maxLength: 16, unit: "grapheme" }), { maxKeys: 3 }),
  payload: fc.uint8Array({ maxLength: 80 })
})

const encodeReq = (r: Req): Uint8Array => {
  const out = encodeTcpRequestFrame(r.path, r.headers, r.payload)
  if (out instanceof ProtocolParseError) throw out
  return out.slice()
}

const plainReq = (r: Req) => ({ path: r.path, headers: JSON.parse(JSON.stringify(r.headers)), payload: [...r.payload] })

const reqCollector = () => {
  const got: Array<ReturnType<typeof plainReq>> = []
  const onFrame: TcpRequestFrameHandler = (path, headers, payload) => got.push({ path, headers, payload: [...payload] })
  return { got, onFrame }
}

/** A request head with these raw lengths, then `payloadLen` claimed. */
const rawHead = (pathLen: number, headersLen: number, payloadLen: number): Uint8Array => {
  const out = new Uint8Array(2 + pathLen + 2 + headersLen + 4)
  const dv = new DataView(out.buffer)
  dv.setUint16(0, pathLen)
  out.fill(0x61, 2, 2 + pathLen)
  dv.setUint16(2 + pathLen, headersLen)
  if (headersLen >= 2) out.set(utf8("{}"), 4 + pathLen)
  if (headersLen > 2) out.fill(0x20, 6 + pathLen, 4 + pathLen + headersLen)
  dv.setUint32(4 + pathLen + headersLen, payloadLen)
  return out
}

describe("TCP request frame decoder (fuzz)", () => {
  it("random bytes in random chunks: no throw, never more than the maximum held", () => {
    fc.assert(
      fc.property(bytesArb(800), cutsArb, fc.integer({ min: 8, max: 500 }), (bytes, cuts, max) => {
        const d = makeTcpRequestDecoder({ maxMessageSize: max })
        const { got, onFrame } = reqCollector()
        feedChecked(d, splitAt(bytes, cuts), onFrame, max)
        for (const r of got) expect(r.path.length).toBeGreaterThan(0)
      }),
      { numRuns: RUNS }
    )
  })

  it("decodeTcpRequestHead never throws at any offset", () => {
    fc.assert(
      fc.property(bytesArb(300), fc.integer({ min: -2, max: 320 }), (bytes, offset) => {
        const r = noThrow("decodeTcpRequestHead", () => decodeTcpRequestHead(bytes, offset))
        if (!(r instanceof ProtocolParseError)) expect(r.end).toBeLessThanOrEqual(bytes.length)
      }),
      { numRuns: RUNS }
    )
  })

  it("valid requests round-trip through any chunking", () => {
    fc.assert(
      fc.property(fc.array(reqArb, { maxLength: 6 }), cutsArb, (reqs, cuts) => {
        const wire = concat(...reqs.map(encodeReq))
        const d = makeTcpRequestDecoder({ maxMessageSize: MAX })
        const { got, onFrame } = reqCollector()
        expect(feedChecked(d, splitAt(wire, cuts), onFrame, MAX)).toBeUndefined()
        expect(got).toEqual(reqs.map(plainReq))
        expect(d.isIdle()).toBe(true)
        expect(d.bytesDecoded()).toBe(wire.length)
      }),
      { numRuns: RUNS }
    )
  })

  it("truncation at every offset: the requests wholly before the cut", () => {
    fc.assert(
      fc.property(fc.array(reqArb, { minLength: 1, maxLength: 3 }), fc.nat({ max: 20 }), (reqs, step) => {
        const encoded = reqs.map(encodeReq)
        const wire = concat(...encoded)
        const ends: Array<number> = []
        let o = 0
        for (const e of encoded) ends.push((o += e.length))
        for (let k = 0; k < wire.length; k++) {
          const d = makeTcpRequestDecoder({ maxMessageSize: MAX })
          const { got, onFrame } = reqCollector()
          const cuts = Array.from({ length: Math.floor(k / (step + 1)) }, (_, i) => (i + 1) * (step + 1))
          expect(feedChecked(d, splitAt(wire.subarray(0, k), cuts), onFrame, MAX)).toBeUndefined()
          expect(got).toEqual(reqs.slice(0, ends.filter((e) => e <= k).length).map(plainReq))
          expect(d.isIdle()).toBe(k === 0 || ends.includes(k))
        }
      }),
      { numRuns: 40 }
    )
  })

  it("a payload_len up to 2^32-1 beyond the maximum is refused from the head, before any buffer", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.nat({ max: 40 }), fc.nat({ max: 40 }), cutsArb, (payloadLen, p, h, cuts) => {
        const head = rawHead(p + 1, h, payloadLen)
        const max = 4096
        fc.pre(head.length + payloadLen > max)
        const d = makeTcpRequestDecoder({ maxMessageSize: max })
        const { growth, result } = arrayBufferGrowth(() => {
          let error: ProtocolParseError | undefined
          for (const c of splitAt(concat(head, new Uint8Array(32)), cuts)) error ??= d.decode(c, () => {})
          return error
        })
        // Headers of 1 byte (not JSON) may be refused first as malformed: either way, before the payload.
        expect(["MessageTooLarge", "MalformedFrame"]).toContain(result?.reason)
        expect(d.bufferedBytes()).toBeLessThanOrEqual(head.length)
        expect(growth).toBeLessThan(1024 * 1024)
      }),
      { numRuns: RUNS }
    )
  })

  it("path and header lengths beyond a small maximum are refused before the head is buffered", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 65535 }), fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 8, max: 256 }), (p, h, max) => {
        fc.pre(8 + p + h > max)
        const prefix = new Uint8Array(4 + Math.min(p, 300))
        const dv = new DataView(prefix.buffer)
        dv.setUint16(0, p)
        if (p <= 300) dv.setUint16(2 + p, h)
        const d = makeTcpRequestDecoder({ maxMessageSize: max })
        let error: ProtocolParseError | undefined
        for (const c of splitAt(prefix, [1, 2, 3, 5, 9])) {
          error ??= d.decode(c, () => {})
          expect(d.bufferedBytes()).toBeLessThanOrEqual(max)
        }
        if (8 + p > max) expect(error?.reason).toBe("MessageTooLarge")
      }),
      { numRuns: RUNS }
    )
  })
})

describe("TCP ack decoder (fuzz)", () => {
  const ackArb = fc.string({ maxLength: 40, unit: "grapheme" })

  it("random bytes in random chunks: no throw, never more than the maximum held", () => {
    fc.assert(
      fc.property(bytesArb(600), cutsArb, fc.integer({ min: 4, max: 300 }), (bytes, cuts, max) => {
        const texts: Array<string> = []
        feedChecked(makeTcpAckDecoder({ maxMessageSize: max }), splitAt(bytes, cuts), (t: string) => texts.push(t), max)
        for (const t of texts) expect(typeof t).toBe("string")
      }),
      { numRuns: RUNS }
    )
  })

  it("acks round-trip through any chunking; truncation yields the acks wholly before the cut", () => {
    fc.assert(
      fc.property(fc.array(ackArb, { minLength: 1, maxLength: 5 }), cutsArb, (acks, cuts) => {
        const encoded = acks.map((a) => encodeTcpAck(a))
        const wire = concat(...encoded)
        const texts: Array<string> = []
        const d = makeTcpAckDecoder({ maxMessageSize: MAX })
        expect(feedChecked(d, splitAt(wire, cuts), (t: string) => texts.push(t), MAX)).toBeUndefined()
        expect(texts).toEqual(acks)
        const ends: Array<number> = []
        let o = 0
        for (const e of encoded) ends.push((o += e.length))
        for (let k = 0; k < wire.length; k++) {
          const cut: Array<string> = []
          const dk = makeTcpAckDecoder({ maxMessageSize: MAX })
          expect(feedChecked(dk, splitAt(wire.subarray(0, k), cuts), (t: string) => cut.push(t), MAX)).toBeUndefined()
          expect(cut).toEqual(acks.slice(0, ends.filter((e) => e <= k).length))
          expect(dk.isIdle()).toBe(k === 0 || ends.includes(k))
        }
      }),
      { numRuns: 100 }
    )
  })

  it("an ack length up to 2^32-1 beyond the maximum is refused before any buffer", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 4, max: 1 << 20 }), cutsArb, (len, max, cuts) => {
        fc.pre(4 + len > max)
        const prefix = new Uint8Array(4)
        new DataView(prefix.buffer).setUint32(0, len)
        const d = makeTcpAckDecoder({ maxMessageSize: max })
        const { growth, result } = arrayBufferGrowth(() => {
          let error: ProtocolParseError | undefined
          for (const c of splitAt(concat(prefix, new Uint8Array(16)), cuts)) error ??= d.decode(c, () => {})
          return error
        })
        expect(result?.reason).toBe("MessageTooLarge")
        expect(d.bufferedBytes()).toBeLessThanOrEqual(4)
        expect(growth).toBeLessThan(1024 * 1024)
      }),
      { numRuns: RUNS }
    )
  })
})
