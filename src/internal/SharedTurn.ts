/**
 * The next event-loop turn, shared: every fiber that waits for the turn (`nextTurn`) and every
 * function queued for it (`onNextTurn`) runs from the same `setImmediate` callback, one after the
 * other, in the order queued.
 *
 * Why not `Effect.yieldNow`: each Effect fiber has a dispatcher of its own, so N fibers that yield
 * in one tick schedule N `setImmediate` callbacks, and Node runs `process.nextTick` callbacks
 * between any two of them. A per-tick write batcher (FrameBatcher.ts, WriteBatcher.ts) therefore
 * flushed once per fiber: at 64 in flight, a worker serving pooled call-home streams made about
 * 0.6 socket writes per request instead of a few per tick. Resumed from one callback, the fibers'
 * frames all leave in that callback's tick. Plain functions share it for the same reason: one
 * `setImmediate` a turn, however many are queued (the router's one-shot sockets released in a
 * turn are destroyed from it).
 *
 * What it does not do: order work by priority, or bound how long a turn's work runs.
 */
import { Effect } from "effect"

let queued: Array<() => void> = []

const runTurn = (): void => {
  const fs = queued
  queued = []
  for (let i = 0; i < fs.length; i++) {
    try {
      fs[i]!()
    } catch (error) {
      // Whatever threw (an exit observer, an async hook) must not strand the work after it in
      // this turn: it is rethrown on its own, as it would have been from a callback of its own.
      queueMicrotask(() => {
        throw error
      })
    }
  }
}

/** Runs `f` in the next event-loop turn (after I/O), from the callback shared with everything else queued for that turn. */
export const onNextTurn = (f: () => void): void => {
  if (queued.push(f) === 1) setImmediate(runTurn)
}

/**
 * Suspends the fiber until the next event-loop turn (after I/O), resuming it from the callback
 * shared with everything else queued for that turn. Interruptible: an interrupted fiber is not
 * resumed (Effect ignores a callback's resume once its fiber has been interrupted, so nothing
 * is kept per wait but the resume itself).
 */
export const nextTurn: Effect.Effect<void> = Effect.callback<void>((resume) => {
  onNextTurn(() => resume(Effect.void))
})
