/**
 * The load loop of the benchmark's Effect-based client sides (this project, Effect RPC): the
 * Effect form of load.ts's `loadPromise`, one stream per `once`, `concurrency` in flight. Like
 * `loadPromise`, it runs `concurrency` lanes (`inLanes`), each a fiber that takes the next stream
 * when its last one is over, so that neither pays a task of its own per stream.
 */
import type { Effect } from "effect"
import { inLanes } from "../latency.ts"
import type { Recorder } from "./sides/side.ts"

/**
 * The Effect form of `loadPromise`: each lane times its streams in `inLanes`'s `run` and `done`,
 * no Effect step added. `once` is called once per lane, with the lane's `onFirst`; the Effect it
 * returns runs once per stream of the lane (so it does a stream's work when run, not when built).
 */
export const loadEffect = <E, R>(
  streams: number,
  concurrency: number,
  once: (onFirst: () => void) => Effect.Effect<void, E, R>,
  record: Recorder
): Effect.Effect<void, E, R> =>
  inLanes(streams, concurrency, () => {
    let t0 = 0
    let first = -1
    const onFirst = () => {
      if (first < 0) first = performance.now()
    }
    const stream = once(onFirst)
    return {
      run: () => {
        t0 = performance.now()
        first = -1
        return stream
      },
      done: () => {
        const t1 = performance.now()
        record(t1 - t0, (first < 0 ? t1 : first) - t0)
      }
    }
  })
