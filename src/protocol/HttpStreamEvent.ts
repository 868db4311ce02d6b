/**
 * What the three response stream formats of the pure HTTP mode share (docs/protocol.md, "HTTP
 * response stream formats"): the encoder and decoder shapes, the events a decoder reports, and
 * the incremental line reader of the two text formats (SSE, NDJSON).
 *
 * What it does: split chunks of any size into lines (`\n`, `\r\n`, and for SSE a lone `\r`),
 * copying only lines that span chunks, and refuse a line longer than `maxMessageSize` as soon as
 * that many bytes are held (never buffering beyond it).
 *
 * What it does not do: interpret lines (Sse.ts, Ndjson.ts do), throw on any input bytes, use
 * Effect, or do I/O. The public surface is re-exported by HttpStreamFormat.ts.
 */
import { ProtocolParseError } from "./ProtocolError.ts"

/** Bytes for one stream, in one format. */
export interface StreamEncoder {
  /** One item. Throws the codec's `PayloadCodecError` for a value with no JSON encoding. */
  readonly item: (value: unknown) => Uint8Array
  /**
   * Text formats only: one item as text, whose UTF-8 is exactly `item(value)`, for writers that
   * join a tick's items into one text and encode it once. Throws as `item` does.
   */
  readonly itemText?: ((value: unknown) => string) | undefined
  /** The end marker. */
  readonly done: () => Uint8Array
  /** A handler failure. */
  readonly error: (tag: string, message: string) => Uint8Array
  /** A keep-alive the client ignores, or undefined when the format has none. */
  readonly heartbeat: () => Uint8Array | undefined
}

/** What a decoder reports; at most one `Items` per `decode` call, then at most one Done or Error. */
export type StreamEvent =
  | { readonly _tag: "Items"; readonly items: ReadonlyArray<unknown> }
  | { readonly _tag: "Done" }
  | { readonly _tag: "Error"; readonly tag: string; readonly message: string }

/** An incremental decoder of one response stream. Never throws on input bytes. */
export interface StreamDecoder {
  /**
   * Feeds one chunk. Reports the items it completes (one `Items` event), then Done or Error if
   * the chunk holds it. Returns the first parse error, after which every call returns it.
   */
  decode(chunk: Uint8Array, onEvent: (event: StreamEvent) => void): ProtocolParseError | undefined
  /** The body ended: undefined after Done or Error, else why the stream is incomplete. */
  end(): ProtocolParseError | undefined
}

/** The parse error of a body that ended before its end marker. */
export const endedWithoutMarker = (): ProtocolParseError =>
  new ProtocolParseError("MalformedFrame", "stream ended without its end marker")

/** The parse error of bytes after the end marker or an error. */
export const afterEnd = (what: string): ProtocolParseError =>
  new ProtocolParseError("UnexpectedMessage", `${what} after the end of the stream`)

/** Calls `onEvent` with the items collected, if any. */
export const flushItems = (items: Array<unknown>, onEvent: (event: StreamEvent) => void): void => {
  if (items.length > 0) onEvent({ _tag: "Items", items })
}

const utf8 = new TextDecoder("utf-8", { fatal: true })

/** `bytes` as UTF-8 text, or undefined when they are not valid UTF-8. */
export const utf8Text = (bytes: Uint8Array): string | undefined => {
  try {
    return utf8.decode(bytes)
  } catch {
    return undefined
  }
}

/** Parses JSON text; `NOT_JSON` when it is not JSON. */
export const NOT_JSON: unique symbol = Symbol("NOT_JSON")
export const parseJson = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return NOT_JSON
  }
}

/** Up to 64 characters of `text` as a JSON string, for error details. */
export const previewText = (text: string): string => JSON.stringify(text.length > 64 ? `${text.slice(0, 64)}...` : text)

/** `a ‖ b ‖ c` in one new array. */
export const concatBytes = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  let n = 0
  for (const p of parts) n += p.length
  const out = new Uint8Array(n)
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}

const LF = 10
const CR = 13

/**
 * Splits chunks into lines (terminator excluded). `\n` and `\r\n` end a line; so does a lone
 * `\r` when `crEndsLine` (SSE). A `\r\n` split across chunks is one line end.
 */
export class LineReader {
  private readonly maxLineSize: number
  private readonly crEndsLine: boolean
  private parts: Array<Uint8Array> = []
  private held = 0
  /** The last chunk ended with a `\r` that ended a line: skip a `\n` that starts the next. */
  private skipLf = false

  constructor(maxLineSize: number, crEndsLine: boolean) {
    this.maxLineSize = maxLineSize
    this.crEndsLine = crEndsLine
  }

  /** Bytes of a partial line held. */
  heldBytes(): number {
    return this.held
  }

  /** True when the next chunk starts a line: no partial line is held, and no `\n` is to be skipped. */
  atLineStart(): boolean {
    return this.held === 0 && !this.skipLf
  }

  /**
   * `feed` for a chunk read as one text, `text` (ASCII: one char a byte), when `atLineStart()`:
   * `onTextLine(text, start, end)` gets each line that ends in `\n` (the `\n` excluded; a `\r`
   * before it is the caller's to judge), and the rest (a last line without its `\n`, or a line
   * past the maximum) is fed as bytes to `onLine`. Stops at the first error either returns.
   */
  feedText(
    text: string,
    chunk: Uint8Array,
    onTextLine: (text: string, start: number, end: number) => ProtocolParseError | undefined,
    onLine: (line: Uint8Array) => ProtocolParseError | undefined
  ): ProtocolParseError | undefined {
    const n = text.length
    let off = 0
    while (off < n) {
      const eol = text.indexOf("\n", off)
      if (eol === -1 || eol - off > this.maxLineSize) return this.feed(chunk.subarray(off), onLine)
      const bad = onTextLine(text, off, eol)
      if (bad !== undefined) return bad
      off = eol + 1
    }
    return undefined
  }

  /** The partial line held (a copy), for `end()` checks. */
  partial(): Uint8Array {
    return concatBytes(...this.parts)
  }

  /**
   * Calls `onLine` for every line completed by `chunk`, in order; stops at the first error
   * `onLine` returns, or at a line longer than the maximum ("MessageTooLarge").
   */
  feed(chunk: Uint8Array, onLine: (line: Uint8Array) => ProtocolParseError | undefined): ProtocolParseError | undefined {
    let off = 0
    const len = chunk.length
    if (this.skipLf && len > 0) {
      this.skipLf = false
      if (chunk[0] === LF) off = 1
    }
    while (off < len) {
      let eol = chunk.indexOf(LF, off)
      if (this.crEndsLine) {
        const cr = chunk.indexOf(CR, off)
        if (cr !== -1 && (eol === -1 || cr < eol)) eol = cr
      }
      if (eol === -1) {
        if (this.held + len - off > this.maxLineSize) return this.tooLarge(this.held + len - off)
        this.parts.push(chunk.slice(off))
        this.held += len - off
        return undefined
      }
      // NDJSON keeps the "\r" of a "\r\n": JSON whitespace, which its parser skips.
      const end = eol
      if (this.held + end - off > this.maxLineSize) return this.tooLarge(this.held + end - off)
      let line: Uint8Array
      if (this.held === 0) {
        line = chunk.subarray(off, end)
      } else {
        this.parts.push(chunk.subarray(off, end))
        line = concatBytes(...this.parts)
        this.parts = []
        this.held = 0
      }
      off = eol + 1
      if (chunk[eol] === CR) {
        if (off < len) {
          if (chunk[off] === LF) off++
        } else {
          this.skipLf = true
        }
      }
      const bad = onLine(line)
      if (bad !== undefined) return bad
    }
    return undefined
  }

  private tooLarge(size: number): ProtocolParseError {
    return new ProtocolParseError(
      "MessageTooLarge",
      `a line of at least ${size} bytes exceeds the maximum message size of ${this.maxLineSize} bytes`
    )
  }
}
