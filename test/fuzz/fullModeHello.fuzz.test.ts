/**
 * Fuzzing the opening of the full TCP mode (protocol/FullModeHello.ts): `readHello` and
 * `readHelloAnswer` read "everything read so far", so the driver calls them again as bytes
 * accumulate: the properties feed every prefix of the input.
 *
 * Properties: no throw on any bytes; the answer for a prefix is NeedMore, the message, or
 * "BadHandshake", and once a prefix is refused (or whole) every longer prefix says the same; valid
 * messages round-trip and are NeedMore at every truncation; an answer's reason is at most 65535
 * bytes, so a reader never waits for more than 12 + 65535 bytes.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  encodeHello,
  encodeHelloAnswer,
  HELLO_SIZE,
  HelloStatus,
  MAX_HELLO_REASON,
  readHello,
  readHelloAnswer,
  startsFullMode
} from "../../src/protocol/FullModeHello.ts"
import { ProtocolParseError } from "../../src/protocol/ProtocolError.ts"
import { bytesArb, concat, noThrow, RUNS, utf8 } from "./fuzzSupport.ts"

const MAGIC = utf8("DYNMUX")

/** Random bytes, and bytes that start right and go wrong later. */
const helloish = fc.oneof(
  bytesArb(40),
  fc.tuple(fc.nat({ max: 12 }), bytesArb(20)).map(([keep, tail]) => concat(encodeHello().subarray(0, keep), tail)),
  fc.tuple(fc.nat({ max: 14 }), bytesArb(30)).map(([keep, tail]) => concat(encodeHelloAnswer(HelloStatus.Refused, "no").subarray(0, keep), tail)),
  fc.tuple(fc.nat({ max: 3 }), fc.nat({ max: 0xffff }), bytesArb(30)).map(([status, len, tail]) => {
    const head = new Uint8Array(12)
    head.set(MAGIC, 0)
    const dv = new DataView(head.buffer)
    dv.setUint16(6, 1)
    dv.setUint16(8, status)
    dv.setUint16(10, len)
    return concat(head, tail)
  })
)

/** Checks a reader over every prefix of `bytes`: settled answers stay settled. */
const everyPrefix = (bytes: Uint8Array, read: (b: Uint8Array) => { _tag: string }) => {
  let settled: { _tag: string } | undefined
  for (let k = 0; k <= bytes.length; k++) {
    const r = noThrow("read", () => read(bytes.subarray(0, k)))
    if (settled !== undefined) {
      expect(r._tag).toBe(settled._tag)
      if (r instanceof ProtocolParseError) expect(r.reason).toBe("BadHandshake")
    } else if (r._tag !== "NeedMore") settled = r
  }
  return settled
}

describe("full-mode hello and answer (fuzz)", () => {
  it("readHello: no throw, and a refusal or a hello, once given, stays for every longer prefix", () => {
    fc.assert(
      fc.property(helloish, (bytes) => {
        const r = everyPrefix(bytes, readHello)
        if (r !== undefined && r._tag === "Hello") expect(bytes.length).toBeGreaterThanOrEqual(HELLO_SIZE)
        noThrow("startsFullMode", () => startsFullMode(bytes))
      }),
      { numRuns: RUNS * 2 }
    )
  })

  it("readHelloAnswer: no throw, settled answers stay settled, never waits beyond 12 + 65535 bytes", () => {
    fc.assert(
      fc.property(helloish, (bytes) => {
        const r = everyPrefix(bytes, readHelloAnswer)
        if (r !== undefined && r._tag === "Answer") {
          const a = r as ReturnType<typeof readHelloAnswer> & { size: number; status: number }
          expect(a.size).toBeLessThanOrEqual(Math.min(bytes.length, 12 + MAX_HELLO_REASON))
          expect([0, 1, 2]).toContain(a.status)
        }
      }),
      { numRuns: RUNS * 2 }
    )
  })

  it("valid messages round-trip, are NeedMore at every truncation, and report their size before trailing bytes", () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 0xffff }),
        fc.constantFrom(HelloStatus.Accepted, HelloStatus.VersionNotSupported, HelloStatus.Refused),
        fc.string({ maxLength: 80, unit: "grapheme" }),
        bytesArb(30),
        (version, status, reason, trailing) => {
          const hello = encodeHello(version)
          expect(readHello(concat(hello, trailing))).toEqual({ _tag: "Hello", version, size: HELLO_SIZE })
          for (let k = 0; k < hello.length; k++) expect(readHello(hello.subarray(0, k))._tag).toBe("NeedMore")
          const answer = encodeHelloAnswer(status, reason, version)
          expect(readHelloAnswer(concat(answer, trailing))).toEqual({ _tag: "Answer", version, status, reason, size: answer.length })
          for (let k = 0; k < answer.length; k++) expect(readHelloAnswer(answer.subarray(0, k))._tag).toBe("NeedMore")
        }
      ),
      { numRuns: RUNS }
    )
  })

  it("an answer's reason is cut to 65535 bytes", () => {
    const answer = encodeHelloAnswer(HelloStatus.Refused, "x".repeat(70_000))
    expect(answer.length).toBe(12 + MAX_HELLO_REASON)
    const r = readHelloAnswer(answer)
    expect(r._tag === "Answer" && r.reason.length === MAX_HELLO_REASON).toBe(true)
  })
})
