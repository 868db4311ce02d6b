/**
 * Counts a worker's running handlers and waits for them to finish (`drain`). It does not start
 * or interrupt handlers; the worker does.
 */
import { Effect } from "effect"

/** The running-handler count of one served endpoint. */
export interface InFlight {
  /** A handler started. */
  readonly begin: () => void
  /** A handler finished. */
  readonly end: () => void
  /** Handlers still running. */
  readonly count: () => number
  /** Waits until no handler runs, at most `timeoutMs`; true when drained. */
  readonly drain: (timeoutMs: number) => Effect.Effect<boolean>
}

/** A new, empty count. */
export const makeInFlight = (): InFlight => {
  let inFlight = 0
  const idle = new Set<() => void>()
  const drain = (timeoutMs: number) =>
    Effect.callback<boolean>((resume) => {
      if (inFlight === 0) return resume(Effect.succeed(true))
      const done = () => {
        clearTimeout(timer)
        idle.delete(done)
        resume(Effect.succeed(true))
      }
      const timer = setTimeout(() => {
        idle.delete(done)
        resume(Effect.succeed(false))
      }, timeoutMs)
      idle.add(done)
      return Effect.sync(() => {
        clearTimeout(timer)
        idle.delete(done)
      })
    })
  return {
    begin: () => {
      inFlight++
    },
    end: () => {
      inFlight--
      if (inFlight === 0) for (const f of idle) f()
    },
    count: () => inFlight,
    drain
  }
}
