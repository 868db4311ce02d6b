/**
 * The load loop of the benchmark's Effect-based client sides (this project, Effect RPC): the
 * Effect form of load.ts's `loadPromise`, one stream per `once`, `concurrency` in flight. Like
 * `loadPromise`, it runs `concurrency` lanes (`inLanes`), each a fiber that takes the next stream
 * when its last one is over, so that neither pays a task of its own per stream.
 */
import type { Effect } from "effect"
import { inLanes } from "../latency.ts"
import type { Recorder } from "./sides/side.ts"

/** The Effect form of `loadPromise`: each lane times its streams in `inLanes`'s `run` and `done`, no Effect step added. */
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
    return {
      run: () => {
        t0 = performance.now()
        first = -1
        return once(onFirst)
      },
      done: () => {
        const t1 = performance.now()
        record(t1 - t0, (first < 0 ? t1 : first) - t0)
      }
    }
  })
