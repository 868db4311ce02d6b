// `npm run soak`: the soak and scale runs of issue 15, one worker process and one router process
// per mode (bench/soak/run.ts), every mode in turn.
//
// Soak (default): --requests calls (100,000) at --concurrency in flight (64) per mode, each of
// --items items (10) --item-delay-ms apart (1), with --cancel-rate (0.05) of the consumers
// cancelling at a random point (early, usually before the ack, or after some items). Every item
// carries (request id, index): the run counts lost, duplicated, misrouted and out-of-order items,
// the failures of calls nobody cancelled by error type, and reads FDs and RSS of both processes
// at the start and the end. It passes when nothing is lost, duplicated or misrouted, no call
// that nobody cancelled failed, and FDs are back within FD_SLACK of their start.
//
// Scale (--scale N): N concurrent streams per mode, all started at once, each --items (20)
// items --item-delay-ms (100) apart, nobody cancelling; it reports peak RSS, peak sockets and
// established TCP connections of both processes, and the time to first item p50/p99. With
// --worker-cap C (< N) the worker refuses beyond C in flight: the excess must fail at once
// with Overloaded, and every admitted stream must complete.
//
//   npm run soak -- [--requests 100000] [--concurrency 64] [--cancel-rate 0.05] [--modes http-tcp,tcp-full]
//                   [--items 10] [--item-delay-ms 1] [--seed 1] [--timeout 1800] [--json out.json]
//                   [--env DYN_X=1,DYN_Y=2] [--logs <dir>] (each process's log lines to <dir>/<mode>.<worker|router>.log)
//   npm run soak -- --scale 10000 [--items 20] [--item-delay-ms 100] [--worker-cap 8000] [--modes ...]
//
// Modes: http-tcp, http-tcp-pooled, http-http-sse, tcp-dynamo, tcp-dynamo-pooled, tcp-full,
// nats-tcp (with a nats-server this tool starts when the binary is on PATH; else unavailable).
import { writeFileSync } from "node:fs"
import { table } from "../../src/cli/latency.ts"
import { startNatsServer } from "../../test/support/servers.ts"
import type { NatsServer } from "../../test/support/servers.ts"
import { selectModes } from "./modes.ts"
import { machineLoad } from "./procStats.ts"
import { runMode } from "./run.ts"
import type { ModeOptions, ModeResult } from "./run.ts"
import { verdict } from "./verdict.ts"

const flag = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}
const num = (name: string, def: number): number => {
  const v = flag(name)
  if (v === undefined) return def
  const x = Number(v)
  if (!Number.isFinite(x) || x < 0) throw new Error(`--${name} must be a number >= 0, got ${v}`)
  return x
}

const scale = flag("scale") === undefined ? undefined : num("scale", 10_000)
const options: Omit<ModeOptions, "natsUrl" | "onProgress"> = scale === undefined
  ? {
    requests: num("requests", 100_000),
    concurrency: num("concurrency", 64),
    cancelRate: num("cancel-rate", 0.05),
    items: num("items", 10),
    itemDelayMs: num("item-delay-ms", 1),
    seed: num("seed", 1),
    workerCap: flag("worker-cap") === undefined ? undefined : num("worker-cap", 0),
    timeoutMs: num("timeout", 1800) * 1000
  }
  : {
    requests: scale,
    concurrency: scale,
    cancelRate: num("cancel-rate", 0),
    items: num("items", 20),
    itemDelayMs: num("item-delay-ms", 100),
    seed: num("seed", 1),
    workerCap: flag("worker-cap") === undefined ? undefined : num("worker-cap", 0),
    timeoutMs: num("timeout", 300) * 1000,
    burst: flag("burst") === undefined ? undefined : num("burst", 0),
    countConnections: true
  }
/** `--env K=V,K2=V2`: more DYN_* settings for both processes. */
const extraEnv = Object.fromEntries(
  (flag("env") ?? "").split(",").filter((kv) => kv.includes("=")).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)])
)
const jsonOut = flag("json")
const logDir = flag("logs")
const modes = selectModes(flag("modes"))

const n = (x: number) => x.toLocaleString("en-US")
const mb = (x: number) => `${x.toFixed(0)} MB`

const main = async () => {
  const machine = machineLoad()
  const what = scale === undefined
    ? `soak: ${n(options.requests)} calls per mode at ${options.concurrency} in flight, ${options.items} items ${options.itemDelayMs} ms apart, ` +
      `${(options.cancelRate * 100).toFixed(1)}% cancelled at random points`
    : `scale: ${n(scale)} concurrent streams per mode, ${options.items} items ${options.itemDelayMs} ms apart` +
      (options.workerCap === undefined ? "" : `, worker cap ${n(options.workerCap)} in flight`)
  console.log(`${what}\nmachine: ${machine.cpus} x ${machine.model}, load average ${machine.loadavg1} at the start\n`)
  let nats: NatsServer | { readonly failed: string } | undefined
  const results: Array<ModeResult> = []
  for (const mode of modes) {
    let natsUrl: string | undefined
    if (mode.nats === true) {
      nats ??= await startNatsServer().catch((e: unknown) => ({ failed: e instanceof Error ? e.message : String(e) }))
      if ("failed" in nats) {
        results.push({ id: mode.id, name: mode.name, status: "unavailable", reason: `no nats-server: ${nats.failed}`, loadavg: { start: -1, end: -1 } })
        console.log(`[${mode.id}] unavailable: no nats-server`)
        continue
      }
      natsUrl = nats.url
    }
    console.log(`[${mode.id}] ${mode.name}`)
    const result = await runMode(mode, { ...options, env: extraEnv, logDir, natsUrl, onProgress: (line) => console.log(line) })
    results.push(result)
    const problems = verdict(result, options)
    console.log(
      result.status === "ok"
        ? `[${mode.id}] ${problems.length === 0 ? "PASS" : `FAIL: ${problems.join("; ")}`} in ${((result.elapsedMs ?? 0) / 1000).toFixed(1)} s\n`
        : `[${mode.id}] ${result.status}: ${result.reason}\n`
    )
  }
  if (nats !== undefined && !("failed" in nats)) await nats.stop()

  const ok = results.filter((r) => r.status === "ok")
  console.log(
    table(
      scale === undefined
        ? ["mode", "calls", "calls/s", "complete", "cancelled (early/items/late)", "failed", "lost", "dup", "misrouted", "out of order", "worker fds", "worker rss", "router fds", "router rss", "cpu s w/r"]
        : ["mode", "streams", "complete", "failed", "lost", "dup", "first item p50/p99", "duration p50/p99", "worker peak rss", "worker peak sockets/tcp", "router peak rss", "router peak sockets/tcp", "cpu s w/r"],
      ok.map((r) => {
        const s = r.summary!
        const w = r.worker!
        const rt = r.router!
        const failed = Object.values(s.failures).reduce((a, b) => a + b.count, 0)
        if (scale === undefined) {
          return [
            r.id,
            n(s.finished),
            n(r.callsPerSecond ?? 0),
            n(s.completed),
            `${n(s.cancelled.beforeFirstItem)}/${n(s.cancelled.afterItems)}/${n(s.cancelled.completedFirst)}`,
            n(failed),
            n(s.lostItems),
            n(s.duplicatedItems),
            n(s.misroutedItems),
            n(s.outOfOrderItems),
            `${w.start.fds} -> ${w.end.fds}`,
            `${mb(w.start.rssMb)} -> ${mb(w.end.rssMb)} (peak ${mb(w.peakRssMb)})`,
            `${rt.start.fds} -> ${rt.end.fds}`,
            `${mb(rt.start.rssMb)} -> ${mb(rt.end.rssMb)} (peak ${mb(rt.peakRssMb)})`,
            `${w.cpuSeconds}/${rt.cpuSeconds}`
          ]
        }
        return [
          r.id,
          n(s.finished),
          n(s.completed),
          n(failed),
          n(s.lostItems),
          n(s.duplicatedItems),
          `${s.firstItemMs.p50} / ${s.firstItemMs.p99} ms`,
          `${s.durationMs.p50} / ${s.durationMs.p99} ms`,
          mb(w.peakRssMb),
          `${n(w.peakSockets)} / ${n(w.peakEstablished)}`,
          mb(rt.peakRssMb),
          `${n(rt.peakSockets)} / ${n(rt.peakEstablished)}`,
          `${w.cpuSeconds}/${rt.cpuSeconds}`
        ]
      })
    )
  )
  console.log("")
  for (const r of results) {
    if (r.status !== "ok") {
      console.log(`${r.id}: ${r.status}: ${r.reason}`)
      continue
    }
    const s = r.summary!
    const types = Object.entries(s.failures)
    const cancelled = Object.entries(s.cancelledErrors)
    if (types.length > 0) {
      console.log(`${r.id}: failures among uncancelled calls: ${types.map(([t, v]) => `${t} x${n(v.count)} ("${v.sample}")`).join("; ")}`)
      console.log(`${r.id}: they failed after p50 ${s.failedAfterMs.p50} ms, p99 ${s.failedAfterMs.p99} ms, max ${s.failedAfterMs.max} ms`)
    }
    if (cancelled.length > 0) console.log(`${r.id}: errors of cancelled calls: ${cancelled.map(([t, v]) => `${t} x${n(v.count)} ("${v.sample}")`).join("; ")}`)
    if (types.length === 0 && cancelled.length === 0) console.log(`${r.id}: no errors`)
  }
  const end = machineLoad()
  console.log(`\nload average at the end: ${end.loadavg1}`)
  const failures = results.filter((r) => r.status === "failed" || (r.status === "ok" && verdict(r, options).length > 0))
  if (jsonOut !== undefined) {
    writeFileSync(jsonOut, JSON.stringify({ kind: scale === undefined ? "soak" : "scale", options, machine, loadavgEnd: end.loadavg1, results }, null, 2))
    console.log(`wrote ${jsonOut}`)
  }
  process.exit(failures.length === 0 ? 0 : 1)
}

main().catch((e) => {
  console.error(e)
  process.exit(2)
})
