/**
 * The response mux v1 compact frame (codec/MuxCodec.ts), against PROTOCOL.md section 7 and the
 * cases Dynamo's own tests cover: round trip with UUID and payload preserved; a WindowUpdate that
 * is not 4 bytes rejected; a ConnectionAck with a non-nil UUID rejected; unknown kinds rejected;
 * partial frames wait for more bytes; concatenated frames decode independently and route by UUID;
 * the maximum size enforced exactly at the boundary; non-zero flags rejected.
 *
 * Byte vectors are written out by hand (hex) from the layout, not produced by the encoder.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  decodeConnectionAck,
  decodeMuxFrame,
  decodeWindowUpdate,
  encodeConnectionAck,
  encodeMuxFrame,
  encodeMuxHeader,
  encodeWindowUpdate,
  kindName,
  makeMuxDecoder,
  MUX_HEADER_SIZE,
  MuxKind,
  type MuxDecoderOptions,
  NIL_STREAM_ID,
  streamIdFromUuid,
  uuidFromStreamId
} from "../src/protocol/MuxCodec.ts"
import { ProtocolParseError } from "../src/protocol/ProtocolError.ts"
import {
  encodeMuxHandshake,
  muxConnectionInfo,
  parseMuxHandshake,
  parseMuxInfo
} from "../src/protocol/MuxHandshake.ts"
import { decodeFrame } from "../src/protocol/TwoPartCodec.ts"
import { isUuid, randomStreamId, randomUuid } from "../src/protocol/StreamId.ts"

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
const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}
const opts = (maxMessageSize = 32 * 1024 * 1024): MuxDecoderOptions => ({ maxMessageSize })

const UUID_A = "00112233-4455-6677-8899-aabbccddeeff"
const ID_A = "00112233445566778899aabbccddeeff"
const UUID_B = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
const ID_B = "f47ac10b58cc4372a5670e02b2c3d479"
const NIL = "00000000000000000000000000000000"

interface Seen {
  readonly kind: number
  readonly id: string
  readonly payload: string
}

/** Feeds `chunks` to a fresh decoder; copies every frame (the views alias the chunks). */
const feed = (chunks: ReadonlyArray<Uint8Array>, options = opts()) => {
  const d = makeMuxDecoder(options)
  const frames: Array<Seen> = []
  let error: ProtocolParseError | undefined
  const after: Array<number> = []
  for (const c of chunks) {
    error = d.decode(c, (kind, id, payload) => frames.push({ kind, id: toHex(id), payload: toHex(payload) }))
    after.push(frames.length)
    if (error !== undefined) break
  }
  return { frames, error, after, decoded: d.bytesDecoded(), idle: d.isIdle(), buffered: d.bufferedBytes(), decoder: d }
}

const rechunk = (bytes: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(cuts.map((c) => (bytes.length === 0 ? 0 : c % (bytes.length + 1))))].sort((a, b) => a - b)
  const out: Array<Uint8Array> = []
  let last = 0
  for (const p of points) {
    out.push(bytes.subarray(last, p))
    last = p
  }
  out.push(bytes.subarray(last))
  return out
}

const asError = (v: unknown): ProtocolParseError => {
  expect(v).toBeInstanceOf(ProtocolParseError)
  return v as ProtocolParseError
}

// ---------------------------------------------------------------------------------------------
// byte vectors

/** Data, stream 00112233-…-eeff, payload "hi": written out field by field. */
const DATA_HI = hex(
  [
    "00000002", // payload_len 2
    "02", // kind Data
    "00", // flags
    "0000", // reserved
    "00112233445566778899aabbccddeeff", // stream_id
    "6869" // "hi"
  ].join("")
)

describe("MuxCodec byte vectors", () => {
  it("a Data frame: header fields in order, big-endian, then the payload", () => {
    const wire = hex("00000002 02 00 0000 00112233445566778899aabbccddeeff 6869")
    expect(wire.length).toBe(26)
    expect(toHex(encodeMuxFrame(MuxKind.Data, streamIdFromUuid(UUID_A)!, utf8("hi")))).toBe(toHex(wire))
    expect(toHex(DATA_HI)).toBe(toHex(wire))
    const f = decodeMuxFrame(wire, opts())
    if (f instanceof ProtocolParseError) throw f
    expect([f.kind, toHex(f.streamId), toHex(f.payload)]).toEqual([2, ID_A, "6869"])
  })

  it("every kind's number is the one section 7 gives", () => {
    expect(MuxKind).toEqual({ Prologue: 1, Data: 2, End: 3, Stop: 4, Kill: 5, WindowUpdate: 6, Reset: 7, ConnectionAck: 8, Request: 9, RequestData: 10, RequestEnd: 11, Error: 12, Ping: 13, Pong: 14 })
    expect([1, 2, 3, 4, 5, 6, 7, 8, 9].map(kindName)).toEqual([
      "Prologue", "Data", "End", "Stop", "Kill", "WindowUpdate", "Reset", "ConnectionAck", "kind 9"
    ])
  })

  it("Stop, Kill and End carry no payload: a bare 24-byte header", () => {
    const id = streamIdFromUuid(UUID_B)!
    expect(toHex(encodeMuxFrame(MuxKind.Stop, id))).toBe(`00000000 04 00 0000 ${ID_B}`.replace(/ /g, ""))
    expect(toHex(encodeMuxFrame(MuxKind.Kill, id))).toBe(`00000000 05 00 0000 ${ID_B}`.replace(/ /g, ""))
    expect(toHex(encodeMuxFrame(MuxKind.End, id))).toBe(`00000000 03 00 0000 ${ID_B}`.replace(/ /g, ""))
    expect(toHex(encodeMuxHeader(MuxKind.Data, id, 0x01020304))).toBe(`01020304 02 00 0000 ${ID_B}`.replace(/ /g, ""))
  })

  it("WindowUpdate: exactly 4 bytes of u32 credits", () => {
    const wire = hex(`00000004 06 00 0000 ${ID_B} 00040000`)
    expect(toHex(encodeWindowUpdate(streamIdFromUuid(UUID_B)!, 256 * 1024))).toBe(toHex(wire))
    const f = decodeMuxFrame(wire, opts())
    if (f instanceof ProtocolParseError) throw f
    expect(decodeWindowUpdate(f.payload)).toBe(262144)
    expect(decodeWindowUpdate(hex("ffffffff"))).toBe(4294967295)
  })

  it("ConnectionAck: the nil UUID and exactly 8 bytes of u64 offset", () => {
    expect(toHex(encodeConnectionAck(0))).toBe(`00000008 08 00 0000 ${NIL} 0000000000000000`.replace(/ /g, ""))
    const big = hex(`00000008 08 00 0000 ${NIL} 0000000100000002`)
    expect(toHex(encodeConnectionAck(2 ** 32 + 2))).toBe(toHex(big))
    const f = decodeMuxFrame(big, opts())
    if (f instanceof ProtocolParseError) throw f
    expect(f.kind).toBe(MuxKind.ConnectionAck)
    expect(decodeConnectionAck(f.payload)).toBe(4294967298)
  })

  it("UUIDs convert both ways", () => {
    expect(toHex(streamIdFromUuid(UUID_A)!)).toBe(ID_A)
    expect(toHex(streamIdFromUuid(UUID_B.toUpperCase())!)).toBe(ID_B)
    expect(uuidFromStreamId(hex(ID_B))).toBe(UUID_B)
    expect(uuidFromStreamId(NIL_STREAM_ID)).toBe("00000000-0000-0000-0000-000000000000")
    expect(streamIdFromUuid("not-a-uuid")).toBeUndefined()
    expect(streamIdFromUuid(UUID_A.replace(/-/g, ""))).toBeUndefined()
  })

  it("isUuid is true exactly where streamIdFromUuid gives bytes", () => {
    // near-UUIDs: 36 characters of hex digits, dashes and a few others, anywhere
    const nearUuid = fc.array(fc.constantFrom(..."0123456789abcdefABCDEF-gG: ".split("")), { minLength: 35, maxLength: 37 }).map((a) => a.join(""))
    const dashed = fc.uuid().chain((u) => fc.tuple(fc.constant(u), fc.nat(35), fc.constantFrom("-", "g", "0", "A")))
      .map(([u, i, c]) => u.slice(0, i) + c + u.slice(i + 1))
    fc.assert(
      fc.property(fc.oneof(fc.uuid(), dashed, nearUuid, fc.string()), (text) => {
        expect(isUuid(text)).toBe(streamIdFromUuid(text) !== undefined)
      }),
      { numRuns: 2000 }
    )
  })
})

// ---------------------------------------------------------------------------------------------
// the rules (Dynamo's test list)

describe("MuxCodec refuses what section 7 forbids, from the header alone", () => {
  const reject = (wireHex: string, reason: string, detail: RegExp, max?: number) => {
    const wire = hex(wireHex)
    // The header alone (no payload bytes) is enough to refuse it.
    const r = feed([wire.subarray(0, MUX_HEADER_SIZE)], opts(max))
    const e = asError(r.error)
    expect(e.reason).toBe(reason)
    expect(e.detail).toMatch(detail)
    expect(r.frames).toEqual([])
    expect(asError(decodeMuxFrame(wire, opts(max))).reason).toBe(reason)
  }

  it("a WindowUpdate that is not 4 bytes", () => {
    reject(`00000003 06 00 0000 ${ID_A} 000001`, "MalformedFrame", /WindowUpdate payload is 3 bytes, expected 4/)
    reject(`00000005 06 00 0000 ${ID_A} 0000000001`, "MalformedFrame", /WindowUpdate payload is 5 bytes/)
    reject(`00000000 06 00 0000 ${ID_A}`, "MalformedFrame", /WindowUpdate payload is 0 bytes/)
  })

  it("a ConnectionAck with a non-nil UUID, or not 8 bytes", () => {
    reject(`00000008 08 00 0000 ${ID_A} 0000000000000000`, "MalformedFrame", /ConnectionAck carries a non-nil stream id/)
    reject(`00000004 08 00 0000 ${NIL} 00000000`, "MalformedFrame", /ConnectionAck payload is 4 bytes, expected 8/)
  })

  it("the nil UUID on anything but a ConnectionAck", () => {
    for (const kind of ["01", "02", "03", "04", "05", "07"]) {
      reject(`00000000 ${kind} 00 0000 ${NIL}`, "MalformedFrame", /nil stream id/)
    }
    reject(`00000004 06 00 0000 ${NIL} 00000001`, "MalformedFrame", /nil stream id/)
  })

  it("unknown kinds", () => {
    reject(`00000000 00 00 0000 ${ID_A}`, "MalformedFrame", /unknown mux frame kind 0/)
    reject(`00000000 09 00 0000 ${ID_A}`, "MalformedFrame", /unknown mux frame kind 9/)
    reject(`00000000 ff 00 0000 ${ID_A}`, "MalformedFrame", /unknown mux frame kind 255/)
  })

  it("non-zero flags, and non-zero reserved bits", () => {
    reject(`00000002 02 01 0000 ${ID_A} 6869`, "MalformedFrame", /flags 1, expected 0/)
    reject(`00000002 02 80 0000 ${ID_A} 6869`, "MalformedFrame", /flags 128/)
    reject(`00000002 02 00 0001 ${ID_A} 6869`, "MalformedFrame", /reserved bits 1/)
    reject(`00000002 02 00 8000 ${ID_A} 6869`, "MalformedFrame", /reserved bits 32768/)
  })

  it("a payload on Stop, Kill or End", () => {
    reject(`00000001 04 00 0000 ${ID_A} 00`, "MalformedFrame", /Stop frame carries a 1-byte payload/)
    reject(`00000001 05 00 0000 ${ID_A} 00`, "MalformedFrame", /Kill frame carries a 1-byte payload/)
    reject(`00000002 03 00 0000 ${ID_A} 0000`, "MalformedFrame", /End frame carries a 2-byte payload/)
  })

  it("the maximum size, exactly at the boundary: header + payload = max passes, max + 1 fails", () => {
    const max = 100
    const ok = encodeMuxFrame(MuxKind.Data, hex(ID_A), new Uint8Array(max - MUX_HEADER_SIZE).fill(7))
    expect(ok.length).toBe(100)
    const r = feed([ok], opts(max))
    expect(r.error).toBeUndefined()
    expect(r.frames.length).toBe(1)
    const over = encodeMuxFrame(MuxKind.Data, hex(ID_A), new Uint8Array(max - MUX_HEADER_SIZE + 1))
    const e = asError(feed([over.subarray(0, MUX_HEADER_SIZE)], opts(max)).error)
    expect(e.reason).toBe("MessageTooLarge")
    expect(e.detail).toContain("101 bytes")
    expect(asError(decodeMuxFrame(over, opts(max))).reason).toBe("MessageTooLarge")
  })

  it("refuses a 4 GiB payload_len before allocating anything", () => {
    const r = feed([hex(`ffffffff 02 00 0000 ${ID_A}`)])
    expect(asError(r.error).reason).toBe("MessageTooLarge")
    expect(r.buffered).toBe(0)
  })

  it("a dead decoder keeps returning its error", () => {
    const d = makeMuxDecoder(opts())
    const first = d.decode(hex(`00000000 09 00 0000 ${ID_A}`), () => {})
    expect(d.decode(encodeMuxFrame(MuxKind.End, hex(ID_A)), () => expect.unreachable())).toBe(first)
    expect(d.failure()).toBe(first)
  })

  it("decodeMuxFrame refuses truncation and trailing bytes", () => {
    const wire = encodeMuxFrame(MuxKind.Data, hex(ID_A), utf8("hello"))
    expect(asError(decodeMuxFrame(wire.subarray(0, 10), opts())).detail).toContain("shorter than the 24-byte header")
    expect(asError(decodeMuxFrame(wire.subarray(0, 27), opts())).detail).toContain("truncated mux frame: 27 of 29 bytes")
    expect(asError(decodeMuxFrame(concat(wire, hex("00")), opts())).detail).toContain("1 trailing bytes")
  })
})

describe("MuxCodec incremental decoding", () => {
  it("partial frames wait for more bytes: one byte at a time", () => {
    const wire = encodeMuxFrame(MuxKind.Data, hex(ID_A), utf8("hello, world"))
    const chunks = Array.from(wire, (b) => Uint8Array.of(b))
    const r = feed(chunks)
    expect(r.error).toBeUndefined()
    // Nothing until the last byte arrives.
    expect(r.after.slice(0, -1).every((n) => n === 0)).toBe(true)
    expect(r.after.at(-1)).toBe(1)
    expect(r.frames).toEqual([{ kind: 2, id: ID_A, payload: toHex(utf8("hello, world")) }])
    expect(r.decoded).toBe(wire.length)
  })

  it("partial frames wait: a header split in two, then a payload split in two", () => {
    const wire = encodeMuxFrame(MuxKind.Reset, hex(ID_B), utf8("cancelled"))
    const d = makeMuxDecoder(opts())
    const seen: Array<string> = []
    const on = (_k: number, _id: Uint8Array, p: Uint8Array) => seen.push(new TextDecoder().decode(p))
    d.decode(wire.subarray(0, 10), on)
    expect([seen.length, d.bufferedBytes(), d.isIdle()]).toEqual([0, 10, false])
    d.decode(wire.subarray(10, 28), on)
    expect([seen.length, d.bufferedBytes()]).toEqual([0, 28])
    d.decode(wire.subarray(28), on)
    expect([seen, d.isIdle(), d.bytesDecoded()]).toEqual([["cancelled"], true, wire.length])
  })

  it("concatenated frames decode independently and route by UUID", () => {
    const a = hex(ID_A)
    const b = hex(ID_B)
    const wire = concat(
      encodeMuxFrame(MuxKind.Prologue, a, utf8(`{"error":null}`)),
      encodeMuxFrame(MuxKind.Prologue, b, utf8(`{"error":null}`)),
      encodeMuxFrame(MuxKind.Data, a, utf8("a1")),
      encodeMuxFrame(MuxKind.Data, b, utf8("b1")),
      encodeMuxFrame(MuxKind.Data, a, utf8("a2")),
      encodeMuxFrame(MuxKind.End, b),
      encodeConnectionAck(123),
      encodeMuxFrame(MuxKind.End, a)
    )
    const byStream = new Map<string, Array<string>>()
    const d = makeMuxDecoder(opts())
    expect(
      d.decode(wire, (kind, id, payload) => {
        const key = uuidFromStreamId(id)
        const list = byStream.get(key) ?? []
        list.push(`${kindName(kind)}:${new TextDecoder().decode(payload)}`)
        byStream.set(key, list)
      })
    ).toBeUndefined()
    expect(byStream.get(uuidFromStreamId(a))).toEqual([`Prologue:{"error":null}`, "Data:a1", "Data:a2", "End:"])
    expect(byStream.get(uuidFromStreamId(b))).toEqual([`Prologue:{"error":null}`, "Data:b1", "End:"])
    expect(byStream.get(uuidFromStreamId(NIL_STREAM_ID))!.length).toBe(1)
    expect(d.bytesDecoded()).toBe(wire.length)
  })

  it("hands out views of the chunk for frames whole in it (no copy)", () => {
    const wire = encodeMuxFrame(MuxKind.Data, hex(ID_A), utf8("zero-copy"))
    let payload: Uint8Array | undefined
    makeMuxDecoder(opts()).decode(wire, (_k, _id, p) => (payload = p))
    expect(payload!.buffer).toBe(wire.buffer)
  })
})

// ---------------------------------------------------------------------------------------------
// properties

describe("randomStreamId", () => {
  it("gives fresh UUID v4 bytes: distinct across pool refills, each its own copy, text form a v4 UUID that parses back", () => {
    const seen = new Set<string>()
    const ids: Array<Uint8Array> = []
    for (let i = 0; i < 1000; i++) {
      const id = randomStreamId()
      expect(id.length).toBe(16)
      expect(id[6]! >> 4).toBe(4)
      expect(id[8]! >> 6).toBe(2)
      const text = uuidFromStreamId(id)
      expect(text).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
      expect(streamIdFromUuid(text)).toEqual(id)
      seen.add(text)
      ids.push(id)
    }
    expect(seen.size).toBe(1000)
    // Each id owns its bytes: changing one changes no other.
    const before = uuidFromStreamId(ids[1]!)
    ids[0]!.fill(0)
    expect(uuidFromStreamId(ids[1]!)).toBe(before)
  })
})

describe("randomUuid", () => {
  it("gives distinct v4 UUIDs in lowercase text, across pool refills, with every hex digit in every free position", () => {
    const v4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
    const seen = new Set<string>()
    const digits = Array.from({ length: 36 }, () => new Set<string>())
    for (let i = 0; i < 5000; i++) {
      const text = randomUuid()
      expect(text).toMatch(v4)
      // its bytes, read back, are a v4 id whose text is the same
      expect(uuidFromStreamId(streamIdFromUuid(text)!)).toBe(text)
      seen.add(text)
      for (let c = 0; c < 36; c++) digits[c]!.add(text[c]!)
    }
    expect(seen.size).toBe(5000)
    for (let c = 0; c < 36; c++) {
      const expected = [8, 13, 18, 23].includes(c) ? 1 : c === 14 ? 1 : c === 19 ? 4 : 16
      expect(digits[c]!.size).toBe(expected)
    }
  })
})

describe("MuxCodec properties", () => {
  const id = fc.uint8Array({ minLength: 16, maxLength: 16 }).filter((b) => b.some((x) => x !== 0))
  const frame = fc.oneof(
    fc.record({ kind: fc.constantFrom(MuxKind.Prologue, MuxKind.Data, MuxKind.Reset), id, payload: fc.uint8Array({ maxLength: 80 }) }),
    fc.record({ kind: fc.constantFrom(MuxKind.End, MuxKind.Stop, MuxKind.Kill), id, payload: fc.constant(new Uint8Array(0)) }),
    fc.record({ kind: fc.constant(MuxKind.WindowUpdate), id, payload: fc.uint8Array({ minLength: 4, maxLength: 4 }) }),
    fc.record({ kind: fc.constant(MuxKind.ConnectionAck), id: fc.constant(NIL_STREAM_ID), payload: fc.uint8Array({ minLength: 8, maxLength: 8 }) })
  )

  it("encode → arbitrary re-chunking → decode round-trips kind, UUID and payload", () => {
    fc.assert(
      fc.property(fc.array(frame, { maxLength: 10 }), fc.array(fc.nat(), { maxLength: 12 }), (fs, cuts) => {
        const wire = concat(...fs.map((f) => encodeMuxFrame(f.kind, f.id, f.payload)))
        const r = feed(rechunk(wire, cuts))
        expect(r.error).toBeUndefined()
        expect(r.idle).toBe(true)
        expect(r.decoded).toBe(wire.length)
        expect(r.frames).toEqual(fs.map((f) => ({ kind: f.kind, id: toHex(f.id), payload: toHex(f.payload) })))
        for (const f of fs) {
          const one = decodeMuxFrame(encodeMuxFrame(f.kind, f.id, f.payload), opts())
          if (one instanceof ProtocolParseError) throw one
          expect([one.kind, toHex(one.streamId), toHex(one.payload)]).toEqual([f.kind, toHex(f.id), toHex(f.payload)])
          expect(uuidFromStreamId(f.id)).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
          expect(toHex(streamIdFromUuid(uuidFromStreamId(f.id))!)).toBe(toHex(f.id))
        }
      })
    )
  })

  it("the size limit holds at every boundary and chunking", () => {
    fc.assert(
      fc.property(fc.integer({ min: 24, max: 200 }), fc.integer({ min: 0, max: 200 }), fc.array(fc.nat(), { maxLength: 4 }), (max, plen, cuts) => {
        const wire = encodeMuxFrame(MuxKind.Data, hex(ID_A), new Uint8Array(plen))
        const r = feed(rechunk(wire, cuts), opts(max))
        if (MUX_HEADER_SIZE + plen <= max) {
          expect(r.error).toBeUndefined()
          expect(r.frames.length).toBe(1)
        } else {
          expect(r.error?.reason).toBe("MessageTooLarge")
          expect(r.frames.length).toBe(0)
          expect(r.buffered).toBeLessThanOrEqual(MUX_HEADER_SIZE)
        }
      })
    )
  })

  it("random garbage never throws: only frames or a protocol error", () => {
    const header = fc
      .tuple(fc.nat({ max: 40 }), fc.nat({ max: 10 }), fc.nat({ max: 2 }), fc.nat({ max: 2 }), id)
      .map(([len, kind, flags, reserved, sid]) => {
        const h = encodeMuxHeader(MuxKind.Data, sid, len)
        h[4] = kind
        h[5] = flags === 2 ? 0 : flags
        h[7] = reserved === 2 ? 0 : reserved
        return h
      })
    const garbage = fc.array(fc.oneof(fc.uint8Array({ maxLength: 60 }), header), { maxLength: 10 }).map((parts) => concat(...parts))
    fc.assert(
      fc.property(garbage, fc.array(fc.nat(), { maxLength: 8 }), fc.integer({ min: 0, max: 200 }), (bytes, cuts, max) => {
        const d = makeMuxDecoder(opts(max))
        let error: ProtocolParseError | undefined
        for (const chunk of rechunk(bytes, cuts)) {
          const e = d.decode(chunk, (kind) => expect(kind >= 1 && kind <= 8).toBe(true))
          if (error !== undefined) expect(e).toBe(error)
          else if (e !== undefined) {
            expect(e).toBeInstanceOf(ProtocolParseError)
            error = e
          }
        }
        const one = decodeMuxFrame(bytes, opts(max))
        expect(one instanceof ProtocolParseError || one.payload instanceof Uint8Array).toBe(true)
      })
    )
  })
})

// ---------------------------------------------------------------------------------------------
// the JSON parts: ConnectionInfo and handshake

describe("response mux v1 ConnectionInfo and handshake", () => {
  it("ConnectionInfo: transport tcp_response_mux_v1, info JSON text with the four keys in order", () => {
    const ci = muxConnectionInfo({ address: "10.0.0.1:4000", frontend_server_id: UUID_B, stream_id: UUID_A, context: "req-1" })
    expect(ci.transport).toBe("tcp_response_mux_v1")
    expect(ci.info).toBe(`{"address":"10.0.0.1:4000","frontend_server_id":"${UUID_B}","stream_id":"${UUID_A}","context":"req-1"}`)
    const parsed = parseMuxInfo(ci, "req-1")
    if (parsed instanceof ProtocolParseError) throw parsed
    expect([parsed.address, parsed.frontendServerId, parsed.streamId, toHex(parsed.streamIdBytes)]).toEqual(["10.0.0.1:4000", UUID_B, UUID_A, ID_A])
  })

  it("parseMuxInfo names what is wrong", () => {
    const good = { address: "h:1", frontend_server_id: UUID_B, stream_id: UUID_A, context: "rq" }
    const info = (v: unknown) => ({ transport: "tcp_response_mux_v1", info: typeof v === "string" ? v : JSON.stringify(v) })
    const cases: Array<[unknown, string]> = [
      ["{nope", "not JSON"],
      [[1], "not a JSON object"],
      [{ ...good, address: 1 }, "no address string"],
      [{ ...good, frontend_server_id: "x" }, "frontend_server_id"],
      // one character off a UUID accepted before (the check is skipped only for that same id)
      [{ ...good, frontend_server_id: UUID_B.slice(0, 35) + "g" }, "frontend_server_id"],
      [{ ...good, stream_id: "00000000-0000-0000-0000-000000000000" }, "not a non-nil UUID"],
      [{ ...good, stream_id: 7 }, "not a non-nil UUID"],
      [{ ...good, context: "other" }, "is not the request id"]
    ]
    expect(parseMuxInfo(info(good), "rq")).not.toBeInstanceOf(ProtocolParseError)
    for (const [v, detail] of cases) {
      const e = asError(parseMuxInfo(info(v), "rq"))
      expect(e.reason).toBe("BadHandshake")
      expect(e.detail).toContain(detail)
    }
  })

  it("the handshake is a TwoPartCodec header-only frame with kind, version, frontend_server_id and connection_id", () => {
    const bytes = encodeMuxHandshake(UUID_B, UUID_A)
    const f = decodeFrame(bytes, { maxMessageSize: 1 << 20 })
    if (f instanceof ProtocolParseError) throw f
    expect(f.body.length).toBe(0)
    const text = new TextDecoder().decode(f.header)
    expect(text).toBe(`{"kind":"response_mux","version":1,"frontend_server_id":"${UUID_B}","connection_id":"${UUID_A}"}`)
    expect(toHex(bytes.subarray(0, 24))).toBe(
      (f.header.length.toString(16).padStart(16, "0")) + "0".repeat(16) + "0".repeat(16)
    )
    expect(parseMuxHandshake(JSON.parse(text))).toEqual({ frontendServerId: UUID_B, connectionId: UUID_A })
    expect(parseMuxHandshake({ ...JSON.parse(text), version: 2 })).toContain("unsupported response mux version 2")
    expect(parseMuxHandshake({ ...JSON.parse(text), frontend_server_id: "x" })).toContain("not a UUID")
    expect(parseMuxHandshake({ ...JSON.parse(text), connection_id: 5 })).toContain("connection_id")
  })
})
