/**
 * The load loop of the benchmark's Promise-based client sides (raw baselines, gRPC): run
 * `streams` streams with `concurrency` in flight and record each stream's latency and time to
 * its first item, by `performance.now()`. loadEffect.ts is the same loop over Effects (this
 * project, Effect RPC), so that neither pays a conversion per stream; this module does not load
 * Effect, so that the raw children stay raw.
 */
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
