/**
 * A served endpoint's admission check (the `admit` its request server asks before each ack):
 * refuse "unavailable" once the endpoint is draining (its scope is closing), and "overloaded"
 * when `maxInFlight` requests are already admitted and not finished.
 *
 * An admitted request holds a slot from its admission on: `admit` reserves it, `started` turns
 * the reservation into a running handler (the worker counts those in `InFlight`), and the
 * handler's end frees it. So requests admitted in the same tick, before any of their handlers
 * has started (the memory transport starts them on a microtask), cannot overshoot the cap. The
 * request-plane contract is that an admitted request is acked and handed to the handler at once
 * (http and TCP: synchronously; memory: on a microtask); a reservation that no handler took up
 * by the next macrotask (a request server that refused the request after admitting it) is
 * dropped then, so a slot never leaks (one `setImmediate` per tick that admitted something, and
 * only with a cap).
 *
 * Socket-free and synchronous. It does not count handlers (`InFlight.ts` does) nor refuse
 * anything itself: request servers turn a refusal into their wire's answer.
 */
import type { Admission } from "../RequestPlane.ts"

/** The admission state of one served endpoint. */
export interface EndpointAdmission {
  /** The check to pass to `RequestPlaneServer.register`. */
  readonly admit: Admission
  /** An admitted request's handler started: its reservation becomes a running handler. */
  readonly started: () => void
  /** From now on every request is refused "unavailable". */
  readonly startDraining: () => void
  /** True once draining. */
  readonly draining: () => boolean
}

/** Options of `makeAdmission`. */
export interface AdmissionOptions {
  /** "ns.component.endpoint", for the refusal texts. */
  readonly endpoint: string
  /** The in-flight cap; undefined for none. */
  readonly maxInFlight: number | undefined
  /** Handlers running now. */
  readonly running: () => number
}

/**
 * The cap `maxInFlight` stands for: undefined (no cap) when absent or `Infinity`, otherwise
 * its integer part, at least 1.
 */
export const normalizeMaxInFlight = (maxInFlight: number | undefined): number | undefined =>
  maxInFlight === undefined || maxInFlight === Infinity ? undefined : Math.max(1, Math.floor(maxInFlight) || 1)

/** The admission state of an endpoint; see the module comment. */
export const makeAdmission = (options: AdmissionOptions): EndpointAdmission => {
  const { endpoint, running } = options
  const cap = normalizeMaxInFlight(options.maxInFlight)
  let draining = false
  let reserved = 0
  let sweeping = false
  const sweep = () => {
    sweeping = false
    reserved = 0
  }
  // Built once: a refusal allocates nothing.
  const unavailable = { refuse: "unavailable", detail: `endpoint ${endpoint} is draining (shutting down)` } as const
  const overloaded = cap === undefined
    ? undefined
    : { refuse: "overloaded", detail: `endpoint ${endpoint} is at its in-flight cap of ${cap} requests (maxInFlight)` } as const
  const admit: Admission = cap === undefined
    ? () => (draining ? unavailable : undefined)
    : () => {
      if (draining) return unavailable
      if (running() + reserved >= cap) return overloaded
      reserved++
      if (!sweeping) {
        sweeping = true
        setImmediate(sweep)
      }
      return undefined
    }
  return {
    admit,
    started: () => {
      if (reserved > 0) reserved--
    },
    startDraining: () => {
      draining = true
    },
    draining: () => draining
  }
}
