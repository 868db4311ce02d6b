/**
 * Which failures of a call may be retried on another instance, and the marker a call fails with
 * when it may.
 *
 * A call may go to another instance only when it failed *before the ack* and nothing reached the
 * handler's consumer: the worker never took the request (connection refused, lost or timed out
 * while connecting; the send failed; the worker refused it, unavailable or overloaded; it no
 * longer serves the endpoint). After the ack, work may have started on the worker, so nothing is
 * retried: those failures (`StreamEndedEarly`, an ack timeout, a handler error) end the call.
 *
 * It decides nothing else: `Call.ts` marks a failure as `PreAckFailure`, and `Router.ts` retries
 * it (bounded by `DYN_ROUTER_MAX_ATTEMPTS`) and feeds `Quarantine.ts`.
 */
import { EndpointNotFound, TransportConnectionError, TransportTimeoutError } from "../TransportError.ts"
import type { CallError } from "../TransportError.ts"

/** The reasons of a `TransportConnectionError` that mean the worker did not take the request (when they come before the ack). */
const retryableReasons: ReadonlySet<TransportConnectionError["reason"]> = new Set([
  "ConnectFailed",
  "ConnectionClosed",
  "SendFailed",
  "Refused",
  "ServerUnavailable",
  "Overloaded"
])

/**
 * True when `error`, met before the ack, means the request never reached a handler, so that it
 * may go to another instance: the connection errors above, a connect timeout, and
 * `EndpointNotFound` answered by a worker (it carries the worker as `target`; the router's own
 * "no instance" has none).
 */
export const isRetryableBeforeAck = (error: CallError): boolean =>
  (error instanceof TransportConnectionError && retryableReasons.has(error.reason)) ||
  (error instanceof TransportTimeoutError && error.reason === "ConnectTimeout") ||
  (error instanceof EndpointNotFound && error.target !== undefined)

/**
 * True when a failure before the ack counts towards an instance's quarantine: every retryable
 * one but "Overloaded", which says the worker is busy, not unhealthy (it is retried elsewhere,
 * but it neither counts nor resets the count).
 */
export const countsTowardsQuarantine = (error: CallError): boolean =>
  !(error instanceof TransportConnectionError && error.reason === "Overloaded")

/**
 * A call failed before the ack with a retryable `error` (see `isRetryableBeforeAck`): the
 * router may send it to another instance. Never seen by users: the router either retries or
 * fails with `error`.
 */
export class PreAckFailure {
  readonly _tag = "PreAckFailure"
  readonly error: CallError
  constructor(error: CallError) {
    this.error = error
  }
}

/** Refinement of `PreAckFailure`, for `Effect.catchIf`. */
export const isPreAckFailure = (e: unknown): e is PreAckFailure => e instanceof PreAckFailure
