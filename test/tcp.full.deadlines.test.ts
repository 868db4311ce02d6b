/**
 * The router's ack deadlines (`AckDeadlines`): a request leaves the list the moment it is
 * answered, wherever it is, with its links cleared, so that a connection never keeps a finished
 * call alive (it would survive the young-generation collections: docs/performance.md); overdue
 * acks are handed over oldest first, measured from when the request's bytes left.
 */
import { describe, expect, it } from "vitest"
import { AckDeadlines } from "../src/transport/tcp/full/AckDeadlines.ts"
import type { FullRequest } from "../src/transport/tcp/full/FullRequest.ts"

/** The fields AckDeadlines reads and writes. */
const request = (): FullRequest => ({ sentAt: 0, prevWaiting: undefined, nextWaiting: undefined, waitingAck: false }) as unknown as FullRequest
const tick = () => new Promise<void>((resolve) => process.nextTick(resolve))
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const unlinked = (r: FullRequest) => r.prevWaiting === undefined && r.nextWaiting === undefined && !r.waitingAck

describe("AckDeadlines", () => {
  it("takes an answered request out at once, wherever it is, and clears its links", async () => {
    const deadlines = new AckDeadlines(60_000, () => false, () => {})
    const [a, b, c, d] = [request(), request(), request(), request()]
    for (const r of [a, b, c, d]) deadlines.sent(r)
    await tick()
    expect([a, b, c, d].every((r) => r.sentAt > 0)).toBe(true)
    expect(deadlines.waiting).toBe(4)
    // answered out of order: c and d while b still waits
    deadlines.answered(c)
    deadlines.answered(d)
    expect(deadlines.waiting).toBe(2)
    expect(unlinked(c) && unlinked(d)).toBe(true)
    expect(b.nextWaiting).toBeUndefined()
    // a second answer (the stream finished after its Prologue) changes nothing
    deadlines.answered(c)
    expect(deadlines.waiting).toBe(2)
    deadlines.answered(a)
    deadlines.answered(b)
    expect(deadlines.waiting).toBe(0)
    expect([a, b, c, d].every(unlinked)).toBe(true)
    deadlines.stop()
  })

  it("a request slow to start does not keep the thousands answered after it", async () => {
    const deadlines = new AckDeadlines(60_000, () => false, () => {})
    const slow = request()
    deadlines.sent(slow)
    const rest = Array.from({ length: 3000 }, request)
    for (const r of rest) deadlines.sent(r)
    await tick()
    for (const r of rest) deadlines.answered(r)
    expect(deadlines.waiting).toBe(1)
    expect(rest.every(unlinked)).toBe(true)
    expect(slow.nextWaiting).toBeUndefined()
    deadlines.stop()
    expect(unlinked(slow)).toBe(true)
  })

  it("hands over the overdue requests oldest first, out of the list, skipping the answered ones", async () => {
    const overdue: Array<FullRequest> = []
    const deadlines = new AckDeadlines(20, () => false, (r) => {
      expect(unlinked(r)).toBe(true)
      overdue.push(r)
    })
    const [a, b, c] = [request(), request(), request()]
    for (const r of [a, b, c]) deadlines.sent(r)
    await tick()
    deadlines.answered(b)
    await sleep(25)
    // sent later: not yet overdue when the first three are
    const late = request()
    deadlines.sent(late)
    await sleep(60)
    expect(overdue.slice(0, 2)).toEqual([a, c])
    expect(overdue).toContain(late)
    expect(deadlines.waiting).toBe(0)
    deadlines.stop()
  })

  it("counts a request's deadline from the write after its submission, not from a busy stretch before it", async () => {
    const overdue: Array<FullRequest> = []
    const deadlines = new AckDeadlines(200, () => false, (r) => overdue.push(r))
    const r = request()
    deadlines.sent(r)
    const busyUntil = performance.now() + 300
    while (performance.now() < busyUntil) {
      // a long synchronous stretch before this tick's write
    }
    await tick()
    await sleep(20)
    expect(overdue).toEqual([])
    await sleep(400)
    expect(overdue).toEqual([r])
    deadlines.stop()
  })

  it("a request sent from within the sweep (a freed slot going to the next one waiting) is not overdue at once", async () => {
    const overdue: Array<FullRequest> = []
    const next = request()
    let deadlines: AckDeadlines
    deadlines = new AckDeadlines(30, () => false, (r) => {
      overdue.push(r)
      // what RouterConnection does: the timed-out request's slot goes to the next one queued
      if (r !== next && !next.waitingAck && next.sentAt === 0) deadlines.sent(next)
    })
    const a = request()
    deadlines.sent(a)
    await tick()
    await sleep(60)
    expect(overdue).toEqual([a])
    expect(next.waitingAck).toBe(true)
    expect(next.sentAt).toBeGreaterThan(0)
    await sleep(80)
    expect(overdue).toEqual([a, next])
    deadlines.stop()
  })
})
