// Where one call's time goes at 1 in flight, for the full TCP mode and raw Node's corked floor:
// router in this process, worker in a child, each with a tap that records process.hrtime at every
// socket `data` event and every socket write. Per call, the medians of: each side's work from the
// bytes it received to the bytes it wrote, the write call itself, and each trip (a write to the
// peer's `data` event). Rounds alternate raw and full (this machine is noisy: compare within a round).
//
//   node --experimental-strip-types --no-warnings scripts/critical-path.ts [--calls 20000] [--rounds 2]
//
// docs/performance.md ("Where one call's time goes at 1 in flight") has what it showed.
import { fork } from "node:child_process"
import { mkdtempSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { setFlagsFromString } from "node:v8"
import { Effect } from "effect"
import * as rawTcp from "../src/cli/bench/sides/rawTcp.ts"
import { concurrent } from "../src/cli/latency.ts"
import { tokenHandler, TokenRequestSchema } from "../src/cli/tokenHandler.ts"
import * as Endpoint from "../src/Endpoint.ts"
import { ENDPOINT, fullModeLayer, rawOptions, request } from "./fullModeSetup.ts"

/** What the tap records: [time in ns, kind] pairs. */
const DATA = 0
const WRITE = 1
const WRITTEN = 2
const events: Array<number> = []
let tapping = false

// The tap, installed before any socket exists.
const emit = net.Socket.prototype.emit
net.Socket.prototype.emit = function(this: net.Socket, name: string | symbol, ...args: Array<unknown>) {
  if (tapping && name === "data") events.push(Number(process.hrtime.bigint()), DATA)
  return emit.apply(this, [name, ...args] as Parameters<typeof emit>)
} as typeof emit
const writeGeneric = (net.Socket.prototype as unknown as { _writeGeneric: (...args: Array<unknown>) => unknown })._writeGeneric
;(net.Socket.prototype as unknown as { _writeGeneric: (...args: Array<unknown>) => unknown })._writeGeneric = function(this: net.Socket, ...args: Array<unknown>) {
  if (!tapping) return writeGeneric.apply(this, args)
  events.push(Number(process.hrtime.bigint()), WRITE)
  const r = writeGeneric.apply(this, args)
  events.push(Number(process.hrtime.bigint()), WRITTEN)
  return r
}

// As this project's processes run (NodeTuning.ts).
setFlagsFromString("--no-allocation-site-pretenuring")

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1]! : def
}
/** The worker side (a child): serves, then taps between "on" and "off" and sends its events back. */
const runChild = async (mode: string, discovery: string) => {
  process.on("message", (m) => {
    if (m === "on") tapping = true
    if (m === "off") {
      tapping = false
      process.send!({ events })
    }
  })
  if (mode === "raw") {
    const served = await rawTcp.serve(rawOptions)
    process.send!({ ready: served.info })
    return
  }
  await Effect.runPromise(
    Effect.gen(function*() {
      yield* Endpoint.serveEmit(ENDPOINT, tokenHandler, { requestSchema: TokenRequestSchema })
      process.send!({ ready: true })
      yield* Effect.never
    }).pipe(Effect.scoped, Effect.provide(fullModeLayer(discovery)))
  )
}

/** One mode's run: returns this process's events, the worker's, and the mean time per call. */
const runMode = async (mode: "raw" | "full", calls: number) => {
  const discovery = mkdtempSync(join(tmpdir(), "critical-path-"))
  const child = fork(new URL(import.meta.url).pathname, ["child", mode, discovery], {
    execArgv: ["--no-warnings", "--experimental-strip-types"]
  })
  const ready = await new Promise<unknown>((resolve) => child.once("message", (m) => resolve((m as { ready: unknown }).ready)))
  const workerEvents = () => new Promise<Array<number>>((resolve) => child.once("message", (m) => resolve((m as { events: Array<number> }).events)))
  try {
    if (mode === "raw") {
      const driver = await rawTcp.connect(rawOptions, ready as Parameters<typeof rawTcp.connect>[1])
      await driver.run(30_000, 64, () => {})
      await driver.run(5_000, 1, () => {})
      events.length = 0
      child.send("on")
      tapping = true
      const t0 = performance.now()
      await driver.run(calls, 1, () => {})
      const perCall = ((performance.now() - t0) * 1000) / calls
      tapping = false
      const theirs = workerEvents()
      child.send("off")
      await driver.close()
      return { router: [...events], worker: await theirs, perCall }
    }
    return await Effect.runPromise(
      Effect.gen(function*() {
        const client = yield* Endpoint.client<unknown, unknown>(ENDPOINT)
        while (client.instances().length === 0) yield* Effect.sleep(20)
        const once = client.call(request, () => {})
        yield* concurrent(30_000, 64, once)
        yield* concurrent(5_000, 1, once)
        events.length = 0
        child.send("on")
        tapping = true
        const t0 = performance.now()
        yield* concurrent(calls, 1, once)
        const perCall = ((performance.now() - t0) * 1000) / calls
        tapping = false
        const theirs = workerEvents()
        child.send("off")
        return { router: [...events], worker: yield* Effect.promise(() => theirs), perCall }
      }).pipe(Effect.scoped, Effect.provide(fullModeLayer(discovery)))
    )
  } finally {
    child.kill("SIGKILL")
  }
}

type Pair = readonly [time: number, kind: number]
const pairs = (flat: ReadonlyArray<number>): Array<Pair> => {
  const out: Array<Pair> = []
  for (let i = 0; i < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!])
  return out
}
const median = (xs: Array<number>) => {
  if (xs.length === 0) return NaN
  xs.sort((a, b) => a - b)
  return xs[Math.floor(xs.length / 2)]! / 1000
}
/** Each side: from a `data` event to its next write. */
const work = (evs: ReadonlyArray<Pair>) => {
  const out: Array<number> = []
  let from: number | undefined
  for (const [t, k] of evs) {
    if (k === DATA && from === undefined) from = t
    else if (k === WRITE && from !== undefined) {
      out.push(t - from)
      from = undefined
    }
  }
  return median(out)
}
const writeCall = (evs: ReadonlyArray<Pair>) => {
  const out: Array<number> = []
  for (let i = 0; i + 1 < evs.length; i++) if (evs[i]![1] === WRITE && evs[i + 1]![1] === WRITTEN) out.push(evs[i + 1]![0] - evs[i]![0])
  return median(out)
}
/** From each write of one side to the first `data` event of the other after it. */
const trip = (from: ReadonlyArray<Pair>, to: ReadonlyArray<Pair>) => {
  const arrivals = to.filter(([, k]) => k === DATA).map(([t]) => t)
  const out: Array<number> = []
  let j = 0
  for (const [t, k] of from) {
    if (k !== WRITE) continue
    while (j < arrivals.length && arrivals[j]! < t) j++
    if (j < arrivals.length && arrivals[j]! - t < 2_000_000) out.push(arrivals[j]! - t)
  }
  return median(out)
}

if (process.argv[2] === "child") await runChild(process.argv[3]!, process.argv[4]!)
else {
  const calls = Number(arg("calls", "20000"))
  const rounds = Number(arg("rounds", "2"))
  const f = (n: number) => n.toFixed(1).padStart(6)
  console.log("mode  round  µs/call  router work  worker work  write call r/w  trip r->w  trip w->r   (medians, µs)")
  for (let r = 1; r <= rounds; r++) {
    for (const mode of ["raw", "full"] as const) {
      const run = await runMode(mode, calls)
      const router = pairs(run.router)
      const worker = pairs(run.worker)
      console.log(
        `${mode.padEnd(5)} ${String(r).padStart(5)}  ${f(run.perCall)}  ${f(work(router))}       ${f(work(worker))}       ${f(writeCall(router))}/${writeCall(worker).toFixed(1).padEnd(6)}  ${f(trip(router, worker))}     ${f(trip(worker, router))}`
      )
    }
  }
  process.exit(0)
}
