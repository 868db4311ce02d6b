// Runs one soak (or scale) mode: a worker process and a router process (bench/soak/worker.ts,
// bench/soak/router.ts), the workload, and /proc readings of both at the start, every second
// and at the end. It does not print: progress goes to a callback, the result is returned.
import type { ChildProcess } from "node:child_process"
import { createWriteStream, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { startChild } from "../crossProcess.ts"
import type { LedgerSummary } from "./ledger.ts"
import { loopbackFileEnv } from "../../src/cli/defaults.ts"
import type { SoakMode } from "./modes.ts"
import { cpuSeconds, establishedTcp, machineLoad, resetPeak, sample } from "./procStats.ts"
import type { ProcSample } from "./procStats.ts"
import type { Progress, RouterJob, RouterMessage } from "./router.ts"

/** The workload of one mode: the router's job (`RouterJob`, but its DYN_* record), and more. */
export interface ModeOptions extends Omit<RouterJob, "env"> {
  /** The worker's in-flight cap (`maxInFlight`); none by default. */
  readonly workerCap?: number | undefined
  /** More DYN_* settings for both processes. */
  readonly env?: Readonly<Record<string, string>> | undefined
  /** NATS_SERVER, for the nats modes. */
  readonly natsUrl?: string | undefined
  /** The mode fails when it takes longer (ms). */
  readonly timeoutMs: number
  /** Count established TCP connections every second (costly with many sockets: the scale run). */
  readonly countConnections?: boolean | undefined
  /** Write each process's stderr (its log lines) to `<logDir>/<mode>.<worker|router>.log`. */
  readonly logDir?: string | undefined
  /** Called every second while the workload runs. */
  readonly onProgress?: ((line: string) => void) | undefined
}

/** One process's readings. */
export interface ProcessReport {
  readonly pid: number
  readonly start: ProcSample
  readonly end: ProcSample
  readonly peakRssMb: number
  readonly peakSockets: number
  readonly peakEstablished: number
  readonly cpuSeconds: number
}

/** The result of one mode. */
export interface ModeResult {
  readonly id: string
  readonly name: string
  readonly status: "ok" | "unavailable" | "failed"
  readonly reason?: string | undefined
  readonly summary?: LedgerSummary | undefined
  readonly elapsedMs?: number | undefined
  readonly callsPerSecond?: number | undefined
  readonly worker?: ProcessReport | undefined
  readonly router?: ProcessReport | undefined
  /** 1-minute load average at the start and the end. */
  readonly loadavg: { readonly start: number; readonly end: number }
}

/** Tracks one process: start, peaks, end. */
class Watch {
  readonly start: ProcSample
  peakRss: number
  peakSockets: number
  peakEstablished = 0
  readonly cpu0: number

  readonly pid: number
  readonly countConnections: boolean

  constructor(pid: number, countConnections: boolean) {
    this.pid = pid
    this.countConnections = countConnections
    resetPeak(pid)
    this.start = sample(pid)
    this.peakRss = this.start.rssMb
    this.peakSockets = this.start.sockets
    this.cpu0 = cpuSeconds(pid)
  }

  tick(): ProcSample {
    const s = sample(this.pid)
    this.peakRss = Math.max(this.peakRss, s.rssMb, s.peakRssMb)
    this.peakSockets = Math.max(this.peakSockets, s.sockets)
    if (this.countConnections) this.peakEstablished = Math.max(this.peakEstablished, establishedTcp(this.pid))
    return s
  }

  report(end: ProcSample): ProcessReport {
    return {
      pid: this.pid,
      start: this.start,
      end,
      peakRssMb: Math.max(this.peakRss, end.peakRssMb),
      peakSockets: this.peakSockets,
      peakEstablished: this.countConnections ? this.peakEstablished : -1,
      cpuSeconds: Math.round((cpuSeconds(this.pid) - this.cpu0) * 10) / 10
    }
  }
}

const n = (x: number) => x.toLocaleString("en-US")
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const describe = (e: unknown) => (e instanceof Error ? e.message : String(e)).split("\n")[0]!.slice(0, 600)

/** FDs a process may keep above its start once the workload is over (idle pooled connections, timers' handles). */
export const FD_SLACK = 16

/** Runs `mode` with `options`. Never throws: a mode that cannot start is "unavailable", one that breaks "failed". */
export const runMode = async (mode: SoakMode, options: ModeOptions): Promise<ModeResult> => {
  const load0 = machineLoad().loadavg1
  const dir = mkdtempSync(join(tmpdir(), "soak-discovery-"))
  const env: Record<string, string> = {
    ...loopbackFileEnv(dir),
    ...mode.env,
    ...(options.natsUrl === undefined ? {} : { NATS_SERVER: options.natsUrl }),
    ...options.env
  }
  const children: Array<ChildProcess> = []
  let phase: "unavailable" | "failed" = "unavailable"
  let timer: ReturnType<typeof setTimeout> | undefined
  const base = { id: mode.id, name: mode.name }
  try {
    const job: RouterJob = {
      env,
      requests: options.requests,
      concurrency: options.concurrency,
      cancelRate: options.cancelRate,
      items: options.items,
      itemDelayMs: options.itemDelayMs,
      seed: options.seed,
      burst: options.burst
    }
    // Both start at once: the router waits for the worker's record in discovery.
    const [workerStart, routerStart] = await Promise.allSettled([
      startChild(
        "bench/soak/worker.ts",
        options.workerCap === undefined ? [JSON.stringify(env)] : [JSON.stringify(env), String(options.workerCap)],
        {},
        { quiet: true }
      ),
      startChild("bench/soak/router.ts", [JSON.stringify(job)], {}, { quiet: true })
    ])
    for (const [started, who] of [[workerStart, "worker"], [routerStart, "router"]] as const) {
      if (started.status === "fulfilled") {
        children.push(started.value.child)
        keepLog(started.value.child, options.logDir, `${mode.id}.${who}.log`)
      }
    }
    if (workerStart.status === "rejected") throw new Error(`worker: ${describe(workerStart.reason)}`)
    if (routerStart.status === "rejected") throw new Error(`router: ${describe(routerStart.reason)}`)
    const worker = workerStart.value
    const router = routerStart.value
    const problem = mode.check?.(worker.firstLine)
    if (problem !== undefined) throw new Error(problem)
    if (router.firstLine !== "ready") throw new Error(`router said ${router.firstLine}`)
    phase = "failed"
    const countConnections = options.countConnections === true
    const w = new Watch(worker.child.pid!, countConnections)
    const r = new Watch(router.child.pid!, countConnections)
    const result = await new Promise<{ summary: LedgerSummary; elapsedMs: number }>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${options.timeoutMs / 1000} s`)), options.timeoutMs)
      const died = (who: string, exited: () => string | undefined) => () => setTimeout(() => reject(new Error(`${who} ${exited() ?? "exited"}`)), 100)
      worker.child.once("exit", died("worker", worker.exited))
      router.child.once("exit", died("router", router.exited))
      router.child.on("message", (m: RouterMessage) => {
        if (m.type === "result") return resolve(m)
        const ws = w.tick()
        const rs = r.tick()
        options.onProgress?.(progressLine(mode.id, m.progress, options.requests, ws, rs))
      })
      router.child.send("go")
    })
    clearTimeout(timer)
    // Let closing sockets finish closing, then read the end.
    const settleUntil = Date.now() + 5_000
    let ws = w.tick()
    let rs = r.tick()
    const bound = FD_SLACK + (mode.keptConnections ?? 0)
    while (Date.now() < settleUntil && (ws.fds > w.start.fds + bound || rs.fds > r.start.fds + bound)) {
      await sleep(250)
      ws = sample(w.pid)
      rs = sample(r.pid)
    }
    const secs = result.elapsedMs / 1000
    return {
      ...base,
      status: "ok",
      summary: result.summary,
      elapsedMs: Math.round(result.elapsedMs),
      callsPerSecond: Math.round(result.summary.finished / Math.max(secs, 1e-3)),
      worker: w.report(ws),
      router: r.report(rs),
      loadavg: { start: load0, end: machineLoad().loadavg1 }
    }
  } catch (e) {
    return { ...base, status: phase, reason: describe(e), loadavg: { start: load0, end: machineLoad().loadavg1 } }
  } finally {
    clearTimeout(timer)
    for (const c of children) {
      c.removeAllListeners("exit")
      if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL")
    }
    rmSync(dir, { recursive: true, force: true })
  }
}

const keepLog = (child: ChildProcess, dir: string | undefined, name: string) => {
  if (dir === undefined) return
  const out = createWriteStream(join(dir, name))
  out.on("error", () => {})
  child.stderr?.on("data", (c: Buffer) => out.write(c))
  child.once("close", () => out.end())
}

const progressLine = (id: string, p: Progress, total: number, w: ProcSample, r: ProcSample): string =>
  `[${id}] ${(p.elapsedMs / 1000).toFixed(0)} s: ${n(p.finished)}/${n(total)} done (${n(Math.round(p.finished / Math.max(p.elapsedMs / 1000, 1e-3)))}/s), ` +
  `${n(p.inFlight)} in flight, complete ${n(p.completed)}, cancelled ${n(p.cancelled)}, failed ${n(p.failed)}, lost ${n(p.lost)}, dup ${n(p.duplicated)} | ` +
  `worker fds ${w.fds} (${w.sockets} sockets) rss ${w.rssMb} MB | router fds ${r.fds} (${r.sockets} sockets) rss ${r.rssMb} MB`
