/**
 * What every part of one connection pool shares: its resolved options, the Effect clock, debug
 * logging (module `transport.tcp.pool`), a runtime captured from the pool's context for the
 * forks it starts from socket callbacks, and whether the pool is closing.
 *
 * It decides nothing itself.
 */
import { Clock, Effect } from "effect"
import type { Context, Fiber } from "effect"
import { makeDebugLog } from "../../../../internal/debugLog.ts"
import type { ResolvedPoolOptions } from "./PoolOptions.ts"

const MODULE = "transport.tcp.pool"

/** The shared environment of one pool; see the module comment. */
export interface PoolEnv {
  readonly options: ResolvedPoolOptions
  readonly clock: Clock.Clock
  /** True when debug logs are on (checked before building their annotations). */
  readonly debug: boolean
  /** A debug log (a no-op Effect when debug is off). */
  readonly log: (message: string, annotations: Record<string, unknown>) => Effect.Effect<void>
  /** A debug log from a socket callback (not per frame), only when debug is on. */
  readonly logNow: (message: string, annotations: Record<string, unknown>) => void
  /** Runs an effect with the pool's context, not the default runtime's. */
  readonly runFork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.Fiber<A, E>
  /** Set once the pool's scope is closing. */
  closed: boolean
}

/** Captures the environment from the current context. */
export const makePoolEnv = (options: ResolvedPoolOptions): Effect.Effect<PoolEnv> =>
  Effect.gen(function*() {
    const context = (yield* Effect.context<never>()) as Context.Context<never>
    const runFork = Effect.runForkWith(context)
    const clock = yield* Clock.Clock
    const debugLog = yield* makeDebugLog(MODULE)
    return {
      options,
      clock,
      debug: debugLog.enabled,
      log: debugLog.log,
      logNow: debugLog.now,
      runFork: (effect) => runFork(effect),
      closed: false
    }
  })
