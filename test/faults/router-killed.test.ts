/**
 * Fault injection: a router killed mid-stream. This process is the worker; the router runs in a
 * process of its own (`test/support/faults/faultRouter.ts`, file discovery on the worker's
 * directory) and streams 3 calls from it. Once every call received items, the router is
 * SIGKILLed by pid. Then, on the worker:
 * - every handler is interrupted (seen by `Effect.onInterrupt`), within 3 s of the kill (the
 *   death of a connection is seen at once on loopback; the margin is for a loaded machine);
 * - its resources are freed: `inFlight()` is back to 0, the `transport_active_streams` gauges on
 *   its /metrics are all 0 again (it was above 0 while streaming), and its open TCP sockets (FDs
 *   in /proc/self/fd found in /proc/net/tcp*) are back to what they were before the router came
 *   (its listeners and, on nats+tcp, its nats-server connection), within 3 s as well.
 *
 * On every mode: http+tcp, pooled, http+http SSE, tcp+tcp in Dynamo's framing, the full TCP
 * mode, nats+tcp.
 */
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs"
import * as http from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { afterAll } from "vitest"
import { Discovery, FileDiscovery } from "../../src/discovery/index.ts"
import * as Endpoint from "../../src/Endpoint.ts"
import * as MetricsServer from "../../src/observability/MetricsServer.ts"
import { startChild } from "../support/faults/child.ts"
import { modes, natsMode, recordOf } from "../support/faults/modes.ts"
import { startNatsServer } from "../support/servers.ts"
import { configStack } from "../support/stacks.ts"

const BOUND_MS = 3000
const CALLS = 3

const nats = await startNatsServer()
const allModes = [...modes, natsMode(nats.url)]

/** One router process per mode, started together (a start costs seconds of CPU on a loaded machine); each waits for its go. */
const routers = await Promise.all(allModes.map(async (mode) => {
  const dir = mkdtempSync(join(tmpdir(), "faults-router-"))
  const router = await startChild({
    script: "faultRouter.ts",
    args: [JSON.stringify({ path: "faults.router.killed", calls: CALLS })],
    env: recordOf(mode, { DYN_DISCOVERY_BACKEND: "file", DYN_DISCOVERY_PATH: dir })
  })
  return { mode, dir, router }
}))
afterAll(async () => {
  for (const { dir, router } of routers) {
    await router.kill()
    rmSync(dir, { recursive: true, force: true })
  }
  await nats.stop()
})


/** The inodes of TCP sockets on this machine (/proc/net/tcp and tcp6). */
const tcpInodes = (): Set<string> => {
  const inodes = new Set<string>()
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of readFileSync(file, "utf8").split("\n").slice(1)) {
      const inode = line.trim().split(/\s+/)[9]
      if (inode !== undefined) inodes.add(inode)
    }
  }
  return inodes
}

/** TCP sockets this process holds open (its FDs that are sockets found in /proc/net/tcp*; not its child's stdio pipes). */
const socketFds = (): number => {
  const tcp = tcpInodes()
  return readdirSync("/proc/self/fd").filter((fd) => {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`))
      return m !== null && tcp.has(m[1]!)
    } catch {
      return false
    }
  }).length
}

/** Sum of every `transport_active_streams` series in exposition text. */
const activeStreams = (text: string): number =>
  text.split("\n").filter((l) => l.startsWith("transport_active_streams{")).reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0)

/** Waits up to `ms` for `check` to hold; returns the ms it took (or -1 when it never did). */
const within = (check: () => boolean, ms: number) =>
  Effect.promise(async () => {
    const start = performance.now()
    while (!check()) {
      if (performance.now() - start > ms) return -1
      await new Promise((r) => setTimeout(r, 10))
    }
    return performance.now() - start
  })

const killedSuite = (index: number) =>
  it.live(`SIGKILL of the router while ${CALLS} calls stream: the handlers are interrupted and their resources freed`, () =>
    Effect.gen(function*() {
      const { mode, dir, router } = routers[index]!
      const metrics = yield* MetricsServer.make({ host: "127.0.0.1", port: 0 })
      // One connection per scrape, closed after it (a kept-alive one would count as an open socket).
      const scrape = Effect.promise(() =>
        new Promise<string>((resolve, reject) => {
          http.get(`${metrics.url}/metrics`, { agent: false, headers: { connection: "close" } }, (res) => {
            let text = ""
            res.on("data", (c: Buffer) => void (text += c.toString()))
            res.on("end", () => resolve(text))
          }).on("error", reject)
        }))
      let running = 0
      let interrupted = 0
      const handler: Endpoint.EmitHandler<unknown, number> = (_req, _ctx, emit) =>
        Effect.gen(function*() {
          running++
          for (let i = 0;; i++) {
            emit(i)
            yield* Effect.sleep(20)
          }
        }).pipe(Effect.onInterrupt(() => Effect.sync(() => void interrupted++)), Effect.ensuring(Effect.sync(() => void running--)))
      const served = yield* Endpoint.serveEmit("faults.router.killed", handler).pipe(
        Effect.provideService(Discovery, FileDiscovery.make({ directory: dir, pollIntervalMs: 50 }))
      )
      // Let the listeners settle, then count this process's sockets before the router comes.
      yield* Effect.sleep(200)
      const baseline = socketFds()

      router.send("go")
      yield* Effect.promise(() => router.waitFor((e) => e.event === "streaming" || e.event === "failed", 30_000))
      expect(router.events.filter((e) => e.event === "failed")).toEqual([])
      expect(served.inFlight()).toBe(CALLS)
      expect(running).toBe(CALLS)
      expect(activeStreams(yield* scrape)).toBeGreaterThan(0)
      const during = socketFds()
      expect(during).toBeGreaterThan(baseline)

      router.signal("SIGKILL")
      const interruptMs = yield* within(() => interrupted === CALLS && running === 0, BOUND_MS)
      const inFlightMs = yield* within(() => served.inFlight() === 0, BOUND_MS)
      const socketsMs = yield* within(() => socketFds() <= baseline, BOUND_MS)
      const gauges = activeStreams(yield* scrape)
      console.log(`router killed, ${mode.name}: handlers interrupted after ${interruptMs.toFixed(0)} ms, inFlight 0 after ${inFlightMs.toFixed(0)} ms, sockets ${during} -> ${socketFds()} (baseline ${baseline}) after ${socketsMs.toFixed(0)} ms, active streams gauge ${gauges}`)
      expect(interrupted, "handlers interrupted").toBe(CALLS)
      expect(interruptMs).toBeGreaterThanOrEqual(0)
      expect(served.inFlight()).toBe(0)
      expect(socketsMs, `sockets ${socketFds()} vs baseline ${baseline}`).toBeGreaterThanOrEqual(0)
      expect(gauges).toBe(0)
    }).pipe(Effect.scoped, Effect.provide(configStack(allModes[index]!.env).layer)), 60_000)

allModes.forEach((mode, index) => describe(`router killed: ${mode.name}`, () => killedSuite(index)))
