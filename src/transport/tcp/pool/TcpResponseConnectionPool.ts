/**
 * The worker's pool of persistent, multiplexed call-home connections (`DYN_TCP_POOL_*`): per
 * router target, a few `MuxConnection`s that many response streams share.
 *
 * What it does:
 * - A scoped resource: an `RcMap` from target to an Effect `Pool` of connections. A stream holds
 *   a reference to its target's pool and a lease on one connection (the `Pool`'s `concurrency`
 *   is the number of streams one connection carries, `maxStreamsPerConnection`), so the pool
 *   grows a connection only when the ones it has are full, up to `maxPerTarget`, and keeps
 *   `minIdle` open even with no stream (refilled when one dies). A target nobody has used for
 *   `targetIdleTimeoutMs` (default `idleTimeoutMs`) is evicted with all its connections.
 * - Fast path: a stream's lease (its scope: the RcMap reference and one Pool slot) is not given
 *   back when the stream ends but kept as a spare of its target; the next stream takes the most
 *   recent spare synchronously (`lendSpare`: no RcMap/Pool/Effect round trip, no scope), after
 *   the same validation, and counts `reused` and the acquisition latency as the Pool path does.
 *   The Pool path runs only when no spare is usable; it alone creates connections and waits for
 *   capacity, so `maxPerTarget` and `maxStreamsPerConnection` hold (spares occupy Pool slots). A
 *   spare is given back when a stream waits in the Pool, when its connection is retired or
 *   unusable, when the target is evicted or the pool closes, and by the sweep once its
 *   connection has had no stream for `sweepIntervalMs` (so the RcMap can evict an unused target,
 *   at most two sweeps after `targetIdleTimeoutMs` would have started).
 * - A sweep every `sweepIntervalMs` (on the Effect Clock, so TestClock drives it) closes
 *   connections with no stream for `idleTimeoutMs` (the connection's `idleSince`, not the Pool
 *   item's, which spares keep leased) beyond `minIdle`, and rotates connections older than
 *   `maxLifetimeMs`: a rotated connection takes no new stream, is replaced, and closes only when
 *   its last stream has ended (drain, then close). Lending checks the age too.
 * - Validation before lending: a connection that is destroyed, half-closed or closing is not
 *   lent; it is invalidated (replaced) and counted in `tcp_pool_validation_failures_total`, and
 *   the acquisition tries again. A connection the router closes, or that errors, is invalidated
 *   and counted the moment its socket closes; every stream on it has already heard
 *   `onDisconnect`.
 * - Acquisition is bounded: waiting for a free connection fails after `acquireTimeoutMs` with
 *   TransportTimeoutError "AcquireTimeout"; connecting is bounded by `connectTimeoutMs`. Every
 *   failure is a typed TransportError naming the target.
 * - When a connection dies with streams that had not finished (the router may never have read
 *   their Prologue, and would wait for their call-home timeout), the pool tells the router on
 *   another connection to the same target, best effort: a Reset per stream, with the reason, on
 *   an open connection if there is one, else on one acquired as a stream would be (bounded by
 *   `acquireTimeoutMs`, not counted in the metrics); if none can be had, it gives up with a debug
 *   log. Streams that ended with their last frame written but not yet acknowledged by the router
 *   are reset too, but never acquire a connection of their own (the router most likely has them,
 *   and ignores a Reset for a stream it finished). Not while the pool is closing.
 * - Metrics, labelled with the target "host:port" (observability/Metrics.ts `poolRecorder`):
 *   connections created, reused (a stream lent a connection that was open before it asked),
 *   active (carrying a stream) and idle gauges, acquisition latency, validation failures. The
 *   gauges' bookkeeping of an address is dropped once no target pool of it is live and its last
 *   connection has closed (the gauges then read 0), so it does not grow with targets long gone.
 * - Debug logs (module `transport.tcp.pool`) say why a connection was created, reused, closed,
 *   rotated, invalidated, and why a target was evicted.
 * - Closing the scope destroys every connection (their streams hear `onDisconnect`) and closes
 *   the pools, within a bound.
 *
 * What it does not do: frame or parse anything (MuxConnection does), or decide whether a stream
 * is pooled (TcpStreamClient does, from the ConnectionInfo). A stream served by a spare costs a
 * few synchronous steps; one served by the Pool runs one small Effect to acquire and one to
 * release; nothing per frame.
 */
import { Clock, Effect, Exit, LogLevel, Pool, RcMap, References, Scope } from "effect"
import type { Context } from "effect"
import { poolRecorder } from "../../../observability/Metrics.ts"
import type { PoolRecorder } from "../../../observability/Metrics.ts"
import type { TransportSettings } from "../../../TransportConfig.ts"
import { TransportConnectionError, TransportTimeoutError } from "../../../TransportError.ts"
import type { TransportError } from "../../../TransportError.ts"
import { DEFAULT_CONNECTION_WINDOW, DEFAULT_STREAM_WINDOW, encodeResetPayload } from "../../../protocol/MuxHandshake.ts"
import { connectMux, MuxConnection } from "./MuxConnection.ts"

/** Default bound on connect + handshake (section 7: 5 s). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5000
/** Default bound on waiting for a connection. */
export const DEFAULT_ACQUIRE_TIMEOUT_MS = 5000
/** Default number of streams one connection carries before the pool opens another. */
export const DEFAULT_MAX_STREAMS_PER_CONNECTION = 256
/** Default wait for the router's close after a graceful close. */
export const DEFAULT_LINGER_MS = 2000
/** Bound on closing the pools when the scope closes. */
const SHUTDOWN_TIMEOUT_MS = 2000

/** Options of the pool. Durations in milliseconds. */
export interface TcpResponseConnectionPoolOptions {
  /** Most connections per target (`DYN_TCP_POOL_MAX_PER_TARGET`). */
  readonly maxPerTarget: number
  /** Connections kept open per target in use, even with no stream (`DYN_TCP_POOL_MIN_IDLE`). */
  readonly minIdle: number
  /** Idle connections beyond `minIdle`, and unused targets, close after this (`DYN_TCP_POOL_IDLE_TIMEOUT_SECS`). */
  readonly idleTimeoutMs: number
  /** Connections older than this are rotated (`DYN_TCP_POOL_MAX_LIFETIME_SECS`). */
  readonly maxLifetimeMs: number
  /** TCP keepalive initial delay (`DYN_TCP_POOL_KEEPALIVE_SECS`). */
  readonly keepaliveMs: number
  /** Largest frame sent or accepted (`DYN_TCP_MAX_MESSAGE_SIZE`). */
  readonly maxMessageSize: number
  /** Bound on connect + handshake (default `DEFAULT_CONNECT_TIMEOUT_MS`). */
  readonly connectTimeoutMs?: number | undefined
  /** Bound on waiting for a connection (default `DEFAULT_ACQUIRE_TIMEOUT_MS`). */
  readonly acquireTimeoutMs?: number | undefined
  /** Streams one connection carries (default `DEFAULT_MAX_STREAMS_PER_CONNECTION`). */
  readonly maxStreamsPerConnection?: number | undefined
  /** Share of the streams capacity at which the pool grows (Effect Pool's `targetUtilization`, default 1). */
  readonly targetUtilization?: number | undefined
  /** Per-stream send window in bytes (default 256 KiB). */
  readonly streamWindow?: number | undefined
  /** Per-connection send window in bytes (default 256 KiB). */
  readonly connectionWindow?: number | undefined
  /** Wait for the router's close after a graceful close (default `DEFAULT_LINGER_MS`). */
  readonly lingerMs?: number | undefined
  /** A target with no stream for this long is evicted, with all its connections (default `idleTimeoutMs`). */
  readonly targetIdleTimeoutMs?: number | undefined
  /** How often idle and lifetime limits are checked (default: a quarter of the smaller one, 5 ms to 5 s). */
  readonly sweepIntervalMs?: number | undefined
  /** Write flushing: "tick" (default) or "immediate". */
  readonly flush?: "tick" | "immediate" | undefined
}

/** The pool options that `DYN_TCP_POOL_*` and `DYN_TCP_MAX_MESSAGE_SIZE` configure. */
export const optionsFromSettings = (settings: TransportSettings): TcpResponseConnectionPoolOptions => ({
  maxPerTarget: settings.tcpPool.maxPerTarget,
  minIdle: settings.tcpPool.minIdle,
  idleTimeoutMs: settings.tcpPool.idleTimeoutMs,
  maxLifetimeMs: settings.tcpPool.maxLifetimeMs,
  keepaliveMs: settings.tcpPool.keepaliveMs,
  maxMessageSize: settings.tcpMaxMessageSize
})

/** Where a pooled stream calls home: the router's address and its frontend_server_id. */
export interface PoolTarget {
  /** "host:port": the target of metrics and errors. */
  readonly address: string
  readonly host: string
  readonly port: number
  readonly frontendServerId: string
}

/** A snapshot of one target. */
export interface TargetStats {
  readonly target: string
  readonly frontendServerId: string
  /** Open connections (handshake done, not closed). */
  readonly connections: number
  /** Connections carrying a stream. */
  readonly active: number
  /** Streams open now. */
  readonly streams: number
  /** Pool leases held with no stream on them, ready for the next stream (the fast path). */
  readonly spare: number
  /** Streams lent a spare lease synchronously, without the Pool, since the target was created. */
  readonly fastAcquisitions: number
  /** Streams lent a connection through the Effect Pool, since the target was created. */
  readonly poolAcquisitions: number
}

/** The pool. */
export interface TcpResponseConnectionPool {
  /**
   * Leases a validated connection to `target` and calls `open(connection, release)` with it,
   * synchronously and uninterruptibly (from a spare lease without waiting when one is usable,
   * else through the Pool); `release` must be called exactly once, when the stream ends (later
   * calls do nothing). Fails with a typed TransportError naming the target.
   */
  readonly withConnection: <A>(
    target: PoolTarget,
    open: (connection: MuxConnection, release: () => void) => A
  ) => Effect.Effect<A, TransportError>
  /** Every target's pool, now. */
  readonly stats: () => ReadonlyArray<TargetStats>
  /** The open connections to `address` (every target when absent), now. */
  readonly connections: (address?: string) => ReadonlyArray<MuxConnection>
  /** The addresses whose active/idle gauges the pool tracks now (an evicted one's entry is dropped once its connections have closed). */
  readonly gaugedAddresses: () => ReadonlyArray<string>
}

/** One target's pool: the RcMap's value. */
interface TargetPool {
  readonly key: string
  readonly target: PoolTarget
  readonly recorder: PoolRecorder
  readonly gauges: Gauges
  pool: Pool.Pool<MuxConnection, TransportError>
  /** Open connections, and those of them carrying a stream. */
  readonly connections: Set<MuxConnection>
  readonly busy: Set<MuxConnection>
  /** Connections retired and not yet replaced: a creation's log says "replacing". */
  replacing: number
  /** Leases whose stream has ended, kept for the next stream (the fast path); most recent last. */
  spare: Array<Lease>
  /** Set when the RcMap has closed this target: its leases are no longer kept. */
  evicted: boolean
  fastAcquisitions: number
  poolAcquisitions: number
}

/**
 * One Pool lease on one connection. Its scope holds the target's RcMap reference and the
 * Pool lease (one of the connection's `maxStreamsPerConnection` slots); closing it returns both.
 */
interface Lease {
  readonly tp: TargetPool
  readonly conn: MuxConnection
  readonly scope: Scope.Closeable
}

/** `lendSpare` found no spare lease it could lend. */
const MISS: unique symbol = Symbol("MISS")

/** Active/idle counts of one address, across its targets (a router restarted on the same port). */
interface Gauges {
  readonly address: string
  active: number
  idle: number
  /** Live target pools of this address: with them, and open connections, the entry is kept. */
  targets: number
  readonly recorder: PoolRecorder
}

const MODULE = "transport.tcp.pool"

/** A healthy connection is free to lend without waiting. */
const hasFreeConnection = (pool: Pool.Pool<MuxConnection, TransportError>): boolean => {
  let item = pool.state.availableHead
  while (item !== undefined && item.exit._tag === "Failure") item = item.availableNext
  return item !== undefined
}

/** Builds the pool; closing the scope destroys every connection and closes every target's pool. */
export const make = (options: TcpResponseConnectionPoolOptions): Effect.Effect<TcpResponseConnectionPool, never, Scope.Scope> =>
  Effect.gen(function*() {
    const context = (yield* Effect.context<never>()) as Context.Context<never>
    const runFork = Effect.runForkWith(context)
    const clock = yield* Clock.Clock
    const debug = LogLevel.isGreaterThanOrEqualTo("Debug", yield* References.MinimumLogLevel)
    const log = (message: string, annotations: Record<string, unknown>): Effect.Effect<void> =>
      debug ? Effect.logDebug(message).pipe(Effect.annotateLogs({ module: MODULE, ...annotations })) : Effect.void
    /** Logs from socket callbacks (not per frame): one small fiber, only when debug is on. */
    const logNow = (message: string, annotations: Record<string, unknown>): void => {
      if (debug) runFork(log(message, annotations))
    }

    const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS
    const acquireTimeoutMs = options.acquireTimeoutMs ?? DEFAULT_ACQUIRE_TIMEOUT_MS
    const maxStreams = Math.max(1, options.maxStreamsPerConnection ?? DEFAULT_MAX_STREAMS_PER_CONNECTION)
    const lingerMs = options.lingerMs ?? DEFAULT_LINGER_MS
    const targetIdleTimeoutMs = options.targetIdleTimeoutMs ?? options.idleTimeoutMs
    const sweepIntervalMs = options.sweepIntervalMs ??
      Math.min(5000, Math.max(5, Math.floor(Math.min(options.idleTimeoutMs, options.maxLifetimeMs, targetIdleTimeoutMs) / 4)))

    let closed = false
    /** Targets seen, by key: the RcMap lookup reads host and port here. */
    const known = new Map<string, PoolTarget>()
    /** Live target pools, by key. */
    const live = new Map<string, TargetPool>()
    const gaugesByAddress = new Map<string, Gauges>()

    /** The gauges of `address`, counting one more live target pool of it. */
    const gaugesFor = (address: string): Gauges => {
      let g = gaugesByAddress.get(address)
      if (g === undefined) {
        g = { address, active: 0, idle: 0, targets: 0, recorder: poolRecorder(address) }
        gaugesByAddress.set(address, g)
      }
      g.targets++
      return g
    }
    const publish = (g: Gauges) => {
      g.recorder.setActive(g.active)
      g.recorder.setIdle(g.idle)
    }
    /** Drops the entry of an address with no live target pool and no open connection (its gauges read 0). */
    const prune = (g: Gauges) => {
      if (g.targets > 0 || g.active > 0 || g.idle > 0) return
      publish(g)
      if (gaugesByAddress.get(g.address) === g) gaugesByAddress.delete(g.address)
    }

    // ---- leases -------------------------------------------------------------------------------

    /** Gives a lease back: the Pool slot and the RcMap reference. */
    const releaseLease = (lease: Lease): void => {
      const finalize = Scope.closeUnsafe(lease.scope, Exit.void)
      if (finalize !== undefined) runFork(finalize)
    }

    /** Gives back the spare leases on `conn` (retired, closing), so its Pool slot can drain and close. */
    const dropSpare = (tp: TargetPool, conn: MuxConnection): void => {
      const spare = tp.spare
      if (spare.length === 0) return
      const keep: Array<Lease> = []
      for (const lease of spare) {
        if (lease.conn === conn) releaseLease(lease)
        else keep.push(lease)
      }
      tp.spare = keep
    }

    /** Gives back every spare lease of `tp`. */
    const dropAllSpare = (tp: TargetPool): void => {
      const spare = tp.spare
      tp.spare = []
      for (const lease of spare) releaseLease(lease)
    }

    /**
     * The `release` of a stream on `lease`: once, when the stream ends. The lease is kept for the
     * next stream unless the connection is retired or unusable, the target is gone or the pool
     * closed, or a stream is waiting in the Pool (which then gets the slot).
     */
    const releaser = (lease: Lease): () => void => {
      let released = false
      return () => {
        if (released) return
        released = true
        const { conn, tp } = lease
        if (closed || tp.evicted || conn.retired || tp.pool.state.waiters.size > 0 || conn.problem() !== undefined) releaseLease(lease)
        else tp.spare.push(lease)
      }
    }

    /**
     * The fast path: lends the most recent spare lease whose connection passes validation,
     * synchronously (no Effect, no Pool, no scope). A spare lease on a retired, unusable or too
     * old connection is given back, the connection invalidated or rotated, and the next one tried.
     */
    const lendSpare = <A>(tp: TargetPool, open: (connection: MuxConnection, release: () => void) => A, started: number): A | typeof MISS => {
      const spare = tp.spare
      while (spare.length > 0) {
        const lease = spare.pop()!
        const conn = lease.conn
        if (conn.retired) {
          releaseLease(lease)
          continue
        }
        const problem = conn.problem()
        if (problem !== undefined) {
          releaseLease(lease)
          runFork(invalidate(tp, conn, problem))
          continue
        }
        const age = clock.currentTimeMillisUnsafe() - conn.createdAt
        if (age >= options.maxLifetimeMs) {
          releaseLease(lease)
          runFork(retire(tp, conn, "rotating connection: older than maxLifetime (drain, then close)", { ageMs: age }))
          continue
        }
        tp.fastAcquisitions++
        tp.recorder.reused()
        tp.recorder.acquired((performance.now() - started) / 1000)
        if (debug) logNow("reusing connection", { target: tp.target.address, connection: conn.id, streams: conn.streamCount(), served: conn.served })
        return open(conn, releaser(lease))
      }
      return MISS
    }

    // ---- connection lifecycle ------------------------------------------------------------

    /** Takes a connection out of circulation: it drains, then closes (Pool finalizer). `message` says why. */
    const retire = (tp: TargetPool, conn: MuxConnection, message: string, annotations: Record<string, unknown> = {}) =>
      Effect.suspend(() => {
        if (conn.retired) return Effect.void
        conn.retired = true
        dropSpare(tp, conn)
        // The Pool replaces it when its streams still need the capacity, or to keep minIdle.
        if (conn.streamCount() > 0 || tp.connections.size - 1 < options.minIdle) tp.replacing++
        return log(message, {
          target: tp.target.address,
          connection: conn.id,
          streams: conn.streamCount(),
          ...annotations
        }).pipe(Effect.andThen(Pool.invalidate(tp.pool, conn)))
      })

    /** A connection found dead or half-closed: counted once, invalidated and replaced. */
    const invalidate = (tp: TargetPool, conn: MuxConnection, why: string) =>
      Effect.suspend(() => {
        if (!conn.counted) {
          conn.counted = true
          tp.recorder.validationFailed()
        }
        return retire(tp, conn, `invalidating connection: ${why}`)
      })

    const events = (tp: TargetPool) => ({
      onUsage: (conn: MuxConnection, busy: boolean) => {
        if (!busy) conn.idleSince = clock.currentTimeMillisUnsafe()
        if (!tp.connections.has(conn)) return
        const g = tp.gauges
        if (busy) {
          if (tp.busy.has(conn)) return
          tp.busy.add(conn)
          g.active++
          g.idle--
        } else {
          if (!tp.busy.delete(conn)) return
          g.active--
          g.idle++
        }
        publish(g)
      },
      onClose: (
        conn: MuxConnection,
        error: TransportError,
        byUs: boolean,
        unfinished: ReadonlyArray<Uint8Array>,
        unconfirmed: ReadonlyArray<Uint8Array>
      ) => {
        if (!tp.connections.delete(conn)) return
        const g = tp.gauges
        if (tp.busy.delete(conn)) g.active--
        else g.idle--
        publish(g)
        if (tp.evicted) prune(g)
        if ((unfinished.length > 0 || unconfirmed.length > 0) && !closed) resetElsewhere(tp, conn, error, unfinished, unconfirmed)
        if (byUs || conn.retired || closed) {
          logNow("connection closed", { target: tp.target.address, connection: conn.id, served: conn.served })
          return
        }
        runFork(invalidate(tp, conn, error.message))
      }
    })

    /**
     * Tells the router that the streams of `dead` it may not have seen finish are over
     * (docs/protocol.md, "When a connection dies"): a Reset each, on an open connection to the
     * same target, else, for `unfinished` ones only, on one acquired through the Pool (bounded by
     * `acquireTimeoutMs`, not counted as an acquisition). Best effort: if none can be had, a debug
     * log, and nothing else fails or waits.
     */
    const resetElsewhere = (
      tp: TargetPool,
      dead: MuxConnection,
      error: TransportError,
      unfinished: ReadonlyArray<Uint8Array>,
      unconfirmed: ReadonlyArray<Uint8Array>
    ): void => {
      const target = tp.target
      const payload = encodeResetPayload(`call-home connection to ${target.address} died before the stream finished: ${error.detail ?? error.message}`)
      const ids = unconfirmed.length === 0 ? unfinished : unfinished.length === 0 ? unconfirmed : [...unfinished, ...unconfirmed]
      const send = (conn: MuxConnection): boolean => {
        for (const id of ids) if (!conn.resetStream(id, payload)) return false
        logNow("reset the unfinished streams of a dead connection on another one", { target: target.address, dead: dead.id, connection: conn.id, streams: ids.length })
        return true
      }
      for (const conn of tp.connections) if (send(conn)) return
      if (unfinished.length === 0) return
      if (!known.has(tp.key)) known.set(tp.key, target)
      runFork(
        Effect.uninterruptibleMask((restore) =>
          attempt(tp.key, target, (conn, release) => {
            const sent = send(conn)
            release()
            return sent
          }, restore, performance.now(), false)
        ).pipe(
          Effect.flatMap((sent) => sent ? Effect.void : Effect.fail(new Error("the connection could not take frames"))),
          Effect.catch((cause) =>
            log("could not reset the unfinished streams of a dead connection; the router's call-home timeout will end them", {
              target: target.address,
              dead: dead.id,
              streams: ids.length,
              cause: cause.message
            })
          )
        )
      )
    }

    /** The pool's `acquire`: connect one connection, saying why. */
    const acquireConnection = (tp: TargetPool): Effect.Effect<MuxConnection, TransportError, Scope.Scope> =>
      Effect.acquireRelease(
        Effect.suspend(() => {
          const open = tp.connections.size
          let reason: string
          if (tp.replacing > 0) {
            tp.replacing--
            reason = "replacing a retired connection"
          } else if (open < options.minIdle) reason = `keeping ${options.minIdle} warm (minIdle), ${open} open`
          else if (open === 0) reason = "first stream to this target"
          else reason = `all ${open} connections carry ${maxStreams} streams (maxStreamsPerConnection)`
          const target = tp.target
          return connectMux(
            {
              host: target.host,
              port: target.port,
              address: target.address,
              frontendServerId: target.frontendServerId,
              maxMessageSize: options.maxMessageSize,
              connectTimeoutMs,
              keepaliveMs: options.keepaliveMs,
              lingerMs,
              streamWindow: options.streamWindow ?? DEFAULT_STREAM_WINDOW,
              connectionWindow: options.connectionWindow ?? DEFAULT_CONNECTION_WINDOW,
              flush: options.flush ?? "tick",
              createdAt: clock.currentTimeMillisUnsafe()
            },
            events(tp)
          ).pipe(
            Effect.tap((conn) =>
              Effect.suspend(() => {
                conn.readyAt = performance.now()
                tp.connections.add(conn)
                tp.gauges.idle++
                publish(tp.gauges)
                tp.recorder.created()
                if (closed) conn.destroy()
                return log(`created connection: ${reason}`, { target: target.address, connection: conn.id, open: tp.connections.size })
              })
            ),
            Effect.tapError((error) => log(`connect failed: ${error.message}`, { target: target.address, reason }))
          )
        }),
        (conn) => Effect.sync(() => conn.close())
      )

    /**
     * Gives back the spare leases of connections with no stream for a sweep interval (so an
     * unused target's RcMap reference ends and it can be evicted), closes idle connections
     * beyond minIdle, and rotates old ones. Idleness is the connection's (no stream since
     * `idleSince`), not the Pool item's: spare leases keep the item leased.
     */
    const sweep = (tp: TargetPool): Effect.Effect<void> =>
      Effect.suspend(() => {
        const pool = tp.pool
        const now = clock.currentTimeMillisUnsafe()
        if (tp.spare.length > 0) {
          const keep: Array<Lease> = []
          for (const lease of tp.spare) {
            const conn = lease.conn
            if (conn.streamCount() === 0 && now - conn.idleSince >= sweepIntervalMs) releaseLease(lease)
            else keep.push(lease)
          }
          tp.spare = keep
        }
        let usable = 0
        for (const item of pool.state.items) {
          if (item.exit._tag === "Success" && !item.exit.value.retired) usable++
        }
        const work: Array<Effect.Effect<void>> = []
        for (const item of pool.state.items) {
          if (item.exit._tag !== "Success") continue
          const conn = item.exit.value
          if (conn.retired) continue
          const age = now - conn.createdAt
          if (age >= options.maxLifetimeMs) {
            work.push(retire(tp, conn, "rotating connection: older than maxLifetime (drain, then close)", { ageMs: age }))
            usable--
          } else if (conn.streamCount() === 0 && now - conn.idleSince >= options.idleTimeoutMs && usable > options.minIdle) {
            conn.retired = true // not replaced: it is surplus
            dropSpare(tp, conn)
            usable--
            work.push(
              log("closing connection: idle longer than idleTimeout", { target: tp.target.address, connection: conn.id, idleMs: now - conn.idleSince })
                .pipe(Effect.andThen(Pool.invalidate(pool, conn)))
            )
          }
        }
        return work.length === 0 ? Effect.void : Effect.all(work, { discard: true })
      })

    const strategy = (tp: TargetPool): Pool.Strategy<MuxConnection, TransportError> => ({
      run: () => Effect.forever(Effect.andThen(Effect.sleep(sweepIntervalMs), sweep(tp))),
      onAcquire: () => Effect.void,
      reclaim: () => Effect.undefined
    })

    // ---- targets ----------------------------------------------------------------------------

    const lookup = (key: string): Effect.Effect<TargetPool, never, Scope.Scope> =>
      Effect.gen(function*() {
        const target = known.get(key)!
        const gauges = gaugesFor(target.address)
        const tp: TargetPool = {
          key,
          target,
          recorder: gauges.recorder,
          gauges,
          pool: undefined as unknown as Pool.Pool<MuxConnection, TransportError>,
          connections: new Set(),
          busy: new Set(),
          replacing: 0,
          spare: [],
          evicted: false,
          fastAcquisitions: 0,
          poolAcquisitions: 0
        }
        tp.pool = yield* Pool.makeWithStrategy({
          acquire: acquireConnection(tp),
          min: options.minIdle,
          max: options.maxPerTarget,
          concurrency: maxStreams,
          targetUtilization: options.targetUtilization ?? 1,
          strategy: strategy(tp)
        })
        live.set(key, tp)
        yield* log("new target pool", { target: target.address, frontendServerId: target.frontendServerId })
        // Runs before the Pool's own shutdown (finalizers run in reverse).
        yield* Effect.addFinalizer(() =>
          Effect.suspend(() => {
            live.delete(key)
            known.delete(key)
            tp.evicted = true
            dropAllSpare(tp)
            gauges.targets--
            prune(gauges)
            return log(closed ? "closing target pool: the pool is shutting down" : "evicting target pool: no stream for targetIdleTimeout", {
              target: target.address,
              connections: tp.connections.size
            })
          })
        )
        return tp
      })

    const inner = yield* Scope.make()
    const targets = yield* RcMap.make({ lookup, idleTimeToLive: targetIdleTimeoutMs }).pipe(Scope.provide(inner))

    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closed = true
        const error = (address: string) =>
          new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: address, detail: "the connection pool is closing" })
        for (const tp of live.values()) {
          for (const conn of [...tp.connections]) conn.destroy(error(tp.target.address))
          dropAllSpare(tp)
        }
        return Effect.raceFirst(Scope.close(inner, Exit.void), realSleep(SHUTDOWN_TIMEOUT_MS)).pipe(
          Effect.andThen(Effect.sync(() => {
            for (const tp of live.values()) for (const conn of tp.connections) conn.destroy(error(tp.target.address))
          }))
        )
      })
    )

    // ---- acquisition --------------------------------------------------------------------------

    const acquireTimeout = (address: string) =>
      new TransportTimeoutError({
        reason: "AcquireTimeout",
        transport: "tcp",
        target: address,
        detail: `no pooled call-home connection free within ${acquireTimeoutMs} ms`
      })

    const attempt = <A>(
      key: string,
      target: PoolTarget,
      open: (connection: MuxConnection, release: () => void) => A,
      restore: <X, E, R>(effect: Effect.Effect<X, E, R>) => Effect.Effect<X, E, R>,
      started: number,
      /** Counted in the metrics and stats as a stream's acquisition (false for the pool's own Resets). */
      counted = true
    ): Effect.Effect<A, TransportError> =>
      Effect.suspend(() => {
        const remaining = started + acquireTimeoutMs - performance.now()
        if (remaining <= 0) return Effect.fail(acquireTimeout(target.address))
        const scope = Scope.makeUnsafe()
        const get = Effect.flatMap(RcMap.get(targets, key), (tp) => {
          const pool = tp.pool
          const lease = Pool.get(pool)
          const bounded = pool.state.waiters.size > 0 || !hasFreeConnection(pool)
            ? Effect.timeoutOrElse(lease, { duration: remaining, orElse: () => Effect.fail(acquireTimeout(target.address)) })
            : lease
          return Effect.map(bounded, (conn) => ({ tp, conn }))
        })
        return restore(Scope.provide(get, scope)).pipe(
          Effect.onError(() => Scope.close(scope, Exit.void)),
          Effect.flatMap(({ conn, tp }) => {
            const problem = conn.problem()
            const age = clock.currentTimeMillisUnsafe() - conn.createdAt
            if (problem !== undefined || age >= options.maxLifetimeMs) {
              const why = problem !== undefined
                ? invalidate(tp, conn, problem)
                : retire(tp, conn, "rotating connection: older than maxLifetime (drain, then close)", { ageMs: age })
              return why.pipe(
                Effect.andThen(Scope.close(scope, Exit.void)),
                Effect.andThen(attempt(key, target, open, restore, started, counted))
              )
            }
            // Reused: the connection was open before this acquisition began (warm, or used before).
            const reused = conn.readyAt < started
            if (counted) {
              if (reused) tp.recorder.reused()
              tp.recorder.acquired((performance.now() - started) / 1000)
              tp.poolAcquisitions++
            }
            const value = open(conn, releaser({ tp, conn, scope }))
            return reused && counted && debug
              ? Effect.as(log("reusing connection", { target: target.address, connection: conn.id, streams: conn.streamCount(), served: conn.served }), value)
              : Effect.succeed(value)
          })
        )
      })

    const closedError = (address: string) =>
      new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: address, detail: "the connection pool has shut down" })

    const withConnection = <A>(
      target: PoolTarget,
      open: (connection: MuxConnection, release: () => void) => A
    ): Effect.Effect<A, TransportError> =>
      Effect.suspend(() => {
        if (closed) return Effect.fail(closedError(target.address))
        const key = `${target.address}|${target.frontendServerId}`
        const started = performance.now()
        const tp = live.get(key)
        if (tp !== undefined && tp.spare.length > 0) {
          const value = lendSpare(tp, open, started)
          if (value !== MISS) return Effect.succeed(value)
        }
        if (!known.has(key)) known.set(key, target)
        return Effect.uninterruptibleMask((restore) => attempt(key, target, open, restore, started))
      })

    return {
      withConnection,
      stats: () =>
        [...live.values()].map((tp) => {
          let streams = 0
          for (const c of tp.connections) streams += c.streamCount()
          return {
            target: tp.target.address,
            frontendServerId: tp.target.frontendServerId,
            connections: tp.connections.size,
            active: tp.busy.size,
            streams,
            spare: tp.spare.length,
            fastAcquisitions: tp.fastAcquisitions,
            poolAcquisitions: tp.poolAcquisitions
          }
        }),
      connections: (address) => {
        const out: Array<MuxConnection> = []
        for (const tp of live.values()) {
          if (address === undefined || tp.target.address === address) out.push(...tp.connections)
        }
        return out
      },
      gaugedAddresses: () => [...gaugesByAddress.keys()]
    } satisfies TcpResponseConnectionPool
  })

/** A sleep on the real clock (bounds shutdown even under TestClock). */
const realSleep = (ms: number): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.void), ms)
    return Effect.sync(() => clearTimeout(timer))
  })

/** The pooled connection type, re-exported for callers of `withConnection`. */
export { MuxConnection } from "./MuxConnection.ts"
