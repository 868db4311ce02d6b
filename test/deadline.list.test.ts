/**
 * `DeadlineList`, the call-home server's one timer for every stream's call-home deadline: values
 * expire in the order they were added, each `timeoutMs` after its `add` and not before; a removed
 * value never expires; the timer does not keep the process up while the list is empty, and
 * `stop` clears it. Fake timers (which fake `performance.now` too) drive the clock.
 */
import * as fc from "fast-check"
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { DeadlineList } from "../src/internal/DeadlineList.ts"

beforeEach(() => void vi.useFakeTimers())
afterEach(() => void vi.useRealTimers())

describe("DeadlineList", () => {
  it("expires each value timeoutMs after its add, in order, never one removed first (any schedule of adds, removes and waits)", () => {
    const step = fc.oneof(
      fc.record({ op: fc.constant("add" as const) }),
      fc.record({ op: fc.constant("remove" as const), pick: fc.nat() }),
      fc.record({ op: fc.constant("wait" as const), ms: fc.integer({ min: 0, max: 120 }) })
    )
    fc.assert(
      fc.property(fc.array(step, { maxLength: 40 }), (steps) => {
        vi.setSystemTime(0)
        const timeoutMs = 100
        const expired: Array<{ id: number; at: number }> = []
        const list = new DeadlineList<number>(timeoutMs, (id) => void expired.push({ id, at: performance.now() }))
        const added = new Map<number, { at: number; node: ReturnType<typeof list.add>; removed: boolean }>()
        let next = 0
        for (const s of steps) {
          if (s.op === "add") {
            const id = next++
            added.set(id, { at: performance.now(), node: list.add(id), removed: false })
          } else if (s.op === "remove" && added.size > 0) {
            const entry = [...added.values()][s.pick % added.size]!
            list.remove(entry.node)
            entry.removed = true
          } else if (s.op === "wait") vi.advanceTimersByTime(s.ms)
        }
        vi.advanceTimersByTime(timeoutMs + 5)
        const expected = [...added.entries()].filter(([id, e]) => !e.removed || expired.some((x) => x.id === id)).map(([id]) => id)
        expect(expired.map((x) => x.id)).toEqual(expected)
        for (const { id, at } of expired) {
          const addedAt = added.get(id)!.at
          expect(at).toBeGreaterThanOrEqual(addedAt + timeoutMs)
          expect(at).toBeLessThanOrEqual(addedAt + timeoutMs + 1)
        }
        expect(list.size).toBe(0)
        list.stop()
      }),
      { numRuns: 200 }
    )
  })

  it("keeps one timer, ref'd only while something waits; stop clears it and nothing expires after", () => {
    const expired: Array<string> = []
    const list = new DeadlineList<string>(1000, (v) => void expired.push(v))
    const a = list.add("a")
    list.add("b")
    expect(vi.getTimerCount()).toBe(1)
    list.remove(a)
    list.remove(a) // twice: harmless
    expect(vi.getTimerCount()).toBe(1)
    vi.advanceTimersByTime(999)
    expect(expired).toEqual([])
    vi.advanceTimersByTime(1)
    expect(expired).toEqual(["b"])
    expect(vi.getTimerCount()).toBe(0) // empty after the expiry: not rescheduled

    const c = list.add("c")
    list.remove(c)
    const timers = vi.getTimerCount()
    expect(timers).toBe(1) // left armed, unref'd: it fires on its own
    list.add("d")
    list.stop()
    expect(vi.getTimerCount()).toBe(0)
    vi.advanceTimersByTime(5000)
    expect(expired).toEqual(["b"])
  })

  it("a throwing expiry does not strand the values after it, and its error is rethrown on its own", () => {
    const expired: Array<number> = []
    const list = new DeadlineList<number>(10, (v) => {
      expired.push(v)
      if (v === 0) throw new Error("boom")
    })
    list.add(0)
    list.add(1)
    const rethrown: Array<unknown> = []
    const spy = vi.spyOn(globalThis, "queueMicrotask").mockImplementation((f) => {
      try {
        f()
      } catch (error) {
        rethrown.push(error)
      }
    })
    try {
      vi.advanceTimersByTime(10)
    } finally {
      spy.mockRestore()
    }
    expect(expired).toEqual([0, 1])
    expect(rethrown).toHaveLength(1)
    expect((rethrown[0] as Error).message).toBe("boom")
  })
  it("keeps the process up only while a value waits, and never with keepsProcess false (real timers)", () => {
    vi.useRealTimers()
    const refedTimeouts = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length
    const base = refedTimeouts()
    const list = new DeadlineList<number>(60_000, () => {})
    const a = list.add(1)
    expect(refedTimeouts()).toBe(base + 1)
    list.remove(a)
    expect(refedTimeouts()).toBe(base) // armed, but unref'd
    list.add(2)
    expect(refedTimeouts()).toBe(base + 1) // ref'd again
    list.stop()
    expect(refedTimeouts()).toBe(base)

    const quiet = new DeadlineList<number>(60_000, () => {}, false)
    quiet.add(1)
    expect(refedTimeouts()).toBe(base)
    quiet.stop()
  })
})
