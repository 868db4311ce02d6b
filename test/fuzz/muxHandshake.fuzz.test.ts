/**
 * Fuzzing the JSON parts of response mux v1 (protocol/MuxHandshake.ts: `parseMuxInfo`,
 * `parseMuxHandshake`; protocol/ConnectionInfoText.ts: `readInfoObject`) and the stream id text
 * form (protocol/MuxCodec.ts: `streamIdFromUuid`, `uuidFromStreamId`).
 *
 * Properties: no reader throws on any text or value; a ConnectionInfo is accepted only with UUIDs,
 * a non-nil stream id and the right request id (the context), so a stream id that does not match
 * its request is refused; what the router writes reads back.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { readInfoObject } from "../../src/protocol/ConnectionInfoText.ts"
import { streamIdFromUuid, uuidFromStreamId } from "../../src/protocol/MuxCodec.ts"
import { muxConnectionInfo, parseMuxHandshake, parseMuxInfo } from "../../src/protocol/MuxHandshake.ts"
import { ProtocolParseError } from "../../src/protocol/ProtocolError.ts"
import { noThrow, RUNS } from "./fuzzSupport.ts"

const almostUuid = fc.oneof(
  fc.uuid(),
  fc.string({ minLength: 30, maxLength: 40 }),
  fc.uuid().map((u) => u.toUpperCase()),
  fc.uuid().map((u) => `${u.slice(0, 8)}x${u.slice(9)}`),
  fc.constant("00000000-0000-0000-0000-000000000000")
)

const fieldsArb = fc.record({
  address: fc.oneof(fc.string(), fc.integer()),
  frontend_server_id: fc.oneof(almostUuid, fc.integer(), fc.constant(null)),
  stream_id: fc.oneof(almostUuid, fc.integer()),
  context: fc.oneof(fc.string(), fc.uuid())
}, { requiredKeys: [] })

describe("mux ConnectionInfo and handshake (fuzz)", () => {
  it("parseMuxInfo and readInfoObject never throw on any info text", () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string(), fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)), fieldsArb.map((v) => JSON.stringify(v))),
        fc.string(),
        (info, requestId) => {
          const ci = { transport: "tcp_response_mux_v1", info }
          const r = noThrow("parseMuxInfo", () => parseMuxInfo(ci, requestId))
          if (r instanceof ProtocolParseError) expect(r.reason).toBe("BadHandshake")
          else {
            expect(r.streamIdBytes.some((b) => b !== 0)).toBe(true)
            expect(JSON.parse(info).context).toBe(requestId)
          }
          noThrow("readInfoObject", () => readInfoObject(ci))
        }
      ),
      { numRuns: RUNS * 2 }
    )
  })

  it("what the router writes reads back, and only for its own request id", () => {
    fc.assert(
      fc.property(fc.string(), fc.uuid(), fc.uuid(), fc.uuid(), fc.uuid(), (address, server, stream, context, other) => {
        fc.pre(stream !== "00000000-0000-0000-0000-000000000000" && context !== other)
        const ci = muxConnectionInfo({ address, frontend_server_id: server, stream_id: stream, context })
        const r = parseMuxInfo(ci, context)
        if (r instanceof ProtocolParseError) throw r
        expect(uuidFromStreamId(r.streamIdBytes)).toBe(stream.toLowerCase())
        expect(parseMuxInfo(ci, other)).toBeInstanceOf(ProtocolParseError)
      }),
      { numRuns: RUNS }
    )
  })

  it("parseMuxHandshake never throws on any record", () => {
    fc.assert(
      fc.property(
        fc.record({
          kind: fc.constantFrom("response_mux", "x"),
          version: fc.oneof(fc.constant(1), fc.jsonValue({ maxDepth: 1 })),
          frontend_server_id: fc.oneof(almostUuid, fc.jsonValue({ maxDepth: 1 })),
          connection_id: fc.oneof(fc.string(), fc.jsonValue({ maxDepth: 1 }))
        }, { requiredKeys: [] }),
        (value) => {
          const r = noThrow("parseMuxHandshake", () => parseMuxHandshake(value as Record<string, unknown>))
          if (typeof r !== "string") {
            expect(value.version).toBe(1)
            expect(streamIdFromUuid(r.frontendServerId)).toBeDefined()
          }
        }
      ),
      { numRuns: RUNS * 2 }
    )
  })

  it("stream ids: any text is read without a throw; 16 bytes round-trip through the text form", () => {
    fc.assert(
      fc.property(fc.oneof(almostUuid, fc.string({ unit: "binary" })), fc.uint8Array({ minLength: 16, maxLength: 16 }), (text, bytes) => {
        const id = noThrow("streamIdFromUuid", () => streamIdFromUuid(text))
        if (id !== undefined) expect(uuidFromStreamId(id)).toBe(text.toLowerCase())
        expect([...streamIdFromUuid(uuidFromStreamId(bytes))!]).toEqual([...bytes])
      }),
      { numRuns: RUNS * 2 }
    )
  })
})
