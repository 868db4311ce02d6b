/**
 * The router call's state machine (src/endpoint/CallState.ts), driven without a socket, a
 * transport or a clock: every transition, the stop/kill sequence on cancel, the single release,
 * and the metrics hooks.
 */
import { describe, expect, it } from "vitest"
import { CallState } from "../src/endpoint/CallState.ts"
import type { CallOutcome, CallTimers } from "../src/endpoint/CallState.ts"

/** Timers fired by hand. */
const manualTimers = () => {
  const pending = new Map<number, { f: () => void; ms: number }>()
  let next = 1
  const timers: CallTimers = {
    setTimeout: (f, ms) => {
      const id = next++
      pending.set(id, { f, ms })
      return id
    },
    clearTimeout: (id) => {
      pending.delete(id as number)
    }
  }
  return {
    timers,
    pending,
    /** Fires every pending timer. */
    fire: () => {
      const due = [...pending.values()]
      pending.clear()
      for (const t of due) t.f()
    }
  }
}

/** A call wired to recorders: consumer, stream controls, hooks, outcome. */
const harness = (options: { graceMs?: number; consumer?: (items: ReadonlyArray<number>) => void } = {}) => {
  const clock = manualTimers()
  const seen: Array<number> = []
  const outcomes: Array<CallOutcome<string>> = []
  const controls: Array<string> = []
  const log: Array<string> = []
  let streamDone = false
  let closes = 0
  let sendCancels = 0
  const state = new CallState<number, string>(options.consumer ?? ((items) => seen.push(...items)), {
    graceMs: options.graceMs ?? 100,
    timers: clock.timers,
    hooks: {
      onAck: (error) => log.push(error === undefined ? "ack" : `ack-error:${error}`),
      onStreamError: (error) => log.push(`stream-error:${error}`),
      onRelease: () => log.push("release")
    }
  })
  state.opened({
    control: (m) => controls.push(m),
    isDone: () => streamDone,
    close: () => {
      closes++
    }
  })
  state.wait((outcome) => outcomes.push(outcome))
  state.sent(() => {
    sendCancels++
  })
  return {
    state,
    clock,
    seen,
    outcomes,
    controls,
    log,
    closes: () => closes,
    sendCancels: () => sendCancels,
    setStreamDone: () => {
      streamDone = true
    }
  }
}

describe("CallState", () => {
  it("ack, then items, then end: pending -> acked -> streaming -> done", () => {
    const h = harness()
    expect(h.state.phase).toBe("pending")
    h.state.ack()
    expect(h.state.phase).toBe("acked")
    expect(h.state.acked).toBe(true)
    h.state.items([1, 2])
    expect(h.state.phase).toBe("streaming")
    h.state.items([3])
    expect(h.seen).toEqual([1, 2, 3])
    expect(h.outcomes).toEqual([])
    h.state.end()
    expect(h.state.phase).toBe("done")
    expect(h.outcomes).toEqual([{ _tag: "Done" }])
    expect(h.state.isReleased).toBe(false)
    h.state.finish()
    expect(h.state.isReleased).toBe(true)
    expect(h.closes()).toBe(1)
    expect(h.log).toEqual(["ack", "release"])
    expect(h.controls).toEqual([])
  })

  it("a stream that completes before its ack ends the call; the late ack changes nothing", () => {
    const h = harness()
    h.state.items([1])
    expect(h.state.phase).toBe("streaming")
    h.state.end()
    expect(h.state.phase).toBe("done")
    expect(h.outcomes).toEqual([{ _tag: "Done" }])
    h.state.ack()
    expect(h.state.phase).toBe("done")
    expect(h.state.acked).toBe(true)
    expect(h.outcomes.length).toBe(1)
  })

  it("an ack failure after completion is ignored (its metric is still recorded, once)", () => {
    const h = harness()
    h.state.end()
    h.state.ack("refused")
    h.state.ack("refused again")
    expect(h.state.phase).toBe("done")
    expect(h.outcomes).toEqual([{ _tag: "Done" }])
    expect(h.log).toEqual(["ack-error:refused"])
  })

  it("an ack failure before completion fails the call; later items and end are ignored", () => {
    const h = harness()
    h.state.ack("refused")
    expect(h.state.phase).toBe("failed")
    expect(h.state.acked).toBe(false)
    expect(h.outcomes).toEqual([{ _tag: "Failed", error: "refused" }])
    h.state.items([1])
    h.state.end()
    expect(h.seen).toEqual([])
    expect(h.outcomes.length).toBe(1)
  })

  it("a stream error fails the call after the items before it; it is reported once", () => {
    const h = harness()
    h.state.ack()
    h.state.items([1])
    h.state.error("handler failed")
    h.state.error("again")
    h.state.end()
    h.state.items([2])
    expect(h.state.phase).toBe("failed")
    expect(h.seen).toEqual([1])
    expect(h.outcomes).toEqual([{ _tag: "Failed", error: "handler failed" }])
    h.state.finish()
    h.state.finish()
    expect(h.log).toEqual(["ack", "stream-error:handler failed", "release"])
  })

  it("a consumer that throws fails the call as a defect and kills the worker", () => {
    const boom = new Error("consumer bug")
    const h = harness({
      consumer: () => {
        throw boom
      }
    })
    h.state.items([1])
    expect(h.state.phase).toBe("failed")
    expect(h.outcomes).toEqual([{ _tag: "Defect", defect: boom }])
    expect(h.controls).toEqual(["kill"])
  })

  it("cancel: stops waiting for the ack, sends stop, then kill after the grace period, then releases", () => {
    const h = harness({ graceMs: 250 })
    h.state.ack()
    h.state.items([1])
    h.state.cancel()
    expect(h.state.phase).toBe("cancelled")
    expect(h.sendCancels()).toBe(1)
    expect(h.controls).toEqual(["stop"])
    expect([...h.clock.pending.values()].map((t) => t.ms)).toEqual([250])
    // The call's Effect exits now, but the stream stays open for the worker's answer.
    h.state.finish()
    expect(h.state.isReleased).toBe(false)
    // Items the worker still sends go nowhere; nobody is waiting.
    h.state.items([2])
    expect(h.seen).toEqual([1])
    h.clock.fire()
    expect(h.controls).toEqual(["stop", "kill"])
    expect(h.state.isReleased).toBe(true)
    expect(h.closes()).toBe(1)
    expect(h.outcomes).toEqual([])
    expect(h.log).toEqual(["ack", "release"])
  })

  it("cancel: a worker that ends within the grace period is released at once, with no kill", () => {
    const h = harness()
    h.state.cancel()
    h.state.error("stream ended early")
    expect(h.state.isReleased).toBe(true)
    expect(h.clock.pending.size).toBe(0)
    expect(h.controls).toEqual(["stop"])
    expect(h.outcomes).toEqual([])
    expect(h.log).toEqual(["stream-error:stream ended early", "release"])
  })

  it("cancel: no kill when the stream is already done at the end of the grace period", () => {
    const h = harness()
    h.state.cancel()
    h.setStreamDone()
    h.clock.fire()
    expect(h.controls).toEqual(["stop"])
    expect(h.state.isReleased).toBe(true)
  })

  it("cancel after the call ended does nothing", () => {
    const h = harness()
    h.state.end()
    h.state.cancel()
    expect(h.state.phase).toBe("done")
    expect(h.controls).toEqual([])
    expect(h.sendCancels()).toBe(0)
  })

  it("releases exactly once, whatever the order of cancel, end, finish and the timer", () => {
    const h = harness()
    h.state.cancel()
    h.state.end()
    h.state.finish()
    h.clock.fire()
    h.state.release()
    expect(h.closes()).toBe(1)
    expect(h.log.filter((l) => l === "release")).toEqual(["release"])
  })

  it("a waiter registered after the call ended is resumed at once", () => {
    const h = harness()
    h.state.ack("refused")
    const late: Array<CallOutcome<string>> = []
    h.state.wait((o) => late.push(o))
    expect(late).toEqual([{ _tag: "Failed", error: "refused" }])
  })
})
