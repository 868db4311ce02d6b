/**
 * The in-band texts a worker sends when a stream fails: a handler's failure, and a response item
 * it could not write. The router turns them into a `HandlerError`'s `detail`. It does not send
 * anything.
 */
import { Cause } from "effect"
import type { ResponseWriteError } from "../TransportError.ts"

/** In-band error texts are cut to this many characters, so the frame always fits. */
const MAX_ERROR_TEXT = 4096

const cut = (text: string): string =>
  text.length > MAX_ERROR_TEXT ? `${text.slice(0, MAX_ERROR_TEXT)}… (${text.length} characters)` : text

/** The text of a handler's failure: the squashed error's message. */
export const describeFailure = (cause: Cause.Cause<unknown>): string => cut(describeSquashed(cause))

/** The text of a failed write, naming the `ResponseWriteError`, its reason and detail. */
export const describeWriteFailure = (error: ResponseWriteError): string => cut(`ResponseWriteError: ${error.message}`)

const describeSquashed = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (error instanceof Error) return error.message
  if (typeof error === "string") return error
  try {
    return JSON.stringify(error)
  } catch {
    return String(error)
  }
}
