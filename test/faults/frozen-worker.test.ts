/**
 * Fault injection: a worker frozen with SIGSTOP mid-stream (issue 15, items 2 and 4). The worker
 * runs in a process of its own (`test/support/faults/faultWorker.ts`, file discovery), streaming
 * one item every 20 ms; the router is this process. Once the router has 3 items, the worker is
 * SIGSTOPped: its kernel still acknowledges TCP (keepalive cannot tell), but nothing more arrives,
 * no item and no heartbeat (no Pong, no HTTP/2 PING answer). The router's call must fail typed,
 * `TransportTimeoutError`, within the idle timeout (`DYN_STREAM_IDLE_TIMEOUT_SECS=1`) plus a margin
 * for a loaded machine, never earlier than the timeout, and never hang or succeed. The full TCP
 * mode may also see its connection heartbeat run out first ("HeartbeatTimeout", two intervals of
 * 1 s): either is the typed timeout.
 *
 * Then the worker is SIGCONTed: it must hear that the router let go of the stream (a Kill and the
 * socket closed, a mux Reset, an HTTP/2 RST_STREAM, or the full-mode connection closed), so its
 * handler is interrupted. Cleanup SIGCONTs and SIGKILLs every worker by pid.
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { afterAll } from "vitest"
import { Discovery, FileDiscovery } from "../../src/discovery/index.ts"
import * as Endpoint from "../../src/Endpoint.ts"
import { outcomeOf } from "../contract/transportContract.ts"
import type { Outcome } from "../contract/transportContract.ts"
import { startChild } from "../support/faults/child.ts"
import { modes, recordOf } from "../support/faults/modes.ts"
import { configStack } from "../support/stacks.ts"

const IDLE_S = 1
const MARGIN_MS = 4000
const PATH = "faults.frozen.mid"
const IDLE_ENV = { DYN_STREAM_IDLE_TIMEOUT_SECS: String(IDLE_S) }

/** One worker process per mode, started together (a start costs seconds of CPU on a loaded machine). */
const workers = await Promise.all(modes.map(async (mode) => {
  const dir = mkdtempSync(join(tmpdir(), "faults-frozen-"))
  const worker = await startChild({
    script: "faultWorker.ts",
    args: [JSON.stringify({ paths: [PATH], itemDelayMs: 20 })],
    env: recordOf(mode, { ...IDLE_ENV, DYN_DISCOVERY_BACKEND: "file", DYN_DISCOVERY_PATH: dir })
  })
  return { mode, dir, worker }
}))
afterAll(async () => {
  for (const { dir, worker } of workers) {
    worker.signal("SIGCONT")
    await worker.kill()
    rmSync(dir, { recursive: true, force: true })
  }
})

const show = (o: Outcome<unknown>) =>
  o.kind === "fail" ? `fail ${o.error._tag}: ${o.error.message}` : o.kind === "die" ? `die ${String(o.defect)}` : o.kind

const frozenSuite = (index: number) =>
  it.live(`SIGSTOP mid-stream: the call fails with TransportTimeoutError within ${IDLE_S} s + ${MARGIN_MS} ms, and the thawed worker's handler stops`, () =>
    Effect.gen(function*() {
      const { mode, dir, worker } = workers[index]!
      const client = yield* Endpoint.client<unknown, number>(PATH).pipe(
        Effect.provideService(Discovery, FileDiscovery.make({ directory: dir, pollIntervalMs: 50 }))
      )
      const items: Array<number> = []
      let three: () => void = () => {}
      const threeArrived = new Promise<void>((r) => (three = r))
      const fiber = yield* Effect.forkChild(outcomeOf(client.call(1, (batch) => {
        items.push(...batch)
        if (items.length >= 3) three()
      }), 20_000))
      yield* Effect.promise(() => threeArrived)
      const started = yield* Effect.promise(() => worker.waitFor((e) => e.event === "started" && e.path === PATH))
      worker.signal("SIGSTOP")
      const stoppedAt = performance.now()
      const outcome = yield* Fiber.join(fiber)
      const ms = outcome.at - stoppedAt
      const report = `${mode.name}: ${show(outcome)} ${ms.toFixed(0)} ms after SIGSTOP`
      console.log(`worker frozen, ${report}`)
      expect(outcome.kind, report).toBe("fail")
      if (outcome.kind === "fail") {
        expect(outcome.error._tag, report).toBe("TransportTimeoutError")
        expect(["StreamIdle", "HeartbeatTimeout"], report).toContain((outcome.error as { reason?: string }).reason)
      }
      // Never before the timeout (less the last item's 20 ms and a signal's delivery), never long after.
      expect(ms, report).toBeGreaterThanOrEqual(IDLE_S * 1000 - 100)
      expect(ms, report).toBeLessThan(IDLE_S * 1000 + MARGIN_MS)
      expect(items, report).toEqual(items.map((_, i) => i))
      // Thawed, the worker finds the stream gone and interrupts the handler.
      worker.signal("SIGCONT")
      const interrupted = yield* Effect.promise(() =>
        worker.waitFor((e) => e.event === "interrupted" && e.id === started.id, 10_000).then(() => true, () => false)
      )
      expect(interrupted, `${mode.name}: the thawed worker's handler was not interrupted`).toBe(true)
    }).pipe(
      Effect.scoped,
      Effect.provide(configStack({ ...workers[index]!.mode.env, ...IDLE_ENV, DYN_ROUTER_MAX_ATTEMPTS: "1" }).layer)
    ), 30_000)

modes.forEach((mode, index) => describe(`worker frozen: ${mode.name}`, () => frozenSuite(index)))
