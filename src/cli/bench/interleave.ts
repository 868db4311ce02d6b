/**
 * `bench --interleave n`: a baseline and the rows measured against it, run side by side. Every
 * row's processes stay up; at each level every row warms up, then each row's measured streams
 * are split into n slices taken in turn (forward, then backward), so that a slow phase of the
 * machine falls on a row and its baseline alike. One row's processes and measurement are row.ts's.
 */
import type { RowSpec } from "./catalog.ts"
import type { NatsServer } from "./natsServer.ts"
import type { BenchOptions } from "./options.ts"
import { cleanUp, deadline, failure, finishRow, measuredStreams, measureStreams, natsFor, pooled, startRow, warmUp } from "./row.ts"
import type { Level, Measured, Outcome, RowState, Started, Streams } from "./row.ts"

/** The streams of slice `index` of `slices` when `streams` are split as evenly as whole streams allow. */
export const sliceStreams = (streams: number, slices: number, index: number): number =>
  Math.floor((streams * (index + 1)) / slices) - Math.floor((streams * index) / slices)

/** The order of a group's rows in slice `index`: forward, then backward, so no row always follows the same one. */
export const sliceOrder = <A>(rows: ReadonlyArray<A>, index: number): ReadonlyArray<A> => (index % 2 === 0 ? rows : [...rows].reverse())

/**
 * Runs one round of a group of rows side by side (`--interleave`): a baseline and the rows
 * measured against it. Every row's processes start first and stay up; at each level every row
 * warms up, then each one's measured streams are split into `options.interleave` slices, run
 * one row at a time in turn (forward, then backward), each slice after a short unmeasured
 * re-warm (a row's processes sat idle while the others ran). A slow phase of the machine then
 * falls on a row and its baseline alike. A row that fails is stopped; the others go on. The
 * group's time limit is the rows' together. Never throws.
 */
export const runGroup = async (
  specs: ReadonlyArray<RowSpec>,
  options: BenchOptions,
  nats: NatsServer | { readonly failed: string } | undefined,
  progressOf: (spec: RowSpec) => (phase: string, done?: number, of?: number) => void
): Promise<Map<string, Outcome>> => {
  const outcomes = new Map<string, Outcome>()
  interface Live {
    readonly spec: RowSpec
    readonly natsUrl: string | undefined
    readonly state: RowState
    readonly progress: (phase: string, done?: number, of?: number) => void
    row: Started | undefined
    readonly levels: Array<Level>
    failed: Outcome | undefined
  }
  const live: Array<Live> = []
  for (const spec of specs) {
    const natsUrl = natsFor(spec, nats)
    if ("status" in natsUrl) outcomes.set(spec.id, natsUrl)
    else live.push({ spec, natsUrl: natsUrl.url, state: { measuring: false, children: [], cleanups: [] }, progress: progressOf(spec), row: undefined, levels: [], failed: undefined })
  }
  const limit = deadline(options.rowTimeoutS * Math.max(1, live.length))
  /** Fails a row with `e` and stops its processes at once; the others go on. */
  const fail = async (l: Live, e: unknown): Promise<void> => {
    l.failed = await failure(e, l.state)
    await cleanUp(l.state, options)
  }
  /** Runs `f` for a row that has not failed; a failure (or the group's time limit) fails that row only. */
  const step = async (l: Live, f: (row: Started) => Promise<void>): Promise<void> => {
    if (l.failed !== undefined || l.row === undefined) return
    await Promise.race([f(l.row), limit.expired]).catch((e: unknown) => fail(l, e))
  }
  try {
    for (const l of live) {
      l.row = await Promise.race([startRow(l.spec, options, l.natsUrl, l.state, l.progress), limit.expired]).catch((e: unknown) => fail(l, e).then(() => undefined))
    }
    const paced = options.delayMs > 0
    const slices = options.interleave
    for (const concurrency of options.concurrency) {
      const plan = new Map<Live, { streams: number; warmupSecs: number; parts: Array<Streams> }>()
      for (const l of live) {
        await step(l, async (row) => {
          l.progress(`c=${concurrency} warming up`)
          l.state.measuring = true
          const warm = await warmUp(row.client, concurrency, options.warmupSecs, paced ? 0 : options.warmupStreams, options.warmupMaxSecs, paced)
          plan.set(l, { streams: measuredStreams(options.streams, warm.rate, options.measureSecs), warmupSecs: warm.secs, parts: [] })
        })
      }
      for (let index = 0; index < slices; index++) {
        for (const l of sliceOrder(live, index)) {
          const p = plan.get(l)
          if (p === undefined) continue
          await step(l, async (row) => {
            const n = sliceStreams(p.streams, slices, index)
            if (n === 0) return
            l.progress(`c=${concurrency} slice ${index + 1}/${slices}`)
            // The row sat idle while the others ran: a few streams to bring it back to speed.
            if (!paced && index > 0) await row.client.ask({ t: "run", streams: Math.max(2 * concurrency, 100), concurrency }, "result")
            const done = p.parts.reduce((k, part) => k + part.latencyUs.length, 0)
            p.parts.push(await measureStreams(row, concurrency, n, (k) => l.progress(`c=${concurrency} slice ${index + 1}/${slices}`, done + k, p.streams)))
          })
        }
      }
      for (const [l, p] of plan) {
        if (l.failed !== undefined) continue
        l.levels.push({ ...pooled(concurrency, p.parts), warmupSecs: p.warmupSecs })
      }
    }
    for (const l of live) {
      let peakRssKb: Measured["peakRssKb"] | undefined
      await step(l, async (row) => {
        peakRssKb = await finishRow(row, l.progress)
      })
      if (l.failed === undefined && peakRssKb !== undefined) outcomes.set(l.spec.id, { status: "ok", measured: { levels: l.levels, peakRssKb } })
    }
  } finally {
    limit.cancel()
    await Promise.all(live.map((l) => cleanUp(l.state, options)))
  }
  for (const l of live) if (!outcomes.has(l.spec.id)) outcomes.set(l.spec.id, l.failed ?? { status: "failed", reason: "stopped before it was measured" })
  return outcomes
}

/**
 * The groups `--interleave` runs side by side, in the order of `rows`: each baseline with the
 * selected rows measured against it; a row with neither baseline nor followers alone.
 */
export const interleaveGroups = (rows: ReadonlyArray<RowSpec>): Array<Array<RowSpec>> => {
  const groups = new Map<string, Array<RowSpec>>()
  for (const r of rows) {
    const key = r.baseline !== undefined && rows.some((b) => b.id === r.baseline) ? r.baseline : r.id
    const group = groups.get(key)
    if (group === undefined) groups.set(key, [r])
    else group.push(r)
  }
  // The baseline first in its group (it comes first in the catalog, but a group is keyed by it in any case).
  return [...groups.entries()].map(([key, g]) => [...g.filter((r) => r.id === key), ...g.filter((r) => r.id !== key)])
}

