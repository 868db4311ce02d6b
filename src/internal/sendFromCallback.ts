/**
 * A request-plane client's `send` built from its lean `sendCallback`: the ack as an Effect whose
 * interruption runs the callback's cancel. Every wire client implements the callback form and
 * derives `send` with this, so the two can never disagree.
 */
import { Effect } from "effect"
import type { RequestPlaneClient } from "../RequestPlane.ts"
import type { EndpointNotFound, TransportError } from "../TransportError.ts"

/** `RequestPlaneClient.send` from a `sendCallback`. */
export const sendFromCallback = (
  sendCallback: NonNullable<RequestPlaneClient["sendCallback"]>
): RequestPlaneClient["send"] =>
(target, message) =>
  Effect.callback<void, TransportError | EndpointNotFound>((resume) => {
    const cancel = sendCallback(target, message, (error) => resume(error === undefined ? Effect.void : Effect.fail(error)))
    return Effect.sync(cancel)
  })
