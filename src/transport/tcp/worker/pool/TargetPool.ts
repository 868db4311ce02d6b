/**
 * One router target's share of the worker's connection pool: an Effect `Pool` of
 * `PooledConnection`s, the spare leases of the fast path, and the pool's bookkeeping of each
 * connection (PooledConnection.ts), kept here rather than read from the Pool's internals.
 *
 * What it does:
 * - Leases: a stream's lease (its scope: the RcMap reference and one Pool slot) is kept as a
 *   spare when the stream ends, unless the connection is retired or unusable, the target is
 *   evicted, the pool is closing, or an acquisition is in flight in the Pool (which then gets the
 *   slot). `lendSpare` lends the most recent spare synchronously after validating it.
 * - `hasFreeConnection` says, from its own counts, when a Pool acquisition cannot wait (so it
 *   need not be bounded): nothing in flight in the Pool, and an unretired open connection whose
 *   leases are below `maxStreamsPerConnection`.
 * - Lifecycle: `retire` takes a connection out of circulation (drain, then close: the Pool's
 *   finalizer), `invalidate` also counts it as a validation failure (once); connection events
 *   keep the active/idle gauges and invalidate a connection the router closed.
 *
 * What it does not do: create connections or sweep them (TargetConnections.ts), or route
 * streams to targets (ConnectionPool.ts). Lending a spare is a few synchronous steps and no
 * Effect; nothing here runs per frame.
 */
import { Effect, Exit, Pool, Scope } from "effect"
import type { TransportError } from "../../../../TransportError.ts"
import type { MuxConnection } from "../MuxConnection.ts"
import type { AddressGauges, GaugeBook } from "./AddressGauges.ts"
import type { PoolEnv } from "./PoolEnv.ts"
import type { Lease, PooledConnection } from "./PooledConnection.ts"

/** Where a pooled stream calls home: the router's address and its frontend_server_id. */
export interface PoolTarget {
  /** "host:port": the target of metrics and errors. */
  readonly address: string
  readonly host: string
  readonly port: number
  readonly frontendServerId: string
}

/** Tells the pool that `dead` died with streams the router may not have seen finish. */
export type LostStreams = (
  tp: TargetPool,
  dead: PooledConnection,
  error: TransportError,
  unfinished: ReadonlyArray<Uint8Array>,
  unconfirmed: ReadonlyArray<Uint8Array>
) => void

/** `lendSpare` found no spare lease it could lend. */
export const MISS: unique symbol = Symbol("MISS")

const ROTATING = "rotating connection: older than maxLifetime (drain, then close)"

/** One target's pool; see the module comment. */
export class TargetPool {
  readonly key: string
  readonly target: PoolTarget
  readonly env: PoolEnv
  readonly gauges: AddressGauges
  readonly book: GaugeBook
  /** The Effect Pool of its connections (set once, by TargetConnections.ts). */
  pool!: Pool.Pool<PooledConnection, TransportError>
  /** Open connections (handshake done, not closed), and those of them carrying a stream. */
  readonly connections = new Set<PooledConnection>()
  /**
   * How many of them carry a stream (`PooledConnection.busy`): a flag and a count, not a set, since
   * at one stream in flight a connection goes busy and back on every request, and a set's delete
   * of its only entry shrinks (reallocates) its table each time.
   */
  busyCount = 0
  /** Connections retired and not yet replaced: a creation's log says "replacing". */
  replacing = 0
  /** Leases whose stream has ended, kept for the next stream; most recent last. */
  spare: Array<Lease> = []
  /** Set when the RcMap has closed this target: its leases are no longer kept. */
  evicted = false
  /** Acquisitions in flight in the Pool (possibly waiting there). */
  acquiring = 0
  fastAcquisitions = 0
  poolAcquisitions = 0
  /** Called when a connection dies with streams to reset elsewhere. */
  readonly onLostStreams: LostStreams

  constructor(key: string, target: PoolTarget, env: PoolEnv, book: GaugeBook, onLostStreams: LostStreams) {
    this.key = key
    this.target = target
    this.env = env
    this.book = book
    this.gauges = book.forNewTarget(target.address)
    this.onLostStreams = onLostStreams
  }

  // ---- leases -------------------------------------------------------------------------------

  /** Gives a lease back: the Pool slot and the RcMap reference. */
  releaseLease(lease: Lease): void {
    const finalize = Scope.closeUnsafe(lease.scope, Exit.void)
    if (finalize !== undefined) this.env.runFork(finalize)
    lease.pc.leases--
  }

  /** Gives back the spare leases on `pc` (retired, closing), so its Pool slot can drain and close. */
  dropSpare(pc: PooledConnection): void {
    if (this.spare.length === 0) return
    const keep: Array<Lease> = []
    for (const lease of this.spare) {
      if (lease.pc === pc) this.releaseLease(lease)
      else keep.push(lease)
    }
    this.spare = keep
  }

  /** Gives back every spare lease. */
  dropAllSpare(): void {
    const spare = this.spare
    this.spare = []
    for (const lease of spare) this.releaseLease(lease)
  }

  /** The `release` of a stream on `lease`: once, when the stream ends (later calls do nothing). */
  releaser(lease: Lease): () => void {
    let released = false
    return () => {
      if (released) return
      released = true
      const pc = lease.pc
      if (this.env.closed || this.evicted || pc.retired || this.acquiring > 0 || pc.conn.problem() !== undefined) this.releaseLease(lease)
      else this.spare.push(lease)
    }
  }

  /**
   * The fast path: lends the most recent spare lease whose connection passes validation,
   * synchronously (no Effect, no Pool, no scope). A spare on a retired, unusable or too old
   * connection is given back, the connection invalidated or rotated, and the next one tried.
   */
  lendSpare<A>(open: (connection: MuxConnection, release: () => void) => A, started: number): A | typeof MISS {
    const env = this.env
    const spare = this.spare
    while (spare.length > 0) {
      const lease = spare.pop()!
      const pc = lease.pc
      if (pc.retired) {
        this.releaseLease(lease)
        continue
      }
      const unusable = this.check(pc)
      if (unusable !== undefined) {
        this.releaseLease(lease)
        env.runFork(unusable)
        continue
      }
      this.fastAcquisitions++
      this.gauges.recorder.reused()
      this.gauges.recorder.acquired((performance.now() - started) / 1000)
      pc.served++
      if (env.debug) env.logNow("reusing connection", { target: this.target.address, connection: pc.id, streams: pc.conn.streamCount(), served: pc.served })
      return open(pc.conn, this.releaser(lease))
    }
    return MISS
  }

  /** True when a Pool acquisition now cannot wait: nothing in flight there, and a connection with a free slot. */
  hasFreeConnection(): boolean {
    if (this.acquiring > 0) return false
    const max = this.env.options.maxStreams
    for (const pc of this.connections) if (!pc.retired && pc.leases < max) return true
    return false
  }

  /** Why `pc` cannot be lent now (unusable or too old), or undefined; the effect retires it. */
  check(pc: PooledConnection): Effect.Effect<void> | undefined {
    const problem = pc.conn.problem()
    if (problem !== undefined) return this.invalidate(pc, problem)
    const age = this.env.clock.currentTimeMillisUnsafe() - pc.createdAt
    return age >= this.env.options.maxLifetimeMs ? this.rotate(pc, age) : undefined
  }

  // ---- connection lifecycle -----------------------------------------------------------------

  /** Takes a connection out of circulation: it drains, then closes (Pool finalizer). `message` says why. */
  retire(pc: PooledConnection, message: string, annotations: Record<string, unknown> = {}): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (pc.retired) return Effect.void
      pc.retired = true
      this.dropSpare(pc)
      // The Pool replaces it when its streams still need the capacity, or to keep minIdle.
      if (pc.conn.streamCount() > 0 || this.connections.size - 1 < this.env.options.minIdle) this.replacing++
      return this.env.log(message, { target: this.target.address, connection: pc.id, streams: pc.conn.streamCount(), ...annotations })
        .pipe(Effect.andThen(Pool.invalidate(this.pool, pc)))
    })
  }

  /** Retires a connection older than maxLifetime (drain, then close). */
  rotate(pc: PooledConnection, ageMs: number): Effect.Effect<void> {
    return this.retire(pc, ROTATING, { ageMs })
  }

  /** A connection found dead or half-closed: counted once, invalidated and replaced. */
  invalidate(pc: PooledConnection, why: string): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (!pc.counted) {
        pc.counted = true
        this.gauges.recorder.validationFailed()
      }
      return this.retire(pc, `invalidating connection: ${why}`)
    })
  }

  /** A connection has become ready: it joins the open ones, idle. */
  connectionOpened(pc: PooledConnection): void {
    this.connections.add(pc)
    this.gauges.idle++
    this.book.publish(this.gauges)
    this.gauges.recorder.created()
    if (this.env.closed) pc.conn.destroy()
  }

  /** `pc` went from no stream to one (`busy`), or back. */
  usage(pc: PooledConnection, busy: boolean): void {
    if (!busy) pc.idleSince = this.env.clock.currentTimeMillisUnsafe()
    if (!this.connections.has(pc)) return
    const g = this.gauges
    if (!this.mark(pc, busy)) return
    if (busy) {
      g.active++
      g.idle--
    } else {
      g.active--
      g.idle++
    }
    this.book.publish(g)
  }

  /** Marks `pc` as carrying a stream or not (`busyCount` follows); false when it already was. */
  private mark(pc: PooledConnection, busy: boolean): boolean {
    if (pc.busy === busy) return false
    pc.busy = busy
    this.busyCount += busy ? 1 : -1
    return true
  }

  /** `pc`'s socket has closed (see `MuxConnectionEvents.onClose`). */
  connectionClosed(pc: PooledConnection, error: TransportError, byUs: boolean, unfinished: ReadonlyArray<Uint8Array>, unconfirmed: ReadonlyArray<Uint8Array>): void {
    if (!this.connections.delete(pc)) return
    const g = this.gauges
    if (this.mark(pc, false)) g.active--
    else g.idle--
    this.book.publish(g)
    if (this.evicted) this.book.prune(g)
    const env = this.env
    if ((unfinished.length > 0 || unconfirmed.length > 0) && !env.closed) this.onLostStreams(this, pc, error, unfinished, unconfirmed)
    if (byUs || pc.retired || env.closed) {
      env.logNow("connection closed", { target: this.target.address, connection: pc.id, served: pc.served })
      return
    }
    env.runFork(this.invalidate(pc, error.message))
  }
}
