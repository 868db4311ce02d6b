/**
 * Dynamo's shipped TCP request plane (protocol/TcpRequestFrame.ts, PROTOCOL.md section 8) and the
 * TCP address forms (protocol/TcpAddress.ts, sections 5 and 8).
 *
 * Byte vectors are built in the test with DataView from the layout, never by the encoder under
 * test; the decoders are driven with random chunkings, truncations and garbage (fast-check).
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { ProtocolParseError } from "../src/protocol/ProtocolError.ts"
import {
  escapeAddressPart,
  formatTcpAddress,
  parseTcpAddress,
  tcpWirePath,
  unescapeAddressPart,
  wirePathOf,
  wirePathsOf
} from "../src/protocol/TcpAddress.ts"
import {
  ACCEPTED_ACK,
  AT_CAPACITY_DETAIL,
  classifyAck,
  encodeTcpAck,
  makeTcpAckDecoder,
  overloadedAck,
  SERVER_OVERLOADED,
  SERVER_UNAVAILABLE,
  unavailableAck,
  unknownEndpointAck
} from "../src/protocol/TcpAck.ts"
import { decodeTcpRequestHead, encodeTcpRequestFrame, encodeTcpRequestHead, makeTcpRequestDecoder } from "../src/protocol/TcpRequestFrame.ts"

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

/** A request frame built from the section 8 layout with DataView. */
const handFrame = (path: string | Uint8Array, headersJson: string | Uint8Array, payload: Uint8Array): Uint8Array => {
  const p = typeof path === "string" ? utf8(path) : path
  const h = typeof headersJson === "string" ? utf8(headersJson) : headersJson
  const out = new Uint8Array(2 + p.length + 2 + h.length + 4 + payload.length)
  const dv = new DataView(out.buffer)
  let o = 0
  dv.setUint16(o, p.length)
  o += 2
  out.set(p, o)
  o += p.length
  dv.setUint16(o, h.length)
  o += 2
  out.set(h, o)
  o += h.length
  dv.setUint32(o, payload.length)
  o += 4
  out.set(payload, o)
  return out
}

/** An ack built with DataView: u32 length + UTF-8 text. */
const handAck = (t: string): Uint8Array => {
  const b = utf8(t)
  const out = new Uint8Array(4 + b.length)
  new DataView(out.buffer).setUint32(0, b.length)
  out.set(b, 4)
  return out
}

/** Splits `bytes` at the given cut points (taken modulo its length), in order. */
const chunk = (bytes: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(cuts.map((c) => (bytes.length === 0 ? 0 : c % (bytes.length + 1))))].sort((a, b) => a - b)
  const out: Array<Uint8Array> = []
  let prev = 0
  for (const p of points) {
    out.push(bytes.subarray(prev, p))
    prev = p
  }
  out.push(bytes.subarray(prev))
  return out
}

interface Req {
  path: string
  headers: Record<string, string>
  payload: string
}

const decodeAll = (chunks: ReadonlyArray<Uint8Array>, max = 1 << 20) => {
  const d = makeTcpRequestDecoder({ maxMessageSize: max })
  const got: Array<Req> = []
  let error: ProtocolParseError | undefined
  for (const c of chunks) {
    // copy each chunk into a fresh buffer and scribble over it afterwards: a payload kept past
    // its chunk must have been copied by the decoder (or the test copies it, as here, at once)
    const own = Uint8Array.from(c)
    const e = d.decode(own, (path, headers, payload) => got.push({ path, headers, payload: toHex(payload) }))
    own.fill(0xee)
    if (e !== undefined) {
      error = e
      break
    }
  }
  return { got, error, decoder: d }
}

const MiB = 1024 * 1024

// ---------------------------------------------------------------------------------------------

describe("Dynamo request frame: bytes built by hand", () => {
  const payload = utf8("two-part-frame-bytes")

  it("the encoder writes exactly the section 8 layout", () => {
    const headers = { "x-endpoint-path": "1f/ns/comp/gen", traceparent: "00-abc-def-01" }
    const enc = encodeTcpRequestFrame("1f/ns/comp/gen", headers, payload)
    if (enc instanceof ProtocolParseError) throw enc
    expect(toHex(enc)).toBe(toHex(handFrame("1f/ns/comp/gen", JSON.stringify(headers), payload)))
    // and the fields sit where the layout says
    const dv = new DataView(enc.buffer)
    expect(dv.getUint16(0)).toBe(14)
    expect(text(enc.subarray(2, 16))).toBe("1f/ns/comp/gen")
    const hl = dv.getUint16(16)
    expect(JSON.parse(text(enc.subarray(18, 18 + hl)))).toEqual(headers)
    expect(dv.getUint32(18 + hl)).toBe(payload.length)
    expect(text(enc.subarray(22 + hl))).toBe("two-part-frame-bytes")
  })

  it("no headers are written as {} (Dynamo's serde reader refuses empty bytes)", () => {
    const enc = encodeTcpRequestFrame("a/b", {}, payload)
    if (enc instanceof ProtocolParseError) throw enc
    expect(toHex(enc)).toBe(toHex(handFrame("a/b", "{}", payload)))
  })

  it("a hand-built frame decodes: path, headers and payload", () => {
    const { got, error } = decodeAll([handFrame("7/dynamo/backend/generate", `{"request-id":"r1","x-frontend-send-ts-ns":"12"}`, payload)])
    expect(error).toBeUndefined()
    expect(got).toEqual([
      { path: "7/dynamo/backend/generate", headers: { "request-id": "r1", "x-frontend-send-ts-ns": "12" }, payload: toHex(payload) }
    ])
  })

  it("empty headers bytes read as {}, and an empty payload is a frame", () => {
    const { got, error } = decodeAll([handFrame("p", new Uint8Array(0), new Uint8Array(0))])
    expect(error).toBeUndefined()
    expect(got).toEqual([{ path: "p", headers: {}, payload: "" }])
  })

  it("pipelined frames in one chunk decode in order, payloads aliasing the chunk", () => {
    const a = handFrame("1/a", "{}", utf8("one"))
    const b = handFrame("1/b", `{"k":"v"}`, utf8("two"))
    const bytes = concat(a, b)
    const d = makeTcpRequestDecoder({ maxMessageSize: MiB })
    const seen: Array<Uint8Array> = []
    expect(d.decode(bytes, (_p, _h, pl) => seen.push(pl))).toBeUndefined()
    expect(seen.map(text)).toEqual(["one", "two"])
    expect(seen[0]!.buffer).toBe(bytes.buffer) // zero copy: documented aliasing
    expect(d.bytesDecoded()).toBe(bytes.length)
    expect(d.isIdle()).toBe(true)
  })

  it("refuses headers that are not a JSON object of strings, an empty path, bad UTF-8", () => {
    const cases: Array<[Uint8Array, RegExp]> = [
      [handFrame("p", "[1,2]", utf8("x")), /not a JSON object/],
      [handFrame("p", "null", utf8("x")), /not a JSON object/],
      [handFrame("p", `{"n":1}`, utf8("x")), /"n" is not a string/],
      [handFrame("p", "{nope", utf8("x")), /not valid UTF-8 JSON/],
      [handFrame("", "{}", utf8("x")), /empty endpoint path/],
      [handFrame(Uint8Array.of(0xff, 0xfe), "{}", utf8("x")), /not valid UTF-8/]
    ]
    for (const [bytes, why] of cases) {
      const { got, error } = decodeAll([bytes])
      expect(got).toEqual([])
      expect(error?.reason).toBe("MalformedFrame")
      expect(error?.detail).toMatch(why)
    }
  })

  it("a dead decoder keeps returning its error", () => {
    const d = makeTcpRequestDecoder({ maxMessageSize: MiB })
    const e = d.decode(handFrame("", "{}", utf8("x")), () => {})
    expect(e).toBeInstanceOf(ProtocolParseError)
    expect(d.decode(handFrame("ok", "{}", utf8("x")), () => expect.unreachable())).toBe(e)
    expect(d.failure()).toBe(e)
  })

  it("stop() after a frame leaves the rest of the chunk to the caller", () => {
    const a = handFrame("1/a", "{}", utf8("one"))
    const rest = utf8("anything else")
    const d = makeTcpRequestDecoder({ maxMessageSize: MiB })
    const seen: Array<string> = []
    expect(d.decode(concat(a, rest), (p) => {
      seen.push(p)
      d.stop()
    })).toBeUndefined()
    expect(seen).toEqual(["1/a"])
    expect(d.stopOffset()).toBe(a.length)
  })

  it("decodeTcpRequestHead reads a head at an offset and says where it ends", () => {
    const head = handFrame("ns/x", `{"a":"b"}`, new Uint8Array(0)).subarray(0, -4)
    const bytes = concat(utf8("xyz"), head, utf8("tail"))
    const r = decodeTcpRequestHead(bytes, 3)
    if (r instanceof ProtocolParseError) throw r
    expect(r).toEqual({ path: "ns/x", headers: { a: "b" }, end: 3 + head.length })
    for (let n = 0; n < head.length; n++) {
      expect(decodeTcpRequestHead(head.subarray(0, n), 0)).toBeInstanceOf(ProtocolParseError)
    }
    const enc = encodeTcpRequestHead("ns/x", { a: "b" })
    if (enc instanceof ProtocolParseError) throw enc
    expect(toHex(enc)).toBe(toHex(head))
  })

  it("path or headers above 65535 bytes: MessageTooLarge instead of bytes; an empty path: MalformedFrame", () => {
    const big = "x".repeat(65536)
    expect((encodeTcpRequestHead(big, {}) as ProtocolParseError).reason).toBe("MessageTooLarge")
    expect((encodeTcpRequestFrame("p", { k: big }, new Uint8Array(0)) as ProtocolParseError).reason).toBe("MessageTooLarge")
    expect(encodeTcpRequestHead("x".repeat(65535), {})).toBeInstanceOf(Uint8Array)
    expect((encodeTcpRequestFrame("", {}, new Uint8Array(0)) as ProtocolParseError).reason).toBe("MalformedFrame")
  })
})

describe("Dynamo request frame: size limit", () => {
  it("a frame of exactly maxMessageSize bytes passes; one byte more is refused", () => {
    const frame = handFrame("1/ep", `{"a":"b"}`, new Uint8Array(100))
    expect(decodeAll([frame], frame.length).got).toHaveLength(1)
    const { got, error } = decodeAll([frame], frame.length - 1)
    expect(got).toEqual([])
    expect(error?.reason).toBe("MessageTooLarge")
  })

  it("an oversized frame is refused from its length fields, before its payload arrives", () => {
    const frame = handFrame("1/ep", "{}", new Uint8Array(1000))
    const head = frame.subarray(0, frame.length - 1000) // path, headers, payload_len: no payload byte
    const d = makeTcpRequestDecoder({ maxMessageSize: 500 })
    const e = d.decode(head, () => expect.unreachable())
    expect(e?.reason).toBe("MessageTooLarge")
    expect(d.bufferedBytes()).toBe(0)
  })

  it("a huge path or headers length is refused before the path or headers arrive", () => {
    const pathLen = new Uint8Array(2)
    new DataView(pathLen.buffer).setUint16(0, 60000)
    const d = makeTcpRequestDecoder({ maxMessageSize: 1000 })
    expect(d.decode(pathLen, () => {})?.reason).toBe("MessageTooLarge")
    const head = concat(handFrame("p", "", new Uint8Array(0)).subarray(0, 3), Uint8Array.of(0xea, 0x60))
    const d2 = makeTcpRequestDecoder({ maxMessageSize: 1000 })
    expect(d2.decode(head, () => {})?.reason).toBe("MessageTooLarge")
  })

  it("a u32 payload length near 4 GiB is refused without allocating", () => {
    const frame = handFrame("p", "{}", new Uint8Array(0))
    new DataView(frame.buffer).setUint32(frame.length - 4, 0xffffffff)
    expect(decodeAll([frame], 32 * MiB).error?.reason).toBe("MessageTooLarge")
  })
})

describe("Dynamo request frame: properties", () => {
  const key = fc.string({ minLength: 0, maxLength: 12 })
  const req = fc.record({
    path: fc.string({ minLength: 1, maxLength: 40, unit: "grapheme" }),
    headers: fc.dictionary(key, fc.string({ maxLength: 20, unit: "grapheme" }), { maxKeys: 4 }),
    payload: fc.uint8Array({ maxLength: 300 })
  })

  it("random frames survive random chunking, in order, with counters right", () => {
    fc.assert(
      fc.property(fc.array(req, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 16 }), (reqs, cuts) => {
        const frames = reqs.map((r) => {
          const f = encodeTcpRequestFrame(r.path, r.headers, r.payload)
          if (f instanceof ProtocolParseError) throw f
          return f
        })
        const bytes = concat(...frames)
        const { got, error, decoder } = decodeAll(chunk(bytes, cuts))
        expect(error).toBeUndefined()
        expect(got).toEqual(reqs.map((r) => ({ path: r.path, headers: r.headers, payload: toHex(r.payload) })))
        expect(decoder.bytesDecoded()).toBe(bytes.length)
        expect(decoder.isIdle()).toBe(true)
        expect(decoder.bufferedBytes()).toBe(0)
      })
    )
  })

  it("every truncation is 'need more': no frame, no error, the bytes held", () => {
    fc.assert(
      fc.property(req, fc.array(fc.nat(), { maxLength: 4 }), fc.nat(), (r, cuts, n) => {
        const frame = encodeTcpRequestFrame(r.path, r.headers, r.payload) as Uint8Array
        const cut = n % frame.length
        const { got, error, decoder } = decodeAll(chunk(frame.subarray(0, cut), cuts))
        expect(error).toBeUndefined()
        expect(got).toEqual([])
        expect(decoder.bytesDecoded()).toBe(0)
        expect(decoder.bufferedBytes()).toBe(cut)
        expect(decoder.isIdle()).toBe(cut === 0)
      })
    )
  })

  it("random bytes never throw, and an error is final", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.array(fc.nat(), { maxLength: 8 }), fc.integer({ min: 1, max: 500 }), (bytes, cuts, max) => {
        const d = makeTcpRequestDecoder({ maxMessageSize: max })
        let first: ProtocolParseError | undefined
        for (const c of chunk(bytes, cuts)) {
          const e = d.decode(c, (p, h, pl) => {
            expect(typeof p).toBe("string")
            expect(typeof h).toBe("object")
            expect(pl).toBeInstanceOf(Uint8Array)
          })
          if (first !== undefined) expect(e).toBe(first)
          first ??= e
        }
        expect(d.failure()).toBe(first)
      })
    )
  })

  it("the size limit holds exactly at the boundary under any chunking", () => {
    fc.assert(
      fc.property(req, fc.integer({ min: -3, max: 3 }), fc.array(fc.nat(), { maxLength: 6 }), (r, delta, cuts) => {
        const frame = encodeTcpRequestFrame(r.path, r.headers, r.payload) as Uint8Array
        const max = frame.length + delta
        const { got, error } = decodeAll(chunk(frame, cuts), max)
        if (delta >= 0) {
          expect(error).toBeUndefined()
          expect(got).toHaveLength(1)
        } else {
          expect(error?.reason).toBe("MessageTooLarge")
          expect(got).toEqual([])
        }
      })
    )
  })
})

describe("Dynamo acks", () => {
  it("the ack layout: u32 length + text, empty = accepted", () => {
    expect(toHex(encodeTcpAck())).toBe("00000000")
    expect(toHex(encodeTcpAck(""))).toBe("00000000")
    expect(toHex(ACCEPTED_ACK)).toBe("00000000")
    const t = overloadedAck(AT_CAPACITY_DETAIL)
    expect(t).toBe("Server overloaded: worker at capacity")
    expect(toHex(encodeTcpAck(t))).toBe(toHex(handAck(t)))
  })

  it("Dynamo's texts and their classification", () => {
    expect(SERVER_OVERLOADED).toBe("Server overloaded")
    expect(SERVER_UNAVAILABLE).toBe("Server unavailable")
    expect(unavailableAck("draining")).toBe("Server unavailable: draining")
    expect(unknownEndpointAck("1/a/b/c")).toBe("Unknown endpoint: 1/a/b/c")
    expect(classifyAck("")).toBe("accepted")
    expect(classifyAck("Server overloaded: worker at capacity")).toBe("overloaded")
    expect(classifyAck("Server unavailable: shutting down")).toBe("unavailable")
    expect(classifyAck("Unknown endpoint: 1/x")).toBe("unavailable")
    expect(classifyAck("Server unavailable: unknown endpoint 1/x")).toBe("unavailable")
    expect(classifyAck("Decode error: bad")).toBe("rejected")
    expect(classifyAck("Read error: invalid endpoint path length: 0")).toBe("rejected")
  })

  it("hand-built acks decode in order under random chunking", () => {
    fc.assert(
      fc.property(fc.array(fc.string({ maxLength: 50, unit: "grapheme" }), { maxLength: 10 }), fc.array(fc.nat(), { maxLength: 12 }), (texts, cuts) => {
        const bytes = concat(...texts.map(handAck))
        const d = makeTcpAckDecoder({ maxMessageSize: 1024 })
        const got: Array<string> = []
        for (const c of chunk(bytes, cuts)) expect(d.decode(Uint8Array.from(c), (t) => got.push(t))).toBeUndefined()
        expect(got).toEqual(texts)
        expect(d.bytesDecoded()).toBe(bytes.length)
        expect(d.isIdle()).toBe(true)
      })
    )
  })

  it("a truncated ack is 'need more'; an oversized one is refused from its length", () => {
    const a = handAck("Server unavailable: bye")
    for (let n = 0; n < a.length; n++) {
      const d = makeTcpAckDecoder({ maxMessageSize: 1024 })
      expect(d.decode(a.subarray(0, n), () => expect.unreachable())).toBeUndefined()
      expect(d.bufferedBytes()).toBe(n)
    }
    const exact = makeTcpAckDecoder({ maxMessageSize: a.length })
    const got: Array<string> = []
    expect(exact.decode(a, (t) => got.push(t))).toBeUndefined()
    expect(got).toEqual(["Server unavailable: bye"])
    const small = makeTcpAckDecoder({ maxMessageSize: a.length - 1 })
    expect(small.decode(a.subarray(0, 4), () => expect.unreachable())?.reason).toBe("MessageTooLarge")
  })

  it("random bytes never throw", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.array(fc.nat(), { maxLength: 6 }), fc.integer({ min: 4, max: 100 }), (bytes, cuts, max) => {
        const d = makeTcpAckDecoder({ maxMessageSize: max })
        for (const c of chunk(bytes, cuts)) d.decode(c, (t) => expect(typeof t).toBe("string"))
      })
    )
  })
})

describe("TCP addresses", () => {
  const path = { namespace: "dynamo", component: "backend", endpoint: "generate" }

  it("writes host:port/<id hex>/<ns>/<comp>/<ep>, the id as Dynamo's {:x}", () => {
    expect(formatTcpAddress("10.0.0.5:9001", 0x49bc31f2a0c3e5c3n, path)).toBe("10.0.0.5:9001/49bc31f2a0c3e5c3/dynamo/backend/generate")
    expect(formatTcpAddress("h:1", 10n, path)).toBe("h:1/a/dynamo/backend/generate")
    expect(formatTcpAddress("[::1]:9001", 0xffffffffffffffffn, path)).toBe("[::1]:9001/ffffffffffffffff/dynamo/backend/generate")
  })

  it("escapes % and / in each part, and reads them back", () => {
    const odd = { namespace: "a/b", component: "100%", endpoint: "%2F/x" }
    const addr = formatTcpAddress("h:1", 1n, odd)
    expect(addr).toBe("h:1/1/a%2Fb/100%25/%252F%2Fx")
    const p = parseTcpAddress(addr)
    if (p instanceof ProtocolParseError) throw p
    expect(p).toMatchObject({ hostPort: "h:1", instanceIdHex: "1", ...odd })
    expect(unescapeAddressPart("%2f%2F%25%41")).toBe("//%%41")
    expect(escapeAddressPart("plain")).toBe("plain")
  })

  it("reads the older host:port/<id hex>/<endpoint>, IPv6, and a tcp:// prefix", () => {
    expect(parseTcpAddress("127.0.0.1:9001/49BC/generate")).toEqual({
      hostPort: "127.0.0.1:9001",
      instanceIdHex: "49bc",
      endpoint: "generate",
      wirePath: "49BC/generate"
    })
    expect(parseTcpAddress("[::1]:9001/1/ns/c/e")).toMatchObject({ hostPort: "[::1]:9001", namespace: "ns", component: "c", endpoint: "e" })
    expect(parseTcpAddress("tcp://[fe80::1]:7/ab/ep")).toMatchObject({ hostPort: "[fe80::1]:7", instanceIdHex: "ab", endpoint: "ep" })
  })

  it("refuses what is neither form", () => {
    for (const bad of [
      "",
      "host:1",
      "/1/ep",
      "host/1/ep",
      "host:99999/1/ep",
      "::1:9001/1/ep",
      "[::1]9001/1/ep",
      "h:1/xyz/ep",
      "h:1/12345678901234567/ep",
      "h:1/1",
      "h:1/1/",
      "h:1/1/a/b",
      "h:1/1/a//c",
      "h:1/1/a/b/c/d"
    ]) {
      const r = parseTcpAddress(bad)
      expect(r, bad).toBeInstanceOf(ProtocolParseError)
      expect((r as ProtocolParseError).reason).toBe("BadPayload")
    }
  })

  it("the wire path is the address after host:port/, verbatim, as Dynamo's router sends it", () => {
    const wire = (a: string) => tcpWirePath(parseTcpAddress(a) as never)
    expect(wire("10.0.0.5:9001/49bc31f2a0c3e5c3/dynamo/backend/generate")).toBe("49bc31f2a0c3e5c3/dynamo/backend/generate")
    expect(wire("10.0.0.5:9001/49bc31f2a0c3e5c3/generate")).toBe("49bc31f2a0c3e5c3/generate")
    expect(wire("h:1/1/a%2Fb/100%25/x")).toBe("1/a%2Fb/100%25/x")
    expect(wire("tcp://h:1/AB/x")).toBe("AB/x")
    // without the verbatim text, the same string rebuilt from the parts
    expect(tcpWirePath({ hostPort: "h:1", instanceIdHex: "1", namespace: "a/b", component: "c", endpoint: "e" })).toBe("1/a%2Fb/c/e")
    expect(tcpWirePath({ hostPort: "h:1", instanceIdHex: "1", endpoint: "e" })).toBe("1/e")
  })

  it("a worker routes the path a router derives from the address it advertises, in both forms", () => {
    fc.assert(
      fc.property(
        fc.record({ namespace: fc.string({ minLength: 1, maxLength: 8 }), component: fc.string({ minLength: 1, maxLength: 8 }), endpoint: fc.string({ minLength: 1, maxLength: 8 }) }),
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        (p, id) => {
          const addr = formatTcpAddress("[::1]:9001", id, p)
          const parsed = parseTcpAddress(addr)
          if (parsed instanceof ProtocolParseError) throw parsed
          expect(parsed).toMatchObject({ hostPort: "[::1]:9001", instanceIdHex: id.toString(16), ...p })
          const key = { instanceIdHex: id.toString(16), ...p }
          expect(tcpWirePath(parsed)).toBe(wirePathOf(key))
          expect(wirePathsOf(key)[0]).toBe(wirePathOf(key))
          // the older form of the same instance, as Dynamo wrote it (the bare name)
          if (!p.endpoint.includes("/")) {
            const old = parseTcpAddress(`[::1]:9001/${id.toString(16)}/${p.endpoint}`)
            if (!(old instanceof ProtocolParseError)) expect(wirePathsOf(key)).toContain(tcpWirePath(old))
          }
        }
      )
    )
  })
})
