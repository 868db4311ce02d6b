/**
 * Latency and throughput measurement shared by the demo and the benchmarks: percentiles
 * of sequential calls, and requests per second at a given concurrency.
 */
import { Effect } from "effect"

/** Percentiles (microseconds) and throughput of one run. */
export interface LatencyStats {
  readonly count: number
  readonly p50: number
  readonly p95: number
  readonly p99: number
  readonly mean: number
}

/** Percentiles of samples given in milliseconds, reported in microseconds. */
export const summarize = (samplesMs: ReadonlyArray<number>): LatencyStats => {
  const sorted = [...samplesMs].sort((a, b) => a - b)
  const at = (q: number) => (sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! * 1000)
  const mean = sorted.length === 0 ? 0 : (sorted.reduce((a, b) => a + b, 0) / sorted.length) * 1000
  return { count: sorted.length, p50: at(0.5), p95: at(0.95), p99: at(0.99), mean }
}

/** Runs `once` `count` times one after another and summarizes the latencies. */
export const sequential = <E, R>(count: number, once: Effect.Effect<void, E, R>): Effect.Effect<LatencyStats, E, R> =>
  Effect.gen(function*() {
    const samples: Array<number> = []
    for (let i = 0; i < count; i++) {
      const t0 = performance.now()
      yield* once
      samples.push(performance.now() - t0)
    }
    return summarize(samples)
  })

/** One lane of `inLanes`: how it starts a run, and what it does once that run has succeeded. */
export interface Lane<E, R> {
  readonly run: () => Effect.Effect<void, E, R>
  readonly done: () => void
}

/**
 * Runs `count` runs over `inFlight` lanes, each made by `lane()`: a fiber that starts the next
 * run (`run`) when its last is over, and calls `done` right after each run succeeds, as
 * `concurrentPromise`'s lanes do. No fiber is forked per run (`Effect.forEach` with a
 * concurrency would fork one each: 0.4-0.8 µs a run at 64 in flight), and timing a run in
 * `run`/`done` adds no Effect step to it (a `tap` and a `sync` a run did: about 2,000
 * instructions a call at 1 in flight, measured with callgrind, that the raw baselines' loops
 * do not pay).
 */
export const inLanes = <E, R>(count: number, inFlight: number, lane: () => Lane<E, R>): Effect.Effect<void, E, R> =>
  Effect.suspend(() => {
    let next = 0
    const lanes = Math.max(1, Math.min(inFlight, count))
    return Effect.forEach(
      Array.from({ length: lanes }),
      () =>
        Effect.suspend(() => {
          const { done, run } = lane()
          return Effect.whileLoop({
            while: () => next < count,
            body: () => {
              next++
              return run()
            },
            step: done
          })
        }),
      { concurrency: lanes, discard: true }
    )
  })

/** Runs `once` `count` times with `inFlight` at a time (`inLanes`); returns requests per second and latencies. */
export const concurrent = <E, R>(
  count: number,
  inFlight: number,
  once: Effect.Effect<void, E, R>
): Effect.Effect<{ readonly rps: number; readonly stats: LatencyStats }, E, R> =>
  Effect.gen(function*() {
    const samples: Array<number> = []
    const t0 = performance.now()
    yield* inLanes(count, inFlight, () => {
      let s = 0
      return {
        run: () => {
          s = performance.now()
          return once
        },
        done: () => void samples.push(performance.now() - s)
      }
    })
    const elapsed = (performance.now() - t0) / 1000
    return { rps: count / elapsed, stats: summarize(samples) }
  })

/**
 * The Promise form of `concurrent`, for raw baselines written without Effect: runs `once`
 * `count` times with `inFlight` at a time.
 */
export const concurrentPromise = async (
  count: number,
  inFlight: number,
  once: () => Promise<void>
): Promise<{ readonly rps: number; readonly stats: LatencyStats }> => {
  const samples: Array<number> = []
  const t0 = performance.now()
  let next = 0
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next++ < count) {
        const s = performance.now()
        await once()
        samples.push(performance.now() - s)
      }
    })
  )
  return { rps: count / ((performance.now() - t0) / 1000), stats: summarize(samples) }
}

/** Formats microseconds for a table. */
export const us = (n: number): string => (n >= 10_000 ? `${(n / 1000).toFixed(1)} ms` : `${n.toFixed(0)} µs`)

/** Renders rows as an aligned text table. */
export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: ReadonlyArray<string>) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ")
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n")
}
