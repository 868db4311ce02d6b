/**
 * Fuzzing the request-plane message and the call-home data frame body (protocol/RequestMessage.ts:
 * `decodeRequestMessage`, `decodeStreamBody`) and the payload codecs under them
 * (protocol/PayloadCodec.ts: `json`, `msgpack`).
 *
 * Properties: `decodeRequestMessage` and `decodeStreamBody` never throw on any bytes (a
 * `ProtocolParseError` of the documented reasons instead); the payload codecs' `decode` throws
 * nothing but `PayloadCodecError` (their documented channel); valid messages and items round-trip
 * in both codecs; every truncation of a message is refused.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import type { RequestControlMessage } from "../../src/ConnectionInfo.ts"
import { json, msgpack, PayloadCodecError } from "../../src/protocol/PayloadCodec.ts"
import { ProtocolParseError } from "../../src/protocol/ProtocolError.ts"
import {
  decodeRequestMessage,
  decodeStreamBody,
  encodeRequestMessage,
  encodeStreamComplete,
  encodeStreamError,
  encodeStreamItem
} from "../../src/protocol/RequestMessage.ts"
import { decodeFrame, DEFAULT_MAX_MESSAGE_SIZE, encodeFrame } from "../../src/protocol/TwoPartCodec.ts"
import { bytesArb, noThrow, normJson, RUNS, utf8 } from "./fuzzSupport.ts"

const OPTIONS = { maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE }

const controlArb: fc.Arbitrary<RequestControlMessage> = fc.record({
  id: fc.uuid(),
  request_type: fc.constantFrom("single_in" as const, "many_in" as const),
  response_type: fc.constantFrom("single_out" as const, "many_out" as const),
  payload_codec: fc.constantFrom("json" as const, "msgpack" as const),
  connection_info: fc.record({ transport: fc.string(), info: fc.string() })
})

/**
 * Values both codecs carry back as they were: JSON without -0, and without a `__proto__` key
 * (msgpackr renames it `__proto_` on decode, its guard against prototype pollution).
 */
const valueArb = fc.jsonValue({ maxDepth: 3 }).map(normJson).filter((v) => !JSON.stringify(v).includes(`"__proto__"`))

/** Header bytes around the control message's shape: random JSON objects with some right keys. */
const headerArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  bytesArb(100),
  fc.jsonValue({ maxDepth: 3 }).map((v) => utf8(JSON.stringify(v))),
  fc
    .record({
      id: fc.oneof(fc.uuid(), fc.integer()),
      request_type: fc.constantFrom("single_in", "many_in", "x", 1),
      response_type: fc.constantFrom("single_out", "many_out", null),
      payload_codec: fc.constantFrom("json", "msgpack", "cbor"),
      connection_info: fc.oneof(fc.record({ transport: fc.string(), info: fc.oneof(fc.string(), fc.integer()) }), fc.string()),
      metadata: fc.oneof(fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 1 })), fc.array(fc.integer()))
    }, { requiredKeys: [] })
    .map((v) => utf8(JSON.stringify(v)))
)

describe("decodeRequestMessage (fuzz)", () => {
  it("never throws on random bytes or random frames", () => {
    fc.assert(
      fc.property(fc.oneof(bytesArb(300), fc.tuple(headerArb, bytesArb(60)).map(([h, b]) => encodeFrame(h, b))), (bytes) => {
        const r = noThrow("decodeRequestMessage", () => decodeRequestMessage(bytes, OPTIONS))
        if (r instanceof ProtocolParseError) expect(["MalformedFrame", "BadPayload", "MessageTooLarge", "ChecksumMismatch"]).toContain(r.reason)
        else expect(typeof r.control.id).toBe("string")
      }),
      { numRuns: RUNS * 2 }
    )
  })

  it("valid messages round-trip in both codecs; every truncation is refused", () => {
    fc.assert(
      fc.property(controlArb, valueArb, (control, payload) => {
        const bytes = encodeRequestMessage(control, payload)
        const r = decodeRequestMessage(bytes, OPTIONS)
        if (r instanceof ProtocolParseError) throw r
        expect(r.control).toEqual(control)
        expect(r.payload).toEqual(payload)
        for (let k = 0; k < bytes.length; k += Math.max(1, Math.floor(bytes.length / 40))) {
          expect(noThrow("decodeRequestMessage", () => decodeRequestMessage(bytes.subarray(0, k), OPTIONS))).toBeInstanceOf(ProtocolParseError)
        }
      }),
      { numRuns: RUNS }
    )
  })
})

describe("encodeRequestMessage's control header (fuzz)", () => {
  it("is byte for byte JSON.stringify of the control object in Dynamo's key order, for any strings and metadata", () => {
    const anyControl = fc.record({
      id: fc.string({ unit: "binary" }),
      request_type: fc.constantFrom("single_in" as const, "many_in" as const),
      response_type: fc.constantFrom("single_out" as const, "many_out" as const),
      payload_codec: fc.option(fc.constantFrom("json" as const, "msgpack" as const), { nil: undefined }),
      connection_info: fc.record({ transport: fc.string({ unit: "binary" }), info: fc.string({ unit: "binary" }) }),
      metadata: fc.option(fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 2 })), { nil: undefined })
    })
    fc.assert(
      fc.property(anyControl, (control) => {
        const frame = decodeFrame(encodeRequestMessage(control as RequestControlMessage, null), OPTIONS)
        if (frame instanceof ProtocolParseError) throw frame
        const expected: Record<string, unknown> = { id: control.id, request_type: control.request_type, response_type: control.response_type }
        if (control.payload_codec !== undefined) expected.payload_codec = control.payload_codec
        expected.connection_info = { transport: control.connection_info.transport, info: control.connection_info.info }
        if (control.metadata !== undefined && Object.keys(control.metadata).length > 0) expected.metadata = control.metadata
        expect(new TextDecoder().decode(frame.header)).toBe(JSON.stringify(expected))
      }),
      { numRuns: RUNS }
    )
  })
})

describe("decodeStreamBody and the payload codecs (fuzz)", () => {
  it("decodeStreamBody never throws, in either codec", () => {
    fc.assert(
      fc.property(fc.oneof(bytesArb(200), fc.jsonValue({ maxDepth: 3 }).map((v) => utf8(JSON.stringify(v)))), (bytes) => {
        for (const codec of [json, msgpack]) {
          const r = noThrow(`decodeStreamBody(${codec.name})`, () => decodeStreamBody(codec, bytes))
          if (r instanceof ProtocolParseError) expect(r.reason).toBe("BadPayload")
          else expect(["Item", "Complete", "Error"]).toContain(r._tag)
        }
      }),
      { numRuns: RUNS * 2 }
    )
  })

  it("the codecs' decode throws only PayloadCodecError", () => {
    fc.assert(
      fc.property(bytesArb(200), (bytes) => {
        for (const codec of [json, msgpack]) {
          try {
            codec.decode(bytes)
          } catch (e) {
            expect(e).toBeInstanceOf(PayloadCodecError)
          }
        }
      }),
      { numRuns: RUNS * 2 }
    )
  })

  it("items, completion and errors round-trip in both codecs", () => {
    fc.assert(
      fc.property(valueArb.filter((v) => v !== null), fc.string(), (item, message) => {
        for (const codec of [json, msgpack]) {
          expect(decodeStreamBody(codec, encodeStreamItem(codec, item))).toEqual({ _tag: "Item", data: item, last: false })
          expect(decodeStreamBody(codec, encodeStreamComplete(codec))).toEqual({ _tag: "Complete" })
          expect(decodeStreamBody(codec, encodeStreamError(codec, message))).toEqual({ _tag: "Error", message })
        }
      }),
      { numRuns: RUNS }
    )
  })

  it("deeply nested input is refused, not a crash", () => {
    for (const depth of [1_000, 100_000]) {
      const nested = utf8(`${"[".repeat(depth)}${"]".repeat(depth)}`)
      const r = noThrow("decodeStreamBody", () => decodeStreamBody(json, nested))
      expect(r).toBeInstanceOf(ProtocolParseError)
      const packed = new Uint8Array(depth).fill(0x91) // fixarray of one element, nested
      const m = noThrow("decodeStreamBody", () => decodeStreamBody(msgpack, packed))
      expect(m).toBeInstanceOf(ProtocolParseError)
    }
  })
})
