/**
 * Wire codecs: TwoPartCodec frames, payload codecs, request-plane messages, stream bodies.
 *
 * Byte vectors are written out by hand below (hex); the xxh3 vectors are XXH3-64's published
 * values, cross-checked against the @node-rs/xxhash binding called directly.
 */
import { xxh3 } from "@node-rs/xxhash"
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { tcpConnectionInfo, type RequestControlMessage } from "../src/ConnectionInfo.ts"
import { ProtocolParseError } from "../src/protocol/ProtocolError.ts"
import { xxh3_64 } from "../src/protocol/Checksum.ts"
import { json, msgpack, PayloadCodecError, payloadCodec } from "../src/protocol/PayloadCodec.ts"
import {
  decodeRequestMessage,
  decodeStreamBody,
  encodeRequestMessage,
  encodeStreamComplete,
  encodeStreamError,
  encodeStreamItem,
  jsonStreamItem,
  jsonStreamItemIn,
  NOT_A_PLAIN_ITEM,
  STREAM_ITEM_JSON_PREFIX,
  STREAM_ITEM_JSON_SUFFIX,
  streamItemJson
} from "../src/protocol/RequestMessage.ts"
import { ChunkText } from "../src/protocol/ChunkText.ts"
import {
  decodeFrame,
  DEFAULT_MAX_MESSAGE_SIZE,
  encodeFrame,
  encodeFramePrefix,
  encodeFrameWithChecksum,
  encodeHeaderOnlyJson,
  type Frame,
  type FrameDecoderOptions,
  makeDecoder
} from "../src/protocol/TwoPartCodec.ts"

// ---------------------------------------------------------------------------------------------
// helpers (independent of the code under test)

const hex = (s: string): Uint8Array => {
  const clean = s.replace(/\s+/g, "")
  const out = new Uint8Array(clean.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16)
  return out
}
const toHex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex")
const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s)
const text = (b: Uint8Array): string => new TextDecoder().decode(b)
const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}
/** A 24-byte prefix built with DataView, for vectors too long to spell out. */
const prefixOf = (h: bigint, b: bigint, c: bigint = 0n): Uint8Array => {
  const out = new Uint8Array(24)
  const v = new DataView(out.buffer)
  v.setBigUint64(0, h)
  v.setBigUint64(8, b)
  v.setBigUint64(16, c)
  return out
}

const opts = (maxMessageSize = DEFAULT_MAX_MESSAGE_SIZE): FrameDecoderOptions => ({
  maxMessageSize
})

interface Collected {
  frames: Array<{ header: string; body: string }>
  error: ProtocolParseError | undefined
}

/** Feeds `chunks` to a fresh decoder; frames are copied out as hex. */
const feed = (chunks: ReadonlyArray<Uint8Array>, options = opts()): Collected & { idle: boolean; buffered: number } => {
  const d = makeDecoder(options)
  const frames: Array<{ header: string; body: string }> = []
  let error: ProtocolParseError | undefined
  for (const c of chunks) {
    error = d.decode(c, (h, b) => frames.push({ header: toHex(h), body: toHex(b) }))
    if (error !== undefined) break
  }
  return { frames, error, idle: d.isIdle(), buffered: d.bufferedBytes() }
}

const asError = (r: unknown): ProtocolParseError => {
  expect(r).toBeInstanceOf(ProtocolParseError)
  return r as ProtocolParseError
}
const asFrame = (r: Frame | ProtocolParseError): Frame => {
  if (r instanceof ProtocolParseError) throw new Error(`unexpected error: ${r.message}`)
  return r
}

// ---------------------------------------------------------------------------------------------
// hand-written frame vectors

/** header "hi", no body. */
const HEADER_ONLY = hex(`
  0000000000000002 0000000000000000 0000000000000000
  6869`)
/** no header, body "abc". */
const DATA_ONLY = hex(`
  0000000000000000 0000000000000003 0000000000000000
  616263`)
/** header "{}", body "x". */
const HEADER_AND_DATA = hex(`
  0000000000000002 0000000000000001 0000000000000000
  7b7d 78`)
/** header "a", body "bc", checksum xxh3_64("abc") = 0x78af5f94892f3950 (published vector). */
const CHECKED = hex(`
  0000000000000001 0000000000000002 78af5f94892f3950
  61 6263`)
/** Same, with the checksum's last bit flipped. */
const BAD_CHECKSUM = hex(`
  0000000000000001 0000000000000002 78af5f94892f3951
  61 6263`)
/** Empty header and body. */
const EMPTY_FRAME = hex(`0000000000000000 0000000000000000 0000000000000000`)

const EXPECTED_ALL = [
  { header: "6869", body: "" },
  { header: "", body: "616263" },
  { header: "7b7d", body: "78" },
  { header: "61", body: "6263" },
  { header: "", body: "" }
]
const ALL = concat(HEADER_ONLY, DATA_ONLY, HEADER_AND_DATA, CHECKED, EMPTY_FRAME)

describe("Checksum", () => {
  it("matches XXH3-64's published vectors", () => {
    expect(xxh3_64(new Uint8Array(0))).toBe(0x2d06800538d394c2n)
    expect(xxh3_64(utf8("a"))).toBe(0xe6c632b61e964e1fn)
    expect(xxh3_64(utf8("abc"))).toBe(0x78af5f94892f3950n)
    // and the binding, called directly, agrees
    expect(xxh3.xxh64(utf8("abc"))).toBe(0x78af5f94892f3950n)
  })
})

describe("TwoPartCodec encoder", () => {
  it("writes header-only, data-only, header-and-data and empty frames", () => {
    expect(toHex(encodeFrame(utf8("hi"), undefined))).toBe(toHex(HEADER_ONLY))
    expect(toHex(encodeFrame(undefined, utf8("abc")))).toBe(toHex(DATA_ONLY))
    expect(toHex(encodeFrame(new Uint8Array(0), utf8("abc")))).toBe(toHex(DATA_ONLY))
    expect(toHex(encodeFrame(utf8("{}"), utf8("x")))).toBe(toHex(HEADER_AND_DATA))
    expect(toHex(encodeFrame(undefined, undefined))).toBe(toHex(EMPTY_FRAME))
  })

  it("writes the xxh3 checksum when asked", () => {
    expect(toHex(encodeFrameWithChecksum(utf8("a"), utf8("bc")))).toBe(toHex(CHECKED))
  })

  it("writes a standalone prefix for writev", () => {
    expect(toHex(encodeFramePrefix(2, 1))).toBe(toHex(HEADER_AND_DATA.subarray(0, 24)))
    expect(toHex(encodeFramePrefix(1, 2, 0x78af5f94892f3950n))).toBe(toHex(CHECKED.subarray(0, 24)))
    // lengths above 2^32 use the high word
    expect(toHex(encodeFramePrefix(2 ** 40 + 5, 0))).toBe("0000010000000005" + "00".repeat(16))
  })

  it("writes header-only JSON control frames", () => {
    expect(toHex(encodeHeaderOnlyJson("sentinel"))).toBe(
      "000000000000000a" + "0000000000000000" + "0000000000000000" + "2273656e74696e656c22"
    )
    expect(toHex(encodeHeaderOnlyJson({ error: null }))).toBe(
      "000000000000000e" + "0000000000000000" + "0000000000000000" + "7b226572726f72223a6e756c6c7d"
    )
    expect(() => encodeHeaderOnlyJson(undefined)).toThrow(TypeError)
  })
})

describe("TwoPartCodec decodeFrame", () => {
  it("decodes each kind of frame", () => {
    const h = asFrame(decodeFrame(HEADER_ONLY, opts()))
    expect([text(h.header), h.body.length]).toEqual(["hi", 0])
    const d = asFrame(decodeFrame(DATA_ONLY, opts()))
    expect([d.header.length, text(d.body)]).toEqual([0, "abc"])
    const hd = asFrame(decodeFrame(HEADER_AND_DATA, opts()))
    expect([text(hd.header), text(hd.body)]).toEqual(["{}", "x"])
    const e = asFrame(decodeFrame(EMPTY_FRAME, opts()))
    expect([e.header.length, e.body.length]).toEqual([0, 0])
  })

  it("returns views into the input (zero-copy)", () => {
    const f = asFrame(decodeFrame(HEADER_AND_DATA, opts()))
    expect(f.header.buffer).toBe(HEADER_AND_DATA.buffer)
    expect(f.header.byteOffset).toBe(24)
    expect(f.body.byteOffset).toBe(26)
  })

  it("verifies a non-zero checksum", () => {
    const ok = asFrame(decodeFrame(CHECKED, opts()))
    expect([text(ok.header), text(ok.body)]).toEqual(["a", "bc"])
    const bad = asError(decodeFrame(BAD_CHECKSUM, opts()))
    expect(bad.reason).toBe("ChecksumMismatch")
    expect(bad.detail).toContain("0x78af5f94892f3951")
    expect(bad.detail).toContain("0x78af5f94892f3950")
  })

  it("refuses truncated input and trailing bytes", () => {
    for (let n = 0; n < HEADER_AND_DATA.length; n++) {
      const e = asError(decodeFrame(HEADER_AND_DATA.subarray(0, n), opts()))
      expect(e.reason).toBe("MalformedFrame")
      expect(e.detail).toContain("truncated")
    }
    const trailing = asError(decodeFrame(concat(HEADER_AND_DATA, hex("00")), opts()))
    expect(trailing.reason).toBe("MalformedFrame")
    expect(trailing.detail).toContain("1 trailing bytes")
  })

  it("enforces the maximum size exactly at the boundary", () => {
    // 24 + 30 + 46 = 100
    const atMax = concat(prefixOf(30n, 46n), new Uint8Array(76).fill(7))
    expect(asFrame(decodeFrame(atMax, opts(100))).body.length).toBe(46)
    const over = concat(prefixOf(30n, 47n), new Uint8Array(77).fill(7))
    const e = asError(decodeFrame(over, opts(100)))
    expect(e.reason).toBe("MessageTooLarge")
    expect(e.detail).toContain("101 bytes")
    expect(e.detail).toContain("100 bytes")
  })
})

describe("TwoPartCodec incremental decoder", () => {
  it("restOffset: where a frame's header (then body) begins in the chunk, or -1 for a frame that spanned chunks, at any split", () => {
    const frame = fc.record({ header: fc.uint8Array({ maxLength: 16 }), body: fc.uint8Array({ maxLength: 48 }) })
    fc.assert(
      fc.property(fc.array(frame, { minLength: 1, maxLength: 6 }), fc.uint8Array({ maxLength: 8 }), fc.nat(), (frames, lead, cut) => {
        const bytes = Buffer.concat(frames.map((f) => encodeFrame(f.header, f.body)))
        const at = cut % (bytes.length + 1)
        // the chunks are views at an offset of a larger buffer, as a socket's can be
        const backing = Buffer.concat([lead, bytes])
        const chunks = [backing.subarray(lead.length, lead.length + at), backing.subarray(lead.length + at)]
        const d = makeDecoder(opts())
        let n = 0
        for (const chunk of chunks) {
          const error = d.decode(chunk, (h, b) => {
            const f = frames[n++]!
            expect(Array.from(h)).toEqual(Array.from(f.header))
            expect(Array.from(b)).toEqual(Array.from(f.body))
            const rest = d.restOffset()
            if (rest >= 0) {
              // the parts are views of this chunk, at the offset it names
              expect(Array.from(chunk.subarray(rest, rest + h.length))).toEqual(Array.from(h))
              expect(Array.from(chunk.subarray(rest + h.length, rest + h.length + b.length))).toEqual(Array.from(b))
              if (h.length > 0) expect(h.byteOffset - chunk.byteOffset).toBe(rest)
              if (b.length > 0) expect(b.byteOffset - chunk.byteOffset).toBe(rest + h.length)
            } else {
              // a frame whose bytes were not all in this chunk
              expect(chunk === chunks[1] && at > 0).toBe(true)
            }
          })
          expect(error).toBeUndefined()
        }
        expect(n).toBe(frames.length)
      })
    )
  })

  it("decodes coalesced frames from one chunk, zero-copy", () => {
    const d = makeDecoder(opts())
    const views: Array<[Uint8Array, Uint8Array]> = []
    expect(d.decode(ALL, (h, b) => views.push([h, b]))).toBeUndefined()
    expect(views.map(([h, b]) => ({ header: toHex(h), body: toHex(b) }))).toEqual(EXPECTED_ALL)
    for (const [h, b] of views) {
      if (h.length > 0) expect(h.buffer).toBe(ALL.buffer)
      if (b.length > 0) expect(b.buffer).toBe(ALL.buffer)
    }
    expect(d.isIdle()).toBe(true)
    expect(d.bufferedBytes()).toBe(0)
  })

  it("decodes the same frames at every single split point", () => {
    for (let i = 0; i <= ALL.length; i++) {
      const r = feed([ALL.subarray(0, i), ALL.subarray(i)])
      expect(r.error).toBeUndefined()
      expect(r.frames).toEqual(EXPECTED_ALL)
      expect(r.idle).toBe(true)
    }
  })

  it("decodes the same frames at every pair of split points", () => {
    for (let i = 0; i <= ALL.length; i++) {
      for (let j = i; j <= ALL.length; j++) {
        const r = feed([ALL.subarray(0, i), ALL.subarray(i, j), ALL.subarray(j)])
        expect(r.frames).toEqual(EXPECTED_ALL)
      }
    }
  })

  it("decodes the same frames fed one byte at a time, and copies spanning frames", () => {
    const d = makeDecoder(opts())
    const views: Array<[Uint8Array, Uint8Array]> = []
    for (let i = 0; i < ALL.length; i++) {
      expect(d.decode(ALL.subarray(i, i + 1), (h, b) => views.push([h, b]))).toBeUndefined()
    }
    expect(views.map(([h, b]) => ({ header: toHex(h), body: toHex(b) }))).toEqual(EXPECTED_ALL)
    for (const [h] of views) if (h.length > 0) expect(h.buffer).not.toBe(ALL.buffer)
  })

  it("verifies checksums across chunk boundaries", () => {
    expect(feed([CHECKED.subarray(0, 25), CHECKED.subarray(25)]).frames).toEqual([{ header: "61", body: "6263" }])
    for (let i = 0; i <= BAD_CHECKSUM.length; i++) {
      const r = feed([BAD_CHECKSUM.subarray(0, i), BAD_CHECKSUM.subarray(i)])
      expect(r.error?.reason).toBe("ChecksumMismatch")
      expect(r.frames).toEqual([])
    }
  })

  it("reports a partial frame as not idle (truncation at close)", () => {
    const partialPrefix = feed([HEADER_AND_DATA.subarray(0, 10)])
    expect(partialPrefix.error).toBeUndefined()
    expect(partialPrefix.idle).toBe(false)
    expect(partialPrefix.buffered).toBe(10)
    const partialBody = feed([HEADER_AND_DATA.subarray(0, 26)])
    expect(partialBody.idle).toBe(false)
    expect(partialBody.buffered).toBe(26)
    const prefixOnly = feed([HEADER_AND_DATA.subarray(0, 24)])
    expect(prefixOnly.idle).toBe(false)
    expect(prefixOnly.frames).toEqual([])
    const whole = feed([HEADER_AND_DATA])
    expect(whole.idle).toBe(true)
  })

  it("refuses header_len = 2^40 after only the 24-byte prefix, without buffering the body", () => {
    const prefix = hex(`0000010000000000 0000000000000000 0000000000000000`)
    const d = makeDecoder(opts())
    const onFrame = () => {
      throw new Error("no frame expected")
    }
    // 23 bytes: nothing to say yet
    expect(d.decode(prefix.subarray(0, 23), onFrame)).toBeUndefined()
    expect(d.bufferedBytes()).toBe(23)
    // the 24th byte completes the prefix: refused at once
    const e = asError(d.decode(prefix.subarray(23), onFrame))
    expect(e.reason).toBe("MessageTooLarge")
    expect(e.detail).toContain("1099511627800 bytes") // 24 + 2^40
    expect(e.detail).toContain("header_len 1099511627776")
    expect(e.detail).toContain(`${DEFAULT_MAX_MESSAGE_SIZE} bytes`)
    expect(d.bufferedBytes()).toBe(0)
    // dead: the same error, whatever comes next
    expect(d.decode(HEADER_ONLY, onFrame)).toBe(e)
    expect(d.failure()).toBe(e)
  })

  it("refuses lengths at and above 2^53, and u64 sums that overflow, with exact sizes", () => {
    const cases: Array<[string, string]> = [
      // header_len = 2^53
      [`0020000000000000 0000000000000000 0000000000000000`, "9007199254741016 bytes"],
      // header_len = 2^64 - 1
      [`ffffffffffffffff 0000000000000000 0000000000000000`, "18446744073709551639 bytes"],
      // header_len = body_len = 2^63: the sum overflows u64
      [`8000000000000000 8000000000000000 0000000000000000`, "18446744073709551640 bytes"]
    ]
    for (const [vector, size] of cases) {
      const e = asError(feed([hex(vector)]).error)
      expect(e.reason).toBe("MessageTooLarge")
      expect(e.detail).toContain(size)
      const one = asError(decodeFrame(hex(vector), opts()))
      expect(one.reason).toBe("MessageTooLarge")
    }
    // with no limit at all, the 2^53 guard still holds
    const unbounded = asError(feed([hex(cases[0]![0])], opts(Infinity)).error)
    expect(unbounded.reason).toBe("MessageTooLarge")
  })

  it("enforces the maximum size exactly at the boundary", () => {
    const atMax = concat(prefixOf(30n, 46n), new Uint8Array(76).fill(1))
    const ok = feed([atMax.subarray(0, 50), atMax.subarray(50)], opts(100))
    expect(ok.error).toBeUndefined()
    expect(ok.frames.length).toBe(1)
    const over = feed([prefixOf(30n, 47n)], opts(100))
    expect(over.error?.reason).toBe("MessageTooLarge")
    expect(over.error?.detail).toContain("101 bytes")
    expect(over.error?.detail).toContain("maximum message size of 100 bytes")
  })

  it("keeps frames decoded before an error in the same chunk", () => {
    const r = feed([concat(HEADER_ONLY, BAD_CHECKSUM, DATA_ONLY)])
    expect(r.frames).toEqual([{ header: "6869", body: "" }])
    expect(r.error?.reason).toBe("ChecksumMismatch")
  })
})

// ---------------------------------------------------------------------------------------------
// properties

/** Splits `bytes` at the given cut points (any order, duplicates allowed). */
const rechunk = (bytes: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)
  const out: Array<Uint8Array> = []
  let last = 0
  for (const p of points) {
    out.push(bytes.subarray(last, p))
    last = p
  }
  out.push(bytes.subarray(last))
  return out
}

describe("TwoPartCodec properties", () => {
  const part = fc.uint8Array({ maxLength: 64 })
  const frames = fc.array(fc.record({ header: part, body: part, checked: fc.boolean() }), { maxLength: 8 })

  it("encode → arbitrary re-chunking → decode round-trips", () => {
    fc.assert(
      fc.property(frames, fc.array(fc.nat(), { maxLength: 12 }), (fs, cuts) => {
        const wire = concat(
          ...fs.map((f) => f.checked ? encodeFrameWithChecksum(f.header, f.body) : encodeFrame(f.header, f.body))
        )
        const r = feed(rechunk(wire, cuts))
        expect(r.error).toBeUndefined()
        expect(r.idle).toBe(true)
        expect(r.frames).toEqual(fs.map((f) => ({ header: toHex(f.header), body: toHex(f.body) })))
        for (const f of fs) {
          const one = asFrame(decodeFrame(encodeFrame(f.header, f.body), opts()))
          expect([toHex(one.header), toHex(one.body)]).toEqual([toHex(f.header), toHex(f.body)])
        }
      })
    )
  })

  it("random garbage never throws: only frames or a protocol error", () => {
    const smallPrefix = fc
      .tuple(fc.nat({ max: 40 }), fc.nat({ max: 40 }), fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })))
      .map(([h, b, c]) => prefixOf(BigInt(h), BigInt(b), c))
    const garbage = fc.array(fc.oneof(fc.uint8Array({ maxLength: 80 }), smallPrefix), { maxLength: 10 }).map((parts) =>
      concat(...parts)
    )
    fc.assert(
      fc.property(garbage, fc.array(fc.nat(), { maxLength: 8 }), fc.integer({ min: 0, max: 200 }), (bytes, cuts, max) => {
        const options = opts(max)
        const d = makeDecoder(options)
        let error: ProtocolParseError | undefined
        for (const chunk of rechunk(bytes, cuts)) {
          const e = d.decode(chunk, () => {})
          if (error !== undefined) expect(e).toBe(error)
          else if (e !== undefined) {
            expect(e).toBeInstanceOf(ProtocolParseError)
            error = e
          }
        }
        const one = decodeFrame(bytes, options)
        expect(one instanceof ProtocolParseError || (one.header instanceof Uint8Array)).toBe(true)
        const req = decodeRequestMessage(bytes, options)
        expect(req instanceof ProtocolParseError || "control" in req).toBe(true)
      })
    )
  })
})

// ---------------------------------------------------------------------------------------------
// payload codecs

describe("PayloadCodec", () => {
  it("selects codecs by wire name; absent means json", () => {
    expect(payloadCodec(undefined)).toBe(json)
    expect(payloadCodec("json")).toBe(json)
    expect(payloadCodec("msgpack")).toBe(msgpack)
  })

  it("json: hand-checked bytes, round trips, errors", () => {
    expect(text(json.encode({ a: 1, b: [true, null] }))).toBe(`{"a":1,"b":[true,null]}`)
    expect(json.decode(hex("7b2261223a317d"))).toEqual({ a: 1 })
    // bigints as bare numbers with exact digits
    expect(text(json.encode({ id: 12345678901234567890n }))).toBe(`{"id":12345678901234567890}`)
    expect(() => json.encode(undefined)).toThrow(PayloadCodecError)
    expect(() => json.decode(utf8("{"))).toThrow(PayloadCodecError)
    expect(() => json.decode(hex("22ff22"))).toThrow(PayloadCodecError) // invalid UTF-8
    expect(() => json.decode(new Uint8Array(0))).toThrow(PayloadCodecError)
    try {
      json.decode(utf8("{"))
    } catch (e) {
      expect((e as PayloadCodecError).codec).toBe("json")
      expect((e as PayloadCodecError).operation).toBe("decode")
      expect((e as Error).message).toContain("json decode failed")
    }
  })

  it("msgpack: maps with field names, checked by hand", () => {
    expect(toHex(msgpack.encode({ a: 1 }))).toBe("81a16101")
    expect(msgpack.decode(hex("81a16101"))).toEqual({ a: 1 })
    // {"data": [1, 2], "complete_final": false}
    const wrapper = "82" + "a4" + "64617461" + "92" + "01" + "02" + "ae" + "636f6d706c6574655f66696e616c" + "c2"
    expect(toHex(msgpack.encode({ data: [1, 2], complete_final: false }))).toBe(wrapper)
    const decoded = msgpack.decode(hex(wrapper))
    expect(decoded).toEqual({ data: [1, 2], complete_final: false })
    expect(Object.getPrototypeOf(decoded)).toBe(Object.prototype)
    // map16 with 16 keys decodes to a plain object too
    const keys = Array.from({ length: 16 }, (_, i) => String.fromCharCode(97 + i))
    const map16 = "de0010" + keys.map((k, i) => "a1" + k.charCodeAt(0).toString(16) + i.toString(16).padStart(2, "0")).join("")
    expect(msgpack.decode(hex(map16))).toEqual(Object.fromEntries(keys.map((k, i) => [k, i])))
    expect(toHex(msgpack.encode(Object.fromEntries(keys.map((k, i) => [k, i]))))).toBe(map16)
  })

  it("msgpack: bigints round-trip within 64 bits and fail clearly beyond", () => {
    expect(toHex(msgpack.encode(2n ** 63n))).toBe("cf8000000000000000")
    expect(msgpack.decode(hex("cf8000000000000000"))).toBe(2n ** 63n)
    expect(msgpack.decode(hex("cf0000010000000000"))).toBe(2 ** 40) // safe integers come back as numbers
    expect(msgpack.decode(msgpack.encode({ id: 5313290120726539203n }))).toEqual({ id: 5313290120726539203n })
    expect(() => msgpack.encode(2n ** 64n)).toThrow(/msgpack encode failed: .*too large/)
  })

  it("msgpack: undefined is nil, bytes are bin, errors are PayloadCodecError", () => {
    expect(toHex(msgpack.encode({ x: undefined }))).toBe("81a178c0")
    expect(toHex(msgpack.encode(new Uint8Array([1, 2])))).toBe("c4020102")
    expect(() => msgpack.decode(hex("81a161"))).toThrow(PayloadCodecError) // truncated
    expect(() => msgpack.decode(hex("0101"))).toThrow(PayloadCodecError) // trailing
    expect(() => msgpack.decode(new Uint8Array(0))).toThrow(PayloadCodecError)
  })

  it("round-trips JSON values through both codecs", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const normal = JSON.parse(JSON.stringify(v)) as unknown
        expect(json.decode(json.encode(v))).toEqual(normal)
        // msgpackr renames a "__proto__" key (prototype-pollution guard): see the next test
        if (!JSON.stringify(v).includes("\"__proto__\"")) {
          expect(JSON.parse(JSON.stringify(msgpack.decode(msgpack.encode(v))))).toEqual(normal)
        }
      })
    )
  })

  it("keeps a \"__proto__\" key with json; msgpack (msgpackr) renames it to \"__proto_\"", () => {
    const v = JSON.parse("{\"__proto__\":{\"a\":1}}") as unknown
    expect(JSON.stringify(json.decode(json.encode(v)))).toBe("{\"__proto__\":{\"a\":1}}")
    expect(JSON.stringify(msgpack.decode(msgpack.encode(v)))).toBe("{\"__proto_\":{\"a\":1}}")
  })

  it("decodes views at any offset (zero-copy frame parts)", () => {
    const buf = hex("ff81a16101ff")
    expect(msgpack.decode(buf.subarray(1, 5))).toEqual({ a: 1 })
    const jbuf = hex("ff7b7dff")
    expect(json.decode(jbuf.subarray(1, 3))).toEqual({})
  })
})

// ---------------------------------------------------------------------------------------------
// request-plane messages

const SUBJECT = "3f2b8c1e-9d4a-4b7e-8f10-2c6d5e4a1b9c"
const control = (extra: Partial<RequestControlMessage> = {}): RequestControlMessage => ({
  id: "req-1",
  request_type: "single_in",
  response_type: "many_out",
  connection_info: tcpConnectionInfo({
    address: "127.0.0.1:4000",
    subject: SUBJECT,
    context: "req-1",
    stream_type: "response"
  }),
  ...extra
})

/** The control header, written out by hand: connection_info.info is JSON inside a string. */
const CONTROL_JSON = `{"id":"req-1","request_type":"single_in","response_type":"many_out",` +
  `"connection_info":{"transport":"tcp_server","info":"{\\"address\\":\\"127.0.0.1:4000\\",` +
  `\\"subject\\":\\"${SUBJECT}\\",\\"context\\":\\"req-1\\",\\"stream_type\\":\\"response\\"}"}}`

const requestFrame = (header: string, body: Uint8Array): Uint8Array => {
  const h = utf8(header)
  return concat(prefixOf(BigInt(h.length), BigInt(body.length)), h, body)
}

describe("RequestMessage", () => {
  it("encodes the header in Dynamo's key order with the double-encoded connection_info", () => {
    const wire = encodeRequestMessage(control(), { token_ids: [1, 2, 3] })
    const expected = requestFrame(CONTROL_JSON, utf8(`{"token_ids":[1,2,3]}`))
    expect(toHex(wire)).toBe(toHex(expected))
  })

  it("round-trips, and the info parses as TcpStreamConnectionInfo", () => {
    const decoded = decodeRequestMessage(encodeRequestMessage(control(), { prompt: "hi" }), opts())
    if (decoded instanceof ProtocolParseError) throw decoded
    expect(decoded.control).toEqual(control())
    expect(decoded.payload).toEqual({ prompt: "hi" })
    expect(JSON.parse(decoded.control.connection_info.info)).toEqual({
      address: "127.0.0.1:4000",
      subject: SUBJECT,
      context: "req-1",
      stream_type: "response"
    })
  })

  it("writes payload_codec and non-empty metadata in order, and msgpack bodies with field names", () => {
    const c = control({ payload_codec: "msgpack", metadata: { tenant: "t1" } })
    const wire = encodeRequestMessage(c, { a: 1 })
    const header = CONTROL_JSON.replace(`"many_out",`, `"many_out","payload_codec":"msgpack",`).replace(
      /}$/,
      `,"metadata":{"tenant":"t1"}}`
    )
    expect(toHex(wire)).toBe(toHex(requestFrame(header, hex("81a16101"))))
    const decoded = decodeRequestMessage(wire, opts())
    if (decoded instanceof ProtocolParseError) throw decoded
    expect(decoded.control).toEqual(c)
    expect(decoded.payload).toEqual({ a: 1 })
  })

  it("omits empty metadata", () => {
    const wire = encodeRequestMessage(control({ metadata: {} }), null)
    expect(toHex(wire)).toBe(toHex(requestFrame(CONTROL_JSON, utf8("null"))))
  })

  it("accepts a Dynamo header with extra fields (frontend_send_ts_ns), body as json", () => {
    const header = CONTROL_JSON.replace(/}$/, `,"frontend_send_ts_ns":1700000000000000000}`)
    const decoded = decodeRequestMessage(requestFrame(header, utf8(`{"x":1}`)), opts())
    if (decoded instanceof ProtocolParseError) throw decoded
    expect(decoded.control).toEqual(control())
    expect(decoded.payload).toEqual({ x: 1 })
  })

  it("rejects a bad control header with a message naming the problem", () => {
    const badType = asError(
      decodeRequestMessage(requestFrame(CONTROL_JSON.replace(`"single_in"`, `"sideways"`), utf8("{}")), opts())
    )
    expect(badType.reason).toBe("MalformedFrame")
    expect(badType.detail).toContain("invalid request control header")
    expect(badType.detail).toContain("request_type")

    const noInfo = asError(decodeRequestMessage(requestFrame(`{"id":"r","request_type":"single_in","response_type":"many_out"}`, utf8("{}")), opts()))
    expect(noInfo.reason).toBe("MalformedFrame")
    expect(noInfo.detail).toContain("connection_info")

    const badCodec = asError(
      decodeRequestMessage(requestFrame(CONTROL_JSON.replace(`"many_out",`, `"many_out","payload_codec":"cbor",`), utf8("{}")), opts())
    )
    expect(badCodec.detail).toContain("payload_codec")

    const notJson = asError(decodeRequestMessage(requestFrame(`{"id":`, utf8("{}")), opts()))
    expect(notJson.reason).toBe("MalformedFrame")
    expect(notJson.detail).toContain("not valid JSON")

    const noHeader = asError(decodeRequestMessage(DATA_ONLY, opts()))
    expect(noHeader.detail).toContain("no control header")

    const truncated = asError(decodeRequestMessage(HEADER_AND_DATA.subarray(0, 20), opts()))
    expect(truncated.reason).toBe("MalformedFrame")
  })

  it("rejects a body its codec cannot decode as BadPayload", () => {
    const e = asError(decodeRequestMessage(requestFrame(CONTROL_JSON, utf8("{")), opts()))
    expect(e.reason).toBe("BadPayload")
    expect(e.detail).toContain("req-1")
    expect(e.detail).toContain("not valid json")
    const header = CONTROL_JSON.replace(`"many_out",`, `"many_out","payload_codec":"msgpack",`)
    const m = asError(decodeRequestMessage(requestFrame(header, hex("81a161")), opts()))
    expect(m.reason).toBe("BadPayload")
    expect(m.detail).toContain("not valid msgpack")
  })
})

// ---------------------------------------------------------------------------------------------
// call-home data frame bodies

describe("stream bodies", () => {

  it("refuses an item with no encoding instead of writing a body without data (undefined, a function, a symbol)", () => {
    for (const codec of [json, msgpack]) {
      for (const item of [undefined, () => 1, Symbol("s")]) {
        expect(() => encodeStreamItem(codec, item)).toThrow(PayloadCodecError)
      }
    }
    // nested undefined is JSON's own business (dropped from objects, null in arrays), as before
    expect(text(encodeStreamItem(json, { a: undefined, b: [undefined] }))).toBe(`{"data":{"b":[null]},"complete_final":false}`)
  })

  it("streamItemJson between its prefix and suffix is the JSON item body, byte for byte, for any JSON value and bigints", () => {
    const inPlace = (item: unknown) => Buffer.concat([STREAM_ITEM_JSON_PREFIX, Buffer.from(streamItemJson(item)), STREAM_ITEM_JSON_SUFFIX])
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), fc.object(), fc.bigInt()), (item) => {
        expect(toHex(inPlace(item))).toBe(toHex(encodeStreamItem(json, item)))
      }),
      { numRuns: 300 }
    )
    for (const item of [undefined, () => 1, Symbol("s"), { toJSON: () => undefined }]) expect(() => streamItemJson(item)).toThrow(PayloadCodecError)
  })

  it("encodes items, completion and errors (json, by hand)", () => {
    expect(text(encodeStreamItem(json, { text: "hi" }))).toBe(`{"data":{"text":"hi"},"complete_final":false}`)
    expect(text(encodeStreamComplete(json))).toBe(`{"complete_final":true}`)
    expect(text(encodeStreamError(json, "boom"))).toBe(`{"complete_final":false,"error":"boom"}`)
  })

  it("encodes completion in msgpack (by hand)", () => {
    expect(toHex(encodeStreamComplete(msgpack))).toBe("81ae636f6d706c6574655f66696e616cc3")
  })

  it("decodes each kind, in both codecs", () => {
    for (const codec of [json, msgpack]) {
      expect(decodeStreamBody(codec, encodeStreamItem(codec, { t: 1 }))).toEqual({ _tag: "Item", data: { t: 1 }, last: false })
      expect(decodeStreamBody(codec, encodeStreamItem(codec, null))).toEqual({ _tag: "Item", data: null, last: false })
      expect(decodeStreamBody(codec, encodeStreamComplete(codec))).toEqual({ _tag: "Complete" })
      expect(decodeStreamBody(codec, encodeStreamError(codec, "boom"))).toEqual({ _tag: "Error", message: "boom" })
      expect(decodeStreamBody(codec, codec.encode({ data: 7, complete_final: true }))).toEqual({
        _tag: "Item",
        data: 7,
        last: true
      })
    }
  })

  it("jsonStreamItem takes a body of our writers' shape, and gives what decodeStreamBody gives", () => {
    // Every item a worker writes: the item back, without the wrapper's result object.
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const body = encodeStreamItem(json, value)
        const item = jsonStreamItem(body)
        expect(item).not.toBe(NOT_A_PLAIN_ITEM)
        expect(item).toEqual(JSON.parse(JSON.stringify(value)))
        expect(decodeStreamBody(json, body)).toEqual({ _tag: "Item", data: item, last: false })
      }),
      { numRuns: 500 }
    )
    // Anything between the wrapper's two ends, and any bytes at all: an item only where
    // decodeStreamBody makes the same Item of it; otherwise decodeStreamBody decides.
    const middles = fc.oneof(
      fc.string(),
      fc.constantFrom(`1,"x":2`, `1,"complete_final":true,"y":`, ` 1 `, `"\u00e9"`, `null`, `{"a":[1,2]}`, ""),
      fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b).toString("latin1"))
    )
    const bodies = fc.oneof(
      middles.map((m) => Buffer.concat([STREAM_ITEM_JSON_PREFIX, Buffer.from(m, "utf8"), STREAM_ITEM_JSON_SUFFIX])),
      middles.map((m) => Buffer.concat([STREAM_ITEM_JSON_PREFIX, Buffer.from(m, "latin1"), STREAM_ITEM_JSON_SUFFIX])),
      fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b))
    )
    fc.assert(
      fc.property(bodies, (body) => {
        const item = jsonStreamItem(body)
        if (item === NOT_A_PLAIN_ITEM) return
        expect(decodeStreamBody(json, body)).toEqual({ _tag: "Item", data: item, last: false })
      }),
      { numRuns: 2000 }
    )
    // By hand: the wrapper with other keys, bad UTF-8, or another shape is not taken.
    expect(jsonStreamItem(utf8(`{"data":1,"x":2,"complete_final":false}`))).toBe(NOT_A_PLAIN_ITEM)
    expect(jsonStreamItem(Buffer.concat([STREAM_ITEM_JSON_PREFIX, Buffer.from([0x22, 0xc3, 0x28, 0x22]), STREAM_ITEM_JSON_SUFFIX]))).toBe(NOT_A_PLAIN_ITEM)
    expect(jsonStreamItem(utf8(`{"data":1,"complete_final":true}`))).toBe(NOT_A_PLAIN_ITEM)
    expect(jsonStreamItem(utf8(`{"complete_final":false,"data":1}`))).toBe(NOT_A_PLAIN_ITEM)
    expect(jsonStreamItem(utf8(`{"data":,"complete_final":false}`))).toBe(NOT_A_PLAIN_ITEM)
    expect(jsonStreamItem(utf8(`{"data":"é","complete_final":false}`))).toBe("é")
    expect(jsonStreamItem(utf8(`{"data":null,"complete_final":false}`))).toBeNull()
  })

  it("jsonStreamItemIn gives what jsonStreamItem gives, for a body anywhere in a chunk of any other bytes", () => {
    const middles = fc.oneof(
      fc.jsonValue().map((v) => JSON.stringify(v)),
      fc.string(),
      fc.constantFrom(`1,"x":2`, `"\u00e9"`, `"é"`, ""),
      fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b).toString("latin1"))
    )
    const bodies = fc.oneof(
      middles.map((m) => Buffer.concat([STREAM_ITEM_JSON_PREFIX, Buffer.from(m, "utf8"), STREAM_ITEM_JSON_SUFFIX])),
      middles.map((m) => Buffer.concat([STREAM_ITEM_JSON_PREFIX, Buffer.from(m, "latin1"), STREAM_ITEM_JSON_SUFFIX])),
      fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b))
    )
    const text = new ChunkText()
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), bodies, fc.uint8Array({ maxLength: 64 }), (before, body, after) => {
        const chunk = Buffer.concat([before, body, after])
        text.reading(chunk)
        const view = chunk.subarray(before.length, before.length + body.length)
        const item = jsonStreamItemIn(view, text, before.length)
        text.release()
        expect(item).toEqual(jsonStreamItem(body))
      }),
      { numRuns: 3000 }
    )
  })

  it("rejects malformed bodies as BadPayload naming the problem", () => {
    const cases: Array<[string, string]> = [
      [`{`, "not valid json"],
      [`[1]`, "not an object"],
      [`{"data":1}`, "no boolean complete_final"],
      [`{"complete_final":"yes"}`, "no boolean complete_final"],
      [`{"complete_final":false}`, "neither data nor complete_final"],
      [`{"complete_final":false,"error":42}`, "error is not a string"]
    ]
    for (const [body, why] of cases) {
      const e = asError(decodeStreamBody(json, utf8(body)))
      expect(e.reason).toBe("BadPayload")
      expect(e.detail).toContain(why)
    }
  })
})
