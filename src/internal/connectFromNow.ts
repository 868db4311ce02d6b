/**
 * A response-plane client's `connect` built from a `connectNow` that always answers (a writer or
 * the typed error, never undefined): the planes whose connect never waits (the in-memory one, the
 * http one) implement the synchronous form and derive `connect` with this, so the two can never
 * disagree.
 */
import { Effect } from "effect"
import type { ConnectOptions, ResponsePlaneClient, ResponseWriter } from "../ResponsePlane.ts"
import type { TransportError } from "../TransportError.ts"

/** `ResponsePlaneClient.connect` from a `connectNow` that never says undefined. */
export const connectFromNow = (
  connectNow: (options: ConnectOptions) => ResponseWriter | TransportError
): ResponsePlaneClient["connect"] =>
(options) =>
  Effect.suspend(() => {
    const now = connectNow(options)
    // A TransportError is an Error; a writer is a plain object.
    return now instanceof Error ? Effect.fail(now) : Effect.succeed(now)
  })
