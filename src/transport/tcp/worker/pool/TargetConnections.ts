/**
 * How a target pool gets and sheds connections: the Effect `Pool` it is built on (its `acquire`
 * connects one `MuxConnection`, its finalizer closes it) and the sweep that its strategy runs.
 *
 * What it does:
 * - `makeTargetPool` builds a `TargetPool` and its `Pool` (`min` = `minIdle`, `max` =
 *   `maxPerTarget`, `concurrency` = `maxStreamsPerConnection`), on the public Pool API only.
 * - Acquiring a connection logs why (first stream, minIdle, all full, replacing a retired one),
 *   and registers it with the target pool synchronously as its handshake completes, before any
 *   later socket event can report on it.
 * - The sweep, every `sweepIntervalMs` on the Effect Clock (so TestClock drives it), gives back
 *   the spare leases of connections with no stream for a sweep interval (so an unused target's
 *   RcMap reference ends and it can be evicted), closes connections idle for `idleTimeoutMs`
 *   beyond `minIdle`, and rotates those older than `maxLifetimeMs`. Idleness is the connection's
 *   (`idleSince`), not the Pool item's, which spare leases keep leased.
 *
 * What it does not do: lend connections (TargetPool.ts, ConnectionPool.ts).
 */
import { Effect, Pool } from "effect"
import type { Scope } from "effect"
import type { TransportError } from "../../../../TransportError.ts"
import { connectMux } from "../MuxConnect.ts"
import type { MuxConnectionEvents } from "../MuxConnection.ts"
import type { GaugeBook } from "./AddressGauges.ts"
import { PooledConnection } from "./PooledConnection.ts"
import type { Lease } from "./PooledConnection.ts"
import type { PoolEnv } from "./PoolEnv.ts"
import { TargetPool } from "./TargetPool.ts"
import type { LostStreams, PoolTarget } from "./TargetPool.ts"

/** Builds the target pool of `target` and its Effect Pool, in the current scope. */
export const makeTargetPool = (
  env: PoolEnv,
  key: string,
  target: PoolTarget,
  book: GaugeBook,
  onLostStreams: LostStreams
): Effect.Effect<TargetPool, never, Scope.Scope> =>
  Effect.gen(function*() {
    const tp = new TargetPool(key, target, env, book, onLostStreams)
    const options = env.options
    tp.pool = yield* Pool.makeWithStrategy({
      acquire: acquireConnection(tp),
      min: options.minIdle,
      max: options.maxPerTarget,
      concurrency: options.maxStreams,
      targetUtilization: options.targetUtilization,
      strategy: {
        run: () => Effect.forever(Effect.andThen(Effect.sleep(options.sweepIntervalMs), sweep(tp))),
        onAcquire: () => Effect.void,
        reclaim: () => Effect.undefined
      }
    })
    return tp
  })

/** Why the Pool is creating a connection now. */
const creationReason = (tp: TargetPool): string => {
  const open = tp.connections.size
  const { maxStreams, minIdle } = tp.env.options
  if (tp.replacing > 0) {
    tp.replacing--
    return "replacing a retired connection"
  }
  if (open < minIdle) return `keeping ${minIdle} warm (minIdle), ${open} open`
  if (open === 0) return "first stream to this target"
  return `all ${open} connections carry ${maxStreams} streams (maxStreamsPerConnection)`
}

/** The Pool's `acquire`: connect one connection, saying why; its release closes it gracefully. */
const acquireConnection = (tp: TargetPool): Effect.Effect<PooledConnection, TransportError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.suspend(() => {
      const { clock, log, options } = tp.env
      const reason = creationReason(tp)
      const target = tp.target
      const createdAt = clock.currentTimeMillisUnsafe()
      // Events reach the target pool only once the connection is registered (at its handshake).
      let pc: PooledConnection | undefined
      const events: MuxConnectionEvents = {
        onUsage: (busy) => {
          if (pc !== undefined) tp.usage(pc, busy)
        },
        onClose: (error, byUs, unfinished, unconfirmed) => {
          if (pc !== undefined) tp.connectionClosed(pc, error, byUs, unfinished, unconfirmed)
        }
      }
      const connectOptions = {
        host: target.host,
        port: target.port,
        address: target.address,
        frontendServerId: target.frontendServerId,
        maxMessageSize: options.maxMessageSize,
        connectTimeoutMs: options.connectTimeoutMs,
        keepaliveMs: options.keepaliveMs,
        lingerMs: options.lingerMs,
        streamWindow: options.streamWindow,
        connectionWindow: options.connectionWindow,
        flush: options.flush,
        tls: options.tls
      }
      return connectMux(connectOptions, events, (conn) => {
        pc = new PooledConnection(conn, createdAt, performance.now())
        tp.connectionOpened(pc)
        return pc
      }).pipe(
        Effect.tap((pc) => log(`created connection: ${reason}`, { target: target.address, connection: pc.id, open: tp.connections.size })),
        Effect.tapError((error) => log(`connect failed: ${error.message}`, { target: target.address, reason }))
      )
    }),
    (pc) => Effect.sync(() => pc.conn.close())
  )

/** One sweep of `tp`; see the module comment. */
const sweep = (tp: TargetPool): Effect.Effect<void> =>
  Effect.suspend(() => {
    const { clock, log, options } = tp.env
    const now = clock.currentTimeMillisUnsafe()
    if (tp.spare.length > 0) {
      const keep: Array<Lease> = []
      for (const lease of tp.spare) {
        const pc = lease.pc
        if (pc.conn.streamCount() === 0 && now - pc.idleSince >= options.sweepIntervalMs) tp.releaseLease(lease)
        else keep.push(lease)
      }
      tp.spare = keep
    }
    let usable = 0
    for (const pc of tp.connections) if (!pc.retired) usable++
    const work: Array<Effect.Effect<void>> = []
    for (const pc of tp.connections) {
      if (pc.retired) continue
      const age = now - pc.createdAt
      if (age >= options.maxLifetimeMs) {
        work.push(tp.rotate(pc, age))
        usable--
      } else if (pc.conn.streamCount() === 0 && now - pc.idleSince >= options.idleTimeoutMs && usable > options.minIdle) {
        pc.retired = true // not replaced: it is surplus
        tp.dropSpare(pc)
        usable--
        work.push(
          log("closing connection: idle longer than idleTimeout", { target: tp.target.address, connection: pc.id, idleMs: now - pc.idleSince })
            .pipe(Effect.andThen(Pool.invalidate(tp.pool, pc)))
        )
      }
    }
    return work.length === 0 ? Effect.void : Effect.all(work, { discard: true })
  })
