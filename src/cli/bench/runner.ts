/**
 * Runs a benchmark: for each selected row, starts its worker and its router in processes of
 * their own (the worker of this project's modes is `transport-registry worker`; the others are
 * childMain.ts with a side module), then for each concurrency level runs warm-up streams and the
 * measured streams, reading each process's CPU time around them, and each one's peak RSS at the
 * end. With `interleave` above 1, each baseline and the rows measured against it run side by side
 * instead (`runGroup`), their measured streams in slices taken in turn. A row that cannot start
 * is `unavailable`, one that fails while measuring `failed`; every row has a time limit, so a run
 * always completes. It reports progress through a callback and returns the report; it prints
 * nothing itself.
 */
import * as os from "node:os"
import { rows as catalog, select } from "./catalog.ts"
import type { RowSpec } from "./catalog.ts"
import { interleaveGroups, runGroup } from "./interleave.ts"
import { startNatsServer } from "./natsServer.ts"
import type { NatsServer } from "./natsServer.ts"
import type { BenchOptions, Progress } from "./options.ts"
import { withRatios } from "./report.ts"
import type { BenchReport, Row, Run } from "./report.ts"
import { message, pooled, runRow } from "./row.ts"
import type { Outcome } from "./row.ts"
import { cdf, summarize } from "./stats.ts"

export type { BenchOptions, Progress } from "./options.ts"

/** A row from its rounds: their samples pooled (a failed round fails the row). */
const combine = (spec: RowSpec, outcomes: ReadonlyArray<Outcome>, rounds: number): Row => {
  const base = { id: spec.id, kind: spec.kind, description: spec.description, baseline: spec.baseline ?? null }
  const bad = outcomes.findIndex((o) => o.status !== "ok")
  if (bad >= 0) {
    const o = outcomes[bad] as Extract<Outcome, { reason: string }>
    return { ...base, status: o.status, reason: rounds > 1 ? `round ${bad + 1}: ${o.reason}` : o.reason, peakRssKb: { router: null, worker: null }, runs: [] }
  }
  const measured = outcomes.map((o) => (o as Extract<Outcome, { status: "ok" }>).measured)
  const max = (xs: ReadonlyArray<number | null>) => (xs.some((x) => x === null) ? null : Math.max(...(xs as Array<number>)))
  const runs: Array<Run> = measured[0]!.levels.map(({ concurrency }) => {
    const levels = measured.map((m) => m.levels.find((l) => l.concurrency === concurrency)!)
    const { latencyUs, firstItemUs, seconds, routerCpuUs, workerCpuUs } = pooled(concurrency, levels)
    const streams = latencyUs.length
    return {
      concurrency,
      streams,
      seconds,
      reqPerSec: streams / seconds,
      latencyUs: summarize(latencyUs),
      firstItemUs: summarize(firstItemUs),
      cpuUsPerRequest: { router: routerCpuUs / streams, worker: workerCpuUs === null ? null : workerCpuUs / streams },
      cdf: cdf(latencyUs, 100).map(([v, f]) => [v, f] as const),
      warmupSecs: levels.reduce((n, l) => n + l.warmupSecs, 0) / levels.length,
      ratio: { p50: null, reqPerSec: null }
    }
  })
  return {
    ...base,
    status: "ok",
    reason: null,
    peakRssKb: { router: max(measured.map((m) => m.peakRssKb.router)), worker: max(measured.map((m) => m.peakRssKb.worker)) },
    runs
  }
}

/** Runs the benchmark. */
export const runBench = async (options: BenchOptions, onProgress: (p: Progress) => void): Promise<BenchReport> => {
  const started = new Date()
  const t0 = performance.now()
  const { rows: selected, unknown } = select(options.modes)
  if (unknown.length > 0) throw new Error(`--modes: unknown ${unknown.join(", ")}; rows: ${catalog.map((r) => r.id).join(", ")}`)
  let nats: NatsServer | { readonly failed: string } | undefined
  if (selected.some((r) => r.nats === true)) nats = await startNatsServer().catch((e: unknown) => ({ failed: message(e) }))
  const outcomes = new Map<string, Array<Outcome>>(selected.map((r) => [r.id, []]))
  try {
    for (let round = 1; round <= options.rounds; round++) {
      const progressOf = (spec: RowSpec) => {
        const index = selected.indexOf(spec)
        return (phase: string, count?: number, of?: number) =>
          onProgress({
            row: spec.id,
            index: index + 1,
            total: selected.length,
            round,
            rounds: options.rounds,
            phase,
            ...(count === undefined ? {} : { done: count }),
            ...(of === undefined ? {} : { of })
          })
      }
      // a row that did not run in an earlier round is not tried again
      const runnable = selected.filter((spec) => !outcomes.get(spec.id)!.some((o) => o.status !== "ok"))
      if (options.interleave > 1) {
        for (const group of interleaveGroups(runnable)) {
          const results = await runGroup(group, options, nats, progressOf)
          for (const spec of group) outcomes.get(spec.id)!.push(results.get(spec.id)!)
        }
      } else {
        for (const spec of runnable) outcomes.get(spec.id)!.push(await runRow(spec, options, nats, progressOf(spec)))
      }
    }
  } finally {
    if (nats !== undefined && !("failed" in nats)) nats.stop()
  }
  const out = selected.map((spec) => combine(spec, outcomes.get(spec.id)!, options.rounds))
  const cpus = os.cpus()
  return {
    version: 3,
    tool: "transport-registry bench",
    startedAt: started.toISOString(),
    seconds: (performance.now() - t0) / 1000,
    machine: {
      node: process.version,
      platform: process.platform,
      arch: process.arch,
      cpus: cpus.length,
      cpuModel: cpus[0]?.model ?? "unknown",
      memoryMb: Math.round(os.totalmem() / 1024 / 1024),
      loadAverage: os.loadavg().map((l) => Math.round(l * 100) / 100)
    },
    workload: {
      streams: options.streams,
      items: options.items,
      itemSize: options.itemSize,
      delayMs: options.delayMs,
      concurrency: options.concurrency,
      warmupSecs: options.warmupSecs,
      warmupStreams: options.warmupStreams,
      warmupMaxSecs: options.warmupMaxSecs,
      measureSecs: options.measureSecs,
      nodeFlags: options.nodeFlags,
      quick: options.quick,
      modes: options.modes,
      rounds: options.rounds,
      interleave: options.interleave
    },
    rows: withRatios(out)
  }
}

