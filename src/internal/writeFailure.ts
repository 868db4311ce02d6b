/**
 * Shared by the worker-side writers of the wire transports: encode response items without
 * throwing, and turn a failure into the `ResponseWriteError` that `ResponseWriter.send` returns.
 *
 * It does not frame or write anything; the writers do.
 */
import { Exit } from "effect"
import type { PayloadCodec } from "../protocol/PayloadCodec.ts"
import { encodeStreamItem, streamItemJson } from "../protocol/RequestMessage.ts"
import type { WriteResult } from "../ResponsePlane.ts"
import type { TransportId } from "../Transport.ts"
import { ResponseWriteError } from "../TransportError.ts"

/** Where a writer writes, for the error it returns. */
export interface WriteTarget {
  readonly transport: TransportId
  readonly target: string
}

/** An item's encoding threw `cause`: the write's failure. */
export const encodeFailed = (where: WriteTarget, cause: unknown): ResponseWriteError =>
  new ResponseWriteError({
    reason: "EncodeFailed",
    transport: where.transport,
    target: where.target,
    detail: cause instanceof Error ? cause.message : String(cause),
    cause
  })

/** The encoded body of one item, or why it has none. */
export const encodeItem = (codec: PayloadCodec, item: unknown, where: WriteTarget): Uint8Array | ResponseWriteError => {
  try {
    return encodeStreamItem(codec, item)
  } catch (cause) {
    return encodeFailed(where, cause)
  }
}

/** The JSON of one item for a JSON stream item body (`streamItemJson`), or why it has none. */
export const itemJson = (item: unknown, where: WriteTarget): string | ResponseWriteError => {
  try {
    return streamItemJson(item)
  } catch (cause) {
    return encodeFailed(where, cause)
  }
}

/** The failure of a frame of `size` bytes above `maxMessageSize`. */
export const tooLarge = (where: WriteTarget, size: number, maxMessageSize: number): ResponseWriteError =>
  new ResponseWriteError({
    reason: "MessageTooLarge",
    transport: where.transport,
    target: where.target,
    detail: `a ${size}-byte frame exceeds the maximum message size of ${maxMessageSize} bytes`
  })

/**
 * `sendAll` in terms of `send`: the items in order, stopping at the first that cannot be written
 * (the items before it are sent, none after it), whose failure it returns.
 */
export const sendEach = (send: (item: unknown) => WriteResult, items: ReadonlyArray<unknown>): WriteResult => {
  for (let i = 0; i < items.length; i++) {
    const r = send(items[i])
    if (r !== Exit.void) return r
  }
  return Exit.void
}

/** What replaces a handler's error text that does not fit in one frame: the stream still fails. */
export const ERROR_TEXT_TOO_LARGE = "handler failed; its error text exceeds the maximum message size"

/** `encode(message)`, or `encode(ERROR_TEXT_TOO_LARGE)` when that is more than `maxBytes`. */
export const errorWithin = (encode: (message: string) => Uint8Array, message: string, maxBytes: number): Uint8Array => {
  const body = encode(message)
  return body.length <= maxBytes ? body : encode(ERROR_TEXT_TOO_LARGE)
}
