/**
 * The short soak (issue 15 item 6; the full one is `npm run soak`, docs/reliability.md): per
 * mode, a worker process and a router process (bench/soak/), REQUESTS calls at 64 in flight, 5%
 * of the consumers cancelling at a random point (early, usually before the ack, or after some
 * items). Every item carries (request id, index). Asserted per mode: nothing lost, duplicated or
 * misrouted; no failure among the calls nobody cancelled; every call accounted for; FDs of both
 * processes back within `fdBound` of their start (16, plus the
 * call-home pool's 50 connections in the pooled modes, which stay open by design). Out-of-order items are reported, and asserted
 * zero too: every mode keeps a stream's order. 1,000 calls per mode rather than the full soak's
 * 100,000 (and 4 modes of 7), to stay near 30 s on the loaded 2-vCPU CI machine.
 */
import { describe, expect, it } from "vitest"
import { selectModes } from "../bench/soak/modes.ts"
import { runMode } from "../bench/soak/run.ts"
import { fdBound, verdict } from "../bench/soak/verdict.ts"

const REQUESTS = 1_000
const options = {
  requests: REQUESTS,
  concurrency: 64,
  cancelRate: 0.05,
  items: 10,
  itemDelayMs: 1,
  seed: 15,
  timeoutMs: 50_000
}

// The modes run at once (each in its own two processes): most of a mode's time is starting
// them, which overlaps well.
describe.concurrent("short soak: 5% cancels at random points, 64 in flight", () => {
  for (const mode of selectModes("http-tcp,http-tcp-pooled,http-http-sse,tcp-full")) {
    it(`${mode.name}: ${REQUESTS} calls, none lost, duplicated or failed, FDs back`, async () => {
      const result = await runMode(mode, options)
      expect(result.status, result.reason).toBe("ok")
      const s = result.summary!
      expect(s.finished).toBe(REQUESTS)
      expect(s.lostItems).toBe(0)
      expect(s.duplicatedItems).toBe(0)
      expect(s.misroutedItems).toBe(0)
      expect(s.outOfOrderItems).toBe(0)
      expect(s.failures).toEqual({})
      // Some cancels land, on both sides of the first item (the seed fixes which calls cancel).
      expect(s.cancelled.beforeFirstItem + s.cancelled.afterItems).toBeGreaterThan(REQUESTS * 0.02)
      expect(s.completed).toBeGreaterThan(REQUESTS * 0.9)
      for (const p of [result.worker!, result.router!]) expect(p.end.fds).toBeLessThanOrEqual(p.start.fds + fdBound(result))
      expect(verdict(result, options)).toEqual([])
    }, 90_000)
  }
})
