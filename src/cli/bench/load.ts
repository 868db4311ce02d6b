/**
 * The load loops of the benchmark's client sides: run `streams` streams with `concurrency` in
 * flight and record each stream's latency and time to its first item. One loop over Promises
 * (raw baselines, gRPC) and one over Effects (this project, Effect RPC), so that neither pays a
 * conversion per stream. Timing uses `performance.now()`.
 */
import { Effect } from "effect"
import type { Recorder } from "./sides/side.ts"

/** One stream as a Promise: calls `onFirst` when its first item arrives. */
export type OncePromise = (onFirst: () => void) => Promise<void>

/** Runs `streams` calls of `once`, `concurrency` at a time, recording each. */
export const loadPromise = async (streams: number, concurrency: number, once: OncePromise, record: Recorder): Promise<void> => {
  let next = 0
  const lane = async () => {
    while (next < streams) {
      next++
      const t0 = performance.now()
      let first = -1
      await once(() => {
        if (first < 0) first = performance.now()
      })
      const t1 = performance.now()
      record(t1 - t0, (first < 0 ? t1 : first) - t0)
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, streams)) }, lane))
}

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
