/**
 * The writer of one response stream on a pooled mux connection (response mux v1,
 * docs/protocol.md): the one-shot writer's semantics over mux frames.
 *
 * What it does: prologue → Prologue (`{"error": null}`, or `{"error": msg}`, which ends the
 * stream), items → Data frames with the same codec-encoded bodies as one-shot data frames,
 * `complete` → End, `fail` → a Data frame with the in-band error body, `close` → Reset. The
 * router's Stop/Kill reach `onControl` (queued until a receiver registers); the stream's end
 * without our finishing it (a router's Reset, the connection's death) reaches `onDisconnect`.
 * `send`/`sendAll` return a failed `WriteResult` (never throw) for an item the codec cannot
 * encode or a frame above the connection's `maxMessageSize`; `sendAll` sends the items before it.
 *
 * What it does not do: encode frames, count credit or write (its `StreamHost`, the connection,
 * does), or know about pools. Per item: one encode, one size check, one call to the host.
 */
import { Exit } from "effect"
import { encodePrologueError, PROLOGUE_OK_BYTES } from "../../../protocol/CallHome.ts"
import { MUX_HEADER_SIZE, MuxKind } from "../../../protocol/MuxCodec.ts"
import { encodeResetPayload } from "../../../protocol/MuxHandshake.ts"
import { json } from "../../../protocol/PayloadCodec.ts"
import type { PayloadCodec } from "../../../protocol/PayloadCodec.ts"
import { encodeStreamError, STREAM_ITEM_JSON_OVERHEAD } from "../../../protocol/RequestMessage.ts"
import type { ResponseWriter, WriteResult } from "../../../ResponsePlane.ts"
import { ResponseWriteError } from "../../../TransportError.ts"
import type { TransportError } from "../../../TransportError.ts"
import { Waiters } from "../../../internal/Waiters.ts"
import { encodeItem, errorWithin, itemJson, sendEach, tooLarge } from "../../../internal/writeFailure.ts"
import type { WriteTarget } from "../../../internal/writeFailure.ts"
import type { HeldFrame, WindowedStream } from "./SendWindow.ts"
import { BY_REFERENCE_BYTES, mostUtf8Bytes } from "./FrameBatcher.ts"

/** A stream's life: open, ending (its last frame queued or held for credit), done. */
export const StreamState = { Open: 0, Ending: 1, Done: 2 } as const
/** One of `StreamState`. */
export type StreamState = (typeof StreamState)[keyof typeof StreamState]

/** What a stream's writer needs of its connection. */
export interface StreamHost {
  /** The router's address, for write failures. */
  readonly where: WriteTarget
  /** Largest frame sent, header included. */
  readonly maxMessageSize: number
  /** Queues a frame of `s` (or holds it for credit). */
  enqueue(s: MuxStream, kind: MuxKind, payload: Uint8Array | undefined): void
  /**
   * Queues a Data frame of `s` whose payload is a JSON stream item body around `text` (its JSON,
   * `textBytes` long in UTF-8), encoded straight into the connection's buffer when it may go at
   * once; held for credit as bytes otherwise.
   */
  enqueueItemJson(s: MuxStream, text: string, textBytes: number): void
  /**
   * `enqueueItemJson` for a text whose UTF-8 is not measured: its most (`mostUtf8Bytes`) with
   * the wrapper is under both the maximum message size and `BY_REFERENCE_BYTES`.
   */
  enqueueItemJsonUnmeasured(s: MuxStream, text: string): void
  /** `s` has queued its last frame. */
  finish(s: MuxStream): void
  /** Aborts `s` with a Reset carrying `payload`, ahead of its held frames. */
  abort(s: MuxStream, payload: Uint8Array): void
  /** Backpressure for `s`; see `ResponseWriter.whenWritable`. */
  whenWritable(s: MuxStream, f: () => void): boolean
}

/** The Reset payload of a writer closed without `complete`. */
const RESET_CLOSED = encodeResetPayload("closed by the worker")

/** One stream's writer on a mux connection; see the module comment. */
export class MuxStream implements ResponseWriter, WindowedStream {
  state: StreamState = StreamState.Open
  credit: number
  held: Array<HeldFrame> | undefined = undefined
  /** `whenWritable` callbacks waiting for this stream's held frames to go out. */
  readonly waiters = new Waiters()
  /** The 16 stream id bytes. */
  readonly id: Uint8Array
  /** Runs once, when the stream ends (its last frame queued for the socket, or the connection gone). */
  readonly onDone: () => void
  private readonly host: StreamHost
  private readonly codec: PayloadCodec
  private controlReceiver: ((message: "stop" | "kill") => void) | undefined = undefined
  private controls: Array<"stop" | "kill"> = []
  private disconnectReceiver: ((error: TransportError) => void) | undefined = undefined
  private disconnect: TransportError | undefined = undefined

  constructor(host: StreamHost, id: Uint8Array, codec: PayloadCodec, credit: number, onDone: () => void) {
    this.host = host
    this.id = id
    this.codec = codec
    this.credit = credit
    this.onDone = onDone
  }

  prologue(error?: string): void {
    if (this.state !== StreamState.Open) return
    if (error === undefined) this.host.enqueue(this, MuxKind.Prologue, PROLOGUE_OK_BYTES)
    else {
      this.host.enqueue(this, MuxKind.Prologue, encodePrologueError(error))
      this.host.finish(this)
    }
  }

  send(item: unknown): WriteResult {
    if (this.state !== StreamState.Open) return Exit.void
    if (this.codec === json) return this.sendJson(item)
    const body = encodeItem(this.codec, item, this.host.where)
    if (body instanceof ResponseWriteError) return Exit.fail(body)
    const error = this.oversized(body)
    if (error !== undefined) return Exit.fail(error)
    this.host.enqueue(this, MuxKind.Data, body)
    return Exit.void
  }

  /** `send` in the JSON codec: the item's JSON goes straight into the connection's buffer. */
  private sendJson(item: unknown): WriteResult {
    const text = itemJson(item, this.host.where)
    if (text instanceof ResponseWriteError) return Exit.fail(text)
    // Most items are small enough that even their most UTF-8 fits: written without measuring
    // them first (callgrind: about 300 instructions less per item of 50 bytes).
    const most = STREAM_ITEM_JSON_OVERHEAD + mostUtf8Bytes(text)
    if (most < BY_REFERENCE_BYTES && MUX_HEADER_SIZE + most <= this.host.maxMessageSize) {
      this.host.enqueueItemJsonUnmeasured(this, text)
      return Exit.void
    }
    const textBytes = Buffer.byteLength(text, "utf8")
    const size = MUX_HEADER_SIZE + STREAM_ITEM_JSON_OVERHEAD + textBytes
    const max = this.host.maxMessageSize
    if (size > max) return Exit.fail(tooLarge(this.host.where, size, max))
    this.host.enqueueItemJson(this, text, textBytes)
    return Exit.void
  }

  sendAll(items: ReadonlyArray<unknown>): WriteResult {
    return sendEach(this.sendOne, items)
  }

  /** `send`, bound: what `sendAll` writes each item with. */
  private readonly sendOne = (item: unknown): WriteResult => this.send(item)


  fail(message: string): void {
    if (this.state !== StreamState.Open) return
    this.host.enqueue(this, MuxKind.Data, errorWithin((m) => encodeStreamError(this.codec, m), message, this.host.maxMessageSize - MUX_HEADER_SIZE))
    this.host.finish(this)
  }

  complete(): void {
    if (this.state !== StreamState.Open) return
    this.host.enqueue(this, MuxKind.End, undefined)
    this.host.finish(this)
  }

  close(): void {
    if (this.state !== StreamState.Open) return
    this.host.abort(this, RESET_CLOSED)
  }

  onControl(f: (message: "stop" | "kill") => void): void {
    this.controlReceiver = f
    if (this.controls.length > 0) {
      const queued = this.controls
      this.controls = []
      for (const m of queued) f(m)
    }
  }

  onDisconnect(f: (error: TransportError) => void): void {
    this.disconnectReceiver = f
    if (this.disconnect !== undefined) f(this.disconnect)
  }

  whenWritable(f: () => void): boolean {
    if (this.state !== StreamState.Open) return true
    return this.host.whenWritable(this, f)
  }

  /** A Stop or Kill from the router. */
  control(message: "stop" | "kill"): void {
    if (this.state === StreamState.Done) return
    if (this.controlReceiver !== undefined) this.controlReceiver(message)
    else this.controls.push(message)
  }

  /** The stream is over without our finishing it: reports `error()` if it was still open. */
  gone(error: () => TransportError): void {
    if (this.state === StreamState.Done) return
    const wasOpen = this.state === StreamState.Open
    this.state = StreamState.Done
    this.held = undefined
    this.waiters.wake()
    this.onDone()
    if (!wasOpen) return
    const e = error()
    this.disconnect = e
    const f = this.disconnectReceiver
    if (f !== undefined) f(e)
  }

  private oversized(body: Uint8Array): ResponseWriteError | undefined {
    const size = MUX_HEADER_SIZE + body.length
    const max = this.host.maxMessageSize
    return size > max ? tooLarge(this.host.where, size, max) : undefined
  }
}
