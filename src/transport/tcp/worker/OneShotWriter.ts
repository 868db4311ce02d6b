/**
 * The `ResponseWriter` of one one-shot call-home socket (PROTOCOL.md section 3, Dynamo's
 * `TcpClient::create_response_stream`): one connected socket carries one response stream.
 *
 * What it does:
 * - Queues the handshake `{"subject", "stream_type": "response"}` at once, then writes, in order:
 *   the header-only prologue (`{"error": null}`, or `{"error": msg}` after which it ends),
 *   data-only frames `{"data", "complete_final": false}` in the request's payload codec, and
 *   then either `{"complete_final": true}` + the header-only `"sentinel"` (`complete`), our
 *   in-band `{"complete_final": false, "error"}` frame (`fail`, no sentinel), or nothing more
 *   (`close`). Then it ends its side and, once every byte has been handed to the kernel, waits
 *   at most `lingerMs` for the router to close the socket (a router that has paused reading, for
 *   a slow consumer, never loses the tail).
 * - Write batching: frames go onto a `SlabBatcher` (JSON items encoded straight into it) and leave
 *   once per tick as ONE socket write, so the handshake, prologue and every item emitted in the
 *   same tick leave in one segment. No
 *   write is awaited; writes after the socket is gone are dropped (`onDisconnect` reported it).
 * - `onControl` receives the router's `"stop"` / `"kill"` (queued until a receiver registers);
 *   `onDisconnect` fires once if the socket closes, errors or receives bytes that are not a
 *   control frame before `complete`/`fail`/`close`.
 * - `send`/`sendAll` return a failed `WriteResult` (never throw) for an item the codec cannot
 *   encode or a frame above `maxMessageSize`; `sendAll` sends the items before it, none after.
 *
 * What it does not do: connect (Dialer.ts), check the ConnectionInfo (CallHomeClient.ts), or
 * apply backpressure beyond the socket's own buffer (`whenWritable` waits for its drain).
 */
import type * as net from "node:net"
import { Exit } from "effect"
import { encodeCallHomeHandshake, encodePrologueErrorFrame, PROLOGUE_OK_FRAME, readControlFrame, SENTINEL_FRAME } from "../../../protocol/CallHome.ts"
import type { PayloadCodec } from "../../../protocol/PayloadCodec.ts"
import { isParseError } from "../../../protocol/ProtocolError.ts"
import {
  encodeStreamComplete,
  encodeStreamError,
  STREAM_ITEM_JSON_OVERHEAD,
  STREAM_ITEM_JSON_PREFIX,
  STREAM_ITEM_JSON_SUFFIX
} from "../../../protocol/RequestMessage.ts"
import { FRAME_PREFIX_SIZE, makeDecoder } from "../../../protocol/TwoPartCodec.ts"
import type { ResponseWriter } from "../../../ResponsePlane.ts"
import { ResponseWriteError, TransportConnectionError } from "../../../TransportError.ts"
import type { TransportError } from "../../../TransportError.ts"
import { toTransportProtocolError } from "../../../internal/protocolError.ts"
import type { Deadline, DeadlineList } from "../../../internal/DeadlineList.ts"
import { Waiters } from "../../../internal/Waiters.ts"
import type { FlushSchedule } from "../../../internal/WriteBatcher.ts"
import { encodeItem, errorWithin, itemJson, sendEach, tooLarge } from "../../../internal/writeFailure.ts"
import { BY_REFERENCE_BYTES, textPayload } from "./FrameBatcher.ts"
import { mostTextFrameBytes, SlabBatcher } from "./SlabBatcher.ts"
import type { WriteTarget } from "../../../internal/writeFailure.ts"

/** What every one-shot writer of a client shares. */
export interface OneShotSettings {
  /** Largest frame sent, prefix included. */
  readonly maxMessageSize: number
  /**
   * After our side has ended, how long to wait for the router's close before destroying: one
   * timer for every socket of the client (DeadlineList.ts), whose expiry destroys the socket.
   */
  readonly lingers: DeadlineList<net.Socket>
  /** When queued frames are flushed (`onNextTick`, the end of the tick, or `setImmediate`). */
  readonly schedule: FlushSchedule
  /** Called once when a writer's socket has closed (its owner stops tracking it). */
  readonly onSocketClosed: (socket: net.Socket) => void
}

/** A one-shot writer, plus what its client needs to shut it down. */
export interface OneShotWriter extends ResponseWriter {
  /** Sends the frames queued this tick now; true when the stream has finished (its socket is ending). */
  readonly flushNow: () => boolean
}

// Writer states.
const OPEN = 0 // writing
const ENDING = 1 // complete/fail/close/error-prologue called: flush, then end
const GONE = 2 // the socket closed, errored or broke the protocol

/** The writer of stream `subject` on `socket`, connected to the router at `address`. */
export const makeOneShotWriter = (
  socket: net.Socket,
  address: string,
  subject: string,
  codec: PayloadCodec,
  settings: OneShotSettings
): OneShotWriter => {
  const { lingers, maxMessageSize } = settings
  let state = OPEN
  let linger: Deadline<net.Socket> | undefined
  let controlReceiver: ((message: "stop" | "kill") => void) | undefined
  let controls: Array<"stop" | "kill"> = []
  let disconnectReceiver: ((error: TransportError) => void) | undefined
  let disconnect: TransportError | undefined

  // Frames written in one tick go out in one write; once the stream is ending, the flush
  // that sends its last frames also ends our side (destroyed after `lingerMs` at the latest).
  const writes = new SlabBatcher(
    (chunk) => {
      if (state !== GONE && !socket.destroyed) socket.write(chunk)
    },
    settings.schedule,
    () => {
      if (state === ENDING && !socket.destroyed && !socket.writableEnded) {
        socket.end()
        // The linger starts once everything is written: a router that paused reading (its
        // consumer lags) must not lose the stream's tail to our impatience.
        socket.once("finish", () => {
          if (linger === undefined && !socket.destroyed) linger = lingers.add(socket)
        })
      }
    }
  )
  const push = (frame: Uint8Array) => writes.bytes(frame)

  const where: WriteTarget = { transport: "tcp", target: address }
  const oversized = (body: Uint8Array) =>
    FRAME_PREFIX_SIZE + body.length > maxMessageSize ? tooLarge(where, FRAME_PREFIX_SIZE + body.length, maxMessageSize) : undefined
  const pushData = (body: Uint8Array) => writes.data(body)
  // JSON items are encoded straight into the batch (SlabBatcher.dataText) when their frame's most
  // bytes fit both the batch's limit and the maximum message size; the others are measured.
  const jsonItems = codec.name === "json"
  const sendJson = (item: unknown) => {
    const text = itemJson(item, where)
    if (typeof text !== "string") return Exit.fail(text)
    const most = mostTextFrameBytes(text, STREAM_ITEM_JSON_OVERHEAD)
    if (most < BY_REFERENCE_BYTES && most <= maxMessageSize) {
      writes.dataText(STREAM_ITEM_JSON_PREFIX, text, STREAM_ITEM_JSON_SUFFIX)
      return Exit.void
    }
    const body = textPayload(STREAM_ITEM_JSON_PREFIX, text, Buffer.byteLength(text), STREAM_ITEM_JSON_SUFFIX)
    const error = oversized(body)
    if (error !== undefined) return Exit.fail(error)
    pushData(body)
    return Exit.void
  }

  // Backpressure: writers waiting for the socket to drain (see `whenWritable`). The 'drain'
  // listener is added by the first wait: most streams never wait, and a listener costs each one.
  const waiters = new Waiters()
  let drainHeard = false

  const finish = () => {
    state = ENDING
    writes.requestFlush()
    waiters.wake() // nobody waits to write on a stream that is over
  }

  /** The socket is gone; reports `error()` (built only then: errors capture stacks) if the stream was open. */
  const gone = (error: () => TransportError) => {
    if (state === GONE) return
    const wasOpen = state === OPEN
    state = GONE
    writes.clear()
    waiters.wake()
    if (!wasOpen) return
    const e = error()
    disconnect = e
    const f = disconnectReceiver
    if (f !== undefined) f(e)
  }

  // Frames from the router: header-only "stop" / "kill".
  const decoder = makeDecoder({ maxMessageSize })
  const onFrame = (header: Uint8Array, body: Uint8Array) => {
    if (state === GONE) return
    const message = readControlFrame(header, body)
    if (isParseError(message)) {
      socket.destroy()
      gone(() => toTransportProtocolError(message, "tcp", address))
      return
    }
    if (controlReceiver !== undefined) controlReceiver(message)
    else controls.push(message)
  }
  socket.on("data", (chunk: Buffer) => {
    if (state === GONE) return
    const error = decoder.decode(chunk, onFrame)
    if (error !== undefined && state !== GONE) {
      socket.destroy()
      gone(() => toTransportProtocolError(error, "tcp", address))
    }
  })
  socket.on("error", (cause) => {
    gone(() => new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: address, detail: cause.message, cause }))
  })
  socket.on("close", () => {
    settings.onSocketClosed(socket)
    lingers.remove(linger)
    gone(() =>
      new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: address, detail: "the router closed the call-home connection" })
    )
  })

  // The handshake goes out with whatever is written in the same tick (usually the prologue).
  push(encodeCallHomeHandshake(subject))

  const writer: OneShotWriter = {
    prologue: (error) => {
      if (state !== OPEN) return
      if (error === undefined) push(PROLOGUE_OK_FRAME)
      else {
        push(encodePrologueErrorFrame(error))
        finish()
      }
    },
    send: (item) => {
      if (state !== OPEN) return Exit.void
      if (jsonItems) return sendJson(item)
      const body = encodeItem(codec, item, where)
      if (body instanceof ResponseWriteError) return Exit.fail(body)
      const error = oversized(body)
      if (error !== undefined) return Exit.fail(error)
      pushData(body)
      return Exit.void
    },
    sendAll: (items) => sendEach(writer.send, items),
    fail: (message) => {
      if (state !== OPEN) return
      pushData(errorWithin((m) => encodeStreamError(codec, m), message, maxMessageSize - FRAME_PREFIX_SIZE))
      finish()
    },
    complete: () => {
      if (state !== OPEN) return
      pushData(encodeStreamComplete(codec))
      push(SENTINEL_FRAME)
      finish()
    },
    close: () => {
      if (state !== OPEN) return
      finish()
    },
    onControl: (f) => {
      controlReceiver = f
      if (controls.length > 0) {
        const queued = controls
        controls = []
        for (const m of queued) f(m)
      }
    },
    onDisconnect: (f) => {
      disconnectReceiver = f
      if (disconnect !== undefined) f(disconnect)
    },
    whenWritable: (f) => {
      if (state !== OPEN || socket.destroyed) return true
      writes.flushEarly()
      if (!socket.writableNeedDrain) return true
      if (!drainHeard) {
        drainHeard = true
        socket.on("drain", () => waiters.wake())
      }
      return waiters.add(f)
    },
    flushNow: () => {
      if (writes.pending) writes.flush()
      return state === ENDING
    }
  }
  return writer
}
