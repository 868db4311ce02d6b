/**
 * The request control header's fast path (PlainControl.ts) and the ASCII text helper
 * (AsciiText.ts): each may only ever give what the JSON path gives, and the fast path must be
 * the one our own routers' headers take.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import type { RequestControlMessage } from "../src/ConnectionInfo.ts"
import { asciiText } from "../src/protocol/AsciiText.ts"
import { plainControl } from "../src/protocol/PlainControl.ts"
import { ProtocolParseError } from "../src/protocol/ProtocolError.ts"
import { decodeRequestMessage, encodeRequestMessage } from "../src/protocol/RequestMessage.ts"
import { decodeFrame } from "../src/protocol/TwoPartCodec.ts"

const limits = { maxMessageSize: 1 << 20 }

/** The control header bytes our encoder writes for `control`. */
const headerOf = (control: RequestControlMessage): Uint8Array => {
  const frame = decodeFrame(encodeRequestMessage(control, { x: 1 }), limits)
  if (frame instanceof ProtocolParseError) throw new Error(frame.detail)
  return frame.header
}

/** Printable ASCII without `"` or `\`: what JSON.stringify writes as it is. */
const plainString = fc.string({ unit: fc.constantFrom(..." !#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~".split("")) })
/** Any string: quotes, backslashes, control characters, non-ASCII, lone surrogates. */
const anyString = fc.oneof(plainString, fc.string({ unit: "binary" }), fc.constantFrom("", "\"", "\\", "é", "\u2028", "\ud800"))

const controlOf = (text: fc.Arbitrary<string>): fc.Arbitrary<RequestControlMessage> =>
  fc.record({
    id: text,
    request_type: fc.constantFrom("single_in" as const, "many_in" as const),
    response_type: fc.constantFrom("single_out" as const, "many_out" as const),
    payload_codec: fc.option(fc.constantFrom("json" as const, "msgpack" as const), { nil: undefined }),
    transport: text,
    info: text
  }).map(({ id, request_type, response_type, payload_codec, transport, info }) => {
    const control: { -readonly [K in keyof RequestControlMessage]: RequestControlMessage[K] } = { id, request_type, response_type, connection_info: { transport, info } }
    if (payload_codec !== undefined) control.payload_codec = payload_codec
    return control
  })

describe("plainControl", () => {
  it("reads every header our encoder writes with plain strings, as the JSON it is", () => {
    fc.assert(
      fc.property(controlOf(plainString), (control) => {
        const header = headerOf(control)
        const fast = plainControl(header)
        expect(fast).toStrictEqual(control)
        expect(fast).toStrictEqual(JSON.parse(Buffer.from(header).toString("utf8")))
      })
    )
  })

  it("gives what decodeRequestMessage gives for any control, plain or not", () => {
    fc.assert(
      fc.property(controlOf(anyString), (control) => {
        const decoded = decodeRequestMessage(encodeRequestMessage(control, { x: 1 }), limits)
        if (decoded instanceof ProtocolParseError) throw new Error(decoded.detail)
        // lone surrogates are written as escapes by JSON.stringify and read back as they were
        expect(decoded.control).toStrictEqual(control)
        const fast = plainControl(headerOf(control))
        if (fast !== undefined) expect(fast).toStrictEqual(decoded.control)
      })
    )
  })

  it("takes a changed header only when it is still exactly that JSON", () => {
    const edit = fc.record({ at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }), op: fc.constantFrom("set", "insert", "delete") })
    fc.assert(
      fc.property(controlOf(plainString), fc.array(edit, { minLength: 1, maxLength: 3 }), (control, edits) => {
        let bytes = Array.from(headerOf(control))
        for (const { at, byte, op } of edits) {
          const i = at % (bytes.length + 1)
          if (op === "set" && i < bytes.length) bytes[i] = byte
          else if (op === "insert") bytes.splice(i, 0, byte)
          else bytes.splice(i, 1)
        }
        const header = Uint8Array.from(bytes)
        const fast = plainControl(header)
        if (fast === undefined) return
        expect(fast).toStrictEqual(JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(header)))
        expect(["single_in", "many_in"]).toContain(fast.request_type)
        expect(["single_out", "many_out"]).toContain(fast.response_type)
        expect([undefined, "json", "msgpack"]).toContain(fast.payload_codec)
      })
    )
  })

  it("leaves other shapes to the JSON path", () => {
    const base = `{"id":"a","request_type":"single_in","response_type":"many_out","connection_info":{"transport":"t","info":"{}"}}`
    expect(plainControl(Buffer.from(base))).toStrictEqual({ id: "a", request_type: "single_in", response_type: "many_out", connection_info: { transport: "t", info: "{}" } })
    for (
      const other of [
        base.replace(`"single_in"`, `"both_in"`), // an unknown literal: the JSON path names it
        base.replace(`"a"`, `"a\\u0041"`), // an escape
        base.replace(`"a"`, `"é"`), // non-ASCII
        base.replace(`}}`, `},"metadata":{"k":1}}`), // metadata
        base.replace(`,"request_type"`, ` ,"request_type"`), // spacing
        base.replace(`"info":"{}"`, `"info":"{}","extra":"x"`), // an unknown key
        base.slice(0, -1), // cut short
        `${base} ` // trailing bytes
      ]
    ) expect(plainControl(Buffer.from(other)), other).toBeUndefined()
  })
})

describe("asciiText", () => {
  it("is the UTF-8 text of an ASCII range, and undefined when any byte of the range is not ASCII", () => {
    const strict = new TextDecoder("utf-8", { fatal: true })
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.nat(), fc.nat(), (bytes, a, b) => {
        const start = Math.min(a, b) % (bytes.length + 1)
        const end = Math.max(start, Math.max(a, b) % (bytes.length + 1))
        const text = asciiText(bytes, start, end)
        const range = bytes.subarray(start, end)
        if (range.every((x) => x < 0x80)) expect(text).toBe(strict.decode(range))
        else expect(text).toBeUndefined()
      })
    )
  })
})
