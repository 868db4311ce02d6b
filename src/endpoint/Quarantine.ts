/**
 * The quarantine of one router client: instances that failed before their ack too many times in
 * a row are skipped by `pick` for a while.
 *
 * - Each failure that counts (`Failover.countsTowardsQuarantine`) adds one to the instance's run
 *   of consecutive failures; an ack resets it. At `threshold` (3) the instance is quarantined for
 *   `quarantineMs` (`DYN_ROUTER_QUARANTINE_SECS`): `failed` returns true once, so the caller logs
 *   it, and the metrics count it (`transport_instance_quarantined_total`, and the
 *   `transport_quarantined_instances` gauge while it lasts).
 * - When the quarantine ends, the instance is on probation: its run stays one short of the
 *   threshold, so its next failure quarantines it again at once, while an ack clears it.
 * - A failure of an instance already in quarantine (picked because every other was tried or is
 *   quarantined too) extends it, without counting a new quarantine.
 *
 * It does not pick instances (`InstanceSet.pick` asks `has`), log, or decide what to retry. It is
 * socket-free: timers are injected (the globals by default, unref'd so they never keep a process
 * alive), and every timer is cleared by `close`. The hot path (`has`, `succeeded`) is a size check
 * while nothing is quarantined or failing.
 */

/** The timer functions a quarantine uses (the globals by default). */
export interface QuarantineTimers {
  readonly setTimeout: (f: () => void, ms: number) => unknown
  readonly clearTimeout: (handle: unknown) => void
}

/** What a quarantine reports to the metrics. */
export interface QuarantineMetrics {
  /** An instance was put in quarantine. */
  readonly quarantined: () => void
  /** The number of instances in quarantine moved by `delta`. */
  readonly delta: (delta: 1 | -1) => void
}

/** Options of `Quarantine`. */
export interface QuarantineOptions {
  /** How long a quarantine lasts, in ms. */
  readonly quarantineMs: number
  /** Consecutive counted failures that quarantine an instance (default `DEFAULT_THRESHOLD`). */
  readonly threshold?: number | undefined
  readonly metrics?: QuarantineMetrics | undefined
  readonly timers?: QuarantineTimers | undefined
}

/** Consecutive failures before the ack that quarantine an instance. */
export const DEFAULT_THRESHOLD = 3

const globalTimers: QuarantineTimers = {
  setTimeout: (f, ms) => {
    const t = setTimeout(f, ms)
    t.unref?.()
    return t
  },
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>)
}

/** The quarantine of one client; see the module comment. */
export class Quarantine {
  private readonly runs = new Map<bigint, number>()
  private readonly timers = new Map<bigint, unknown>()
  private readonly threshold: number
  private readonly quarantineMs: number
  private readonly metrics: QuarantineMetrics | undefined
  private readonly clock: QuarantineTimers
  private closed = false

  /** An empty quarantine. */
  constructor(options: QuarantineOptions) {
    this.quarantineMs = options.quarantineMs
    this.threshold = Math.max(1, options.threshold ?? DEFAULT_THRESHOLD)
    this.metrics = options.metrics
    this.clock = options.timers ?? globalTimers
  }

  /** How many instances are in quarantine now. */
  get size(): number {
    return this.timers.size
  }

  /** True while `instanceId` is in quarantine. */
  readonly has = (instanceId: bigint): boolean => this.timers.size !== 0 && this.timers.has(instanceId)

  /** The ids in quarantine now. */
  quarantined(): ReadonlyArray<bigint> {
    return [...this.timers.keys()]
  }

  /** The instance acked a request: its run of failures ends. */
  readonly succeeded = (instanceId: bigint): void => {
    if (this.runs.size !== 0) this.runs.delete(instanceId)
  }

  /**
   * The instance failed before its ack in a way that counts. True when this failure put it in
   * quarantine (not when it was in quarantine already: that only extends it).
   */
  failed(instanceId: bigint): boolean {
    if (this.closed) return false
    const run = (this.runs.get(instanceId) ?? 0) + 1
    if (run < this.threshold) {
      this.runs.set(instanceId, run)
      return false
    }
    // On probation from now on: one short of the threshold until an ack clears it.
    this.runs.set(instanceId, this.threshold - 1)
    const existing = this.timers.get(instanceId)
    const fresh = existing === undefined
    if (!fresh) this.clock.clearTimeout(existing)
    this.timers.set(instanceId, this.clock.setTimeout(() => this.release(instanceId), this.quarantineMs))
    if (fresh) {
      this.metrics?.quarantined()
      this.metrics?.delta(1)
    }
    return fresh
  }

  /** Ends the quarantine of `instanceId` now (its timer fired). */
  release(instanceId: bigint): void {
    const timer = this.timers.get(instanceId)
    if (timer === undefined) return
    this.clock.clearTimeout(timer)
    this.timers.delete(instanceId)
    this.metrics?.delta(-1)
  }

  /** Forgets `instanceId` (it left discovery): ends its quarantine and its run. */
  forget(instanceId: bigint): void {
    this.runs.delete(instanceId)
    this.release(instanceId)
  }

  /** Ends every quarantine and clears every timer; later failures are ignored. */
  close(): void {
    this.closed = true
    for (const id of [...this.timers.keys()]) this.release(id)
    this.runs.clear()
  }
}
