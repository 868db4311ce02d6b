/**
 * Dynamo's shipped TCP request plane (PROTOCOL.md section 8; docs/protocol.md, "Dynamo's TCP
 * request plane"): the request frame a router pipelines on a plain TCP connection. The acks
 * the worker answers with, in request order, are TcpAck.ts's.
 *
 * ```
 * request (router -> worker)
 *   endpoint_path_len : u16 BE
 *   endpoint_path     : UTF-8
 *   headers_len       : u16 BE
 *   headers           : JSON object of string to string ({} when none; readers also take empty bytes)
 *   payload_len       : u32 BE
 *   payload           : the section 2 request message
 * ```
 *
 * What it does: encode the request (`encodeTcpRequestFrame`, `encodeTcpRequestHead`) and decode
 * it incrementally (`makeTcpRequestDecoder`): synchronous, any chunking, the frame size checked from its length fields before its payload is buffered, with
 * the method set of `IncrementalDecoder` (FrameAssembler.ts) so drivers treat all decoders alike.
 * `decodeTcpRequestHead` reads the head alone (the full mode's Request payload reuses it).
 *
 * What it does not do: interpret the path (TcpAddress.ts) or the payload (RequestMessage.ts),
 * I/O, timers, or Effect. No function here throws on any input bytes: errors are
 * `ProtocolParseError` values.
 *
 * Views: a payload handed to a `TcpRequestFrameHandler` aliases the caller's chunk when the
 * payload sits whole in it (zero copy), else it is the decoder's own exact-size buffer. A caller
 * that reuses its chunk buffers must copy what it keeps.
 */
import type { IncrementalDecoder } from "./FrameAssembler.ts"
import { asciiText } from "./AsciiText.ts"
import { alloc, EMPTY, putU32, u32 } from "./Bytes.ts"
import { ProtocolParseError } from "./ProtocolError.ts"
import { allocate, DecoderBase } from "./TcpDecoderBase.ts"
import type { TcpDecoderOptions } from "./TcpDecoderBase.ts"

/** The largest path or headers field: their lengths are u16. */
export const MAX_HEAD_FIELD = 65535

/** Bytes of a request frame that are not path, headers or payload: two u16 and one u32. */
export const TCP_REQUEST_OVERHEAD = 8


/** Receives each decoded request: the endpoint path, the headers, and the payload (a view; see the module comment). */
export type TcpRequestFrameHandler = (path: string, headers: Record<string, string>, payload: Uint8Array) => void

/** An incremental decoder of request frames; see `makeTcpRequestDecoder`. */
export type TcpRequestDecoder = IncrementalDecoder<TcpRequestFrameHandler>

const encoder = new TextEncoder()
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

const malformed = (detail: string): ProtocolParseError => new ProtocolParseError("MalformedFrame", detail)

const u16 = (b: Uint8Array, o: number): number => (b[o]! << 8) | b[o + 1]!

const putU16 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = v >>> 8
  b[o + 1] = v & 0xff
}

const EMPTY_HEADERS = encoder.encode("{}")

/**
 * Headers as JSON, `{}` when there are none: Dynamo's framed decoder (`TcpRequestCodec`) parses
 * the field with serde and refuses empty bytes, so writers never send them (readers accept them).
 */
const headersBytes = (headers: Readonly<Record<string, string>>): Uint8Array => {
  // Buffer.from: small results come from Node's shared pool (TextEncoder allocates an array of its own).
  for (const _ in headers) return Buffer.from(JSON.stringify(headers), "utf8")
  return EMPTY_HEADERS
}

/** The last path encoded, and its bytes (a router sends many requests to one endpoint path). */
let lastPath = ""
let lastPathBytes: Uint8Array = EMPTY

const pathBytes = (path: string): Uint8Array => {
  if (path !== lastPath) {
    lastPathBytes = Buffer.from(path, "utf8")
    lastPath = path
  }
  return lastPathBytes
}

const encodeHeadParts = (
  path: string,
  headers: Readonly<Record<string, string>>,
  extra: number
): { out: Uint8Array; o: number } | ProtocolParseError => {
  if (path.length === 0) return malformed("a request frame needs a non-empty endpoint path")
  const p = pathBytes(path)
  if (p.length > MAX_HEAD_FIELD) {
    return new ProtocolParseError("MessageTooLarge", `endpoint path of ${p.length} bytes exceeds the u16 limit of ${MAX_HEAD_FIELD}`)
  }
  const h = headersBytes(headers)
  if (h.length > MAX_HEAD_FIELD) {
    return new ProtocolParseError("MessageTooLarge", `request headers of ${h.length} bytes exceed the u16 limit of ${MAX_HEAD_FIELD}`)
  }
  const out = alloc(4 + p.length + h.length + extra)
  putU16(out, 0, p.length)
  out.set(p, 2)
  putU16(out, 2 + p.length, h.length)
  out.set(h, 4 + p.length)
  return { out, o: 4 + p.length + h.length }
}

/**
 * The head of a request frame: u16 path_len, path (UTF-8), u16 headers_len, headers (JSON, `{}`
 * for none). "MessageTooLarge" when the path or the headers exceed 65535 bytes; "MalformedFrame"
 * for an empty path (a zero path length is the full mode's hello, and Dynamo's worker refuses it).
 */
export const encodeTcpRequestHead = (
  path: string,
  headers: Readonly<Record<string, string>>
): Uint8Array | ProtocolParseError => {
  const r = encodeHeadParts(path, headers, 0)
  return r instanceof ProtocolParseError ? r : r.out
}

/** A whole request frame: the head, u32 payload_len, the payload. Errors as `encodeTcpRequestHead`. */
export const encodeTcpRequestFrame = (
  path: string,
  headers: Readonly<Record<string, string>>,
  payload: Uint8Array
): Uint8Array | ProtocolParseError => {
  const r = encodeHeadParts(path, headers, 4 + payload.length)
  if (r instanceof ProtocolParseError) return r
  putU32(r.out, r.o, payload.length)
  r.out.set(payload, r.o + 4)
  return r.out
}

/** Decodes a path field (strict UTF-8; never empty: a zero path length is the full mode's hello, not a request). */
const decodePath = (b: Uint8Array, start: number, end: number): string | ProtocolParseError => {
  if (start === end) return malformed("request frame with an empty endpoint path")
  try {
    return asciiText(b, start, end) ?? strictUtf8.decode(b.subarray(start, end))
  } catch {
    return malformed("request endpoint path is not valid UTF-8")
  }
}

/** Decodes a headers field: empty = {}, else a JSON object whose values are all strings. */
const decodeHeaders = (b: Uint8Array, start: number, end: number): Record<string, string> | ProtocolParseError => {
  if (start === end) return {}
  // "{}", what a request without headers carries: no text to decode and parse.
  if (end - start === 2 && b[start] === 0x7b && b[start + 1] === 0x7d) return {}
  let value: unknown
  try {
    value = JSON.parse(asciiText(b, start, end) ?? strictUtf8.decode(b.subarray(start, end)))
  } catch {
    return malformed("request headers are not valid UTF-8 JSON")
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return malformed("request headers are not a JSON object")
  }
  const rec = value as Record<string, unknown>
  for (const k in rec) {
    if (typeof rec[k] !== "string") return malformed(`request header ${JSON.stringify(k)} is not a string`)
  }
  return rec as Record<string, string>
}

/**
 * Decodes the head at `bytes[offset..]`: the path, the headers, and `end`, the offset just after
 * the headers. Truncation is "MalformedFrame" (this reads a complete buffer; the incremental
 * decoder is `makeTcpRequestDecoder`).
 */
export const decodeTcpRequestHead = (
  bytes: Uint8Array,
  offset: number
): { path: string; headers: Record<string, string>; end: number } | ProtocolParseError => {
  if (offset < 0 || bytes.length - offset < 2) return malformed("truncated request head: no path length")
  const pathLen = u16(bytes, offset)
  const pathEnd = offset + 2 + pathLen
  if (bytes.length < pathEnd + 2) return malformed(`truncated request head: path of ${pathLen} bytes`)
  const headersLen = u16(bytes, pathEnd)
  const end = pathEnd + 2 + headersLen
  if (bytes.length < end) return malformed(`truncated request head: headers of ${headersLen} bytes`)
  const path = decodePath(bytes, offset + 2, pathEnd)
  if (typeof path !== "string") return path
  const headers = decodeHeaders(bytes, pathEnd + 2, end)
  if (headers instanceof ProtocolParseError) return headers
  return { path, headers, end }
}

// ---------------------------------------------------------------------------------------------
// The incremental decoder

/**
 * What a head scan found at `b[o..o+n]`: `need` = the head bytes known to be needed so far (more
 * than `n` means wait), or the three lengths once the head (with payload_len) is whole.
 */
type HeadScan =
  | { readonly done: false; readonly need: number }
  | { readonly done: true; readonly pathLen: number; readonly headersLen: number; readonly headLen: number; readonly payloadLen: number }

const tooLarge = (size: number, max: number, what: string): ProtocolParseError =>
  new ProtocolParseError("MessageTooLarge", `TCP request frame of ${what}${size} bytes exceeds the maximum message size of ${max} bytes`)

/** Scans the head, refusing a frame as soon as its known lengths exceed `max`. */
const scanHead = (b: Uint8Array, o: number, n: number, max: number): HeadScan | ProtocolParseError => {
  if (n < 2) return { done: false, need: 2 }
  const pathLen = u16(b, o)
  if (pathLen === 0) return malformed("request frame with an empty endpoint path")
  if (TCP_REQUEST_OVERHEAD + pathLen > max) return tooLarge(TCP_REQUEST_OVERHEAD + pathLen, max, "at least ")
  const h = 2 + pathLen
  if (n < h + 2) return { done: false, need: h + 2 }
  const headersLen = u16(b, o + h)
  if (TCP_REQUEST_OVERHEAD + pathLen + headersLen > max) {
    return tooLarge(TCP_REQUEST_OVERHEAD + pathLen + headersLen, max, "at least ")
  }
  const headLen = h + 2 + headersLen + 4
  if (n < headLen) return { done: false, need: headLen }
  const payloadLen = u32(b, o + headLen - 4)
  if (headLen + payloadLen > max) return tooLarge(headLen + payloadLen, max, "")
  return { done: true, pathLen, headersLen, headLen, payloadLen }
}

class RequestDecoder extends DecoderBase implements TcpRequestDecoder {
  private readonly max: number
  /** The head being accumulated (when it spans chunks), grown to each known need. */
  private head: Uint8Array = EMPTY
  private headFill = 0
  /** Once the head is whole and its payload spans chunks: the decoded head and the payload buffer. */
  private path = ""
  private headers: Record<string, string> = {}
  private headLen = 0
  private payload: Uint8Array | undefined = undefined
  private payloadFill = 0

  constructor(options: TcpDecoderOptions) {
    super()
    this.max = options.maxMessageSize
  }

  protected release(): void {
    this.head = EMPTY
    this.headFill = 0
    this.payload = undefined
    this.payloadFill = 0
  }

  decode(chunk: Uint8Array, handler: TcpRequestFrameHandler): ProtocolParseError | undefined {
    if (this.error !== undefined) return this.error
    if (this.stopped) return undefined
    const len = chunk.length
    let off = 0
    while (off < len) {
      const payload = this.payload
      if (payload !== undefined) {
        const n = Math.min(payload.length - this.payloadFill, len - off)
        payload.set(chunk.subarray(off, off + n), this.payloadFill)
        this.payloadFill += n
        off += n
        if (this.payloadFill < payload.length) break
        this.payload = undefined
        this.payloadFill = 0
        this.decoded += this.headLen + payload.length
        handler(this.path, this.headers, payload)
        if (this.stopped) return this.stopAt(off)
        continue
      }
      if (this.headFill === 0) {
        // Fast path: the head (and perhaps the whole frame) read where it lies.
        const scan = scanHead(chunk, off, len - off, this.max)
        if (scan instanceof ProtocolParseError) return this.fail(scan)
        if (scan.done) {
          const path = decodePath(chunk, off + 2, off + 2 + scan.pathLen)
          if (typeof path !== "string") return this.fail(path)
          const hs = off + 4 + scan.pathLen
          const headers = decodeHeaders(chunk, hs, hs + scan.headersLen)
          if (headers instanceof ProtocolParseError) return this.fail(headers)
          off += scan.headLen
          if (len - off >= scan.payloadLen) {
            this.decoded += scan.headLen + scan.payloadLen
            const p = scan.payloadLen === 0 ? EMPTY : chunk.subarray(off, off + scan.payloadLen)
            off += scan.payloadLen
            handler(path, headers, p)
            if (this.stopped) return this.stopAt(off)
            continue
          }
          const started = this.startPayload(path, headers, scan.headLen, scan.payloadLen)
          if (started !== undefined) return this.fail(started)
          continue
        }
        // The head spans chunks: keep what there is of it.
        const grown = this.growHead(scan.need)
        if (grown !== undefined) return this.fail(grown)
        this.head.set(chunk.subarray(off, len), 0)
        this.headFill = len - off
        off = len
        break
      }
      // Continue a head that spans chunks, one known need at a time.
      let scan: HeadScan | ProtocolParseError
      for (;;) {
        scan = scanHead(this.head, 0, this.headFill, this.max)
        if (scan instanceof ProtocolParseError) return this.fail(scan)
        if (scan.done || off === len) break
        const grown = this.growHead(scan.need)
        if (grown !== undefined) return this.fail(grown)
        const n = Math.min(scan.need - this.headFill, len - off)
        this.head.set(chunk.subarray(off, off + n), this.headFill)
        this.headFill += n
        off += n
      }
      if (!scan.done) break
      const head = this.head
      const path = decodePath(head, 2, 2 + scan.pathLen)
      if (typeof path !== "string") return this.fail(path)
      const headers = decodeHeaders(head, 4 + scan.pathLen, 4 + scan.pathLen + scan.headersLen)
      if (headers instanceof ProtocolParseError) return this.fail(headers)
      this.head = EMPTY
      this.headFill = 0
      if (len - off >= scan.payloadLen) {
        this.decoded += scan.headLen + scan.payloadLen
        const p = scan.payloadLen === 0 ? EMPTY : chunk.subarray(off, off + scan.payloadLen)
        off += scan.payloadLen
        handler(path, headers, p)
        if (this.stopped) return this.stopAt(off)
        continue
      }
      const started = this.startPayload(path, headers, scan.headLen, scan.payloadLen)
      if (started !== undefined) return this.fail(started)
    }
    return undefined
  }

  private growHead(need: number): ProtocolParseError | undefined {
    if (this.head.length >= need) return undefined
    const next = allocate(need, this.max)
    if (next instanceof ProtocolParseError) return next
    next.set(this.head.subarray(0, this.headFill), 0)
    this.head = next
    return undefined
  }

  private startPayload(path: string, headers: Record<string, string>, headLen: number, payloadLen: number): ProtocolParseError | undefined {
    const buf = allocate(payloadLen, this.max)
    if (buf instanceof ProtocolParseError) return buf
    this.path = path
    this.headers = headers
    this.headLen = headLen
    this.payload = buf
    this.payloadFill = 0
    return undefined
  }

  bufferedBytes(): number {
    return this.payload === undefined ? this.headFill : this.headLen + this.payloadFill
  }

  isIdle(): boolean {
    return this.payload === undefined && this.headFill === 0
  }
}

/**
 * A new incremental decoder of Dynamo request frames. A frame above `maxMessageSize` (all its
 * bytes) is "MessageTooLarge", refused from its length fields before its payload is buffered; an
 * empty path, a path or headers that are not UTF-8, or headers that are not a JSON object of
 * strings are "MalformedFrame". After an error the decoder is dead.
 */
export const makeTcpRequestDecoder = (options: TcpDecoderOptions): TcpRequestDecoder => new RequestDecoder(options)
