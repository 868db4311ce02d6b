/**
 * Debug logging for socket-level code: gated on the log level read once from the context (so a
 * call costs a boolean test when debug is off), annotated with the module name that `DYN_LOG`
 * selects (`DYN_LOG=info,transport.tcp.router=debug`), and run with the captured context from
 * socket callbacks. It never throws into the caller.
 */
import { Effect, LogLevel, References } from "effect"
import type { Context } from "effect"

/** A module's debug log. */
export interface DebugLog {
  /** True when debug logs are on (check it before building costly annotations). */
  readonly enabled: boolean
  /** The log line as an Effect (a no-op Effect when debug is off). */
  readonly log: (message: string, annotations: Record<string, unknown>) => Effect.Effect<void>
  /** The log line from a socket callback, at once, with the captured context. */
  readonly now: (message: string, annotations: Record<string, unknown>) => void
}

/** The debug log of `module`, for the current context. */
export const makeDebugLog = (module: string): Effect.Effect<DebugLog> =>
  Effect.gen(function*() {
    const context = (yield* Effect.context<never>()) as Context.Context<never>
    const runSync = Effect.runSyncWith(context)
    const enabled = LogLevel.isGreaterThanOrEqualTo("Debug", yield* References.MinimumLogLevel)
    const log = (message: string, annotations: Record<string, unknown>): Effect.Effect<void> =>
      enabled ? Effect.logDebug(message).pipe(Effect.annotateLogs({ module, ...annotations })) : Effect.void
    return {
      enabled,
      log,
      now: (message, annotations) => {
        if (!enabled) return
        try {
          runSync(log(message, annotations))
        } catch {
          // logging must never break the socket path
        }
      }
    }
  })
