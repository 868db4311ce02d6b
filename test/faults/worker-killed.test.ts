/**
 * Fault injection: a worker killed. The worker runs in a process of its own
 * (`test/support/faults/faultWorker.ts`, file discovery; one per mode, all started when the file
 * loads), the router is this process. One SIGKILL by pid catches three calls at three points:
 * - mid-stream: a call that has received 3 items;
 * - after the ack, before any item: a call whose handler reported that it started (the ack is out
 *   and, on the call-home planes, the worker has called home) and waits without emitting;
 * - before the ack: once those two are under way, the worker is SIGSTOPped, a third call is sent
 *   (it reaches the kernel's buffers and nothing answers), and 300 ms later the worker is killed.
 * In each case the router's call fails typed (`TransportConnectionError`, or
 * `TransportTimeoutError` where a timeout is the only signal) within a bound, never hangs, never
 * dies with a defect and never succeeds; items that did arrive are a prefix of the stream.
 *
 * Bounds, measured from the SIGKILL: 3 s (a connection's death is seen at once on loopback; the
 * margin is for a loaded machine). NATS before the ack: nothing tells the router that the worker
 * died while its request waited in nats-server, so the bound is the NATS request timeout, 2 s
 * here (`DYN_NATS_REQUEST_TIMEOUT`), plus the same margin. Failover is off
 * (`DYN_ROUTER_MAX_ATTEMPTS=1`): the dead instance is the only one.
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
import { modes, natsMode, recordOf } from "../support/faults/modes.ts"
import { startNatsServer } from "../support/servers.ts"
import { configStack } from "../support/stacks.ts"

const nats = await startNatsServer()
const allModes = [...modes, natsMode(nats.url)]

/** One worker process per mode, started together (a start costs seconds of CPU on a loaded machine). */
const workers = await Promise.all(allModes.map(async (mode) => {
  const dir = mkdtempSync(join(tmpdir(), "faults-killed-"))
  const env = recordOf(mode, { DYN_DISCOVERY_BACKEND: "file", DYN_DISCOVERY_PATH: dir })
  const worker = await startChild({
    script: "faultWorker.ts",
    args: [JSON.stringify({ paths: ["faults.killed.before", "faults.killed.mid"], waitingPaths: ["faults.killed.after"], itemDelayMs: 20 })],
    env
  })
  return { mode, dir, worker }
}))
afterAll(async () => {
  for (const { dir, worker } of workers) {
    await worker.kill()
    rmSync(dir, { recursive: true, force: true })
  }
  await nats.stop()
})

const BOUND_MS = 3000
const NATS_TIMEOUT_S = 2
const TYPED = ["TransportConnectionError", "TransportTimeoutError"]

const show = (o: Outcome<unknown>) =>
  o.kind === "fail" ? `fail ${o.error._tag}: ${o.error.message}` : o.kind === "die" ? `die ${String(o.defect)}` : o.kind

const sleep = (ms: number) => Effect.promise(() => new Promise<void>((r) => setTimeout(r, ms)))

/** The three cases on one mode: one worker process serving three endpoints, one call each. */
const killedSuite = (index: number) =>
  it.live("SIGKILL before the ack, after the ack, and mid-stream: the call fails typed within the bound", () =>
    Effect.gen(function*() {
      const { mode: m, dir, worker } = workers[index]!
      // One worker process serves the three endpoints; the "after" and "mid" calls get going
      // first, then the worker is stopped, the "before" call is sent, and the worker is killed.
      const client = (path: string) =>
        Endpoint.client<unknown, number>(path).pipe(
          Effect.provideService(Discovery, FileDiscovery.make({ directory: dir, pollIntervalMs: 50 }))
        )
      const call = (path: string, onItem: (items: ReadonlyArray<number>) => void = () => {}) =>
        Effect.gen(function*() {
          const c = yield* client(path)
          const items: Array<number> = []
          const fiber = yield* Effect.forkChild(outcomeOf(c.call(1, (batch) => {
            items.push(...batch)
            onItem(items)
          }), 20_000))
          return { fiber, items }
        })

      let three: () => void = () => {}
      const threeArrived = new Promise<void>((r) => (three = r))
      const mid = yield* call("faults.killed.mid", (items) => items.length >= 3 && three())
      const after = yield* call("faults.killed.after")
      yield* Effect.promise(() => Promise.all([threeArrived, worker.waitFor((e) => e.event === "started" && e.path === "faults.killed.after")]))
      worker.signal("SIGSTOP")
      const before = yield* call("faults.killed.before")
      yield* sleep(300)
      worker.signal("SIGKILL")
      const killedAt = performance.now()
      yield* Effect.promise(() => worker.exited)
      const outcomes = yield* Effect.all({ before: Fiber.join(before.fiber), after: Fiber.join(after.fiber), mid: Fiber.join(mid.fiber) }, {
        concurrency: "unbounded"
      })
      const results = {
        before: { outcome: outcomes.before, killedAt, items: before.items },
        after: { outcome: outcomes.after, killedAt, items: after.items },
        mid: { outcome: outcomes.mid, killedAt, items: mid.items }
      }
      const report: Record<string, string> = {}
      for (const [name, { outcome, killedAt, items }] of Object.entries(results)) {
        const ms = outcome.at - killedAt
        report[name] = `${show(outcome)} after ${ms.toFixed(0)} ms`
        const bound = name === "before" && m.requestTransport === "nats" ? NATS_TIMEOUT_S * 1000 + BOUND_MS : BOUND_MS
        expect(outcome.kind, `${m.name} ${name}: ${report[name]}`).toBe("fail")
        if (outcome.kind === "fail") expect(TYPED, `${m.name} ${name}: ${report[name]}`).toContain(outcome.error._tag)
        expect(ms, `${m.name} ${name}: ${report[name]}`).toBeLessThan(bound)
        expect(items, name).toEqual(items.map((_, i) => i))
      }
      expect(results.after.items).toEqual([])
      expect(results.mid.items.length).toBeGreaterThanOrEqual(3)
      console.log(`worker killed, ${m.name}: ${JSON.stringify(report)}`)
    }).pipe(
      Effect.scoped,
      Effect.provide(configStack({
        ...workers[index]!.mode.env,
        DYN_ROUTER_MAX_ATTEMPTS: "1",
        DYN_NATS_REQUEST_TIMEOUT: String(NATS_TIMEOUT_S),
        DYN_TCP_CALL_HOME_TIMEOUT_SECS: "5"
      }).layer)
    ), 30_000)

allModes.forEach((mode, index) => describe(`worker killed: ${mode.name}`, () => killedSuite(index)))
