/**
 * The response stream formats of the pure HTTP mode (protocol/HttpStreamFormat.ts): SSE, NDJSON
 * and binary round trips under any chunking, truncation, garbage, the size limit, bytes after the
 * end, and Accept negotiation. No sockets.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import {
  contentTypeOf,
  formatFromAccept,
  makeEncoder,
  makeStreamDecoder,
  STREAM_FORMATS,
  type StreamEvent,
  type StreamFormat
} from "../src/protocol/HttpStreamFormat.ts"
import { json, PayloadCodecError } from "../src/protocol/PayloadCodec.ts"
import { encodeStreamItem } from "../src/protocol/RequestMessage.ts"
import { ProtocolParseError } from "../src/protocol/ProtocolError.ts"
import { encodeFrame, encodeHeaderOnlyJson } from "../src/protocol/TwoPartCodec.ts"

const MAX = 1 << 20
const enc = new TextEncoder()
const text = (s: string): Uint8Array => enc.encode(s)

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => new Uint8Array(Buffer.concat(parts))

/** `bytes` cut at `cuts` (sorted, deduplicated offsets). */
const chunked = (bytes: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)
  const out: Array<Uint8Array> = []
  let prev = 0
  for (const p of [...points, bytes.length]) {
    out.push(bytes.slice(prev, p))
    prev = p
  }
  return out
}

interface Outcome {
  readonly items: Array<unknown>
  readonly events: Array<StreamEvent>
  readonly error: ProtocolParseError | undefined
  readonly end: ProtocolParseError | undefined
}

const run = (format: StreamFormat, chunks: ReadonlyArray<Uint8Array>, max = MAX): Outcome => {
  const decoder = makeStreamDecoder(format, { maxMessageSize: max })
  const items: Array<unknown> = []
  const events: Array<StreamEvent> = []
  let error: ProtocolParseError | undefined
  for (const chunk of chunks) {
    let itemsEvents = 0
    error = decoder.decode(chunk, (e) => {
      events.push(e)
      if (e._tag === "Items") {
        itemsEvents++
        expect(e.items.length).toBeGreaterThan(0)
        items.push(...e.items)
      }
    })
    expect(itemsEvents).toBeLessThanOrEqual(1)
    if (error !== undefined) break
  }
  return { items, events, error, end: error === undefined ? decoder.end() : undefined }
}

const stream = (format: StreamFormat, items: ReadonlyArray<unknown>, heartbeats = false): Uint8Array => {
  const e = makeEncoder(format)
  const parts: Array<Uint8Array> = []
  for (const item of items) {
    parts.push(e.item(item))
    const hb = heartbeats ? e.heartbeat() : undefined
    if (hb !== undefined) parts.push(hb)
  }
  parts.push(e.done())
  return concat(parts)
}

const normalise = (v: unknown): unknown => JSON.parse(JSON.stringify(v))
const items = fc.array(fc.jsonValue(), { maxLength: 8 })
const cuts = fc.array(fc.nat(), { maxLength: 12 })

const lastTag = (o: Outcome): string | undefined => o.events.filter((e) => e._tag !== "Items").map((e) => e._tag).join(",") || undefined

describe.each(STREAM_FORMATS)("HTTP stream format %s", (format) => {
  it("round-trips random items under random chunking, ending with Done", () => {
    fc.assert(
      fc.property(items, cuts, fc.boolean(), (values, cs, hb) => {
        const out = run(format, chunked(stream(format, values, hb), cs))
        expect(out.error).toBeUndefined()
        expect(out.end).toBeUndefined()
        expect(out.items).toEqual(values.map(normalise))
        expect(lastTag(out)).toBe("Done")
        expect(out.events[out.events.length - 1]).toEqual({ _tag: "Done" })
      }),
      { numRuns: 300 }
    )
  })

  it("round-trips items that look like end markers", () => {
    const tricky = [
      { event: "done" },
      { event: "error", tag: "X", message: "m" },
      { data: 1, complete_final: true },
      { complete_final: true },
      "event: done",
      "\n\ndata: x\r\n",
      "sentinel",
      null,
      [],
      "é☃𝄞"
    ]
    const out = run(format, chunked(stream(format, tricky), [1, 2, 3, 50, 51]))
    expect(out.error).toBeUndefined()
    expect(out.end).toBeUndefined()
    expect(out.items).toEqual(tricky)
  })

  it("reports an error event after items, byte by byte", () => {
    const e = makeEncoder(format)
    const bytes = concat([e.item({ a: 1 }), e.item("b"), e.error("Boom", "it broke\nbadly")])
    const out = run(format, chunked(bytes, Array.from({ length: bytes.length }, (_, i) => i)))
    expect(out.error).toBeUndefined()
    expect(out.end).toBeUndefined()
    expect(out.items).toEqual([{ a: 1 }, "b"])
    expect(out.events[out.events.length - 1]).toEqual({
      _tag: "Error",
      tag: format === "binary" ? "HandlerError" : "Boom",
      message: "it broke\nbadly"
    })
  })

  it("fails end() at every truncation before the end marker is complete", () => {
    fc.assert(
      fc.property(items, fc.boolean(), (values, error) => {
        const e = makeEncoder(format)
        const bytes = concat([...values.map((v) => e.item(v)), error ? e.error("T", "m") : e.done()])
        for (let cut = 0; cut < bytes.length; cut++) {
          const out = run(format, [bytes.subarray(0, cut)])
          const failure = out.error ?? out.end
          expect(failure).toBeInstanceOf(ProtocolParseError)
          expect(lastTag(out)).toBeUndefined()
        }
      }),
      { numRuns: 60 }
    )
  })

  it("never throws on random bytes, and returns errors as values", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 6 }), (chunks) => {
        const out = run(format, chunks, 256)
        for (const f of [out.error, out.end]) if (f !== undefined) expect(f).toBeInstanceOf(ProtocolParseError)
      }),
      { numRuns: 500 }
    )
  })

  it("never throws on a valid stream with random bytes spliced in", () => {
    fc.assert(
      fc.property(items, fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 16 }), (values, at, junk) => {
        const bytes = stream(format, values)
        const i = at % (bytes.length + 1)
        run(format, [bytes.subarray(0, i), junk, bytes.subarray(i)])
      }),
      { numRuns: 300 }
    )
  })

  it("refuses bytes after the end marker", () => {
    const e = makeEncoder(format)
    for (const tail of [e.item(1), e.done()]) {
      const out = run(format, [concat([e.done(), tail])])
      expect(out.error?.reason).toBe("UnexpectedMessage")
      const split = run(format, [e.done(), tail])
      expect(split.error?.reason).toBe("UnexpectedMessage")
    }
    const afterError = run(format, [concat([e.error("T", "m"), e.item(1)])])
    expect(afterError.error?.reason).toBe("UnexpectedMessage")
  })

  it("refuses an item larger than maxMessageSize before buffering it", () => {
    const e = makeEncoder(format)
    const big = "x".repeat(1000)
    const bytes = concat([e.item("small"), e.item(big), e.done()])
    const out = run(format, [bytes], 500)
    expect(out.error?.reason).toBe("MessageTooLarge")
    expect(out.items).toEqual(["small"])
    // Known from the first bytes of the oversized item: its first 600 bytes already fail.
    const first = e.item("small").length
    const early = run(format, [bytes.subarray(0, first + 600)], 500)
    expect(early.error?.reason).toBe("MessageTooLarge")
    // And the same stream passes with room to spare.
    expect(run(format, [bytes], 2000).items).toEqual(["small", big])
  })

  it("encodes a value with no JSON form by throwing PayloadCodecError", () => {
    expect(() => makeEncoder(format).item(undefined)).toThrow(PayloadCodecError)
    expect(() => makeEncoder(format).item(() => 1)).toThrow(PayloadCodecError)
  })

  it("fails end() with 'stream ended without its end marker' on an empty body", () => {
    const out = run(format, [])
    expect(out.end?.reason).toBe("MalformedFrame")
    expect(out.end?.detail).toBe("stream ended without its end marker")
  })
})

describe("SSE specifics", () => {
  const sse = (s: string, max = MAX) => run("sse", [text(s)], max)

  it("writes the documented bytes", () => {
    const e = makeEncoder("sse")
    const td = new TextDecoder()
    expect(td.decode(e.item({ a: [1, "x"] }))).toBe(`data: {"a":[1,"x"]}\n\n`)
    expect(td.decode(e.done())).toBe("event: done\ndata: {}\n\n")
    expect(td.decode(e.error("Boom", "no"))).toBe(`event: error\ndata: {"tag":"Boom","message":"no"}\n\n`)
    expect(td.decode(e.heartbeat()!)).toBe(": heartbeat\n\n")
    expect(contentTypeOf("sse")).toBe("text/event-stream")
  })

  it("accepts CRLF and CR line ends, comments, unknown fields, multi-line data and a BOM", () => {
    const out = sse("\uFEFF: hi\r\nid: 7\r\nretry: 10\r\ndata: [1,\r\ndata: 2]\r\n\r\ndata:3\r\rfoo\n\nevent: done\n\n: after\n\n")
    expect(out.error).toBeUndefined()
    expect(out.end).toBeUndefined()
    expect(out.items).toEqual([[1, 2], 3])
  })

  it("treats a CRLF split across chunks as one line end", () => {
    const out = run("sse", [text("data: 1\r"), text("\n\r"), text("\nevent: done\r\n\r\n")])
    expect(out.items).toEqual([1])
    expect(out.end).toBeUndefined()
  })

  it("does not dispatch an event cut by the end of the body", () => {
    expect(sse("data: 1\n\nevent: done\n").end?.reason).toBe("MalformedFrame")
    expect(sse("data: 1\n").items).toEqual([])
  })

  it("allows blank lines and heartbeats after the end, nothing else", () => {
    const ok = run("sse", [text("event: done\ndata: {}\n\n"), text(": heartbeat\n\n\r\n"), text(": partial")])
    expect(ok.error).toBeUndefined()
    expect(ok.end).toBeUndefined()
    expect(run("sse", [text("event: done\n\n"), text("data")]).end?.reason).toBe("UnexpectedMessage")
    expect(run("ndjson", [text(`{"event":"done"}\n`), text("\n  \r\n")]).end).toBeUndefined()
    expect(run("ndjson", [text(`{"event":"done"}\n`), text("{")]).end?.reason).toBe("UnexpectedMessage")
  })

  it("names bad data and unknown events", () => {
    expect(sse("data: nope\n\n").error?.reason).toBe("BadPayload")
    expect(sse("event: error\ndata: {}\n\n").error?.reason).toBe("BadPayload")
    expect(sse("event: other\ndata: 1\n\n").error?.reason).toBe("UnexpectedMessage")
    expect(sse("event: done\n\ndata: 1\n\n").error?.reason).toBe("UnexpectedMessage")
  })

  it("limits an event's joined data, not only its lines", () => {
    const line = `data: ${"1".repeat(60)}\n`
    expect(sse(line.repeat(3) + "\n", 100).error?.reason).toBe("MessageTooLarge")
  })
})

describe("NDJSON specifics", () => {
  const nd = (s: string) => run("ndjson", [text(s)])

  it("writes the documented bytes", () => {
    const e = makeEncoder("ndjson")
    const td = new TextDecoder()
    expect(td.decode(e.item({ event: "done" }))).toBe(`{"data":{"event":"done"}}\n`)
    expect(td.decode(e.done())).toBe(`{"event":"done"}\n`)
    expect(td.decode(e.error("Boom", "no"))).toBe(`{"event":"error","tag":"Boom","message":"no"}\n`)
    expect(e.heartbeat()).toBeUndefined()
    expect(contentTypeOf("ndjson")).toBe("application/x-ndjson")
  })

  it("accepts CRLF and blank lines; requires the last newline", () => {
    const out = nd(`{"data":1}\r\n\r\n  \n{"data":2}\r\n{"event":"done"}\r\n\n`)
    expect(out.items).toEqual([1, 2])
    expect(out.end).toBeUndefined()
    expect(nd(`{"data":1}\n{"event":"done"}`).end?.reason).toBe("MalformedFrame")
  })

  it("refuses lines of the wrong shape", () => {
    for (const line of [`1`, `{"x":1}`, `{"event":"other"}`, `{"event":"error","tag":1,"message":"m"}`, `[1]`, `nope`]) {
      expect(nd(`${line}\n`).error?.reason).toBe("BadPayload")
    }
  })
})

describe("binary specifics", () => {
  it("writes TwoPartCodec frames as the TCP call-home stream does", () => {
    const e = makeEncoder("binary")
    expect(e.item(1)).toEqual(encodeFrame(undefined, text(`{"data":1,"complete_final":false}`)))
    expect(e.item({ a: [null] })).toEqual(encodeFrame(undefined, encodeStreamItem(json, { a: [null] })))
    expect(e.done()).toEqual(concat([encodeFrame(undefined, text(`{"complete_final":true}`)), encodeHeaderOnlyJson("sentinel")]))
    expect(e.error("Boom", "no")).toEqual(encodeFrame(undefined, text(`{"complete_final":false,"error":"no"}`)))
    expect(e.heartbeat()).toBeUndefined()
    expect(contentTypeOf("binary")).toBe("application/octet-stream")
  })

  it("takes a last item with complete_final: true, then the sentinel", () => {
    const bytes = concat([encodeFrame(undefined, text(`{"data":"z","complete_final":true}`)), encodeHeaderOnlyJson("sentinel")])
    const out = run("binary", [bytes])
    expect(out.items).toEqual(["z"])
    expect(out.end).toBeUndefined()
  })

  it("refuses a sentinel before complete_final, a data frame after it, and other headers", () => {
    expect(run("binary", [encodeHeaderOnlyJson("sentinel")]).error?.reason).toBe("UnexpectedMessage")
    const complete = encodeFrame(undefined, text(`{"complete_final":true}`))
    expect(run("binary", [complete, makeEncoder("binary").item(1)]).error?.reason).toBe("UnexpectedMessage")
    expect(run("binary", [encodeHeaderOnlyJson("stop")]).error?.reason).toBe("UnexpectedMessage")
  })
})

describe("formatFromAccept", () => {
  const cases: ReadonlyArray<[string | undefined, StreamFormat | undefined]> = [
    [undefined, "ndjson"],
    ["", "ndjson"],
    ["*/*", "ndjson"],
    ["application/json", "ndjson"],
    ["text/event-stream", "sse"],
    ["TEXT/Event-Stream; charset=utf-8", "sse"],
    ["application/x-ndjson", "ndjson"],
    ["application/octet-stream", "binary"],
    ["text/html, application/octet-stream;q=0.5, text/event-stream", "binary"],
    ["text/html, */*;q=0.1", "ndjson"],
    ["application/json, text/event-stream", "ndjson"],
    ["text/event-stream;q=0, application/octet-stream", "binary"],
    ["text/html", undefined],
    ["image/png, text/plain", undefined],
    ["constructor", undefined],
    ["text/event-stream;q=0", undefined]
  ]
  it.each(cases)("%j -> %s", (accept, expected) => {
    expect(formatFromAccept(accept, "ndjson")).toBe(expected)
  })

  it("falls back to the configured format", () => {
    expect(formatFromAccept(undefined, "binary")).toBe("binary")
    expect(formatFromAccept("*/*", "sse")).toBe("sse")
  })
})
