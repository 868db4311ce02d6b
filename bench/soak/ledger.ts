// The soak tool's bookkeeping, with no I/O: one `CallTrack` per call counts its items by
// (request id, index), and the `Ledger` adds up lost, duplicated, misrouted and out-of-order
// items, the outcome of every call (complete, cancelled, failed: by error type) and the time to
// first item. A call nobody cancelled that fails, or completes with an item missing, is a
// failure among the uncancelled: the soak's pass condition is that there are none.

/** What the ledger says at the end (or at any time: progress). */
export interface LedgerSummary {
  readonly started: number
  readonly finished: number
  /** Calls nobody cancelled that completed with every item. */
  readonly completed: number
  /** Calls that were cancelled (interrupted by the consumer), by where the cancel came. */
  readonly cancelled: { readonly beforeFirstItem: number; readonly afterItems: number; readonly completedFirst: number }
  /** Calls nobody cancelled that failed, by error type (`_tag(reason)`), with a sample message each. */
  readonly failures: Readonly<Record<string, { readonly count: number; readonly sample: string }>>
  /** Calls that were being cancelled and failed with something else than the interruption, by type. */
  readonly cancelledErrors: Readonly<Record<string, { readonly count: number; readonly sample: string }>>
  /** Items a complete call did not get (nobody cancelled it), and how many calls missed some. */
  readonly lostItems: number
  readonly callsWithLostItems: number
  /** Items with an index the call had already seen. */
  readonly duplicatedItems: number
  /** Items carrying another request's id, or an index outside the request. */
  readonly misroutedItems: number
  /** Items whose index was not the one after the previous item's. */
  readonly outOfOrderItems: number
  /** Items delivered, in all. */
  readonly items: number
  /** Time to first item of complete calls, in ms. */
  readonly firstItemMs: { readonly p50: number; readonly p99: number; readonly max: number; readonly count: number }
  /** Duration of complete calls, in ms. */
  readonly durationMs: { readonly p50: number; readonly p99: number; readonly max: number }
  /** Time from start to failure of the failed calls nobody cancelled (an overload refusal: how fast it came), in ms. */
  readonly failedAfterMs: { readonly p50: number; readonly p99: number; readonly max: number }
}

const percentile = (sorted: Float64Array, p: number): number =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!

/** One call's items. */
export class CallTrack {
  readonly seen: Uint8Array
  got = 0
  next = 0
  firstAt = -1
  cancelRequested = false

  readonly ledger: Ledger
  readonly r: number
  readonly n: number
  readonly startedAt: number

  constructor(ledger: Ledger, r: number, n: number, startedAt: number) {
    this.ledger = ledger
    this.r = r
    this.n = n
    this.startedAt = startedAt
    this.seen = new Uint8Array(n)
  }

  /** Counts a batch of items. */
  onItems(items: ReadonlyArray<{ readonly r: number; readonly i: number }>): void {
    const l = this.ledger
    if (this.firstAt < 0 && items.length > 0) this.firstAt = performance.now()
    for (const item of items) {
      l.items++
      if (item.r !== this.r || !(item.i >= 0 && item.i < this.n)) {
        l.misroutedItems++
        continue
      }
      if (this.seen[item.i] === 1) {
        l.duplicatedItems++
        continue
      }
      this.seen[item.i] = 1
      this.got++
      if (item.i !== this.next) l.outOfOrderItems++
      this.next = item.i + 1
    }
  }
}

/** The outcome of a call, as the driver saw it. */
export type CallOutcome =
  | { readonly _tag: "complete" }
  | { readonly _tag: "interrupted" }
  | { readonly _tag: "failed"; readonly type: string; readonly message: string }

/** Adds up every call of a run. */
export class Ledger {
  started = 0
  finished = 0
  completed = 0
  cancelledBeforeFirst = 0
  cancelledAfterItems = 0
  cancelledCompletedFirst = 0
  lostItems = 0
  callsWithLostItems = 0
  duplicatedItems = 0
  misroutedItems = 0
  outOfOrderItems = 0
  items = 0
  private readonly failures = new Map<string, { count: number; sample: string }>()
  private readonly cancelledErrors = new Map<string, { count: number; sample: string }>()
  private readonly firstItem: Array<number> = []
  private readonly durations: Array<number> = []
  private readonly failedAfter: Array<number> = []

  /** A new call of request id `r` expecting `n` items. */
  start(r: number, n: number): CallTrack {
    this.started++
    return new CallTrack(this, r, n, performance.now())
  }

  /** The call ended with `outcome`. */
  finish(track: CallTrack, outcome: CallOutcome): void {
    this.finished++
    const now = performance.now()
    if (track.cancelRequested) {
      if (outcome._tag === "failed") return count(this.cancelledErrors, outcome.type, outcome.message)
      if (outcome._tag === "complete") {
        this.cancelledCompletedFirst++
        // A cancel that came too late still owes every item.
        if (track.got < track.n) {
          this.lostItems += track.n - track.got
          this.callsWithLostItems++
        }
        return
      }
      if (track.got === 0) this.cancelledBeforeFirst++
      else this.cancelledAfterItems++
      return
    }
    if (outcome._tag === "complete") {
      if (track.got < track.n) {
        this.lostItems += track.n - track.got
        this.callsWithLostItems++
        return count(this.failures, "CompleteWithMissingItems", `${track.got} of ${track.n} items`)
      }
      this.completed++
      if (track.firstAt >= 0) this.firstItem.push(track.firstAt - track.startedAt)
      this.durations.push(now - track.startedAt)
      return
    }
    this.failedAfter.push(now - track.startedAt)
    if (outcome._tag === "interrupted") return count(this.failures, "Interrupted", "interrupted although nobody cancelled it")
    count(this.failures, outcome.type, outcome.message)
  }

  /** Failures among calls nobody cancelled. */
  failureCount(): number {
    let n = 0
    for (const v of this.failures.values()) n += v.count
    return n
  }

  /** The totals so far. */
  summary(): LedgerSummary {
    const first = Float64Array.from(this.firstItem).sort()
    const dur = Float64Array.from(this.durations).sort()
    const failed = Float64Array.from(this.failedAfter).sort()
    const spread = (xs: Float64Array) => ({ p50: round(percentile(xs, 0.5)), p99: round(percentile(xs, 0.99)), max: round(xs.length === 0 ? 0 : xs[xs.length - 1]!) })
    const round = (x: number) => Math.round(x * 10) / 10
    return {
      started: this.started,
      finished: this.finished,
      completed: this.completed,
      cancelled: {
        beforeFirstItem: this.cancelledBeforeFirst,
        afterItems: this.cancelledAfterItems,
        completedFirst: this.cancelledCompletedFirst
      },
      failures: Object.fromEntries(this.failures),
      cancelledErrors: Object.fromEntries(this.cancelledErrors),
      lostItems: this.lostItems,
      callsWithLostItems: this.callsWithLostItems,
      duplicatedItems: this.duplicatedItems,
      misroutedItems: this.misroutedItems,
      outOfOrderItems: this.outOfOrderItems,
      items: this.items,
      firstItemMs: {
        p50: round(percentile(first, 0.5)),
        p99: round(percentile(first, 0.99)),
        max: round(first.length === 0 ? 0 : first[first.length - 1]!),
        count: first.length
      },
      durationMs: spread(dur),
      failedAfterMs: spread(failed)
    }
  }
}

const count = (map: Map<string, { count: number; sample: string }>, type: string, message: string): void => {
  const e = map.get(type)
  if (e === undefined) map.set(type, { count: 1, sample: message.slice(0, 300) })
  else e.count++
}

/** A small seeded PRNG (mulberry32): the same seed gives the same cancellations. */
export const prng = (seed: number): (() => number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
