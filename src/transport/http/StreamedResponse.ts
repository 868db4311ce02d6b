/**
 * Starting a streamed HTTP/2 response (the pure HTTP mode's SSE, NDJSON or binary frames) that
 * waits for trailers, and sends none: node:http2 then ends the stream with an empty DATA frame
 * carrying END_STREAM (what it sends for empty trailers), after the last write has completed.
 *
 * Why: when the client's half of the stream is already closed (its request body has ended), a
 * plain `end()` puts END_STREAM on the last data, the stream closes, and node completes that last
 * write after the stream was destroyed. Node then builds an `ERR_STREAM_DESTROYED`, stack trace
 * and all, for every response, whether or not anyone is told of it: about 36,000 of the SSE
 * worker's 260,000 instructions a response (docs/performance.md, thirteenth session). Clients
 * read the same body and see no trailers.
 */
import type * as http2 from "node:http2"

/** Sends the empty trailers. Shared and holding nothing: it stays on the closed stream. */
function sendNoTrailers(this: http2.ServerHttp2Stream): void {
  if (!this.destroyed && !this.closed) this.sendTrailers({})
}

/** `stream.respond(headers)` for a response whose body is streamed and ended later with `end()`. */
export const respondStreamed = (stream: http2.ServerHttp2Stream, headers: http2.OutgoingHttpHeaders): void => {
  stream.respond(headers, { waitForTrailers: true })
  stream.on("wantTrailers", sendNoTrailers)
}
