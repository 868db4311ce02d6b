/**
 * The benchmark's numbers and formats without running anything: percentiles (nearest rank,
 * against a brute-force definition), the CDF points, the ratios to a baseline, the JSON shape
 * (a report built here decodes with `BenchReportSchema`, one with a wrong field does not), the
 * flags' checks and the `--modes` selection.
 */
import * as fc from "fast-check"
import { Effect, Schema } from "effect"
import { describe, expect, it } from "vitest"
import { presets, rows, select } from "../src/cli/bench/catalog.ts"
import { benchOptions } from "../src/cli/bench/command.ts"
import { loadEffect } from "../src/cli/bench/loadEffect.ts"
import { concurrent } from "../src/cli/latency.ts"
import type { BenchFlags } from "../src/cli/bench/command.ts"
import { BenchReportSchema, renderSummary, renderTable, withRatios } from "../src/cli/bench/report.ts"
import type { BenchReport, Row } from "../src/cli/bench/report.ts"
import { interleaveGroups, sliceOrder, sliceStreams } from "../src/cli/bench/interleave.ts"
import { measuredStreams } from "../src/cli/bench/row.ts"
import { cdf, quantile, summarize } from "../src/cli/bench/stats.ts"

const samples = fc.array(fc.double({ min: 0, max: 1e7, noNaN: true }), { minLength: 1, maxLength: 400 })

describe("percentiles", () => {
  it("are the nearest rank: the smallest sample with at least q of the samples at or below it", () => {
    fc.assert(
      fc.property(samples, fc.double({ min: 0.001, max: 1, noNaN: true }), (xs, q) => {
        const s = [...xs].sort((a, b) => a - b)
        const v = quantile(s, q)
        const atOrBelow = s.filter((x) => x <= v).length
        expect(atOrBelow / s.length).toBeGreaterThanOrEqual(q - 1e-12)
        // no smaller sample qualifies
        const smaller = s.filter((x) => x < v)
        if (smaller.length > 0) expect(smaller.length / s.length).toBeLessThan(q)
      })
    )
  })

  it("summarize gives known values on 1..100", () => {
    const xs = Array.from({ length: 100 }, (_, i) => 100 - i)
    expect(summarize(xs)).toEqual({ count: 100, min: 1, p50: 50, p95: 95, p99: 99, max: 100, mean: 50.5 })
    expect(summarize([7])).toMatchObject({ p50: 7, p99: 7, min: 7, max: 7 })
    expect(summarize([])).toMatchObject({ count: 0, p50: 0 })
  })

  it("are ordered: min <= p50 <= p95 <= p99 <= max", () => {
    fc.assert(
      fc.property(samples, (xs) => {
        const s = summarize(xs)
        expect(s.min).toBeLessThanOrEqual(s.p50)
        expect(s.p50).toBeLessThanOrEqual(s.p95)
        expect(s.p95).toBeLessThanOrEqual(s.p99)
        expect(s.p99).toBeLessThanOrEqual(s.max)
      })
    )
  })
})

describe("CDF points", () => {
  it("ascend in value and fraction, from the minimum to the maximum at 1, at most `points` of them, each true of the samples", () => {
    fc.assert(
      fc.property(samples, fc.integer({ min: 2, max: 150 }), (xs, points) => {
        const c = cdf(xs, points)
        const s = [...xs].sort((a, b) => a - b)
        expect(c.length).toBeGreaterThan(0)
        expect(c.length).toBeLessThanOrEqual(points)
        expect(c[0]![0]).toBe(s[0])
        expect(c.at(-1)).toEqual([s.at(-1), 1])
        for (let i = 1; i < c.length; i++) {
          expect(c[i]![0]).toBeGreaterThan(c[i - 1]![0])
          expect(c[i]![1]).toBeGreaterThan(c[i - 1]![1])
        }
        // fraction f at value v: exactly the share of samples at or below v (each point is a sample's rank)
        for (const [v, f] of c) expect(s.filter((x) => x <= v).length / s.length).toBeGreaterThanOrEqual(f - 1e-12)
      })
    )
  })

  it("keeps every sample when there are fewer than `points`", () => {
    expect(cdf([3, 1, 2], 100)).toEqual([[1, 1 / 3], [2, 2 / 3], [3, 1]])
    expect(cdf([5, 5, 5], 100)).toEqual([[5, 1]])
    expect(cdf([], 100)).toEqual([])
  })
})

const run = (concurrency: number, p50: number, reqPerSec: number) => ({
  concurrency,
  streams: 100,
  seconds: 100 / reqPerSec,
  reqPerSec,
  latencyUs: { count: 100, min: p50 / 2, p50, p95: p50 * 2, p99: p50 * 3, max: p50 * 4, mean: p50 },
  firstItemUs: { count: 100, min: 1, p50: p50 / 2, p95: p50, p99: p50, max: p50, mean: p50 / 2 },
  cpuUsPerRequest: { router: 50, worker: 40 },
  cdf: cdf([p50 / 2, p50, p50 * 4]),
  warmupSecs: 3,
  ratio: { p50: null, reqPerSec: null }
})
const row = (id: string, baseline: string | null, runs: Row["runs"], status: Row["status"] = "ok"): Row => ({
  id,
  kind: baseline === null ? "baseline" : "mode",
  description: id,
  baseline,
  status,
  reason: status === "ok" ? null : "no nats-server",
  peakRssKb: { router: 90_000, worker: 80_000 },
  runs
})
const report = (rows: ReadonlyArray<Row>): BenchReport => ({
  version: 3,
  tool: "transport-registry bench",
  startedAt: new Date(0).toISOString(),
  seconds: 12,
  machine: { node: "v24", platform: "linux", arch: "x64", cpus: 2, cpuModel: "cpu", memoryMb: 1000, loadAverage: [1, 1, 1] },
  workload: { streams: 100, items: 10, itemSize: 50, delayMs: 0, concurrency: [1, 64], warmupSecs: 1, warmupStreams: 3000, warmupMaxSecs: 4, measureSecs: 0.25, nodeFlags: [], quick: true, modes: "all", rounds: 1 },
  rows: withRatios(rows)
})

describe("ratios and the JSON shape", () => {
  const rows = [
    row("raw", null, [run(1, 100, 5000), run(64, 1000, 20000)]),
    row("mode", "raw", [run(1, 150, 4000), run(64, 1200, 10000)]),
    row("nats", "raw", [], "unavailable")
  ]
  const r = report(rows)

  it("takes each run's ratios to its baseline's run at the same concurrency", () => {
    const mode = r.rows.find((x) => x.id === "mode")!
    expect(mode.runs.map((x) => x.ratio)).toEqual([{ p50: 1.5, reqPerSec: 0.8 }, { p50: 1.2, reqPerSec: 0.5 }])
    expect(r.rows.find((x) => x.id === "raw")!.runs[0]!.ratio).toEqual({ p50: null, reqPerSec: null })
  })

  it("a report survives JSON and decodes with BenchReportSchema; a wrong field does not", () => {
    const decode = Schema.decodeUnknownSync(BenchReportSchema)
    const back = decode(JSON.parse(JSON.stringify(r)))
    expect(back).toEqual(r)
    const broken = JSON.parse(JSON.stringify(r))
    broken.rows[1].runs[0].latencyUs.p50 = "fast"
    expect(() => decode(broken)).toThrow()
    const noKind = JSON.parse(JSON.stringify(r))
    noKind.rows[0].kind = "other"
    expect(() => decode(noKind)).toThrow()
  })

  it("the table has a line per row and level, the ratios, and why a row did not run", () => {
    const text = renderTable(r)
    expect(text).toMatch(/mode\s+64\s+1200 µs.*raw\s+1\.20x\s+0\.50x/)
    expect(text).toContain("nats: unavailable: no nats-server")
  })

  it("the summary checks each mode against the targets: p50 at the lowest level, req/s at the highest", () => {
    expect(renderSummary(r)).toContain("mode: p50 at 1 in flight 1.50x of raw (target <= 1.2x: MISSED), req/s at 64 0.50x (target >= 0.8x: MISSED)")
    const good = report([row("raw", null, [run(1, 100, 5000), run(64, 1000, 20000)]), row("mode", "raw", [run(1, 110, 4000), run(64, 1200, 17000)])])
    expect(renderSummary(good)).toContain("mode: p50 at 1 in flight 1.10x of raw (target <= 1.2x: met), req/s at 64 0.85x (target >= 0.8x: met)")
  })
})

describe("measured streams per level", () => {
  it("measures --streams, or as many as the warm-up's rate runs in --measure-secs, at most 200,000", () => {
    expect(measuredStreams(2000, 500, 1)).toBe(2000)
    expect(measuredStreams(2000, 30_000, 1)).toBe(30_000)
    expect(measuredStreams(2000, 30_000.2, 0.25)).toBe(7501)
    expect(measuredStreams(2000, 30_000, 0)).toBe(2000)
    expect(measuredStreams(2000, 1e9, 1)).toBe(200_000)
  })
})

describe("flags and --modes", () => {
  const flags = (over: Partial<BenchFlags> = {}): BenchFlags => ({
    streams: undefined,
    items: 10,
    itemSize: 50,
    concurrency: "1,64",
    delayMs: 0,
    modes: undefined,
    quick: false,
    json: undefined,
    html: undefined,
    rowTimeout: undefined,
    rounds: 1,
    ...over
  })

  it("--quick lowers the defaults but not given values; bad values are refused naming the flag", () => {
    expect(benchOptions(flags({ quick: true }))).toMatchObject({ streams: 300, concurrency: [1, 64], modes: "core" })
    expect(benchOptions(flags({ quick: true, modes: "all" }))).toMatchObject({ modes: "all" })
    expect(benchOptions(flags({ quick: true, streams: 50 }))).toMatchObject({ streams: 50 })
    expect(benchOptions(flags())).toMatchObject({ streams: 2000, modes: "all", warmupSecs: 3 })
    expect(benchOptions(flags({ quick: true }))).toMatchObject({ warmupSecs: 1 })
    expect(benchOptions(flags({ quick: true, warmupSecs: 0 }))).toMatchObject({ warmupSecs: 0 })
    expect(benchOptions(flags({ warmupSecs: -1 }))).toMatch(/^--warmup-secs: from 0/)
    // the most warm-up defaults to four times the least; the measured time to 1 s (0.25 s quick)
    expect(benchOptions(flags())).toMatchObject({ warmupMaxSecs: 12, measureSecs: 1 })
    expect(benchOptions(flags({ quick: true }))).toMatchObject({ warmupMaxSecs: 4, measureSecs: 0.25 })
    expect(benchOptions(flags({ warmupSecs: 2, warmupMaxSecs: 2, measureSecs: 0 }))).toMatchObject({ warmupSecs: 2, warmupMaxSecs: 2, measureSecs: 0 })
    expect(benchOptions(flags({ warmupSecs: 2, warmupMaxSecs: 1 }))).toMatch(/^--warmup-max-secs: from --warmup-secs \(2\) to 600, got 1/)
    expect(benchOptions(flags({ measureSecs: -1 }))).toMatch(/^--measure-secs: from 0 to 600/)
    // and at least 20,000 streams of warm-up (3,000 quick), whatever the seconds
    expect(benchOptions(flags())).toMatchObject({ warmupStreams: 20_000 })
    expect(benchOptions(flags({ quick: true }))).toMatchObject({ warmupStreams: 3000 })
    expect(benchOptions(flags({ warmupStreams: 0 }))).toMatchObject({ warmupStreams: 0 })
    expect(benchOptions(flags({ warmupStreams: 1.5 }))).toMatch(/^--warmup-streams: a whole number/)
    // the default most stays within 600 s; a most given alone lowers the default least to it
    expect(benchOptions(flags({ warmupSecs: 200 }))).toMatchObject({ warmupSecs: 200, warmupMaxSecs: 600 })
    expect(benchOptions(flags({ warmupMaxSecs: 2 }))).toMatchObject({ warmupSecs: 2, warmupMaxSecs: 2 })
    expect(benchOptions(flags({ quick: true, warmupMaxSecs: 2 }))).toMatchObject({ warmupSecs: 1, warmupMaxSecs: 2 })
    expect(benchOptions(flags({ nodeFlags: " --single-threaded-gc  --max-semi-space-size=16 " }))).toMatchObject({ nodeFlags: ["--single-threaded-gc", "--max-semi-space-size=16"] })
    expect(benchOptions(flags({ nodeFlags: "gc" }))).toMatch(/^--node-flags: each must start with --/)
    expect(benchOptions(flags({ concurrency: "1,x" }))).toMatch(/^--concurrency/)
    expect(benchOptions(flags({ modes: "tcp-full,nope" }))).toMatch(/^--modes: unknown nope/)
    expect(benchOptions(flags({ delayMs: -1 }))).toMatch(/^--delay-ms/)
    expect(benchOptions(flags({ rounds: 0 }))).toMatch(/^--rounds/)
    // --interleave: 1 (row after row) unless given; a whole number from 1 to 100
    expect(benchOptions(flags())).toMatchObject({ interleave: 1 })
    expect(benchOptions(flags({ interleave: 6 }))).toMatchObject({ interleave: 6 })
    expect(benchOptions(flags({ interleave: 0 }))).toMatch(/^--interleave: a whole number from 1 to 100, got 0/)
    expect(benchOptions(flags({ interleave: 2.5 }))).toMatch(/^--interleave/)
  })

  it("selects rows in catalog order, with each row's baseline, from ids, presets and prefixes", () => {
    expect(select("tcp-full").rows.map((r) => r.id)).toEqual(["raw-corked", "tcp-full"])
    expect(select("pool").rows.map((r) => r.id)).toEqual(["raw-http+tcp", "http+tcp", "raw-http+tcp-pooled", "http+tcp-pooled"])
    expect(select("nats*").rows.map((r) => r.id)).toEqual(["raw-nats+tcp", "nats+tcp", "raw-nats+tcp-pooled", "nats+tcp-pooled", "nats-publishes"])
    expect(select("all").rows.length).toBe(rows.length)
    expect(select("x,tcp-full").unknown).toEqual(["x"])
  })

  it("--interleave groups each baseline with the selected rows measured against it, the baseline first", () => {
    const ids = (spec: string) => interleaveGroups(select(spec).rows).map((g) => g.map((r) => r.id))
    expect(ids("tcp-full")).toEqual([["raw-corked", "tcp-full"]])
    expect(ids("pool")).toEqual([["raw-http+tcp", "http+tcp"], ["raw-http+tcp-pooled", "http+tcp-pooled"]])
    // an anchor without a baseline, and the in-process reference, run alone
    expect(ids("nats*")).toEqual([["raw-nats+tcp", "nats+tcp"], ["raw-nats+tcp-pooled", "nats+tcp-pooled"], ["nats-publishes"]])
    // every selected row runs once, in one group
    const all = interleaveGroups(select("all").rows).flat().map((r) => r.id)
    expect([...all].sort()).toEqual(rows.map((r) => r.id).sort())
  })

  it("--interleave splits a level's streams into slices that differ by one at most and add up, taken forward then backward", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1_000_000 }), fc.integer({ min: 1, max: 100 }), (streams, slices) => {
        const parts = Array.from({ length: slices }, (_, i) => sliceStreams(streams, slices, i))
        expect(parts.reduce((a, b) => a + b, 0)).toBe(streams)
        expect(Math.max(...parts) - Math.min(...parts)).toBeLessThanOrEqual(1)
      })
    )
    expect(sliceOrder(["a", "b", "c"], 0)).toEqual(["a", "b", "c"])
    expect(sliceOrder(["a", "b", "c"], 1)).toEqual(["c", "b", "a"])
    expect(sliceOrder(["a", "b", "c"], 2)).toEqual(["a", "b", "c"])
  })

  it("every row's baseline is a baseline row, every preset names rows, and ids are unique", () => {
    const ids = new Set(rows.map((r) => r.id))
    expect(ids.size).toBe(rows.length)
    for (const r of rows) if (r.baseline !== undefined) expect(rows.find((b) => b.id === r.baseline)?.kind).toBe("baseline")
    for (const list of Object.values(presets)) for (const id of list) expect(ids.has(id)).toBe(true)
    // every mode of this project has a raw baseline; the in-process reference has none
    for (const r of rows.filter((r) => r.kind === "mode")) expect(r.baseline).toBeDefined()
  })
})

describe("the Effect load loop", () => {
  /** A stream that ends on a later turn, counting how many are in flight. */
  const harness = () => {
    let inFlight = 0
    let most = 0
    let started = 0
    const once = (onFirst: () => void) =>
      Effect.callback<void>((resume) => {
        started++
        most = Math.max(most, ++inFlight)
        setImmediate(() => {
          onFirst()
          inFlight--
          resume(Effect.void)
        })
      })
    return { once, most: () => most, started: () => started }
  }

  it("runs every stream once, never more than the concurrency in flight, and records each", async () => {
    for (const [streams, concurrency] of [[50, 8], [5, 64], [1, 1], [0, 4]] as const) {
      const h = harness()
      const samples: Array<[number, number]> = []
      await Effect.runPromise(loadEffect(streams, concurrency, h.once, (latency, first) => void samples.push([latency, first])))
      expect(h.started()).toBe(streams)
      expect(samples).toHaveLength(streams)
      expect(h.most()).toBe(Math.min(streams, concurrency))
      for (const [latency, first] of samples) {
        expect(first).toBeGreaterThanOrEqual(0)
        expect(latency).toBeGreaterThanOrEqual(first)
      }
    }
  })

  it("the demo's concurrent() runs every call once, as many in flight as asked and no more", async () => {
    for (const [count, inFlight] of [[40, 6], [3, 64], [1, 1]] as const) {
      const h = harness()
      const result = await Effect.runPromise(concurrent(count, inFlight, h.once(() => {})))
      expect(h.started()).toBe(count)
      expect(h.most()).toBe(Math.min(count, inFlight))
      expect(result.stats.count).toBe(count)
      expect(result.rps).toBeGreaterThan(0)
    }
  })

  it("a failed stream fails the run, and no stream starts after it", async () => {
    let started = 0
    const once = () =>
      Effect.suspend(() => {
        started++
        return started === 3 ? Effect.fail("third") : Effect.void
      })
    const exit = await Effect.runPromiseExit(loadEffect(100, 1, once, () => {}))
    expect(exit._tag).toBe("Failure")
    expect(started).toBe(3)
  })
})
