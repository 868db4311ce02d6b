/**
 * A yield to the next event-loop turn that many fibers share: every fiber that waits for the turn
 * resumes from the same `setImmediate` callback, one after the other.
 *
 * Why not `Effect.yieldNow`: each Effect fiber has a dispatcher of its own, so N fibers that yield
 * in one tick schedule N `setImmediate` callbacks, and Node runs `process.nextTick` callbacks
 * between any two of them. A per-tick write batcher (FrameBatcher.ts, WriteBatcher.ts) therefore
 * flushed once per fiber: at 64 in flight, a worker serving pooled call-home streams made about
 * 0.6 socket writes per request instead of a few per tick. Resumed from one callback, the fibers'
 * frames all leave in that callback's tick.
 *
 * What it does not do: order fibers by priority, or bound how long a turn's resumptions run.
 */
import { Effect } from "effect"

let waiting: Array<(effect: Effect.Effect<void>) => void> = []
let scheduled = false

const runTurn = (): void => {
  const resumes = waiting
  waiting = []
  scheduled = false
  for (let i = 0; i < resumes.length; i++) {
    try {
      resumes[i]!(Effect.void)
    } catch (error) {
      // Whatever threw (an exit observer, an async hook) must not strand the fibers after it in
      // this turn: it is rethrown on its own, as it would have been from a callback of its own.
      queueMicrotask(() => {
        throw error
      })
    }
  }
}

/**
 * Suspends the fiber until the next event-loop turn (after I/O), resuming it from a callback
 * shared with every other fiber waiting for that turn. Interruptible: an interrupted fiber is not
 * resumed (Effect ignores a callback's resume once its fiber has been interrupted, so nothing
 * is kept per wait but the resume itself).
 */
export const nextTurn: Effect.Effect<void> = Effect.callback<void>((resume) => {
  waiting.push(resume)
  if (!scheduled) {
    scheduled = true
    setImmediate(runTurn)
  }
})
