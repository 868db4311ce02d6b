/**
 * The full TCP mode's wire (docs/protocol.md, "The full TCP mode (tcp_mux v1)"): the hello and
 * its answer (protocol/FullModeHello.ts), and the compact mux kinds 9-14 (protocol/MuxCodec.ts
 * with `fullMode: true`), which the pooled call-home decoder keeps refusing.
 *
 * Byte vectors are built in the test with DataView from the documented layout, not by the
 * encoders under test.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  encodeHello,
  encodeHelloAnswer,
  FULL_MODE_MAGIC,
  FULL_MODE_VERSION,
  HELLO_SIZE,
  HelloStatus,
  readHello,
  readHelloAnswer,
  startsFullMode
} from "../src/protocol/FullModeHello.ts"
import {
  decodeErrorText,
  decodeFullRequestPayload,
  decodeMuxFrame,
  decodePingNonce,
  encodeErrorFrame,
  encodeFullRequestPayload,
  encodeMuxFrame,
  encodePing,
  encodePong,
  encodeRequestFrame,
  fullModeKindName,
  kindName,
  makeMuxDecoder,
  MuxKind,
  NIL_STREAM_ID
} from "../src/protocol/MuxCodec.ts"
import { ProtocolParseError } from "../src/protocol/ProtocolError.ts"
import { encodeTcpRequestFrame, makeTcpRequestDecoder } from "../src/protocol/TcpRequestFrame.ts"

// ---------------------------------------------------------------------------------------------
// helpers (independent of the code under test)

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s)
const text = (b: Uint8Array): string => new TextDecoder().decode(b)
const toHex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex")
const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}

/** The 12-byte hello from its layout. */
const handHello = (version = 1, flags = 0): Uint8Array => {
  const out = new Uint8Array(12)
  const dv = new DataView(out.buffer)
  dv.setUint16(0, 0)
  out.set(utf8("DYNMUX"), 2)
  dv.setUint16(8, version)
  dv.setUint16(10, flags)
  return out
}

/** An answer from its layout. */
const handAnswer = (status: number, reason = "", version = 1): Uint8Array => {
  const r = utf8(reason)
  const out = new Uint8Array(12 + r.length)
  const dv = new DataView(out.buffer)
  out.set(utf8("DYNMUX"), 0)
  dv.setUint16(6, version)
  dv.setUint16(8, status)
  dv.setUint16(10, r.length)
  out.set(r, 12)
  return out
}

/** A compact mux frame from the section 7 layout. */
const handMux = (kind: number, id: Uint8Array, payload: Uint8Array = new Uint8Array(0)): Uint8Array => {
  const out = new Uint8Array(24 + payload.length)
  const dv = new DataView(out.buffer)
  dv.setUint32(0, payload.length)
  dv.setUint8(4, kind)
  out.set(id, 8)
  out.set(payload, 24)
  return out
}

const ID = Uint8Array.from({ length: 16 }, (_, i) => i + 1)

const full = { maxMessageSize: 1 << 20, fullMode: true }
const pooled = { maxMessageSize: 1 << 20 }

const decodeOne = (bytes: Uint8Array, options: { maxMessageSize: number; fullMode?: boolean }) => {
  const d = makeMuxDecoder(options)
  const got: Array<[number, string, string]> = []
  const error = d.decode(bytes, (k, id, p) => got.push([k, toHex(id), toHex(p)]))
  return { got, error }
}

// ---------------------------------------------------------------------------------------------

describe("the hello", () => {
  it("is u16 0, DYNMUX, u16 version, u16 flags", () => {
    expect(FULL_MODE_MAGIC).toBe("DYNMUX")
    expect(FULL_MODE_VERSION).toBe(1)
    expect(HELLO_SIZE).toBe(12)
    expect(toHex(encodeHello())).toBe(toHex(handHello()))
    expect(toHex(encodeHello())).toBe("0000" + "44594e4d5558" + "0001" + "0000")
    expect(toHex(encodeHello(7))).toBe(toHex(handHello(7)))
  })

  it("reads from everything read so far: NeedMore until whole, then version and size", () => {
    const h = concat(handHello(), utf8("mux frames follow"))
    for (let n = 0; n < 12; n++) expect(readHello(h.subarray(0, n))).toEqual({ _tag: "NeedMore" })
    expect(readHello(h)).toEqual({ _tag: "Hello", version: 1, size: 12 })
    expect(readHello(handHello(2))).toEqual({ _tag: "Hello", version: 2, size: 12 })
  })

  it("refuses, as soon as a byte is wrong: a Dynamo request frame, a wrong magic, flags", () => {
    const dynamo = encodeTcpRequestFrame("1/ns/c/e", {}, utf8("x")) as Uint8Array
    expect(readHello(dynamo.subarray(0, 1))).toEqual({ _tag: "NeedMore" }) // its first byte is 0 too
    expect((readHello(dynamo.subarray(0, 2)) as ProtocolParseError).reason).toBe("BadHandshake")
    expect((readHello(Uint8Array.of(0, 0, 0x44, 0x58)) as ProtocolParseError).reason).toBe("BadHandshake")
    expect((readHello(handHello(1, 1)) as ProtocolParseError).detail).toMatch(/flags 1/)
  })

  it("startsFullMode tells the two framings apart from the first two bytes", () => {
    expect(startsFullMode(new Uint8Array(0))).toBeUndefined()
    expect(startsFullMode(Uint8Array.of(0))).toBeUndefined()
    expect(startsFullMode(handHello())).toBe(true)
    expect(startsFullMode(Uint8Array.of(0, 0))).toBe(true)
    expect(startsFullMode(encodeTcpRequestFrame("p", {}, new Uint8Array(0)) as Uint8Array)).toBe(false)
    expect(startsFullMode(Uint8Array.of(0, 1))).toBe(false)
    expect(startsFullMode(Uint8Array.of(1, 0))).toBe(false)
  })

  it("a Dynamo worker's request decoder refuses the hello at once (a zero path length)", () => {
    const d = makeTcpRequestDecoder({ maxMessageSize: 1 << 20 })
    expect(d.decode(handHello(), () => expect.unreachable())?.reason).toBe("MalformedFrame")
  })
})

describe("the hello's answer", () => {
  it("is DYNMUX, u16 version, u16 status, u16 reason_len, reason", () => {
    expect(HelloStatus).toEqual({ Accepted: 0, VersionNotSupported: 1, Refused: 2 })
    expect(toHex(encodeHelloAnswer(HelloStatus.Accepted))).toBe(toHex(handAnswer(0)))
    expect(toHex(encodeHelloAnswer(HelloStatus.Accepted))).toBe("44594e4d5558" + "0001" + "0000" + "0000")
    expect(toHex(encodeHelloAnswer(HelloStatus.Refused, "too many connections (max 2)"))).toBe(toHex(handAnswer(2, "too many connections (max 2)")))
    expect(toHex(encodeHelloAnswer(HelloStatus.VersionNotSupported, "v1 only", 1))).toBe(toHex(handAnswer(1, "v1 only")))
  })

  it("reads with its size, the mux frames after it untouched", () => {
    const ans = handAnswer(2, "draining")
    const bytes = concat(ans, handMux(MuxKind.Ping, NIL_STREAM_ID, new Uint8Array(8)))
    for (let n = 0; n < ans.length; n++) expect(readHelloAnswer(bytes.subarray(0, n))).toEqual({ _tag: "NeedMore" })
    expect(readHelloAnswer(bytes)).toEqual({ _tag: "Answer", version: 1, status: 2, reason: "draining", size: ans.length })
    expect(readHelloAnswer(handAnswer(0))).toEqual({ _tag: "Answer", version: 1, status: 0, reason: "", size: 12 })
  })

  it("refuses a wrong magic at once (a Dynamo worker's error ack) and an unknown status", () => {
    // A Dynamo worker answers a hello with a u32-length text ack, then closes.
    const ack = new Uint8Array(4 + 10)
    new DataView(ack.buffer).setUint32(0, 10)
    expect((readHelloAnswer(ack.subarray(0, 1)) as ProtocolParseError).reason).toBe("BadHandshake")
    expect((readHelloAnswer(handAnswer(3)) as ProtocolParseError).detail).toMatch(/unknown status 3/)
  })

  it("reasons round-trip; random bytes never throw", () => {
    fc.assert(
      fc.property(fc.constantFrom(0, 1, 2) as fc.Arbitrary<0 | 1 | 2>, fc.string({ maxLength: 100, unit: "grapheme" }), (s, r) => {
        const a = readHelloAnswer(encodeHelloAnswer(s, r))
        expect(a).toEqual({ _tag: "Answer", version: 1, status: s, reason: r, size: 12 + utf8(r).length })
      })
    )
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), (b) => {
        readHello(b)
        readHelloAnswer(b)
      })
    )
  })
})

describe("mux kinds 9-14", () => {
  it("have the numbers and names the full mode gives them", () => {
    expect([MuxKind.Request, MuxKind.RequestData, MuxKind.RequestEnd, MuxKind.Error, MuxKind.Ping, MuxKind.Pong]).toEqual([9, 10, 11, 12, 13, 14])
    expect([9, 10, 11, 12, 13, 14, 15].map((k) => fullModeKindName(k))).toEqual(["Request", "RequestData", "RequestEnd", "Error", "Ping", "Pong", "kind 15"])
    expect(kindName(9)).toBe("kind 9")
  })

  it("are refused by the pooled call-home decoder exactly as before", () => {
    for (const k of [9, 10, 11, 12, 13, 14]) {
      const id = k === 13 || k === 14 ? NIL_STREAM_ID : ID
      const payload = k === 11 ? new Uint8Array(0) : new Uint8Array(8)
      const { got, error } = decodeOne(handMux(k, id, payload), pooled)
      expect(got).toEqual([])
      expect(error?.detail).toBe(`unknown mux frame kind ${k}`)
      expect(decodeMuxFrame(handMux(k, id, payload), pooled)).toBeInstanceOf(ProtocolParseError)
    }
    expect(decodeOne(handMux(15, ID), full).error?.detail).toBe("unknown mux frame kind 15")
  })

  it("valid frames of every new kind decode in full mode", () => {
    const frames: Array<[number, Uint8Array, Uint8Array]> = [
      [9, ID, Uint8Array.of(0, 1, 0x70, 0, 0)],
      [10, ID, utf8(`{"data":1}`)],
      [10, ID, new Uint8Array(0)],
      [11, ID, new Uint8Array(0)],
      [12, ID, utf8("Server overloaded: worker at capacity")],
      [12, NIL_STREAM_ID, utf8("idle timeout")],
      [12, ID, new Uint8Array(0)],
      [13, NIL_STREAM_ID, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8)],
      [14, NIL_STREAM_ID, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8)]
    ]
    for (const [k, id, p] of frames) {
      const { got, error } = decodeOne(handMux(k, id, p), full)
      expect(error, `kind ${k}`).toBeUndefined()
      expect(got).toEqual([[k, toHex(id), toHex(p)]])
      const one = decodeMuxFrame(handMux(k, id, p), full)
      expect(one).not.toBeInstanceOf(ProtocolParseError)
    }
  })

  it("full mode validates each new kind from its header", () => {
    const bad: Array<[number, Uint8Array, Uint8Array, RegExp]> = [
      [9, NIL_STREAM_ID, new Uint8Array(8), /Request frame has the nil stream id/],
      [9, ID, new Uint8Array(3), /Request payload is 3 bytes/],
      [10, NIL_STREAM_ID, new Uint8Array(2), /RequestData frame has the nil stream id/],
      [11, NIL_STREAM_ID, new Uint8Array(0), /RequestEnd frame has the nil stream id/],
      [11, ID, new Uint8Array(1), /RequestEnd frame carries a 1-byte payload/],
      [13, ID, new Uint8Array(8), /Ping carries a non-nil stream id/],
      [13, NIL_STREAM_ID, new Uint8Array(7), /Ping payload is 7 bytes, expected 8/],
      [14, NIL_STREAM_ID, new Uint8Array(9), /Pong payload is 9 bytes, expected 8/],
      [14, ID, new Uint8Array(8), /Pong carries a non-nil stream id/]
    ]
    for (const [k, id, p, why] of bad) {
      const { got, error } = decodeOne(handMux(k, id, p), full)
      expect(got).toEqual([])
      expect(error?.reason).toBe("MalformedFrame")
      expect(error?.detail).toMatch(why)
    }
  })

  it("the rules of kinds 1-8 are unchanged in full mode", () => {
    expect(decodeOne(handMux(MuxKind.ConnectionAck, ID, new Uint8Array(8)), full).error?.detail).toMatch(/non-nil stream id/)
    expect(decodeOne(handMux(MuxKind.Data, NIL_STREAM_ID, new Uint8Array(1)), full).error?.detail).toMatch(/nil stream id/)
    expect(decodeOne(handMux(MuxKind.WindowUpdate, ID, new Uint8Array(3)), full).error?.detail).toMatch(/expected 4/)
    expect(decodeOne(handMux(MuxKind.Stop, ID, new Uint8Array(1)), full).error?.detail).toMatch(/expected none/)
    const flags = handMux(MuxKind.Ping, NIL_STREAM_ID, new Uint8Array(8))
    flags[5] = 1
    expect(decodeOne(flags, full).error?.detail).toMatch(/Ping frame has flags 1/)
  })

  it("the size limit covers the new kinds, at the boundary", () => {
    const f = handMux(MuxKind.RequestData, ID, new Uint8Array(100))
    expect(decodeOne(f, { maxMessageSize: f.length, fullMode: true }).error).toBeUndefined()
    expect(decodeOne(f, { maxMessageSize: f.length - 1, fullMode: true }).error?.reason).toBe("MessageTooLarge")
  })
})

describe("full-mode encoders", () => {
  it("Ping and Pong: nil id, u64 nonce, the Pong echoing the Ping", () => {
    const nonce = new Uint8Array(8)
    new DataView(nonce.buffer).setBigUint64(0, 0x0102030405060708n)
    const ping = encodePing(0x0102030405060708n)
    expect(toHex(ping)).toBe(toHex(handMux(13, NIL_STREAM_ID, nonce)))
    expect(toHex(encodePong(nonce))).toBe(toHex(handMux(14, NIL_STREAM_ID, nonce)))
    expect(decodePingNonce(nonce)).toBe(0x0102030405060708n)
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (n) => {
        const f = decodeMuxFrame(encodePing(n), full)
        if (f instanceof ProtocolParseError) throw f
        expect(decodePingNonce(f.payload)).toBe(n)
        expect(toHex(encodePong(f.payload)).slice(10)).toBe(toHex(encodePing(n)).slice(10))
      })
    )
  })

  it("Error: UTF-8 text under a stream id or the nil id", () => {
    expect(toHex(encodeErrorFrame(ID, "Unknown endpoint: 1/a"))).toBe(toHex(handMux(12, ID, utf8("Unknown endpoint: 1/a"))))
    expect(toHex(encodeErrorFrame(NIL_STREAM_ID, "missed heartbeats"))).toBe(toHex(handMux(12, NIL_STREAM_ID, utf8("missed heartbeats"))))
    expect(decodeErrorText(utf8("héllo"))).toBe("héllo")
    expect(decodeErrorText(new Uint8Array(0))).toBe("")
  })

  it("Request: the Dynamo head without payload_len, then the request message", () => {
    const message = utf8("section-2 two-part frame")
    const headers = { traceparent: "00-1-2-01" }
    const p = encodeFullRequestPayload("1/ns/c/e", headers, message)
    if (p instanceof ProtocolParseError) throw p
    const dynamo = encodeTcpRequestFrame("1/ns/c/e", headers, message) as Uint8Array
    const headLen = dynamo.length - 4 - message.length
    expect(toHex(p)).toBe(toHex(concat(dynamo.subarray(0, headLen), message)))
    const whole = encodeRequestFrame(ID, "1/ns/c/e", headers, message)
    if (whole instanceof ProtocolParseError) throw whole
    expect(toHex(whole)).toBe(toHex(handMux(9, ID, p)))
    const r = decodeFullRequestPayload(p)
    if (r instanceof ProtocolParseError) throw r
    expect({ path: r.path, headers: r.headers, message: text(r.message) }).toEqual({ path: "1/ns/c/e", headers, message: "section-2 two-part frame" })
  })

  it("Request payloads round-trip; bad ones are MalformedFrame, never a throw", () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 30 }),
        fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 3 }),
        fc.uint8Array({ maxLength: 50 }),
        (path, headers, message) => {
          const p = encodeFullRequestPayload(path, headers, message) as Uint8Array
          const r = decodeFullRequestPayload(p)
          if (r instanceof ProtocolParseError) throw r
          expect(r.path).toBe(path)
          expect(r.headers).toEqual(headers)
          expect(toHex(r.message)).toBe(toHex(message))
        }
      )
    )
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 60 }), (b) => {
        const r = decodeFullRequestPayload(b)
        if (r instanceof ProtocolParseError) expect(r.reason).toBe("MalformedFrame")
      })
    )
    expect((encodeFullRequestPayload("", {}, new Uint8Array(0)) as ProtocolParseError).reason).toBe("MalformedFrame")
  })

  it("a mixed full-mode stream decodes under random chunking", () => {
    const frames = [
      encodeRequestFrame(ID, "1/a/b/c", {}, utf8("req")) as Uint8Array,
      encodeMuxFrame(MuxKind.RequestData, ID, utf8(`{"data":2}`)),
      encodeMuxFrame(MuxKind.RequestEnd, ID),
      encodePing(5n),
      encodeErrorFrame(ID, "producer failed"),
      encodeMuxFrame(MuxKind.Prologue, ID, utf8(`{"error":null}`))
    ]
    const bytes = concat(...frames)
    fc.assert(
      fc.property(fc.array(fc.nat({ max: bytes.length }), { maxLength: 10 }), (cuts) => {
        const points = [...new Set(cuts)].sort((a, b) => a - b)
        const d = makeMuxDecoder(full)
        const kinds: Array<number> = []
        let prev = 0
        for (const p of [...points, bytes.length]) {
          expect(d.decode(Uint8Array.from(bytes.subarray(prev, p)), (k) => kinds.push(k))).toBeUndefined()
          prev = p
        }
        expect(kinds).toEqual([9, 10, 11, 13, 12, 1])
        expect(d.bytesDecoded()).toBe(bytes.length)
      })
    )
  })
})

describe("MuxDecoder.quietAfterCurrentFrame (when a reply may be written at once)", () => {
  const id = new Uint8Array(16).fill(3)
  const data = (n: number) => encodeMuxFrame(MuxKind.Data, id, new Uint8Array(n).fill(65))
  const credit = () => encodeMuxFrame(MuxKind.WindowUpdate, id, new Uint8Array([0, 0, 1, 0]))
  const ack = () => encodeMuxFrame(MuxKind.ConnectionAck, NIL_STREAM_ID, new Uint8Array(8))
  /** Decodes `chunks` in turn; records, per frame, its kind and whether the decoder was quiet after it. */
  const quietness = (chunks: ReadonlyArray<Uint8Array>) => {
    const decoder = makeMuxDecoder({ maxMessageSize: 1 << 20 })
    const seen: Array<[MuxKind, boolean]> = []
    for (const chunk of chunks) decoder.decode(chunk, (kind) => void seen.push([kind, decoder.quietAfterCurrentFrame()]))
    expect(decoder.quietAfterCurrentFrame()).toBe(false) // outside a frame handler
    return seen
  }

  it("is true only for the last frame of a chunk that is not a credit frame, credit frames after it aside", () => {
    expect(quietness([Buffer.concat([data(5), data(7), credit(), ack()])])).toEqual([
      [MuxKind.Data, false],
      [MuxKind.Data, true],
      // a credit frame's handler may release many streams' frames: never "quiet"
      [MuxKind.WindowUpdate, false],
      [MuxKind.ConnectionAck, false]
    ])
    expect(quietness([Buffer.concat([data(5), credit(), data(1)])]).map(([, q]) => q)).toEqual([false, false, true])
  })

  it("counts a partial frame after it as nothing to wait for, and a frame completed from an earlier chunk like any other", () => {
    const whole = Buffer.concat([data(10), data(20)])
    const cut = data(10).length + 30 // the second frame's header and part of its payload
    expect(quietness([whole.subarray(0, cut), whole.subarray(cut)])).toEqual([[MuxKind.Data, true], [MuxKind.Data, true]])
  })

  it("never throws and ends every chunk quiet, for any cut of any frames (property)", () => {
    const frame = fc.oneof(fc.nat(40).map(data), fc.constant(credit()), fc.constant(ack()))
    fc.assert(
      fc.property(fc.array(frame, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 4 }), (frames, cuts) => {
        const bytes = Buffer.concat(frames)
        const at = [...new Set(cuts.map((c) => c % bytes.length))].sort((a, b) => a - b)
        const chunks = [0, ...at].map((from, i) => bytes.subarray(from, [...at, bytes.length][i]))
        const seen = quietness(chunks.filter((c) => c.length > 0))
        expect(seen).toHaveLength(frames.length)
        // the last frame of all is followed by nothing: quiet unless it is a credit frame itself
        const [lastKind, lastQuiet] = seen.at(-1)!
        expect(lastQuiet).toBe(lastKind !== MuxKind.WindowUpdate && lastKind !== MuxKind.ConnectionAck)
      })
    )
  })
})
