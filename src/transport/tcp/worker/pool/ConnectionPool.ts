/**
 * The worker's pool of persistent, multiplexed call-home connections (`DYN_TCP_POOL_*`): per
 * router target, a few `MuxConnection`s that many response streams share.
 *
 * What it does:
 * - A scoped resource: an `RcMap` from target to a target pool (TargetPool.ts) built on an Effect
 *   `Pool` of connections, both used through their public API only. A stream holds a reference
 *   to its target's pool and a lease on one connection (the `Pool`'s `concurrency` is the number
 *   of streams one connection carries, `maxStreamsPerConnection`), so the pool grows a connection
 *   only when the ones it has are full, up to `maxPerTarget`, and keeps `minIdle` open even with
 *   no stream (refilled when one dies). A target nobody has used for `targetIdleTimeoutMs`
 *   (default `idleTimeoutMs`) is evicted with all its connections.
 * - Fast path: a stream's lease is not given back when the stream ends but kept as a spare of
 *   its target; the next stream takes the most recent spare synchronously (no RcMap/Pool/Effect
 *   round trip, no scope), after the same validation, and counts `reused` and the acquisition
 *   latency as the Pool path does. The Pool path runs only when no spare is usable; it alone
 *   creates connections and waits for capacity, so `maxPerTarget` and `maxStreamsPerConnection`
 *   hold (spares occupy Pool slots). A spare is given back when a stream is acquiring through the
 *   Pool, when its connection is retired or unusable, when the target is evicted or the pool
 *   closes, and by the sweep (TargetConnections.ts) once its connection has had no stream for
 *   `sweepIntervalMs`.
 * - Validation before lending: a connection that is destroyed, half-closed, closing or older
 *   than `maxLifetimeMs` is not lent; it is invalidated (counted in
 *   `tcp_pool_validation_failures_total`) or rotated, and the acquisition tries again. A
 *   connection the router closes, or that errors, is invalidated and counted the moment its
 *   socket closes; every stream on it has already heard `onDisconnect`.
 * - Acquisition is bounded: waiting for a free connection fails after `acquireTimeoutMs` with
 *   TransportTimeoutError "AcquireTimeout" (the bound is skipped when the target pool's own
 *   counts show that the Pool cannot wait); connecting is bounded by `connectTimeoutMs`. Every
 *   failure is a typed TransportError naming the target.
 * - When a connection dies with streams the router may not have seen finish, the pool tells the
 *   router on another connection to the same target, best effort (docs/protocol.md, "When a
 *   connection dies"): a Reset per stream on an open connection, else, for unfinished streams
 *   only, on one acquired as a stream would be (bounded by `acquireTimeoutMs`, not counted in
 *   the metrics); if none can be had, a debug log. Not while the pool is closing.
 * - Metrics, labelled with the target "host:port": connections created, reused, active and idle
 *   gauges (AddressGauges.ts), acquisition latency, validation failures. Debug logs (module
 *   `transport.tcp.pool`) say why a connection was created, reused, closed, rotated,
 *   invalidated, and why a target was evicted.
 * - Closing the scope destroys every connection (their streams hear `onDisconnect`) and closes
 *   the pools, within a bound.
 *
 * What it does not do: frame or parse anything (MuxConnection does), or decide whether a stream
 * is pooled (CallHomeClient does, from the ConnectionInfo). A stream served by a spare costs a
 * few synchronous steps; one served by the Pool runs one small Effect to acquire and one to
 * release; nothing per frame.
 */
import { Effect, Exit, Pool, RcMap, Scope } from "effect"
import { encodeResetPayload } from "../../../../protocol/MuxHandshake.ts"
import { TransportConnectionError, TransportTimeoutError } from "../../../../TransportError.ts"
import type { TransportError } from "../../../../TransportError.ts"
import type { MuxConnection } from "../MuxConnection.ts"
import { GaugeBook } from "./AddressGauges.ts"
import type { PooledConnection } from "./PooledConnection.ts"
import { makePoolEnv } from "./PoolEnv.ts"
import { resolveOptions } from "./PoolOptions.ts"
import type { ConnectionPoolOptions } from "./PoolOptions.ts"
import { makeTargetPool } from "./TargetConnections.ts"
import { MISS } from "./TargetPool.ts"
import type { PoolTarget, TargetPool } from "./TargetPool.ts"

/** The pool's options from `DYN_TCP_POOL_*` settings (its defaults are in PoolOptions.ts). */
export { optionsFromSettings } from "./PoolOptions.ts"
/** The pool's options, a pooled connection as the pool sees it, and a target. */
export type { ConnectionPoolOptions } from "./PoolOptions.ts"
export type { PooledConnection } from "./PooledConnection.ts"
export type { PoolTarget } from "./TargetPool.ts"

/** Bound on closing the pools when the scope closes. */
const SHUTDOWN_TIMEOUT_MS = 2000

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
export interface ConnectionPool {
  /**
   * Leases a validated connection to `target` and calls `open(connection, release)` with it,
   * synchronously and uninterruptibly (from a spare lease without waiting when one is usable,
   * else through the Pool); `release` must be called exactly once, when the stream ends (later
   * calls do nothing). Fails with a typed TransportError naming the target.
   */
  readonly withConnection: <A>(target: PoolTarget, open: (connection: MuxConnection, release: () => void) => A) => Effect.Effect<A, TransportError>
  /**
   * `withConnection`'s fast path on its own: `open`'s result on a spare lease of an open
   * connection that passes validation, synchronously, or undefined when there is none (or the
   * pool has shut down), and the caller goes through `withConnection`.
   */
  readonly lendNow: <A>(target: PoolTarget, open: (connection: MuxConnection, release: () => void) => A) => A | undefined
  /** Every target's pool, now. */
  readonly stats: () => ReadonlyArray<TargetStats>
  /** The open connections to `address` (every target when absent), now, with the pool's bookkeeping. */
  readonly connections: (address?: string) => ReadonlyArray<PooledConnection>
  /** The addresses whose active/idle gauges the pool tracks now (an evicted one's entry is dropped once its connections have closed). */
  readonly gaugedAddresses: () => ReadonlyArray<string>
}

type Open<A> = (connection: MuxConnection, release: () => void) => A
type Restore = <X, E, R>(effect: Effect.Effect<X, E, R>) => Effect.Effect<X, E, R>

/** Builds the pool; closing the scope destroys every connection and closes every target's pool. */
export const make = (options: ConnectionPoolOptions): Effect.Effect<ConnectionPool, never, Scope.Scope> =>
  Effect.gen(function*() {
    const env = yield* makePoolEnv(resolveOptions(options))
    const { acquireTimeoutMs, targetIdleTimeoutMs } = env.options
    const book = new GaugeBook(env.options.metrics)
    /** Targets seen, by key: the RcMap lookup reads host and port here. */
    const known = new Map<string, PoolTarget>()
    /** Live target pools, by key. */
    const live = new Map<string, TargetPool>()

    const lookup = (key: string): Effect.Effect<TargetPool, never, Scope.Scope> =>
      Effect.gen(function*() {
        const target = known.get(key)!
        const tp = yield* makeTargetPool(env, key, target, book, resetElsewhere)
        live.set(key, tp)
        yield* env.log("new target pool", { target: target.address, frontendServerId: target.frontendServerId })
        // Runs before the Pool's own shutdown (finalizers run in reverse).
        yield* Effect.addFinalizer(() =>
          Effect.suspend(() => {
            live.delete(key)
            known.delete(key)
            tp.evicted = true
            tp.dropAllSpare()
            tp.gauges.targets--
            book.prune(tp.gauges)
            return env.log(env.closed ? "closing target pool: the pool is shutting down" : "evicting target pool: no stream for targetIdleTimeout", {
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
        env.closed = true
        const destroyAll = () => {
          for (const tp of live.values()) {
            const error = new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: tp.target.address, detail: "the connection pool is closing" })
            for (const pc of [...tp.connections]) pc.conn.destroy(error)
          }
        }
        destroyAll()
        for (const tp of live.values()) tp.dropAllSpare()
        return Effect.raceFirst(Scope.close(inner, Exit.void), realSleep(SHUTDOWN_TIMEOUT_MS)).pipe(Effect.andThen(Effect.sync(destroyAll)))
      })
    )

    const acquireTimeout = (address: string) =>
      new TransportTimeoutError({ reason: "AcquireTimeout", transport: "tcp", target: address, detail: `no pooled call-home connection free within ${acquireTimeoutMs} ms` })

    /**
     * One acquisition through the RcMap and the Pool, validated; `counted` is false for the
     * pool's own Resets (not a stream's acquisition in the metrics and stats).
     */
    const attempt = <A>(key: string, target: PoolTarget, open: Open<A>, restore: Restore, started: number, counted: boolean): Effect.Effect<A, TransportError> =>
      Effect.suspend(() => {
        const remaining = started + acquireTimeoutMs - performance.now()
        if (remaining <= 0) return Effect.fail(acquireTimeout(target.address))
        const scope = Scope.makeUnsafe()
        /** The target pool while this acquisition is in flight in its Pool. */
        let inFlight: TargetPool | undefined
        const get = Effect.flatMap(RcMap.get(targets, key), (tp) => {
          const lease = Pool.get(tp.pool)
          const bounded = tp.hasFreeConnection()
            ? lease
            : Effect.timeoutOrElse(lease, { duration: remaining, orElse: () => Effect.fail(acquireTimeout(target.address)) })
          tp.acquiring++
          inFlight = tp
          return Effect.map(bounded, (pc) => {
            pc.leases++
            tp.acquiring--
            inFlight = undefined
            return { tp, pc }
          })
        })
        return restore(Scope.provide(get, scope)).pipe(
          Effect.onError(() => {
            if (inFlight !== undefined) inFlight.acquiring--
            return Scope.close(scope, Exit.void)
          }),
          Effect.flatMap(({ pc, tp }) => {
            const retire = tp.check(pc)
            if (retire !== undefined) {
              return retire.pipe(
                Effect.andThen(Effect.sync(() => tp.releaseLease({ pc, scope }))),
                Effect.andThen(attempt(key, target, open, restore, started, counted))
              )
            }
            // Reused: the connection was open before this acquisition began (warm, or used before).
            const reused = pc.readyAt < started
            if (counted) {
              if (reused) tp.gauges.recorder.reused()
              tp.gauges.recorder.acquired((performance.now() - started) / 1000)
              tp.poolAcquisitions++
              pc.served++
            }
            const value = open(pc.conn, tp.releaser({ pc, scope }))
            return reused && counted && env.debug
              ? Effect.as(env.log("reusing connection", { target: target.address, connection: pc.id, streams: pc.conn.streamCount(), served: pc.served }), value)
              : Effect.succeed(value)
          })
        )
      })

    /**
     * Tells the router that the streams of `dead` it may not have seen finish are over: a Reset
     * each, on an open connection to the same target, else, for `unfinished` ones only, on one
     * acquired through the Pool. Best effort: if none can be had, a debug log.
     */
    function resetElsewhere(
      tp: TargetPool,
      dead: PooledConnection,
      error: TransportError,
      unfinished: ReadonlyArray<Uint8Array>,
      unconfirmed: ReadonlyArray<Uint8Array>
    ): void {
      const target = tp.target
      const payload = encodeResetPayload(`call-home connection to ${target.address} died before the stream finished: ${error.detail ?? error.message}`)
      const ids = unconfirmed.length === 0 ? unfinished : unfinished.length === 0 ? unconfirmed : [...unfinished, ...unconfirmed]
      const send = (conn: MuxConnection): boolean => {
        for (const id of ids) if (!conn.resetStream(id, payload)) return false
        env.logNow("reset the unfinished streams of a dead connection on another one", { target: target.address, dead: dead.id, connection: conn.id, streams: ids.length })
        return true
      }
      for (const pc of tp.connections) if (send(pc.conn)) return
      if (unfinished.length === 0) return
      if (!known.has(tp.key)) known.set(tp.key, target)
      const sendOnAcquired = (conn: MuxConnection, release: () => void) => {
        const sent = send(conn)
        release()
        return sent
      }
      env.runFork(
        Effect.uninterruptibleMask((restore) => attempt(tp.key, target, sendOnAcquired, restore, performance.now(), false)).pipe(
          Effect.flatMap((sent) => sent ? Effect.void : Effect.fail(new Error("the connection could not take frames"))),
          Effect.catch((cause) =>
            env.log("could not reset the unfinished streams of a dead connection; the router's call-home timeout will end them", {
              target: target.address,
              dead: dead.id,
              streams: ids.length,
              cause: cause.message
            })
          )
        )
      )
    }

    const keyOf = (target: PoolTarget) => `${target.address}|${target.frontendServerId}`
    /** The fast path: `open` on a spare lease of `key`'s live target pool (TargetPool.lendSpare), or MISS. */
    const lendSpare = <A>(key: string, open: Open<A>, started: number): A | typeof MISS => {
      const tp = live.get(key)
      return tp !== undefined && tp.spare.length > 0 ? tp.lendSpare(open, started) : MISS
    }

    const withConnection = <A>(target: PoolTarget, open: Open<A>): Effect.Effect<A, TransportError> =>
      Effect.suspend(() => {
        if (env.closed) {
          return Effect.fail(new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: target.address, detail: "the connection pool has shut down" }))
        }
        const key = keyOf(target)
        const started = performance.now()
        const value = lendSpare(key, open, started)
        if (value !== MISS) return Effect.succeed(value)
        if (!known.has(key)) known.set(key, target)
        return Effect.uninterruptibleMask((restore) => attempt(key, target, open, restore, started, true))
      })

    const lendNow = <A>(target: PoolTarget, open: Open<A>): A | undefined => {
      if (env.closed) return undefined
      const value = lendSpare(keyOf(target), open, performance.now())
      return value === MISS ? undefined : value
    }

    return {
      withConnection,
      lendNow,
      stats: () =>
        [...live.values()].map((tp) => {
          let streams = 0
          for (const pc of tp.connections) streams += pc.conn.streamCount()
          return {
            target: tp.target.address,
            frontendServerId: tp.target.frontendServerId,
            connections: tp.connections.size,
            active: tp.busyCount,
            streams,
            spare: tp.spare.length,
            fastAcquisitions: tp.fastAcquisitions,
            poolAcquisitions: tp.poolAcquisitions
          }
        }),
      connections: (address) => {
        const out: Array<PooledConnection> = []
        for (const tp of live.values()) {
          if (address === undefined || tp.target.address === address) out.push(...tp.connections)
        }
        return out
      },
      gaugedAddresses: () => book.addresses()
    } satisfies ConnectionPool
  })

/** A sleep on the real clock (bounds shutdown even under TestClock). */
const realSleep = (ms: number): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.void), ms)
    return Effect.sync(() => clearTimeout(timer))
  })
