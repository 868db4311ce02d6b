/**
 * The NDJSON response stream format (`application/x-ndjson`, docs/protocol.md "HTTP response
 * stream formats"): one JSON object per `\n`-terminated line.
 *
 * ```
 * {"data":<item>}\n                                  one item, wrapped so that any item is unambiguous
 * {"event":"done"}\n                                 the end marker
 * {"event":"error","tag":"...","message":"..."}\n    a handler failure, the end
 * ```
 *
 * The decoder accepts `\r\n`, skips blank (whitespace-only) lines, and requires the last line's
 * `\n` (a body cut inside a line is a partial line). A line that is not JSON, or is JSON but none
 * of the three shapes, is "BadPayload"; a line longer than `maxMessageSize` is
 * "MessageTooLarge"; a non-blank line after the end is "UnexpectedMessage".
 *
 * Does not: throw on any input bytes, use Effect, or do I/O.
 */
import { asciiText } from "./AsciiText.ts"
import { jsonText } from "./PayloadCodec.ts"
import { ProtocolParseError } from "./ProtocolError.ts"
import {
  afterEnd,
  endedWithoutMarker,
  flushItems,
  LineReader,
  NOT_JSON,
  parseJson,
  previewText,
  type StreamDecoder,
  type StreamEncoder,
  type StreamEvent,
  utf8Text
} from "./HttpStreamEvent.ts"

const textEncoder = new TextEncoder()
const DONE = textEncoder.encode(`{"event":"done"}\n`)

/** One item's line, as text. */
const itemLine = (value: unknown): string => `{"data":${jsonText(value)}}\n`

/** The NDJSON encoder. */
export const ndjsonEncoder: StreamEncoder = {
  // One string, encoded once (as the SSE encoder does).
  item: (value) => Buffer.from(itemLine(value), "utf8"),
  itemText: itemLine,
  done: () => DONE.slice(),
  error: (tag, message) => textEncoder.encode(`${JSON.stringify({ event: "error", tag, message })}\n`),
  heartbeat: () => undefined
}

const isBlank = (bytes: Uint8Array): boolean => {
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]
    if (b !== 32 && b !== 9 && b !== 13 && b !== 10) return false
  }
  return true
}

/** `isBlank` of a line's text: only spaces, tabs and CRs (a CR stays in an NDJSON line). */
const isBlankText = (text: string): boolean => {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c !== 32 && c !== 9 && c !== 13) return false
  }
  return true
}

const hasOwn = (o: object, key: string): boolean => Object.prototype.hasOwnProperty.call(o, key)

class NdjsonDecoder implements StreamDecoder {
  private readonly lines: LineReader
  private ended = false
  private failure: ProtocolParseError | undefined = undefined
  private items: Array<unknown> = []
  private event: StreamEvent | undefined = undefined
  private readonly onLine = (line: Uint8Array): ProtocolParseError | undefined => this.line(line)

  /** Read an ASCII chunk that starts a line as one text (`makeNdjsonDecoder`). */
  private readonly textPath: boolean

  constructor(maxMessageSize: number, textPath: boolean) {
    this.lines = new LineReader(maxMessageSize, false)
    this.textPath = textPath
  }

  decode(chunk: Uint8Array, onEvent: (event: StreamEvent) => void): ProtocolParseError | undefined {
    if (this.failure !== undefined) return this.failure
    // A chunk that starts a line and is all ASCII (what our workers send) is read as one text:
    // its lines are slices of it, as in the SSE decoder (docs/performance.md, "Eleventh session").
    const text = this.textPath && this.lines.atLineStart() ? asciiText(chunk, 0, chunk.length) : undefined
    const bad = text !== undefined ? this.lines.feedText(text, chunk, this.onTextLine, this.onLine) : this.lines.feed(chunk, this.onLine)
    if (bad !== undefined) this.failure = bad
    const items = this.items
    const event = this.event
    if (items.length > 0) this.items = []
    this.event = undefined
    flushItems(items, onEvent)
    if (event !== undefined) onEvent(event)
    return bad
  }

  end(): ProtocolParseError | undefined {
    if (this.failure !== undefined) return this.failure
    const partial = this.lines.heldBytes() > 0 && !isBlank(this.lines.partial())
    if (this.ended) {
      if (partial) this.failure = afterEnd("a partial line")
    } else {
      this.failure = partial
        ? new ProtocolParseError("MalformedFrame", "stream ended inside a line, without its end marker")
        : endedWithoutMarker()
    }
    return this.failure
  }

  /** The line `text[start..end]` of a chunk read as text (ASCII) as `line` reads it. */
  private readonly onTextLine = (text: string, start: number, end: number): ProtocolParseError | undefined => {
    const line = text.slice(start, end)
    return isBlankText(line) ? undefined : this.lineText(line)
  }

  private line(bytes: Uint8Array): ProtocolParseError | undefined {
    if (isBlank(bytes)) return undefined
    const text = utf8Text(bytes)
    if (text === undefined) return new ProtocolParseError("BadPayload", "an NDJSON line is not valid UTF-8")
    return this.lineText(text)
  }

  /** One line that is not blank, `text`. */
  private lineText(text: string): ProtocolParseError | undefined {
    if (this.ended) return afterEnd(`the line ${previewText(text)}`)
    const v = parseJson(text)
    if (v === NOT_JSON) return new ProtocolParseError("BadPayload", `an NDJSON line is not JSON: ${previewText(text)}`)
    if (typeof v === "object" && v !== null && !Array.isArray(v)) {
      const r = v as { data?: unknown; event?: unknown; tag?: unknown; message?: unknown }
      if (hasOwn(r, "data") && !hasOwn(r, "event")) {
        this.items.push(r.data)
        return undefined
      }
      if (r.event === "done") {
        this.ended = true
        this.event = { _tag: "Done" }
        return undefined
      }
      if (r.event === "error" && typeof r.tag === "string" && typeof r.message === "string") {
        this.ended = true
        this.event = { _tag: "Error", tag: r.tag, message: r.message }
        return undefined
      }
    }
    return new ProtocolParseError(
      "BadPayload",
      `an NDJSON line is none of {"data"}, {"event":"done"}, {"event":"error","tag","message"}: ${previewText(text)}`
    )
  }
}

/**
 * A new NDJSON decoder. `textPath` false reads every chunk as bytes, line by line (tests compare
 * the two paths); the default reads an ASCII chunk that starts a line as one text.
 */
export const makeNdjsonDecoder = (maxMessageSize: number, textPath = true): StreamDecoder => new NdjsonDecoder(maxMessageSize, textPath)
