/**
 * The framing of the raw TCP baselines (rawTcp.ts): the least a TCP transport must do for one
 * request and its streamed items, with node:net only.
 *
 * - A mux frame has the 24-byte header of the compact mux framing (PROTOCOL.md section 7:
 *   u32 payload_len, u8 kind, u8 flags, u16 reserved, 16-byte stream id), so the baselines move
 *   the same bytes as the project's TCP modes; the stream id is a u32 counter in the first 4 bytes
 *   of the 16 (no UUID to make or parse). Kinds used: REQUEST (router->worker), DATA and END.
 * - A Dynamo request frame (PROTOCOL.md section 8): u16 path_len, path, u16 headers_len, headers
 *   JSON, u32 payload_len, payload; the ack is u32 len + len bytes (empty = accepted).
 * It does not do flow control, errors, heartbeats or anything else of a real transport.
 */
import { itemJson, paced } from "./paced.ts"

/** Size of a mux frame's header. */
export const HEADER = 24
/** A request (router -> worker), its body JSON `{ n, size }`. */
export const KIND_REQUEST = 9
/** One response item, its body JSON `{ data: { index, token } }`. */
export const KIND_DATA = 2
/** The end of a response stream (no body). */
export const KIND_END = 3

/** Appends one mux frame to `parts`. */
export const pushFrame = (parts: Array<Buffer>, kind: number, id: number, body?: Buffer): void => {
  const header = Buffer.alloc(HEADER)
  header.writeUInt32BE(body === undefined ? 0 : body.length, 0)
  header[4] = kind
  header.writeUInt32BE(id, 8)
  parts.push(header)
  if (body !== undefined) parts.push(body)
}

/** One mux frame as a buffer. */
export const muxFrame = (kind: number, id: number, body?: Buffer): Buffer => {
  const parts: Array<Buffer> = []
  pushFrame(parts, kind, id, body)
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts)
}

/** Sends the `n` items (`size` bytes of token each) + END of stream `id` through `write`, paced by `delayMs`. */
export const sendResponse = (id: number, n: number, size: number, delayMs: number, write: (chunk: Buffer, last: boolean) => void): void => {
  const token = "x".repeat(size)
  paced(n, delayMs, (i) => muxFrame(KIND_DATA, id, Buffer.from(`{"data":${itemJson(i, token)}}`)), () => muxFrame(KIND_END, id), write)
}

/**
 * An incremental reader of length-delimited frames: `frameLength(buf)` gives the whole frame's
 * length once enough of its header is in `buf` (or -1), and `onFrame` gets each whole frame.
 * Chunks are joined only when a frame spans them.
 */
export const frameReader = (frameLength: (buf: Buffer) => number, onFrame: (frame: Buffer) => void) => {
  let pending: Buffer | undefined
  return (chunk: Buffer): void => {
    let buf = pending === undefined ? chunk : Buffer.concat([pending, chunk])
    pending = undefined
    let off = 0
    while (true) {
      const len = frameLength(off === 0 ? buf : buf.subarray(off))
      if (len < 0 || buf.length - off < len) break
      onFrame(buf.subarray(off, off + len))
      off += len
    }
    if (off < buf.length) pending = Buffer.from(buf.subarray(off))
  }
}

/** `frameLength` of a mux frame. */
export const muxLength = (buf: Buffer): number => (buf.length < HEADER ? -1 : HEADER + buf.readUInt32BE(0))

/** `frameLength` of a Dynamo request frame. */
export const dynamoRequestLength = (buf: Buffer): number => {
  if (buf.length < 2) return -1
  const pathEnd = 2 + buf.readUInt16BE(0)
  if (buf.length < pathEnd + 2) return -1
  const headersEnd = pathEnd + 2 + buf.readUInt16BE(pathEnd)
  if (buf.length < headersEnd + 4) return -1
  return headersEnd + 4 + buf.readUInt32BE(headersEnd)
}

/** `frameLength` of a Dynamo ack. */
export const ackLength = (buf: Buffer): number => (buf.length < 4 ? -1 : 4 + buf.readUInt32BE(0))

/** A Dynamo request frame. */
export const dynamoRequest = (path: string, headers: Record<string, string>, payload: Buffer): Buffer => {
  const p = Buffer.from(path)
  const h = Buffer.from(JSON.stringify(headers))
  const out = Buffer.allocUnsafe(2 + p.length + 2 + h.length + 4 + payload.length)
  let off = out.writeUInt16BE(p.length, 0)
  off += p.copy(out, off)
  off = out.writeUInt16BE(h.length, off)
  off += h.copy(out, off)
  off = out.writeUInt32BE(payload.length, off)
  payload.copy(out, off)
  return out
}

/** The parts of a whole Dynamo request frame. */
export const parseDynamoRequest = (frame: Buffer): { path: string; headers: Record<string, string>; payload: Buffer } => {
  const pathEnd = 2 + frame.readUInt16BE(0)
  const headersEnd = pathEnd + 2 + frame.readUInt16BE(pathEnd)
  return {
    path: frame.toString("utf8", 2, pathEnd),
    headers: JSON.parse(frame.toString("utf8", pathEnd + 2, headersEnd)) as Record<string, string>,
    payload: frame.subarray(headersEnd + 4)
  }
}
