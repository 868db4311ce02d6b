/**
 * SharedTick.ts: functions queued for the end of the tick run where `process.nextTick` callbacks
 * would (after the synchronous code, before promise callbacks and timers), in the order queued,
 * with one `process.nextTick` a tick; one that throws does not stop the others.
 */
import { describe, expect, it } from "vitest"
import { onNextTick } from "../src/internal/SharedTick.ts"

describe("onNextTick", () => {
  it("runs where process.nextTick callbacks run: after the synchronous code, before promise callbacks and timers, in the order queued", async () => {
    // from a macrotask, as I/O callbacks run (inside a promise job, promise callbacks would come first for nextTick too)
    const order = await new Promise<Array<string>>((resolve) =>
      setImmediate(() => {
        const order: Array<string> = []
        setTimeout(() => resolve(order), 0)
        void Promise.resolve().then(() => order.push("promise"))
        onNextTick(() => {
          order.push("a")
          onNextTick(() => order.push("queued by a"))
        })
        process.nextTick(() => order.push("nextTick"))
        onNextTick(() => order.push("b"))
        order.push("sync")
      })
    )
    // Node's own tick queued between a and b runs after the shared one (SharedTick.ts)
    expect(order).toEqual(["sync", "a", "b", "queued by a", "nextTick", "promise"])
  })

  it("takes one process.nextTick for all the functions of a tick", async () => {
    const original = process.nextTick
    let ticks = 0
    process.nextTick = ((...args: Parameters<typeof process.nextTick>) => {
      ticks++
      return original(...args)
    }) as typeof process.nextTick
    const ran: Array<number> = []
    try {
      for (let i = 0; i < 5; i++) onNextTick(() => ran.push(i))
    } finally {
      process.nextTick = original
    }
    await new Promise<void>((resolve) => setImmediate(resolve))
    expect(ticks).toBe(1)
    expect(ran).toEqual([0, 1, 2, 3, 4])
  })

  it("runs the functions queued after one that throws, and reports the throw as uncaught", async () => {
    const caught: Array<unknown> = []
    const onUncaught = (e: unknown) => caught.push(e)
    // vitest's own handler would fail the test: take the event for this test only
    const others = process.listeners("uncaughtException")
    process.removeAllListeners("uncaughtException")
    process.on("uncaughtException", onUncaught)
    const ran: Array<string> = []
    try {
      onNextTick(() => ran.push("first"))
      onNextTick(() => {
        throw new Error("boom")
      })
      onNextTick(() => ran.push("after the throw"))
      await new Promise<void>((resolve) => setTimeout(resolve, 5))
    } finally {
      process.removeListener("uncaughtException", onUncaught)
      for (const l of others) process.on("uncaughtException", l)
    }
    expect(ran).toEqual(["first", "after the throw"])
    expect(caught).toHaveLength(1)
    expect((caught[0] as Error).message).toBe("boom")
    // the queue is usable afterwards
    const later = await new Promise<string>((resolve) => onNextTick(() => resolve("ok")))
    expect(later).toBe("ok")
  })
})
