/**
 * The pure protocol core beyond the frame codecs: the call-home handshake, prologue, sentinel
 * and control frames (protocol/CallHome.ts), the shared frame assembly's `stop()` (how a
 * connection switches from TwoPartCodec to mux framing mid-chunk), and the request control
 * header's validation. No sockets.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import {
  controlFrame,
  encodeCallHomeHandshake,
  encodePrologueError,
  encodePrologueErrorFrame,
  isSentinel,
  KILL_FRAME,
  PROLOGUE_OK_BYTES,
  PROLOGUE_OK_FRAME,
  readCallHomeHandshake,
  readControlFrame,
  readPrologue,
  SENTINEL_FRAME,
  STARTED,
  STOP_FRAME
} from "../src/protocol/CallHome.ts"
import { encodeMuxHandshake } from "../src/protocol/MuxHandshake.ts"
import { encodeMuxFrame, makeMuxDecoder, MuxKind, streamIdFromUuid } from "../src/protocol/MuxCodec.ts"
import { ProtocolParseError } from "../src/protocol/ProtocolError.ts"
import { decodeRequestMessage, encodeRequestMessage } from "../src/protocol/RequestMessage.ts"
import { decodeFrame, encodeFrame, encodeHeaderOnlyJson, encodeHeaderOnlyText, makeDecoder } from "../src/protocol/TwoPartCodec.ts"

const utf8 = (s: string) => new TextEncoder().encode(s)
const text = (b: Uint8Array) => new TextDecoder().decode(b)
const EMPTY = new Uint8Array(0)
const header = (frame: Uint8Array) => {
  const f = decodeFrame(frame, { maxMessageSize: 1 << 20 })
  if (f instanceof ProtocolParseError) throw f
  return f
}
const asError = (v: unknown): ProtocolParseError => {
  expect(v).toBeInstanceOf(ProtocolParseError)
  return v as ProtocolParseError
}

describe("call-home frames", () => {
  it("the handshake and any header-only text frame are byte for byte the frame of the header's UTF-8 (any subject: quotes, non-ASCII, lone surrogates)", () => {
    const anyString = fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.constantFrom("", "\"", "\\", "é", "\u2028", "\ud800", "x\udfffy"))
    const utf8 = new TextEncoder()
    fc.assert(
      fc.property(anyString, (s) => {
        expect(encodeCallHomeHandshake(s)).toStrictEqual(encodeFrame(utf8.encode(JSON.stringify({ subject: s, stream_type: "response" })), undefined))
        expect(encodeHeaderOnlyText(s)).toStrictEqual(encodeFrame(utf8.encode(s), undefined))
      })
    )
  })

  it("encodes Dynamo's bytes: handshake, prologue, sentinel, stop, kill", () => {
    expect(text(header(encodeCallHomeHandshake("s-1")).header)).toBe(`{"subject":"s-1","stream_type":"response"}`)
    expect(text(header(PROLOGUE_OK_FRAME).header)).toBe(`{"error":null}`)
    expect(text(PROLOGUE_OK_BYTES)).toBe(`{"error":null}`)
    expect(text(header(encodePrologueErrorFrame("no")).header)).toBe(`{"error":"no"}`)
    expect(text(encodePrologueError("no")).toString()).toBe(`{"error":"no"}`)
    expect(text(header(SENTINEL_FRAME).header)).toBe(`"sentinel"`)
    expect(text(header(STOP_FRAME).header)).toBe(`"stop"`)
    expect(controlFrame("kill")).toBe(KILL_FRAME)
    for (const f of [PROLOGUE_OK_FRAME, SENTINEL_FRAME, STOP_FRAME, KILL_FRAME]) expect(header(f).body.length).toBe(0)
  })

  it("reads prologues: started, refused with a reason, or malformed", () => {
    expect(readPrologue(PROLOGUE_OK_BYTES)).toBe(STARTED)
    expect(readPrologue(utf8(`{}`))).toBe(STARTED)
    expect(readPrologue(utf8(` {"error": null} `))).toBe(STARTED)
    expect(readPrologue(encodePrologueError("bad request"))).toEqual({ _tag: "Refused", message: "bad request" })
    expect(asError(readPrologue(utf8(`[1]`))).detail).toContain("not a JSON object")
    expect(asError(readPrologue(utf8(`{"error":42}`))).detail).toContain("not a string")
    expect(asError(readPrologue(utf8(`{`))).reason).toBe("MalformedFrame")
  })

  it("reads the first frame: a one-shot subject, a mux handshake only when accepted, or BadHandshake", () => {
    const oneShot = header(encodeCallHomeHandshake("abc"))
    expect(readCallHomeHandshake(oneShot.header, oneShot.body, false)).toEqual({ _tag: "OneShot", subject: "abc" })
    const id = "8d3f7a2c-1b4e-4c5d-9e6f-0a1b2c3d4e5f"
    const mux = header(encodeMuxHandshake(id, "conn-1"))
    expect(readCallHomeHandshake(mux.header, mux.body, true)).toEqual({
      _tag: "Mux",
      handshake: { frontendServerId: id, connectionId: "conn-1" }
    })
    expect(asError(readCallHomeHandshake(mux.header, mux.body, false)).reason).toBe("BadHandshake")
    const wrongVersion = utf8(`{"kind":"response_mux","version":2,"frontend_server_id":"${id}","connection_id":"c"}`)
    expect(asError(readCallHomeHandshake(wrongVersion, EMPTY, true)).detail).toContain("unsupported response mux version 2")
    expect(asError(readCallHomeHandshake(utf8(`{"subject":"a","stream_type":"request"}`), EMPTY, true)).detail).toContain("bad handshake frame")
    expect(asError(readCallHomeHandshake(oneShot.header, utf8("x"), false)).reason).toBe("BadHandshake")
  })

  it("reads control frames and the sentinel", () => {
    const stop = header(STOP_FRAME)
    expect(readControlFrame(stop.header, stop.body)).toBe("stop")
    expect(readControlFrame(utf8(` "kill" `), EMPTY)).toBe("kill")
    expect(asError(readControlFrame(utf8(`"sentinel"`), EMPTY)).reason).toBe("UnexpectedMessage")
    expect(asError(readControlFrame(utf8(`"stop"`), utf8("x"))).detail).toContain("1 body bytes")
    expect(isSentinel(header(SENTINEL_FRAME).header)).toBe(true)
    expect(isSentinel(utf8(` "sentinel"`))).toBe(true)
    expect(isSentinel(utf8(`"stop"`))).toBe(false)
  })

  it("never throws on arbitrary bytes (property)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), fc.uint8Array({ maxLength: 8 }), fc.boolean(), (h, b, mux) => {
        const r = readCallHomeHandshake(h, b, mux)
        expect(r instanceof ProtocolParseError || r._tag === "OneShot" || r._tag === "Mux").toBe(true)
        const p = readPrologue(h)
        expect(p instanceof ProtocolParseError || p._tag === "Started" || p._tag === "Refused").toBe(true)
        const c = readControlFrame(h, b)
        expect(c instanceof ProtocolParseError || c === "stop" || c === "kill").toBe(true)
        expect(typeof isSentinel(h)).toBe("boolean")
      }),
      { numRuns: 2000 }
    )
  })
})

describe("switching framing mid-chunk: decoder.stop()", () => {
  const id = streamIdFromUuid("8d3f7a2c-1b4e-4c5d-9e6f-0a1b2c3d4e5f")!
  const handshake = encodeMuxHandshake("8d3f7a2c-1b4e-4c5d-9e6f-0a1b2c3d4e5f", "c-1")
  const muxFrames = [encodeMuxFrame(MuxKind.Prologue, id, PROLOGUE_OK_BYTES), encodeMuxFrame(MuxKind.Data, id, utf8("x".repeat(300)))]
  const wire = new Uint8Array([...handshake, ...muxFrames[0]!, ...muxFrames[1]!])

  it("stops after the frame whose handler called stop(), at any chunking, and hands back the rest (property)", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: wire.length - 1 }), { maxLength: 6 }), (cuts) => {
        const points = [...new Set(cuts)].sort((a, b) => a - b)
        const chunks: Array<Uint8Array> = []
        let at = 0
        for (const p of [...points, wire.length]) {
          chunks.push(wire.slice(at, p))
          at = p
        }
        const decoder = makeDecoder({ maxMessageSize: 1 << 20 })
        let frames = 0
        let rest: Array<Uint8Array> = []
        let switched = false
        for (const chunk of chunks) {
          if (switched) {
            rest.push(chunk)
            continue
          }
          const error = decoder.decode(chunk, () => {
            frames++
            decoder.stop()
          })
          expect(error).toBeUndefined()
          if (frames === 1) {
            switched = true
            rest = [chunk.subarray(decoder.stopOffset())]
          }
        }
        expect(frames).toBe(1)
        // What follows the handshake decodes as exactly the two mux frames.
        const mux = makeMuxDecoder({ maxMessageSize: 1 << 20 })
        const kinds: Array<number> = []
        for (const chunk of rest) expect(mux.decode(chunk, (kind) => kinds.push(kind))).toBeUndefined()
        expect(kinds).toEqual([MuxKind.Prologue, MuxKind.Data])
        expect(mux.isIdle()).toBe(true)
        // A stopped decoder decodes nothing more.
        expect(decoder.decode(encodeFrame(utf8("{}"), undefined), () => frames++)).toBeUndefined()
        expect(frames).toBe(1)
      }),
      { numRuns: 500 }
    )
  })

  it("without stop() the same bytes are a frame error: mux frames are not TwoPartCodec frames", () => {
    const decoder = makeDecoder({ maxMessageSize: 1 << 20 })
    expect(decoder.decode(wire, () => {})).toBeInstanceOf(ProtocolParseError)
  })
})

describe("the request control header (validated without Schema)", () => {
  const control = {
    id: "r-1",
    request_type: "single_in" as const,
    response_type: "many_out" as const,
    connection_info: { transport: "tcp_server", info: "{}" }
  }
  const frameOf = (headerJson: string) => encodeFrame(utf8(headerJson), utf8("{}"))
  const decode = (headerJson: string) => decodeRequestMessage(frameOf(headerJson), { maxMessageSize: 1 << 20 })

  it("keeps the known keys and drops unknown ones (Dynamo's frontend_send_ts_ns)", () => {
    const r = decode(JSON.stringify({ ...control, frontend_send_ts_ns: 12, metadata: { a: 1 }, payload_codec: "json" }))
    if (r instanceof ProtocolParseError) throw r
    expect(r.control).toEqual({ ...control, metadata: { a: 1 }, payload_codec: "json" })
    expect(Object.keys(r.control)).not.toContain("frontend_send_ts_ns")
    const round = decodeRequestMessage(encodeRequestMessage(control, { p: 1 }), { maxMessageSize: 1 << 20 })
    if (round instanceof ProtocolParseError) throw round
    expect(round).toEqual({ control, payload: { p: 1 } })
  })

  it("names the field that is wrong", () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ ...control, id: 7 }, `["id"]: expected a string`],
      [{ ...control, request_type: "x" }, `["request_type"]`],
      [{ ...control, response_type: undefined }, `["response_type"]`],
      [{ ...control, payload_codec: "cbor" }, `["payload_codec"]`],
      [{ ...control, connection_info: "tcp" }, `["connection_info"]: expected an object`],
      [{ ...control, connection_info: { transport: "t" } }, `["connection_info"]["info"]`],
      [{ ...control, metadata: [1] }, `["metadata"]`]
    ]
    for (const [value, why] of cases) {
      const e = asError(decode(JSON.stringify(value)))
      expect(e.reason).toBe("MalformedFrame")
      expect(e.detail).toContain("invalid request control header")
      expect(e.detail).toContain(why)
    }
    expect(asError(decode(`[1]`)).detail).toContain("expected an object")
  })

  it("connection_info may be left out only where the caller says what stands in for it (the full TCP mode)", () => {
    const { connection_info: _, ...without } = control
    const bytes = encodeFrame(utf8(JSON.stringify(without)), utf8(JSON.stringify({ p: 1 })))
    expect(new TextDecoder().decode(bytes)).not.toContain("connection_info")
    // by default a header without it is refused, naming the field
    const refused = asError(decodeRequestMessage(bytes, { maxMessageSize: 1 << 20 }))
    expect(refused.detail).toContain(`["connection_info"]: expected an object`)
    const stand = { transport: "tcp_server", info: "{}" }
    const r = decodeRequestMessage(bytes, { maxMessageSize: 1 << 20, absentConnectionInfo: stand })
    if (r instanceof ProtocolParseError) throw r
    expect(r).toEqual({ control: { ...without, connection_info: stand }, payload: { p: 1 } })
    // one that is present is still read (and checked) with a stand-in given
    const given = decodeRequestMessage(encodeRequestMessage(control, 1), { maxMessageSize: 1 << 20, absentConnectionInfo: stand })
    if (given instanceof ProtocolParseError) throw given
    expect(given.control.connection_info).toEqual(control.connection_info)
    expect(asError(decodeRequestMessage(frameOf(JSON.stringify({ ...control, connection_info: 3 })), { maxMessageSize: 1 << 20, absentConnectionInfo: stand })).detail)
      .toContain(`["connection_info"]: expected an object`)
  })

  it("header-only JSON frames carry no body", () => {
    expect(header(encodeHeaderOnlyJson({ a: 1 })).body.length).toBe(0)
  })
})
