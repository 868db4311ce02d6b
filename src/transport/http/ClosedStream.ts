/**
 * Letting go of a node:http2 stream's listeners once it has closed.
 *
 * Why: a closed HTTP/2 stream stays reachable across young-generation garbage collections until
 * a full collection, and so does everything its listeners reach (its native handle outlives the
 * stream until V8 frees it). The router's listeners reach the call: its state, the pending
 * stream, the decoder. Left attached, every finished call was copied and promoted by each
 * scavenge: 13-20% of the router's young generation survived, and a bare node:http2 client with
 * the same listeners ran 18% slower than one that detaches them (docs/performance.md, fifth
 * session). A stream emits nothing after `close`, but an `error` emitted with no listener would
 * throw, so one shared no-op listener stays.
 */
import type { EventEmitter } from "node:events"

/**
 * The `error` listener left on a stream whose own listeners were let go, and one to add where a
 * stream's errors are reported some other way. Defined here, not per stream: a closure made per
 * exchange would hold the exchange's variables.
 */
export const ignoreError = (): void => {}

/**
 * Removes `listener` from `stream` for `event`; when the stream has no `error` listener left,
 * adds the shared no-op one. Call it for each listener of a closed stream.
 */
export const letGo = (stream: EventEmitter, event: string, listener: (...args: Array<never>) => void): void => {
  stream.removeListener(event, listener as (...args: Array<unknown>) => void)
  if (event === "error" && stream.listenerCount("error") === 0) stream.on("error", ignoreError)
}

/**
 * Adds each of `listeners` (by event) to `stream` until it closes; at `close`, after `onClose`
 * (when given), lets go of all of them and of its own `close` listener (`letGo`).
 */
export const listenUntilClose = (
  stream: EventEmitter,
  listeners: Readonly<Record<string, (...args: Array<never>) => void>>,
  onClose?: () => void
): void => {
  const close = () => {
    onClose?.()
    for (const event in listeners) letGo(stream, event, listeners[event]!)
    letGo(stream, "close", close)
  }
  for (const event in listeners) stream.on(event, listeners[event] as (...args: Array<unknown>) => void)
  stream.on("close", close)
}
