/**
 * One response stream of the HTTP response server: its `ResponseWriter` and its attach.
 *
 * What it does:
 * - Before the client attaches, written items are held, encoded in the configured format to
 *   check them and count their size. Past `maxHeldBytes` `whenWritable` reports not-writable
 *   until the client attaches (or the stream is over); `send` keeps holding what it is given
 *   (it never fails for this). Past 16 x `maxHeldBytes` the stream is dropped: `onDisconnect`
 *   fires with a `TransportConnectionError` (SendFailed). On attach, what is held is flushed
 *   in one write, re-encoded when the client asked for another format.
 * - The stream waits at most `timeoutMs` for its client; then `onDisconnect` fires with a
 *   `TransportTimeoutError` (StreamTimeout).
 * - A client that goes away before the stream ends fires `onDisconnect` (ConnectionClosed),
 *   and later writes are dropped; so does `shutdown` (the server closing).
 * - Frames of one tick leave in one write (`WriteBatcher`); `whenWritable` waits for the
 *   response's drain. An SSE stream idle for `heartbeatMs` gets a heartbeat comment.
 * - It calls `onGone` once the stream is over (ended, timed out, disconnected or dropped).
 *
 * What it does not do: route requests, answer other statuses than 409 for a stream that is
 * over, choose the format from the Accept header, or keep the table of subjects: the server
 * (`HttpResponseServer`) does.
 */
import { Exit } from "effect"
import { contentTypeOf, makeEncoder } from "../../protocol/HttpStreamFormat.ts"
import type { StreamEncoder, StreamFormat } from "../../protocol/HttpStreamFormat.ts"
import type { ResponseWriter } from "../../ResponsePlane.ts"
import type { TransportError } from "../../TransportError.ts"
import { ResponseWriteError, TransportConnectionError, TransportTimeoutError } from "../../TransportError.ts"
import { Waiters } from "../../internal/Waiters.ts"
import { WriteBatcher } from "../../internal/WriteBatcher.ts"
import { errorWithin, sendEach, tooLarge } from "../../internal/writeFailure.ts"
import type { WriteTarget } from "../../internal/writeFailure.ts"
import { onNextTick } from "../../internal/SharedTick.ts"

/** The response side of one exchange, whichever HTTP version carries it. */
export interface ResponseExchange {
  readonly method: string | undefined
  readonly path: string
  readonly accept: string | undefined
  readonly reply: (status: number, json: Record<string, unknown>, headers?: Record<string, string>) => void
  readonly start: (contentType: string) => void
  /** Writes; false when the response's buffer is past its mark (then "drain" follows). */
  readonly write: (chunk: Uint8Array) => boolean
  readonly end: () => void
  readonly destroy: () => void
  readonly onClose: (f: () => void) => void
  readonly onDrain: (f: () => void) => void
}

/** What one stream needs from its server. */
export interface ResponseStreamOptions {
  readonly subject: string
  readonly url: string
  /** How long the stream waits for its client. */
  readonly timeoutMs: number
  /** The server's configured format (held items are encoded in it). */
  readonly streamFormat: StreamFormat
  /** The encoder of `streamFormat`, shared by the server's streams. */
  readonly defaultEncoder: StreamEncoder
  readonly maxMessageSize: number
  readonly maxHeldBytes: number
  /** 0 for no heartbeat. */
  readonly heartbeatMs: number
  /** Called once when the stream is over: the server forgets it. */
  readonly onGone: () => void
}

/** A stream: the handler's writer, and the server's handles on it. */
export interface ResponseStream {
  readonly writer: ResponseWriter
  /** Gives the stream its client, in `format` (409 when the stream is already over). */
  readonly attach: (exchange: ResponseExchange, format: StreamFormat) => void
  /** Destroys the response and reports ConnectionClosed: the server is closing. */
  readonly shutdown: () => void
}

type Held =
  | { readonly _tag: "Item"; readonly value: unknown; readonly bytes: Uint8Array }
  | { readonly _tag: "Done" }
  | { readonly _tag: "Error"; readonly tag: string; readonly message: string }

// Stream states.
const PENDING = 0 // no client yet: writes are held
const ATTACHED = 1 // a client reads
const GONE = 2 // ended, timed out, disconnected or dropped

/** Past this many times `maxHeldBytes` held before attach, the stream is dropped. */
const HARD_FACTOR = 16

/** Opens one stream; its timeout starts now. */
export const openResponseStream = (options: ResponseStreamOptions): ResponseStream => {
  const { heartbeatMs, maxHeldBytes, maxMessageSize, subject, timeoutMs, url } = options
  const where: WriteTarget = { transport: "http", target: url }
  let state = PENDING
  let ending = false // complete/fail/close/error-prologue called
  let held: Array<Held> = []
  let heldBytes = 0
  let exchange: ResponseExchange | undefined
  let encoder: StreamEncoder = options.defaultEncoder
  let sameFormat = true
  let needDrain = false
  let wroteSinceBeat = false
  let heartbeat: ReturnType<typeof setInterval> | undefined
  let disconnectReceiver: ((error: TransportError) => void) | undefined
  let disconnect: TransportError | undefined
  const waiters = new Waiters()

  const writes = new WriteBatcher(
    (chunk) => {
      if (state === ATTACHED && exchange !== undefined) {
        wroteSinceBeat = true
        if (!exchange.write(chunk)) needDrain = true
      }
    },
    onNextTick,
    () => {
      if (ending && state === ATTACHED) {
        state = GONE
        cleanup()
        exchange!.end()
      }
    }
  )

  const cleanup = () => {
    clearTimeout(timer)
    clearInterval(heartbeat)
    options.onGone()
    waiters.wake()
  }

  /** The stream is over before its end: reports `error` (if it was still being written). */
  const gone = (error: () => TransportError) => {
    if (state === GONE) return
    state = GONE
    held = []
    writes.clear()
    cleanup()
    if (ending) return
    const e = error()
    disconnect = e
    disconnectReceiver?.(e)
  }

  const timer = setTimeout(() =>
    gone(() =>
      new TransportTimeoutError({
        reason: "StreamTimeout",
        transport: "http",
        target: url,
        detail: `no client attached within ${timeoutMs} ms`
      })
    ), timeoutMs)
  timer.unref?.()

  const encode = (item: unknown): Uint8Array | ResponseWriteError => {
    let bytes: Uint8Array
    try {
      bytes = encoder.item(item)
    } catch (cause) {
      return new ResponseWriteError({
        reason: "EncodeFailed",
        transport: "http",
        target: url,
        detail: cause instanceof Error ? cause.message : String(cause),
        cause
      })
    }
    return bytes.length > maxMessageSize ? tooLarge(where, bytes.length, maxMessageSize) : bytes
  }

  const terminal = (event: Exclude<Held, { _tag: "Item" }>) => {
    ending = true
    if (state === PENDING) held.push(event)
    else if (state === ATTACHED) writes.push(event._tag === "Error" ? errorWithin((m) => encoder.error(event.tag, m), event.message, maxMessageSize) : encoder.done())
    waiters.wake()
  }

  const attach = (x: ResponseExchange, format: StreamFormat) => {
    if (state !== PENDING) return x.reply(409, { error: "the response stream is over", subject })
    clearTimeout(timer)
    state = ATTACHED
    exchange = x
    if (format !== options.streamFormat) {
      encoder = makeEncoder(format)
      sameFormat = false
    }
    x.onClose(() =>
      gone(() =>
        new TransportConnectionError({
          reason: "ConnectionClosed",
          transport: "http",
          target: url,
          detail: "the client closed the response stream"
        })
      )
    )
    x.onDrain(() => {
      needDrain = false
      waiters.wake()
    })
    x.start(contentTypeOf(format))
    const pending = held
    held = []
    heldBytes = 0
    for (const h of pending) {
      if (h._tag === "Item") {
        const bytes = sameFormat ? h.bytes : encode(h.value)
        if (bytes instanceof ResponseWriteError) {
          // A held item the client's format cannot carry: the stream ends here with an error
          // event, and its writer hears that it is over (nothing more is written after the end).
          writes.push(errorWithin((m) => encoder.error("stream", m), bytes.message, maxMessageSize))
          const error = new TransportConnectionError({
            reason: "SendFailed",
            transport: "http",
            target: url,
            detail: `a held item could not be re-encoded for the client's format: ${bytes.message}`
          })
          const wasEnding = ending
          ending = true
          if (!wasEnding) {
            disconnect = error
            disconnectReceiver?.(error)
          }
          break
        }
        writes.push(bytes)
      } else if (h._tag === "Done") writes.push(encoder.done())
      else writes.push(errorWithin((m) => encoder.error(h.tag, m), h.message, maxMessageSize))
    }
    writes.requestFlush()
    waiters.wake()
    if (heartbeatMs > 0 && encoder.heartbeat() !== undefined) {
      heartbeat = setInterval(() => {
        if (state !== ATTACHED) return
        if (!wroteSinceBeat) {
          const beat = encoder.heartbeat()
          if (beat !== undefined) writes.push(beat)
        }
        wroteSinceBeat = false
      }, heartbeatMs)
      heartbeat.unref?.()
    }
  }

  const shutdown = () => {
    exchange?.destroy()
    gone(() =>
      new TransportConnectionError({
        reason: "ConnectionClosed",
        transport: "http",
        target: url,
        detail: "the HTTP response server closed"
      })
    )
  }

  const writer: ResponseWriter = {
    prologue: (error) => {
      if (state === GONE || ending || error === undefined) return
      terminal({ _tag: "Error", tag: "prologue", message: error })
    },
    send: (item) => {
      if (state === GONE || ending) return Exit.void
      const bytes = encode(item)
      if (bytes instanceof ResponseWriteError) return Exit.fail(bytes)
      if (state === ATTACHED) {
        writes.push(bytes)
        return Exit.void
      }
      held.push({ _tag: "Item", value: item, bytes })
      heldBytes += bytes.length
      if (heldBytes > maxHeldBytes * HARD_FACTOR) {
        gone(() =>
          new TransportConnectionError({
            reason: "SendFailed",
            transport: "http",
            target: url,
            detail: `more than ${maxHeldBytes * HARD_FACTOR} bytes written before a client attached`
          })
        )
      }
      return Exit.void
    },
    sendAll: (items) => sendEach(writer.send, items),
    fail: (message) => {
      if (state === GONE || ending) return
      terminal({ _tag: "Error", tag: "stream", message })
    },
    complete: () => {
      if (state === GONE || ending) return
      terminal({ _tag: "Done" })
    },
    close: () => {
      if (state === GONE || ending) return
      // Ends without the end marker: a reader fails with StreamEndedEarly.
      if (state === PENDING) {
        state = GONE
        ending = true
        held = []
        cleanup()
      } else {
        ending = true
        writes.requestFlush()
        waiters.wake()
      }
    },
    onControl: () => {},
    onDisconnect: (f) => {
      disconnectReceiver = f
      if (disconnect !== undefined) f(disconnect)
    },
    whenWritable: (f) => {
      if (state === GONE || ending) return true
      if (state === PENDING) return heldBytes <= maxHeldBytes || waiters.add(f)
      writes.flushEarly()
      return !needDrain || waiters.add(f)
    }
  }
  return { writer, attach, shutdown }
}
