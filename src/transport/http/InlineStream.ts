/**
 * The router's pending stream for one response that arrives in the body of the request's own
 * HTTP/2 response (`http_inline`). `HttpResponseTransport`'s server opens it (and keeps it in
 * the hub's table by request id); the request-plane client attaches the HTTP/2 stream at the 200.
 *
 * What it does:
 * - decodes the body incrementally with the format's `StreamDecoder`, one `onItems` per chunk;
 *   the done marker → `onEnd`; an error event → `onError(HandlerError phase "stream")`; a body
 *   that ends without its end marker, or a reset/errored stream → `TransportConnectionError`
 *   "StreamEndedEarly"; bytes that do not parse → `TransportProtocolError` (and the stream is reset);
 * - `control("stop" | "kill")` and `close()` before the end reset the HTTP/2 stream (RST_STREAM,
 *   CANCEL): the worker sees its exchange close and interrupts the handler;
 * - `pause`/`resume` pause the HTTP/2 stream: it is not read, its window is not reopened, and the
 *   worker's writes wait for it.
 * - With `idle` (`DYN_STREAM_IDLE_TIMEOUT_SECS`), an attached stream is watched by the server's
 *   `InlineIdle` sweep (every chunk marks it active; its session's PING acks count too): quiet for
 *   the timeout, it fails with TransportTimeoutError "StreamIdle" and is reset (CANCEL).
 *
 * What it does not do: send the request (HttpRequestClient.ts) or time out the wait for the 200
 * (the request's ack timeout covers it).
 */
import * as http2 from "node:http2"
import type { ConnectionInfo } from "../../ConnectionInfo.ts"
import { makeStreamDecoder } from "../../protocol/HttpStreamFormat.ts"
import type { StreamEvent, StreamFormat } from "../../protocol/HttpStreamFormat.ts"
import type { PendingStream, ResponseSink } from "../../ResponsePlane.ts"
import { HandlerError, TransportConnectionError } from "../../TransportError.ts"
import { streamIdleError } from "../../internal/IdleSweep.ts"
import type { TransportError } from "../../TransportError.ts"
import { toTransportProtocolError } from "../../internal/protocolError.ts"
import { listenUntilClose } from "./ClosedStream.ts"
import { HTTP_INLINE, inlineInfo } from "./HttpInlineHub.ts"
import type { InlinePending } from "./HttpInlineHub.ts"
import type { InlineIdle, InlineWatched } from "./InlineIdle.ts"

const { NGHTTP2_CANCEL } = http2.constants

/** What one inline stream needs. */
export interface InlineStreamOptions {
  readonly requestId: string
  readonly endpoint: string
  readonly format: StreamFormat
  readonly sink: ResponseSink
  readonly maxMessageSize: number
  /** Called once when the stream is closed (removes it from the hub). */
  readonly onClose: () => void
  /** The server's inactivity sweep; absent: no idle timeout. */
  readonly idle?: InlineIdle | undefined
}

/** One inline stream: the PendingStream the router holds, and the hub entry the request client attaches. */
export const makeInlineStream = (options: InlineStreamOptions): PendingStream & InlinePending => {
  const { sink, requestId, endpoint, format } = options
  const connectionInfo: ConnectionInfo = { transport: HTTP_INLINE, info: inlineInfo(format) }
  let finished = false // the sink has heard its end, or the router gave up
  let closed = false
  let paused = false
  let stream: http2.ClientHttp2Stream | undefined
  let watched: InlineWatched | undefined

  const unwatch = () => {
    if (watched !== undefined) options.idle?.unwatch(watched)
  }
  const end = () => {
    if (finished) return
    finished = true
    unwatch()
    sink.onEnd()
  }
  const fail = (error: TransportError | HandlerError) => {
    if (finished) return
    finished = true
    unwatch()
    sink.onError(error)
  }
  const reset = () => {
    const s = stream
    if (s !== undefined && !s.closed && !s.destroyed) s.close(NGHTTP2_CANCEL)
  }
  const cancel = () => {
    if (finished) return
    finished = true
    unwatch()
    reset()
  }

  const attach = (s: http2.ClientHttp2Stream, address: string) => {
    if (finished) {
      if (!s.closed && !s.destroyed) s.close(NGHTTP2_CANCEL)
      return
    }
    stream = s
    const endedEarly = (detail: string) =>
      new TransportConnectionError({ reason: "StreamEndedEarly", transport: "http", target: address, detail })
    const decoder = makeStreamDecoder(format, { maxMessageSize: options.maxMessageSize })
    // One onItems per chunk: a decoder reports at most one Items event per chunk (a fresh array,
    // handed over as it is), before its Done or Error.
    const onEvent = (e: StreamEvent) => {
      if (finished) return
      switch (e._tag) {
        case "Items":
          return sink.onItems(e.items)
        case "Done":
          return end()
        case "Error":
          return fail(
            new HandlerError({ endpoint, requestId, detail: e.tag === "HandlerError" ? e.message : `${e.tag}: ${e.message}`, phase: "stream" })
          )
      }
    }
    const idle = options.idle
    const session = s.session
    const w: InlineWatched | undefined = idle === undefined || session === undefined ? undefined : {
      active: true,
      seenAt: 0,
      session,
      isPaused: () => paused,
      onIdle: (silentMs, idleMs) => {
        fail(streamIdleError("http", address, `request ${requestId}`, silentMs, idleMs))
        reset()
      }
    }
    const onData = (chunk: Buffer) => {
      if (finished) return
      if (w !== undefined) w.active = true
      const error = decoder.decode(chunk, onEvent)
      if (error !== undefined && !finished) {
        fail(toTransportProtocolError(error, "http", address))
        reset()
      }
    }
    const onEnd = () => {
      if (finished) return
      const error = decoder.end()
      if (finished) return
      // Whatever the decoder still missed, the body stopped short of its end marker.
      fail(endedEarly(`the response body ended before the end of the stream${error === undefined ? "" : `: ${error.detail}`}`))
    }
    const onError = (cause: Error) => fail(endedEarly(`HTTP/2 stream failed: ${cause.message}`))
    // The stream outlives this pending stream in the heap (ClosedStream.ts): it must not hold it.
    listenUntilClose(s, { data: onData, end: onEnd, error: onError }, () => {
      if (!finished) fail(endedEarly(`HTTP/2 stream closed (code ${s.rstCode ?? "none"}) before the end of the stream`))
    })
    if (paused) s.pause()
    if (w !== undefined) {
      watched = w
      idle!.watch(w)
    }
  }

  return {
    format,
    connectionInfo,
    attach,
    refuse: (detail) => fail(new HandlerError({ endpoint, requestId, detail, phase: "prologue" })),
    control: () => cancel(),
    isDone: () => finished,
    close: () => {
      if (closed) return
      closed = true
      options.onClose()
      cancel()
    },
    pause: () => {
      paused = true
      stream?.pause()
    },
    resume: () => {
      paused = false
      stream?.resume()
    }
  }
}
