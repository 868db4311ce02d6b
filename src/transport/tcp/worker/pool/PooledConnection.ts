/**
 * A `MuxConnection` as the pool sees it: the connection plus the pool's own bookkeeping of it,
 * so that the connection itself knows nothing of pools.
 *
 * It holds data only: the target pool (TargetPool.ts) reads and updates it.
 */
import type { Scope } from "effect"
import type { MuxConnection } from "../MuxConnection.ts"

/** One pooled connection: the item of a target's Effect `Pool`. */
export class PooledConnection {
  /** The connection. */
  readonly conn: MuxConnection
  /** Creation time on the pool's clock (ms), for max-lifetime rotation. */
  readonly createdAt: number
  /** When it became ready (`performance.now()`): a stream acquired later reuses it. */
  readonly readyAt: number
  /** When its last stream ended, on the pool's clock (ms); `createdAt` until then. */
  idleSince: number
  /** Streams lent it, ever. */
  served = 0
  /** Retired (rotation, idle, invalid): it takes no new stream and is invalidated in the Pool. */
  retired = false
  /** Counted once as a validation failure. */
  counted = false
  /** Carrying a stream now (counted in its target's `busyCount`). */
  busy = false
  /**
   * Pool leases held on it now (its streams and the spare leases): never below the Pool's own
   * count, since it is raised after the Pool's and lowered once the Pool has its lease back.
   */
  leases = 0

  constructor(conn: MuxConnection, createdAt: number, readyAt: number) {
    this.conn = conn
    this.createdAt = createdAt
    this.readyAt = readyAt
    this.idleSince = createdAt
  }

  /** The connection id (sent in its handshake). */
  get id(): string {
    return this.conn.id
  }
}

/**
 * One Pool lease on one connection. Its scope holds the target's RcMap reference and the Pool
 * lease (one of the connection's `maxStreamsPerConnection` slots); closing it returns both.
 */
export interface Lease {
  readonly pc: PooledConnection
  readonly scope: Scope.Closeable
}
