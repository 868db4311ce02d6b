/**
 * Fuzzing the call-home message readers (protocol/CallHome.ts): the first frame of an accepted
 * connection (`readCallHomeHandshake`, one-shot and mux), the prologue (`readPrologue`), the
 * sentinel (`isSentinel`) and the router's control frames (`readControlFrame`); and a whole
 * one-shot conversation (handshake, prologue, items, sentinel) through the TwoPartCodec decoder in
 * random chunks and cut at every offset.
 *
 * Properties: no reader throws on any bytes; each answers a value of its shape or a
 * `ProtocolParseError` of the documented reason; what the encoders write reads back.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
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
  STOP_FRAME
} from "../../src/protocol/CallHome.ts"
import { encodeMuxHandshake } from "../../src/protocol/MuxHandshake.ts"
import { json } from "../../src/protocol/PayloadCodec.ts"
import { ProtocolParseError } from "../../src/protocol/ProtocolError.ts"
import { decodeStreamBody, encodeStreamComplete, encodeStreamItem } from "../../src/protocol/RequestMessage.ts"
import { decodeFrame, DEFAULT_MAX_MESSAGE_SIZE, encodeFrame, makeDecoder } from "../../src/protocol/TwoPartCodec.ts"
import { bytesArb, concat, cutsArb, feedChecked, noThrow, normJson, RUNS, splitAt, utf8 } from "./fuzzSupport.ts"

/** JSON-ish headers: random JSON values, objects shaped like handshakes, and raw bytes. */
const headerArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  bytesArb(120),
  fc.jsonValue({ maxDepth: 3 }).map((v) => utf8(JSON.stringify(v))),
  fc
    .record({
      subject: fc.oneof(fc.string(), fc.uuid(), fc.integer(), fc.constant(null)),
      stream_type: fc.oneof(fc.constant("response"), fc.string()),
      kind: fc.oneof(fc.constant("response_mux"), fc.string()),
      version: fc.oneof(fc.constant(1), fc.integer(), fc.string()),
      frontend_server_id: fc.oneof(fc.uuid(), fc.string()),
      connection_id: fc.oneof(fc.uuid(), fc.string(), fc.constant(""))
    }, { requiredKeys: [] })
    .map((v) => utf8(JSON.stringify(v))),
  fc.constantFrom(`"stop"`, `"kill"`, `"sentinel"`, ` "sentinel" `, `{"error":null}`, `{}`, `{"error":1}`).map(utf8)
)

const frameOf = (bytes: Uint8Array) => {
  const f = decodeFrame(bytes, { maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE })
  if (f instanceof ProtocolParseError) throw f
  return f
}

describe("call-home message readers (fuzz)", () => {
  it("readCallHomeHandshake never throws; answers OneShot, Mux or BadHandshake", () => {
    fc.assert(
      fc.property(headerArb, fc.uint8Array({ maxLength: 4 }), fc.boolean(), (header, body, acceptMux) => {
        const r = noThrow("readCallHomeHandshake", () => readCallHomeHandshake(header, body, acceptMux))
        if (r instanceof ProtocolParseError) {
          expect(r.reason).toBe("BadHandshake")
          return
        }
        expect(body.length).toBe(0)
        if (r._tag === "OneShot") expect(typeof r.subject).toBe("string")
        else {
          expect(acceptMux).toBe(true)
          expect(r.handshake.connectionId).not.toBe("")
        }
      }),
      { numRuns: RUNS * 2 }
    )
  })

  it("the handshakes the workers write read back", () => {
    fc.assert(
      fc.property(fc.string(), fc.uuid(), fc.string({ minLength: 1 }), (subject, serverId, connectionId) => {
        const one = frameOf(encodeCallHomeHandshake(subject))
        expect(readCallHomeHandshake(one.header, one.body, false)).toEqual({ _tag: "OneShot", subject: normJson(subject) })
        const mux = frameOf(encodeMuxHandshake(serverId, connectionId))
        expect(readCallHomeHandshake(mux.header, mux.body, true)).toEqual({
          _tag: "Mux",
          handshake: { frontendServerId: serverId, connectionId: normJson(connectionId) }
        })
        // A router without mux refuses the mux handshake.
        expect(readCallHomeHandshake(mux.header, mux.body, false)).toBeInstanceOf(ProtocolParseError)
      }),
      { numRuns: RUNS }
    )
  })

  it("readPrologue, isSentinel and readControlFrame never throw", () => {
    fc.assert(
      fc.property(headerArb, fc.uint8Array({ maxLength: 4 }), (header, body) => {
        const p = noThrow("readPrologue", () => readPrologue(header))
        if (p instanceof ProtocolParseError) expect(p.reason).toBe("MalformedFrame")
        else if (p._tag === "Refused") expect(typeof p.message).toBe("string")
        expect(typeof noThrow("isSentinel", () => isSentinel(header))).toBe("boolean")
        const c = noThrow("readControlFrame", () => readControlFrame(header, body))
        if (c instanceof ProtocolParseError) expect(c.reason).toBe("UnexpectedMessage")
        else expect(["stop", "kill"]).toContain(c)
      }),
      { numRuns: RUNS * 2 }
    )
  })

  it("prologues and control frames round-trip", () => {
    fc.assert(
      fc.property(fc.string(), (why) => {
        expect(readPrologue(encodePrologueError(why))).toEqual({ _tag: "Refused", message: normJson(why) })
        expect(readPrologue(frameOf(encodePrologueErrorFrame(why)).header)).toEqual({ _tag: "Refused", message: normJson(why) })
      }),
      { numRuns: RUNS }
    )
    expect(readPrologue(PROLOGUE_OK_BYTES)).toEqual({ _tag: "Started" })
    expect(readPrologue(frameOf(PROLOGUE_OK_FRAME).header)).toEqual({ _tag: "Started" })
    expect(isSentinel(frameOf(SENTINEL_FRAME).header)).toBe(true)
    expect(readControlFrame(frameOf(STOP_FRAME).header, new Uint8Array(0))).toBe("stop")
    expect(readControlFrame(frameOf(KILL_FRAME).header, new Uint8Array(0))).toBe("kill")
  })
})

describe("a one-shot call-home conversation through the frame decoder (fuzz)", () => {
  /** Reads a conversation the way the router does: handshake, prologue, items until complete_final, sentinel. */
  const read = (chunks: ReadonlyArray<Uint8Array>) => {
    const items: Array<unknown> = []
    let step = 0
    let bad: ProtocolParseError | undefined
    const d = makeDecoder({ maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE })
    const error = feedChecked(d, chunks, (header: Uint8Array, body: Uint8Array) => {
      if (bad !== undefined) return
      if (step === 0) {
        const h = readCallHomeHandshake(header, body, false)
        if (h instanceof ProtocolParseError) bad = h
        step = 1
      } else if (step === 1) {
        const p = readPrologue(header)
        if (p instanceof ProtocolParseError) bad = p
        step = 2
      } else if (step === 2) {
        const b = decodeStreamBody(json, body)
        if (b instanceof ProtocolParseError) bad = b
        else if (b._tag === "Item") items.push(b.data)
        else if (b._tag === "Complete") step = 3
      } else if (step === 3) {
        step = isSentinel(header) ? 4 : 5
      }
    }, DEFAULT_MAX_MESSAGE_SIZE)
    return { items, done: step === 4 && bad === undefined && error === undefined && d.isIdle() }
  }

  it("round-trips in any chunking; cut at any offset it never reads as complete", () => {
    fc.assert(
      fc.property(fc.uuid(), fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 5 }), cutsArb, (subject, values, cuts) => {
        const wire = concat(
          encodeCallHomeHandshake(subject),
          PROLOGUE_OK_FRAME,
          ...values.map((v) => encodeFrame(undefined, encodeStreamItem(json, v))),
          encodeFrame(undefined, encodeStreamComplete(json)),
          SENTINEL_FRAME
        )
        const whole = read(splitAt(wire, cuts))
        expect(whole.done).toBe(true)
        expect(whole.items).toEqual(values.map(normJson))
        for (let k = 0; k < wire.length; k++) expect(read(splitAt(wire.subarray(0, k), cuts)).done).toBe(false)
      }),
      { numRuns: 40 }
    )
  })
})
