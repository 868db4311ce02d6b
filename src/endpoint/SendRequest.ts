/**
 * Sends a request on the request plane in its lean form: the transport's `sendCallback` when it
 * has one, otherwise its `send` Effect run on a fiber of the client's runtime (so the logger,
 * tracer and services of the context the client was built in carry over, and the fiber ends with
 * the client's scope). It does not wait for anything: the ack arrives through `onAck`.
 */
import { Cause, Effect, Exit, Result } from "effect"
import type { Fiber } from "effect"
import type { RequestMessage, RequestPlaneClient, RequestTarget } from "../RequestPlane.ts"
import { TransportConnectionError } from "../TransportError.ts"
import type { EndpointNotFound, TransportError } from "../TransportError.ts"

/** The error of a request plane's ack. */
export type AckError = TransportError | EndpointNotFound

/** Runs a send on a fiber of the client's runtime. */
export type RunSend = (effect: Effect.Effect<void, AckError>) => Fiber.Fiber<void, AckError>

/** Sends `message`; `onAck` is called once, unless the returned cancel runs first. */
export const sendLean = (
  run: RunSend,
  client: RequestPlaneClient,
  target: RequestTarget,
  message: RequestMessage,
  onAck: (error: AckError | undefined) => void
): (() => void) => {
  if (client.sendCallback !== undefined) return client.sendCallback(target, message, onAck)
  const fiber = run(client.send(target, message))
  fiber.addObserver((exit) => {
    if (Exit.isSuccess(exit)) onAck(undefined)
    else if (!Cause.hasInterruptsOnly(exit.cause)) {
      const typed = Cause.findError(exit.cause)
      onAck(
        Result.isSuccess(typed)
          ? typed.success
          : new TransportConnectionError({
            reason: "SendFailed",
            transport: client.transport,
            target: target.address,
            detail: `the request transport died: ${String(Cause.squash(exit.cause))}`,
            cause: Cause.squash(exit.cause)
          })
      )
    }
  })
  return () => fiber.interruptUnsafe()
}
