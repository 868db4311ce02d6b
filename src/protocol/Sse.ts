/**
 * The SSE response stream format (`text/event-stream`, docs/protocol.md "HTTP response stream
 * formats"):
 *
 * ```
 * data: <item JSON>\n\n                                   one item (JSON is one line)
 * : heartbeat\n\n                                         a comment, ignored
 * event: done\ndata: {}\n\n                               the end marker
 * event: error\ndata: {"tag":"...","message":"..."}\n\n   a handler failure, the end
 * ```
 *
 * The decoder follows the event-stream parsing rules of the HTML spec: `\n`, `\r\n` or `\r` end
 * a line; lines starting with `:` and unknown fields (`id`, `retry`, ...) are ignored; several
 * `data:` lines join with `\n`; an event is dispatched at a blank line (an event cut off by the
 * end of the body is never dispatched); a leading BOM is skipped. An event other than message,
 * done or error is "UnexpectedMessage"; data that is not JSON is "BadPayload"; a line or an
 * event's data larger than `maxMessageSize` is "MessageTooLarge".
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
const DONE = textEncoder.encode("event: done\ndata: {}\n\n")
const HEARTBEAT = textEncoder.encode(": heartbeat\n\n")

/** One item's event, as text. */
const itemEvent = (value: unknown): string => `data: ${jsonText(value)}\n\n`

/** The SSE encoder. */
export const sseEncoder: StreamEncoder = {
  // One string, encoded once (small ones come from Node's Buffer slab): joining three byte
  // arrays into a new zero-filled one was 15% of a worker's busy time at 64 in flight.
  item: (value) => Buffer.from(itemEvent(value), "utf8"),
  itemText: itemEvent,
  done: () => DONE.slice(),
  error: (tag, message) => textEncoder.encode(`event: error\ndata: ${JSON.stringify({ tag, message })}\n\n`),
  heartbeat: () => HEARTBEAT.slice()
}

const isWhitespace = (text: string): boolean => text.trim() === ""

class SseDecoder implements StreamDecoder {
  private readonly maxMessageSize: number
  private readonly lines: LineReader
  private first = true
  private eventType = ""
  private data: Array<string> = []
  private dataSize = 0
  private ended = false
  private failure: ProtocolParseError | undefined = undefined
  private items: Array<unknown> = []
  private event: StreamEvent | undefined = undefined
  private readonly onLine = (line: Uint8Array): ProtocolParseError | undefined => this.line(line)

  constructor(maxMessageSize: number) {
    this.maxMessageSize = maxMessageSize
    this.lines = new LineReader(maxMessageSize, true)
  }

  decode(chunk: Uint8Array, onEvent: (event: StreamEvent) => void): ProtocolParseError | undefined {
    if (this.failure !== undefined) return this.failure
    // A chunk that starts a line, all ASCII and without `\r` (what our workers send), is read as
    // one text: its lines are slices of it, where the byte path makes a view, a decode and a
    // search per line (docs/performance.md, "Eleventh session").
    const text = this.lines.atLineStart() ? asciiText(chunk, 0, chunk.length) : undefined
    const bad = text !== undefined && !text.includes("\r")
      ? this.lines.feedText(text, chunk, this.onTextLine, this.onLine)
      : this.lines.feed(chunk, this.onLine)
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
    if (this.ended) {
      const text = utf8Text(this.lines.partial())
      if (text === undefined || !(text.startsWith(":") || isWhitespace(text))) this.failure = afterEnd("a partial line")
    } else if (this.lines.heldBytes() > 0 || this.data.length > 0 || this.eventType !== "") {
      this.failure = new ProtocolParseError("MalformedFrame", "stream ended inside an event, without its end marker")
    } else {
      this.failure = endedWithoutMarker()
    }
    return this.failure
  }

  /**
   * The line `text[start..end]` of a chunk read as text (ASCII, no `\r`) as `line` reads it, a
   * `data:` line or a blank one without a slice of the line.
   */
  private readonly onTextLine = (text: string, start: number, end: number): ProtocolParseError | undefined => {
    if (end === start && !this.ended) {
      this.first = false
      return this.dispatch()
    }
    if (!this.ended && text.startsWith("data: ", start)) {
      this.first = false
      return this.dataValue(text.slice(start + 6, end))
    }
    return this.lineText(text.slice(start, end), end - start)
  }

  private line(bytes: Uint8Array): ProtocolParseError | undefined {
    const text = utf8Text(bytes)
    if (text === undefined) return new ProtocolParseError("BadPayload", "an event-stream line is not valid UTF-8")
    return this.lineText(text, bytes.length)
  }

  /** One line, `text` (its UTF-8 `byteLength` bytes long). */
  private lineText(text: string, byteLength: number): ProtocolParseError | undefined {
    if (this.first) {
      this.first = false
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
    }
    if (this.ended) {
      return text === "" || text.startsWith(":") || isWhitespace(text) ? undefined : afterEnd(`the line ${previewText(text)}`)
    }
    if (text === "") return this.dispatch()
    if (text.charCodeAt(0) === 58 /* : */) return undefined
    const colon = text.indexOf(":")
    const field = colon === -1 ? text : text.slice(0, colon)
    let value = colon === -1 ? "" : text.slice(colon + 1)
    if (value.charCodeAt(0) === 32) value = value.slice(1)
    if (field === "data") return this.dataValue(value, byteLength - (text.length - value.length))
    if (field === "event") this.eventType = value
    return undefined
  }

  /** A `data` field's value (`valueBytes` of UTF-8; its length for ASCII), joining the event's data. */
  private dataValue(value: string, valueBytes: number = value.length): ProtocolParseError | undefined {
    this.dataSize += (this.data.length > 0 ? 1 : 0) + valueBytes
    if (this.dataSize > this.maxMessageSize) {
      return new ProtocolParseError(
        "MessageTooLarge",
        `an event's data of at least ${this.dataSize} bytes exceeds the maximum message size of ${this.maxMessageSize} bytes`
      )
    }
    this.data.push(value)
    return undefined
  }

  private dispatch(): ProtocolParseError | undefined {
    const type = this.eventType
    const data = this.data
    this.eventType = ""
    this.data = []
    this.dataSize = 0
    if (type === "done") {
      this.ended = true
      this.event = { _tag: "Done" }
      return undefined
    }
    if (type === "error") {
      const v = parseJson(data.join("\n"))
      const r = typeof v === "object" && v !== null ? v as { tag?: unknown; message?: unknown } : undefined
      if (r === undefined || typeof r.tag !== "string" || typeof r.message !== "string") {
        return new ProtocolParseError("BadPayload", `an error event's data is not {"tag","message"}: ${previewText(data.join("\n"))}`)
      }
      this.ended = true
      this.event = { _tag: "Error", tag: r.tag, message: r.message }
      return undefined
    }
    if (type !== "" && type !== "message") {
      return new ProtocolParseError("UnexpectedMessage", `unknown event type ${previewText(type)}`)
    }
    if (data.length === 0) return undefined // the spec: an event without data is not dispatched
    const text = data.length === 1 ? data[0]! : data.join("\n")
    const item = parseJson(text)
    if (item === NOT_JSON) return new ProtocolParseError("BadPayload", `an event's data is not JSON: ${previewText(text)}`)
    this.items.push(item)
    return undefined
  }
}

/** A new SSE decoder. */
export const makeSseDecoder = (maxMessageSize: number): StreamDecoder => new SseDecoder(maxMessageSize)
