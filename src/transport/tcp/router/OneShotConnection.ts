/**
 * The router's end of a one-shot call-home connection (docs/protocol.md section 4): one socket, one
 * stream, TwoPartCodec frames.
 *
 * What it does: once the listener has read the handshake and the stream has been claimed, it
 * takes over the socket's events, decodes every chunk synchronously in the 'data' handler and
 * turns each frame into an event of the stream's state machine: a header-only prologue, data-only
 * bodies (an empty frame carries nothing), the `"sentinel"` header; anything else is
 * "UnexpectedMessage", and framing errors fail the stream. The stream's items are flushed once
 * per chunk. As the stream's `StreamLink` it writes stop/kill frames, pauses and resumes reading,
 * destroys the socket when the stream is over, and on `close()` before the end lets queued
 * control frames drain (within `CLOSE_DRAIN_MS`) before destroying it. The socket's close is
 * the stream's `disconnected`. Dynamo's one-shot protocol has no heartbeat: only the stream's own
 * frames count against the idle timeout (`heardAt` is undefined).
 *
 * What it does not do: read the handshake or pick the stream (CallHomeListener and
 * CallHomeServer do), or decide what a frame means for the stream (CallHomeStream does).
 */
import type * as net from "node:net"
import { controlFrame, isSentinel, preview } from "../../../protocol/CallHome.ts"
import { ChunkText } from "../../../protocol/ChunkText.ts"
import { makeDecoder } from "../../../protocol/TwoPartCodec.ts"
import type { FrameDecoder } from "../../../protocol/TwoPartCodec.ts"
import { Phase } from "./StreamLink.ts"
import type { CallHomeStream } from "./CallHomeStream.ts"
import type { StreamLink } from "./StreamLink.ts"
import { hostPort } from "../../../internal/net.ts"
import { onNextTurn } from "../../../internal/SharedTurn.ts"

/** How long `close()` lets queued control frames drain before destroying the socket. */
export const CLOSE_DRAIN_MS = 1000

// The chunk being decoded, as text for its items (`jsonStreamItemIn`): one for every connection,
// since a chunk is decoded whole, synchronously, before any other socket's data is read.
const chunkText = new ChunkText()

/** One accepted one-shot socket carrying one claimed stream; see the module comment. */
export class OneShotConnection implements StreamLink {
  /** A one-shot stream ends with the `"sentinel"` frame after complete_final. */
  readonly awaitsSentinel = true
  private readonly socket: net.Socket
  private readonly stream: CallHomeStream
  private readonly decoder: FrameDecoder
  private lastError: Error | undefined = undefined
  private keptAlive = false

  /** A driver for `socket`, whose handshake claimed `stream`; frames up to `maxMessageSize`. */
  constructor(socket: net.Socket, stream: CallHomeStream, maxMessageSize: number) {
    this.socket = socket
    this.stream = stream
    this.decoder = makeDecoder({ maxMessageSize })
  }

  /** Takes over the socket's events and decodes `rest` (the bytes that followed the handshake in its chunk). */
  start(rest: Uint8Array): void {
    const socket = this.socket
    socket.on("data", this.onData)
    socket.on("error", (error) => {
      this.lastError = error
    })
    socket.on("close", () => this.stream.disconnected(this.lastError))
    if (rest.length > 0) this.onData(rest)
  }

  /** Writes a stop or kill frame. */
  control(message: "stop" | "kill"): void {
    if (!this.socket.destroyed) this.socket.write(controlFrame(message))
  }

  /** Stops reading the socket. */
  pause(): void {
    this.socket.pause()
  }

  /** Reads the socket again. */
  resume(): void {
    if (!this.socket.destroyed) this.socket.resume()
  }

  /** The worker's "host:port" (read when asked: only an idle timeout names it). */
  get peer(): string {
    return hostPort(this.socket.remoteAddress ?? "?", this.socket.remotePort ?? 0)
  }

  /** Turns TCP keepalive on (once; later calls, or calls on a closed socket, do nothing). */
  keepAlive(delayMs: number): void {
    if (this.keptAlive || this.socket.destroyed) return
    this.keptAlive = true
    this.socket.setKeepAlive(true, delayMs)
  }

  /** Dynamo's one-shot call-home has no heartbeat: only the stream's own frames count. */
  heardAt(_now: number): number | undefined {
    return undefined
  }

  /** Nothing to do: the stream is flushed after every chunk. */
  batchStarted(): void {}

  /**
   * Destroys the socket (a one-shot worker hears any end as the socket closing), in the next
   * event-loop turn (`onNextTurn`, one `setImmediate` for every socket released in this one): the
   * stream is over already (later bytes are dropped). Why: destroyed at once, from the 'data'
   * callback that read the stream's end, the socket's `close` system call (the FIN and the
   * kernel's teardown) ran before the write of the request that end let the caller make (batched
   * to the end of the tick, or node:http2's own send after I/O), so it lay on the next call's path.
   */
  release(_reset: string | undefined): void {
    onNextTurn(this.destroy)
  }

  private readonly destroy = (): void => {
    this.socket.destroy()
  }

  /** Ends the socket, letting a just-written stop/kill reach the worker within a bound. */
  cancel(): void {
    const socket = this.socket
    if (socket.writableLength > 0) {
      socket.end()
      setTimeout(() => socket.destroy(), CLOSE_DRAIN_MS).unref?.()
    } else socket.destroy()
  }

  private readonly onData = (chunk: Uint8Array): void => {
    chunkText.reading(chunk)
    const error = this.decoder.decode(chunk, this.onFrame)
    chunkText.release()
    this.stream.flush()
    if (error !== undefined) this.stream.malformed(error)
  }

  private readonly onFrame = (header: Uint8Array, body: Uint8Array): void => {
    const stream = this.stream
    switch (stream.phase) {
      case Phase.Streaming:
        if (header.length === 0) {
          // A data-only frame's body begins where its rest does.
          if (body.length > 0) stream.data(body, chunkText, this.decoder.restOffset())
          return
        }
        // The only control frame a worker sends is the sentinel, and only after complete_final.
        if (body.length === 0 && isSentinel(header)) return stream.sentinel()
        return stream.unexpected(`unexpected control frame ${preview(header)} in a response stream`)
      case Phase.Prologue:
        if (header.length === 0 || body.length > 0) return stream.unexpected("expected a header-only prologue frame")
        return stream.prologue(header)
      case Phase.Sentinel:
        // Normally the sentinel; anything else after complete_final is ignored. Either way the
        // stream is whole and the router closes the socket.
        if (header.length > 0 && body.length === 0 && isSentinel(header)) return stream.sentinel()
        return stream.strayAfterEnd()
      default:
        return // Closed: the rest of the chunk is dropped
    }
  }
}
