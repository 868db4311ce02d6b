/**
 * SharedTurn.nextTurn: fibers that wait for the next turn in one tick all resume from one
 * callback, so a `process.nextTick` scheduled by the first (what a per-tick write batcher does)
 * runs only after the last; an interrupted fiber is not resumed; and a fiber that waits again
 * from within a turn gets the following turn, not the current one.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { nextTurn } from "../src/internal/SharedTurn.ts"

/**
 * Forks `n` fibers that each wait with `wait`, then record their resumption; the first to resume
 * schedules a `process.nextTick` that records "tick". Returns the order, once all have resumed
 * and one more turn has passed.
 */
const resumptionOrder = (wait: Effect.Effect<void>, n: number) =>
  Effect.gen(function*() {
    const events: Array<string> = []
    let tickScheduled = false
    const fibers = Array.from({ length: n }, (_, i) =>
      Effect.runFork(
        wait.pipe(Effect.andThen(Effect.sync(() => {
          events.push(`r${i}`)
          if (!tickScheduled) {
            tickScheduled = true
            process.nextTick(() => events.push("tick"))
          }
        })))
      ))
    expect(events).toEqual([])
    for (const fiber of fibers) yield* Fiber.join(fiber)
    yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
    return events
  })

describe("SharedTurn.nextTurn", () => {
  it.live("64 fibers waiting in one tick resume before any nextTick scheduled by one of them", () =>
    Effect.gen(function*() {
      expect(yield* resumptionOrder(nextTurn, 64)).toEqual([...Array.from({ length: 64 }, (_, i) => `r${i}`), "tick"])
    }))

  it.live("Effect.yieldNow, for contrast, lets a nextTick run between two fibers (why the shared turn exists)", () =>
    Effect.gen(function*() {
      expect(yield* resumptionOrder(Effect.yieldNow, 2)).toEqual(["r0", "tick", "r1"])
    }))

  it.live("an interrupted fiber is not resumed, and the others still are", () =>
    Effect.gen(function*() {
      let resumed = 0
      let cancelledResumed = false
      const cancelled = Effect.runFork(nextTurn.pipe(Effect.andThen(Effect.sync(() => {
        cancelledResumed = true
      }))))
      const kept = Effect.runFork(nextTurn.pipe(Effect.andThen(Effect.sync(() => {
        resumed++
      }))))
      yield* Fiber.interrupt(cancelled)
      yield* Fiber.join(kept)
      yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
      expect(resumed).toBe(1)
      expect(cancelledResumed).toBe(false)
      const exit = yield* Fiber.await(cancelled)
      expect(Exit.hasInterrupts(exit)).toBe(true)
    }))

  it.live("a fiber that waits again from within a turn resumes on the following turn", () =>
    Effect.gen(function*() {
      const events: Array<string> = []
      const fiber = Effect.runFork(
        Effect.gen(function*() {
          yield* nextTurn
          events.push("first")
          setImmediate(() => events.push("immediate between"))
          yield* nextTurn
          events.push("second")
        })
      )
      yield* Fiber.join(fiber)
      expect(events).toEqual(["first", "immediate between", "second"])
    }))
})
