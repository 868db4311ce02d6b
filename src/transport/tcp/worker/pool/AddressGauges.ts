/**
 * The pool's active/idle connection gauges, per router address ("host:port"), across the
 * target pools of that address (a router restarted on the same port is a new target).
 *
 * What it does: counts, publishes to `tcp_pool_active_connections` / `tcp_pool_idle_connections`
 * (observability/Metrics.ts `poolRecorder`), and drops an address's entry once no target pool of
 * it is live and its last connection has closed, removing every `tcp_pool_*` series of that
 * target from the registry, so neither the book nor /metrics grows with targets long gone (a
 * router that comes back on the address starts new series at zero).
 *
 * What it does not do: decide when a connection is active or idle (the target pool does).
 */
import { NO_POOL_RECORDER, poolRecorder } from "../../../../observability/Metrics.ts"
import type { PoolRecorder } from "../../../../observability/Metrics.ts"

/** Active/idle counts of one address. */
export interface AddressGauges {
  readonly address: string
  /** Open connections carrying a stream. */
  active: number
  /** Open connections carrying none. */
  idle: number
  /** Live target pools of this address: with them, or open connections, the entry is kept. */
  targets: number
  /** The address's pool metrics. */
  readonly recorder: PoolRecorder
}

/** Every address's gauges; see the module comment. */
export class GaugeBook {
  private readonly byAddress = new Map<string, AddressGauges>()
  private readonly metrics: boolean

  /** With `metrics` false (`DYN_METRICS=off`), the counts are kept and nothing is recorded. */
  constructor(metrics = true) {
    this.metrics = metrics
  }

  /** The gauges of `address`, counting one more live target pool of it. */
  forNewTarget(address: string): AddressGauges {
    let g = this.byAddress.get(address)
    if (g === undefined) {
      g = { address, active: 0, idle: 0, targets: 0, recorder: this.metrics ? poolRecorder(address) : NO_POOL_RECORDER }
      this.byAddress.set(address, g)
    }
    g.targets++
    return g
  }

  /** Publishes `g`'s counts to its gauges. */
  publish(g: AddressGauges): void {
    g.recorder.setActive(g.active)
    g.recorder.setIdle(g.idle)
  }

  /** Drops the entry of an address with no live target pool and no open connection, and its series. */
  prune(g: AddressGauges): void {
    if (g.targets > 0 || g.active > 0 || g.idle > 0) return
    g.recorder.remove()
    if (this.byAddress.get(g.address) === g) this.byAddress.delete(g.address)
  }

  /** The addresses tracked now. */
  addresses(): ReadonlyArray<string> {
    return [...this.byAddress.keys()]
  }
}
