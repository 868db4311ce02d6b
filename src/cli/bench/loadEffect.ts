/**
 * The load loop of the benchmark's Effect-based client sides (this project, Effect RPC): the
 * Effect form of load.ts's `loadPromise`, one stream per `once`, `concurrency` in flight. Like
 * `loadPromise`, it runs `concurrency` lanes, each a fiber that takes the next stream when its
 * last one is over, so that neither pays a task of its own per stream (a fiber forked per stream,
 * as `Effect.forEach` with a concurrency does, cost 0.4-0.8 µs more a stream than a lane).
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
  Effect.suspend(() => {
    let next = 0
    const one = Effect.suspend(() => {
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
    })
    const lane = Effect.whileLoop({
      while: () => next < streams,
      body: () => {
        next++
        return one
      },
      step: () => {}
    })
    const lanes = Math.max(1, Math.min(concurrency, streams))
    return Effect.forEach(Array.from({ length: lanes }), () => lane, { concurrency: lanes, discard: true })
  })
