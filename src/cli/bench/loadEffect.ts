/**
 * The load loop of the benchmark's Effect-based client sides (this project, Effect RPC): the
 * Effect form of load.ts's `loadPromise`, one stream per `once`, `concurrency` in flight.
 */
import { Effect } from "effect"
import type { Recorder } from "./sides/side.ts"

/** The Effect form of `loadPromise`. */
export const loadEffect = <E, R>(
  streams: number,
  concurrency: number,
  once: (onFirst: () => void) => Effect.Effect<void, E, R>,
  record: Recorder
): Effect.Effect<void, E, R> =>
  Effect.forEach(
    Array.from({ length: streams }),
    () =>
      Effect.suspend(() => {
        const t0 = performance.now()
        let first = -1
        return Effect.tap(
          once(() => {
            if (first < 0) first = performance.now()
          }),
          () =>
            Effect.sync(() => {
              const t1 = performance.now()
              record(t1 - t0, (first < 0 ? t1 : first) - t0)
            })
        )
      }),
    { concurrency: Math.max(1, concurrency), discard: true }
  )
