/**
 * Fuzzing the response stream decoders of the pure HTTP mode (protocol/HttpStreamFormat.ts:
 * `makeStreamDecoder` for sse, ndjson and binary; protocol/HttpStreamEvent.ts: `LineReader`).
 *
 * Properties, for each format: random bytes in random chunks never throw (errors come back as
 * `ProtocolParseError` values, and the decoder stays dead after one); a valid stream (items, then
 * the end marker or an in-band error) round-trips through any chunking; cut at every offset before
 * its end, `end()` is an error and the items seen are a prefix of the stream's (never a shorter
 * success); a line longer than the maximum is refused and never held beyond the maximum.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { LineReader } from "../../src/protocol/HttpStreamEvent.ts"
import { makeNdjsonDecoder } from "../../src/protocol/Ndjson.ts"
import { makeEncoder, makeStreamDecoder, STREAM_FORMATS } from "../../src/protocol/HttpStreamFormat.ts"
import type { StreamEvent, StreamFormat } from "../../src/protocol/HttpStreamFormat.ts"
import { ProtocolParseError } from "../../src/protocol/ProtocolError.ts"
import { arrayBufferGrowth, bytesArb, concat, cutsArb, noThrow, normJson, RUNS, splitAt, utf8 } from "./fuzzSupport.ts"

const MAX = 1 << 20

interface Outcome {
  readonly items: Array<unknown>
  readonly end: StreamEvent | undefined
  readonly error: ProtocolParseError | undefined
  readonly endError: ProtocolParseError | undefined
}

/** Feeds `chunks` to a fresh decoder, checking the error channel after every call, then `end()`. */
const run = (format: StreamFormat, chunks: ReadonlyArray<Uint8Array>, max = MAX): Outcome => {
  const d = makeStreamDecoder(format, { maxMessageSize: max })
  const items: Array<unknown> = []
  let end: StreamEvent | undefined
  let error: ProtocolParseError | undefined
  const onEvent = (e: StreamEvent) => {
    expect(end).toBeUndefined() // nothing after Done or Error
    if (e._tag === "Items") items.push(...e.items)
    else end = e
  }
  for (const chunk of chunks) {
    const r = noThrow(`${format} decode`, () => d.decode(chunk, onEvent))
    if (r !== undefined) expect(r).toBeInstanceOf(ProtocolParseError)
    if (error !== undefined) expect(r).toBe(error)
    error ??= r
  }
  const endError = noThrow(`${format} end`, () => d.end())
  if (endError !== undefined) expect(endError).toBeInstanceOf(ProtocolParseError)
  if (error !== undefined) expect(endError).toBe(error)
  return { items, end, error, endError }
}

/** Random bytes, plus text made of the formats' own pieces. */
const streamish = fc.oneof(
  bytesArb(400),
  fc
    .array(
      fc.constantFrom(
        "data: ", "data:", "event: done\n", "event: error\n", "event: x\n", ": c\n", "\n", "\r\n", "\r", "{}", "[1]", `{"data":1}`,
        `{"event":"done"}`, `{"event":"error","tag":"T","message":"m"}`, `{"tag":"T","message":"m"}`, "\uFEFF", "id: 1\n", "retry: 5\n"
      ),
      { maxLength: 20 }
    )
    .map((a) => utf8(a.join("")))
)

const valueArb = fc.jsonValue({ maxDepth: 2 }).map(normJson)

/** A valid stream in `format`: items, then Done or an in-band error; and where each item ends. */
const encodeStream = (format: StreamFormat, values: ReadonlyArray<unknown>, error: { tag: string; message: string } | undefined) => {
  const enc = makeEncoder(format)
  const parts = values.map((v) => enc.item(v))
  const heartbeat = enc.heartbeat()
  if (heartbeat !== undefined && parts.length > 0) parts.splice(1, 0, heartbeat)
  parts.push(error === undefined ? enc.done() : enc.error(error.tag, error.message))
  return concat(...parts)
}

describe("sse decoder: the text path and the byte path agree", () => {
  // A stream of ASCII lines ending in \n is read as text (Sse.ts, decodeText); the same lines
  // ending in \r\n go through the line reader's bytes. Both must give the same items, end and
  // failure (its reason: a size in an error's detail depends on where the bytes were cut).
  const line = fc.oneof(
    fc.constantFrom("", "data: {}", "data:[1]", "data: 1", "data", "event: done", "event: error", "event: x", ": heartbeat", "id: 1", "data: {\"tag\":\"T\",\"message\":\"m\"}"),
    fc.string({ unit: "binary-ascii", maxLength: 40 }).filter((t) => !/[\r\n]/.test(t)),
    fc.json({ maxDepth: 2 }).map((j) => `data: ${j}`),
    fc.integer({ min: 50, max: 90 }).map((n) => `data: "${"x".repeat(n)}"`)
  )
  it("for any lines, chunking and maximum", () => {
    fc.assert(
      fc.property(fc.array(line, { maxLength: 30 }), fc.boolean(), cutsArb, fc.constantFrom(MAX, 64, 80), (lines, lastEnds, cuts, max) => {
        const lf = lines.join("\n") + (lastEnds ? "\n" : "")
        const crlf = lines.join("\r\n") + (lastEnds ? "\r\n" : "")
        const a = run("sse", splitAt(utf8(lf), cuts), max)
        const b = run("sse", splitAt(utf8(crlf), cuts), max)
        expect(a.items).toEqual(b.items)
        expect(a.end).toEqual(b.end)
        expect(a.error?.reason).toBe(b.error?.reason)
        expect(a.endError?.reason).toBe(b.endError?.reason)
      }),
      { numRuns: RUNS }
    )
  })
})

describe("ndjson decoder: the text path and the byte path agree", () => {
  // The same chunks through the default decoder (an ASCII chunk that starts a line is read as
  // text) and one that reads every chunk as bytes: the same items, end, and failure reason.
  const line = fc.oneof(
    fc.constantFrom("", "  \r", "\t", "\u000b", " \f ", `{"data":{}}`, `{"data":[1]}`, `{"data":1}\r`, `{"event":"done"}`, `{"event":"error","tag":"T","message":"m"}`, `{"event":"x"}`, "{}", "[1]", "not json"),
    fc.string({ unit: "binary-ascii", maxLength: 40 }).filter((t) => !t.includes("\n")),
    fc.json({ maxDepth: 2 }).map((j) => `{"data":${j}}`),
    fc.string({ unit: "binary", maxLength: 8 }).map((t) => `{"data":${JSON.stringify(t)}}`),
    fc.integer({ min: 50, max: 90 }).map((n) => `{"data":"${"x".repeat(n)}"}`)
  )
  const decodeAll = (decoder: ReturnType<typeof makeNdjsonDecoder>, chunks: ReadonlyArray<Uint8Array>) => {
    const items: Array<unknown> = []
    let end: StreamEvent | undefined
    let error: ProtocolParseError | undefined
    for (const chunk of chunks) {
      error ??= decoder.decode(chunk, (e) => {
        if (e._tag === "Items") items.push(...e.items)
        else end = e
      })
    }
    return { items, end, error: error?.reason, endError: decoder.end()?.reason }
  }
  it("for any lines, chunking and maximum", () => {
    fc.assert(
      fc.property(fc.array(line, { maxLength: 30 }), fc.boolean(), cutsArb, fc.constantFrom(MAX, 64, 80), (lines, lastEnds, cuts, max) => {
        const bytes = utf8(lines.join("\n") + (lastEnds ? "\n" : ""))
        const text = decodeAll(makeNdjsonDecoder(max), splitAt(bytes, cuts))
        const byBytes = decodeAll(makeNdjsonDecoder(max, false), splitAt(bytes, cuts))
        expect(text).toEqual(byBytes)
      }),
      { numRuns: RUNS }
    )
  })
})

describe("the text encoders' itemText", () => {
  it("is, in UTF-8, exactly what item writes, for any value, and throws where item throws", () => {
    fc.assert(
      fc.property(fc.constantFrom("sse" as const, "ndjson" as const), fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.string({ unit: "binary" }), fc.constant(undefined)), (format, value) => {
        const enc = makeEncoder(format)
        let bytes: Uint8Array | Error
        let text: string | Error
        try {
          bytes = enc.item(value)
        } catch (e) {
          bytes = e as Error
        }
        try {
          text = enc.itemText!(value)
        } catch (e) {
          text = e as Error
        }
        if (bytes instanceof Error) expect(text).toBeInstanceOf(Error)
        else expect(Buffer.from(text as string, "utf8").equals(Buffer.from(bytes))).toBe(true)
      }),
      { numRuns: RUNS }
    )
  })
})

for (const format of STREAM_FORMATS) {
  describe(`${format} stream decoder (fuzz)`, () => {
    it("random bytes in random chunks: no throw, one error for good", () => {
      fc.assert(
        fc.property(streamish, cutsArb, fc.integer({ min: 1, max: 300 }), (bytes, cuts, max) => {
          const o = run(format, splitAt(bytes, cuts), max)
          if (o.end === undefined) expect(o.endError).toBeDefined()
        }),
        { numRuns: RUNS }
      )
    })

    it("valid streams round-trip through any chunking", () => {
      const errorArb = fc.option(fc.record({ tag: fc.string({ maxLength: 10 }), message: fc.string({ maxLength: 30 }) }), { nil: undefined })
      fc.assert(
        fc.property(fc.array(valueArb, { maxLength: 6 }), errorArb, cutsArb, (values, error, cuts) => {
          const o = run(format, splitAt(encodeStream(format, values, error), cuts))
          expect(o.error).toBeUndefined()
          expect(o.endError).toBeUndefined()
          expect(o.items).toEqual(values)
          if (error === undefined) expect(o.end).toEqual({ _tag: "Done" })
          else expect(o.end).toEqual({ _tag: "Error", tag: format === "binary" ? "HandlerError" : error.tag, message: error.message })
        }),
        { numRuns: RUNS }
      )
    })

    it("cut at every offset before its end: end() is an error, and the items are a prefix", () => {
      fc.assert(
        fc.property(fc.array(valueArb, { minLength: 1, maxLength: 3 }), fc.nat({ max: 16 }), (values, step) => {
          const wire = encodeStream(format, values, undefined)
          for (let k = 0; k < wire.length; k++) {
            const cuts = Array.from({ length: Math.floor(k / (step + 1)) }, (_, i) => (i + 1) * (step + 1))
            const o = run(format, splitAt(wire.subarray(0, k), cuts))
            expect(o.end).toBeUndefined()
            expect(o.endError).toBeInstanceOf(ProtocolParseError)
            expect(o.items).toEqual(values.slice(0, o.items.length))
          }
        }),
        { numRuns: 40 }
      )
    })

    it("bytes after the end marker are refused", () => {
      fc.assert(
        fc.property(fc.array(valueArb, { maxLength: 2 }), valueArb, cutsArb, (values, extra, cuts) => {
          const wire = concat(encodeStream(format, values, undefined), makeEncoder(format).item(extra))
          const o = run(format, splitAt(wire, cuts))
          expect(o.error?.reason).toBe("UnexpectedMessage")
        }),
        { numRuns: RUNS }
      )
    })

    it("a line, event or frame beyond the maximum is refused without holding more than the maximum", () => {
      fc.assert(
        fc.property(fc.integer({ min: 16, max: 4096 }), fc.integer({ min: 1, max: 8 }), (max, chunks) => {
          const big = makeEncoder(format).item("x".repeat(max + 1))
          const step = Math.ceil(big.length / chunks)
          const { growth, result } = arrayBufferGrowth(() => run(format, splitAt(big, Array.from({ length: chunks }, (_, i) => i * step)), max))
          expect(result.error?.reason).toBe("MessageTooLarge")
          expect(growth).toBeLessThan(4 * max + 256 * 1024)
        }),
        { numRuns: 100 }
      )
    })
  })
}

describe("LineReader (fuzz)", () => {
  it("never holds more than its maximum, and splits lines as a reference split does", () => {
    fc.assert(
      fc.property(bytesArb(400), cutsArb, fc.boolean(), fc.integer({ min: 1, max: 200 }), (bytes, cuts, cr, max) => {
        const reader = new LineReader(max, cr)
        const lines: Array<string> = []
        let error: ProtocolParseError | undefined
        for (const chunk of splitAt(bytes, cuts)) {
          if (error !== undefined) break
          error = noThrow("LineReader.feed", () => reader.feed(chunk, (line) => void lines.push(Buffer.from(line).toString("latin1"))))
          expect(reader.heldBytes()).toBeLessThanOrEqual(max)
        }
        if (error !== undefined) {
          expect(error.reason).toBe("MessageTooLarge")
          return
        }
        const text = Buffer.from(bytes).toString("latin1")
        const all = text.split(cr ? /\r\n|\r|\n/ : /\n/)
        const rest = all.pop()!
        expect(lines).toEqual(all)
        // What is held is the unterminated rest (a final lone CR, in SSE mode, has ended its line).
        expect(Buffer.from(reader.partial()).toString("latin1")).toBe(rest)
      }),
      { numRuns: RUNS }
    )
  })
})
