/**
 * The statistics of the benchmark: percentiles (nearest rank) and the points of a latency CDF,
 * from raw samples in microseconds. Pure functions on arrays; no I/O, no clocks.
 */

/** Percentiles and extremes of one set of samples, in microseconds. */
export interface Summary {
  readonly count: number
  readonly min: number
  readonly p50: number
  readonly p95: number
  readonly p99: number
  readonly max: number
  readonly mean: number
}

/** The samples sorted ascending (a copy). */
export const sorted = (samples: ReadonlyArray<number>): Array<number> => Array.from(Float64Array.from(samples).sort())

/**
 * The `q`-quantile (0 < q <= 1) of ascending `sortedSamples` by nearest rank: the smallest sample
 * with at least `q` of the samples at or below it; 0 for no samples.
 */
export const quantile = (sortedSamples: ReadonlyArray<number>, q: number): number => {
  const n = sortedSamples.length
  if (n === 0) return 0
  const rank = Math.min(n, Math.max(1, Math.ceil(q * n)))
  return sortedSamples[rank - 1]!
}

/** Count, min, p50, p95, p99, max and mean of `samples` (all 0 for none). */
export const summarize = (samples: ReadonlyArray<number>): Summary => {
  const s = sorted(samples)
  const n = s.length
  if (n === 0) return { count: 0, min: 0, p50: 0, p95: 0, p99: 0, max: 0, mean: 0 }
  let sum = 0
  for (const x of s) sum += x
  return { count: n, min: s[0]!, p50: quantile(s, 0.5), p95: quantile(s, 0.95), p99: quantile(s, 0.99), max: s[n - 1]!, mean: sum / n }
}

/**
 * The empirical CDF of `samples` as at most `points` `[value, fraction]` pairs, ascending in
 * both: fraction f of the samples are at or below value. The first point is the minimum with
 * fraction 1/n, the last the maximum with fraction 1. Evenly spaced in rank, so the tail keeps
 * its shape; for n <= points every sample is a point.
 */
export const cdf = (samples: ReadonlyArray<number>, points = 100): Array<readonly [number, number]> => {
  const s = sorted(samples)
  const n = s.length
  if (n === 0) return []
  const k = Math.max(2, Math.min(n, Math.floor(points)))
  const out: Array<readonly [number, number]> = []
  for (let i = 0; i < k; i++) {
    // ranks 1..n spread over k points, first and last included
    const rank = 1 + Math.round((i * (n - 1)) / (k - 1))
    const value = s[rank - 1]!
    const last = out[out.length - 1]
    // equal values: keep the highest fraction only
    if (last !== undefined && last[0] === value) out[out.length - 1] = [value, rank / n]
    else out.push([value, rank / n])
  }
  return out
}

/** `a / b`, or undefined when either is missing or b is 0. */
export const ratio = (a: number | undefined, b: number | undefined): number | undefined =>
  a === undefined || b === undefined || b === 0 ? undefined : a / b
