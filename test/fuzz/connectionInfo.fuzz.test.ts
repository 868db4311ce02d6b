/**
 * Fuzzing the small readers the drivers run on what a peer sends: the full mode's request items
 * (transport/tcp/full/RequestItems.ts `decodeRequestItem`), the call-home address a worker dials
 * (transport/tcp/worker/CallHomeClient.ts `parseAddress`), the subject the full mode reads from a
 * ConnectionInfo (transport/tcp/full/Sender.ts `streamSubjectOf`), the `http_inline` info
 * (transport/http/HttpInlineHub.ts `formatOfInfo`) and the Accept header
 * (protocol/HttpStreamFormat.ts `formatFromAccept`).
 *
 * Properties: none throws on any input; what each accepts is well-formed; valid input round-trips
 * (msgpack items without a `__proto__` key, which msgpackr renames on decode).
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { json, msgpack } from "../../src/protocol/PayloadCodec.ts"
import { formatFromAccept, STREAM_FORMATS } from "../../src/protocol/HttpStreamFormat.ts"
import { ProtocolParseError } from "../../src/protocol/ProtocolError.ts"
import { formatOfInfo, inlineInfo } from "../../src/transport/http/HttpInlineHub.ts"
import { decodeRequestItem, encodeRequestItem } from "../../src/transport/tcp/full/RequestItems.ts"
import { streamSubjectOf } from "../../src/transport/tcp/full/Sender.ts"
import { parseAddress } from "../../src/transport/tcp/worker/CallHomeClient.ts"
import { tcpConnectionInfo } from "../../src/ConnectionInfo.ts"
import { muxConnectionInfo } from "../../src/protocol/MuxHandshake.ts"
import { bytesArb, noThrow, normJson, RUNS, utf8 } from "./fuzzSupport.ts"

describe("driver-side readers (fuzz)", () => {
  it("decodeRequestItem never throws in either codec; items round-trip", () => {
    fc.assert(
      fc.property(fc.oneof(bytesArb(200), fc.jsonValue({ maxDepth: 2 }).map((v) => utf8(JSON.stringify(v)))), fc.jsonValue({ maxDepth: 2 }).map(normJson).filter((v) => !JSON.stringify(v).includes(`"__proto__"`)), (bytes, item) => {
        for (const codec of [json, msgpack]) {
          const r = noThrow("decodeRequestItem", () => decodeRequestItem(codec, bytes))
          if (r instanceof ProtocolParseError) expect(r.reason).toBe("BadPayload")
          expect(decodeRequestItem(codec, encodeRequestItem(codec, item))).toEqual({ item })
        }
      }),
      { numRuns: RUNS }
    )
  })

  it("parseAddress never throws; what it accepts has a host and a port in 1-65535", () => {
    const pieces = fc.constantFrom(":", "[", "]", "::1", "127.0.0.1", "0", "65535", "65536", "host", "")
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: "binary" }), fc.array(pieces, { maxLength: 6 }).map((a) => a.join(""))), (text) => {
        const r = noThrow("parseAddress", () => parseAddress(text))
        if (r !== undefined) {
          expect(r.host.length).toBeGreaterThan(0)
          expect(r.port >= 1 && r.port <= 65535).toBe(true)
        }
      }),
      { numRuns: RUNS * 2 }
    )
  })

  it("streamSubjectOf never throws; it reads back the subject or stream id our servers write", () => {
    fc.assert(
      fc.property(fc.string(), fc.uuid(), fc.string(), (info, id, context) => {
        noThrow("streamSubjectOf", () => streamSubjectOf({ transport: "tcp_server", info }))
        expect(streamSubjectOf(tcpConnectionInfo({ address: "a:1", subject: id, context, stream_type: "response" }))).toBe(id)
        expect(streamSubjectOf(muxConnectionInfo({ address: "a:1", frontend_server_id: id, stream_id: id, context }))).toBe(id)
      }),
      { numRuns: RUNS }
    )
  })

  it("formatOfInfo and formatFromAccept never throw; formats round-trip", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v))), fc.string(), (info, accept) => {
        const f = noThrow("formatOfInfo", () => formatOfInfo(info))
        if (f !== undefined) expect(STREAM_FORMATS).toContain(f)
        const a = noThrow("formatFromAccept", () => formatFromAccept(accept, "sse"))
        if (a !== undefined) expect(STREAM_FORMATS).toContain(a)
      }),
      { numRuns: RUNS * 2 }
    )
    for (const format of STREAM_FORMATS) expect(formatOfInfo(inlineInfo(format))).toBe(format)
  })
})
