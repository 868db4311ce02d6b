/**
 * The worker's `ResponseWriter` for one response that streams in the request's own HTTP
 * response (`http_inline`), over an `InlineExchange` (HTTP/2 stream or HTTP/1.1 chunked response).
 *
 * What it does:
 * - `prologue()` sends 200 with the format's content type; `prologue(error)` sends 422 with the
 *   JSON body `{ error, tag: "HandlerError", phase: "prologue" }` and ends.
 * - Items are encoded by the format's `StreamEncoder` and queued on a `WriteBatcher`: everything
 *   written in one tick leaves in one write (a text format's items of a tick joined as one text,
 *   encoded once). `complete` adds the done marker, `fail` the error
 *   event (tag "HandlerError"), then the response ends after that flush. `close` resets it.
 * - `onDisconnect` fires once when the exchange closes before the writer ended it (the router
 *   reset the stream, or the connection died); nothing is written after it.
 * - `whenWritable` follows the exchange's `writableNeedDrain` / 'drain' (the HTTP/2 window: a
 *   router that pauses the stream holds the handler back).
 * - SSE only: a heartbeat comment every `heartbeatMs` while idle (unref'd timer, cleared at the end).
 * - `stallTimeoutMs`: a reader that takes nothing while the stream is held back (the HTTP/2 window
 *   full, the router gone silent without closing) for that long has its stream reset, and
 *   `onDisconnect` fires with a TransportTimeoutError "StreamIdle", so the handler is interrupted.
 *   One timer per stall, armed when the stream is first found held back, cleared by 'drain'.
 * Writes never throw: an item with no JSON encoding, or above `maxMessageSize`, returns a failed
 * `WriteResult`.
 *
 * What it does not do: take the exchange (the response-plane client does) or stop/kill messages:
 * the router cancels by resetting the stream, which is `onDisconnect`.
 */
import { Exit } from "effect"
import { contentTypeOf, makeEncoder } from "../../protocol/HttpStreamFormat.ts"
import type { ResponseWriter } from "../../ResponsePlane.ts"
import { ResponseWriteError, TransportConnectionError, TransportTimeoutError } from "../../TransportError.ts"
import type { TransportError } from "../../TransportError.ts"
import { Waiters } from "../../internal/Waiters.ts"
import { FLUSH_EARLY_BYTES, WriteBatcher } from "../../internal/WriteBatcher.ts"
import type { FlushSchedule } from "../../internal/WriteBatcher.ts"
import { encodeFailed, errorWithin, sendEach, tooLarge } from "../../internal/writeFailure.ts"
import type { WriteTarget } from "../../internal/writeFailure.ts"
import type { InlineExchange } from "./HttpInlineHub.ts"

/** Options of a writer. */
export interface InlineWriterOptions {
  readonly maxMessageSize: number
  /** SSE heartbeat period while idle, in ms (default 15 s). */
  readonly heartbeatMs?: number | undefined
  readonly schedule?: FlushSchedule | undefined
  /** A held-back stream whose reader takes nothing for this long is reset (0 or absent: never). */
  readonly stallTimeoutMs?: number | undefined
}

/** The default SSE heartbeat period. */
export const HEARTBEAT_MS = 15_000

// Writer states.
const OPEN = 0
const ENDING = 1 // complete/fail: flush, then end
const OVER = 2 // ended, reset, refused or gone

/** The writer of `exchange`. */
export const makeInlineWriter = (exchange: InlineExchange, options: InlineWriterOptions): ResponseWriter => {
  const { maxMessageSize } = options
  const encoder = makeEncoder(exchange.format)
  const where: WriteTarget = { transport: "http", target: exchange.target }
  let state = OPEN
  let started = false
  let wroteSinceBeat = false
  let disconnectReceiver: ((error: TransportError) => void) | undefined
  let disconnect: TransportError | undefined
  let heartbeat: ReturnType<typeof setInterval> | undefined

  // A text format's items of one tick are joined as text and encoded once, when the tick's bytes
  // are flushed or before any other bytes are queued after them: a `Buffer` per item and their
  // join cost more (docs/performance.md, "Eleventh session").
  let text = ""
  const takeText = () => {
    if (text === "") return
    const t = text
    text = ""
    writes.push(Buffer.from(t, "utf8"))
  }
  const writes = new WriteBatcher(
    (chunk) => {
      if (state !== OVER) exchange.write(chunk)
    },
    options.schedule,
    () => {
      if (state === ENDING) {
        state = OVER
        exchange.end()
      }
    },
    takeText
  )
  const waiters = new Waiters()
  let stall: ReturnType<typeof setTimeout> | undefined
  const stallMs = options.stallTimeoutMs ?? 0
  const clearStall = () => {
    if (stall !== undefined) clearTimeout(stall)
    stall = undefined
  }
  exchange.onDrain(() => {
    clearStall()
    waiters.wake()
  })
  /** Arms the stall timer when the stream is held back and none is armed. */
  const watchStall = () => {
    if (stallMs <= 0 || stall !== undefined || state === OVER || !exchange.needsDrain()) return
    stall = setTimeout(() => {
      stall = undefined
      if (state === OVER || !exchange.needsDrain()) return
      const e = new TransportTimeoutError({
        reason: "StreamIdle",
        transport: "http",
        target: exchange.target,
        detail: `the reader took nothing for ${stallMs / 1000} s while the stream was held back; stream reset`
      })
      shutDown()
      exchange.reset()
      disconnected(e)
    }, stallMs)
    stall.unref?.()
  }

  const stopHeartbeat = () => {
    if (heartbeat !== undefined) clearInterval(heartbeat)
    heartbeat = undefined
  }

  /** Over: nothing more is written, timers stop, and whoever waits for the window is woken. */
  const shutDown = () => {
    state = OVER
    clearStall()
    stopHeartbeat()
    text = ""
    writes.clear()
    waiters.wake()
  }

  /** Reports why the stream ended early to `onDisconnect` (now, or when it is registered). */
  const disconnected = (e: TransportError) => {
    disconnect = e
    disconnectReceiver?.(e)
  }

  const start = () => {
    if (started) return
    started = true
    exchange.respond(200, contentTypeOf(exchange.format))
    const period = options.heartbeatMs ?? HEARTBEAT_MS
    if (encoder.heartbeat() !== undefined && period > 0) {
      heartbeat = setInterval(() => {
        if (state !== OPEN) return stopHeartbeat()
        if (wroteSinceBeat) {
          wroteSinceBeat = false
          return
        }
        const beat = encoder.heartbeat()
        if (beat !== undefined) {
          takeText()
          writes.push(beat)
        }
      }, period)
      heartbeat.unref?.()
    }
  }

  const finish = () => {
    state = ENDING
    stopHeartbeat()
    writes.requestFlush()
    waiters.wake()
  }

  exchange.onClose((detail) => {
    const wasOpen = state === OPEN || state === ENDING
    shutDown()
    if (!wasOpen) return
    disconnected(new TransportConnectionError({ reason: "ConnectionClosed", transport: "http", target: exchange.target, detail }))
  })

  const push = (bytes: Uint8Array) => {
    wroteSinceBeat = true
    takeText()
    writes.push(bytes)
  }
  const itemText = encoder.itemText
  /** An item's text, or why it cannot be sent. */
  const textOf = (item: unknown): string | ResponseWriteError => {
    let t: string
    try {
      t = itemText!(item)
    } catch (cause) {
      return encodeFailed(where, cause)
    }
    // Its UTF-8 is at most 3 bytes a UTF-16 unit: measured only when that could pass the maximum.
    if (3 * t.length > maxMessageSize) {
      const size = Buffer.byteLength(t, "utf8")
      if (size > maxMessageSize) return tooLarge(where, size, maxMessageSize)
    }
    return t
  }

  const writer: ResponseWriter = {
    prologue: (error) => {
      if (state !== OPEN || started) return
      if (error === undefined) return start()
      started = true
      state = OVER
      stopHeartbeat()
      exchange.respond(422, "application/json", JSON.stringify({ error, tag: "HandlerError", phase: "prologue" }))
    },
    send: (item) => {
      if (state !== OPEN) return Exit.void
      if (itemText !== undefined) {
        const t = textOf(item)
        if (typeof t !== "string") return Exit.fail(t)
        start()
        wroteSinceBeat = true
        text += t
        writes.requestFlush()
        if (text.length >= FLUSH_EARLY_BYTES) {
          takeText()
          writes.flushEarly()
        }
        watchStall()
        return Exit.void
      }
      let bytes: Uint8Array
      try {
        bytes = encoder.item(item)
      } catch (cause) {
        return Exit.fail(encodeFailed(where, cause))
      }
      if (bytes.length > maxMessageSize) return Exit.fail(tooLarge(where, bytes.length, maxMessageSize))
      start()
      push(bytes)
      writes.flushEarly()
      watchStall()
      return Exit.void
    },
    sendAll: (items) => sendEach(writer.send, items),
    fail: (message) => {
      if (state !== OPEN) return
      start()
      push(errorWithin((m) => encoder.error("HandlerError", m), message, maxMessageSize))
      finish()
    },
    complete: () => {
      if (state !== OPEN) return
      start()
      push(encoder.done())
      finish()
    },
    close: () => {
      if (state === OVER) return
      shutDown()
      exchange.reset()
    },
    onControl: () => {
      // The router cancels by resetting the HTTP stream: that is `onDisconnect`.
    },
    onDisconnect: (f) => {
      disconnectReceiver = f
      if (disconnect !== undefined) f(disconnect)
    },
    whenWritable: (f) => {
      if (state !== OPEN || !exchange.needsDrain()) return true
      watchStall()
      return waiters.add(f)
    }
  }
  return writer
}
