/**
 * A string-keyed table for entries that come and go with requests (open streams by stream id,
 * pending calls by request id), kept in a null-prototype object (V8's dictionary mode) instead of
 * a `Map`.
 *
 * Why not a `Map`: a long-lived `Map` or `Set` whose entries churn is rehashed each time it grows
 * or shrinks, and V8 keeps every replaced table linked to the next one with its entries as they
 * were (so that live iterators can follow). Once one of those tables has been promoted to the old
 * generation, every later table and every value they held survive the young-generation
 * collections until the next full collection: per-request objects pile up in the old generation,
 * and each scavenge copies megabytes. Measured on this machine:
 * - a micro-benchmark adding and deleting 30 request-like objects at a time: a `Map` kept 55% of
 *   the young generation alive and ran 95k requests/s; this table 0.3% and 503k/s;
 * - the full TCP mode's worker at 64 in flight: 11.5% of its young objects survived each
 *   scavenge (25 ms pauses plus 75 ms of helper threads, every 200 ms), until its tables were
 *   these (see docs/performance.md).
 *
 * Values must not be `undefined` (absence is `undefined`). `values()`, `entries()` and iteration
 * take a snapshot, so the table may change while it is walked. They follow insertion order, as a
 * `Map` does, except that integer-like keys ("10", the NATS client's base-36 tokens made of digits
 * only) come first, in numeric order, as an object's properties do; nothing here depends on the
 * order of those.
 */
export class EntryTable<V> {
  private table: Record<string, V> = Object.create(null) as Record<string, V>
  private count = 0

  /** Entries now. */
  get size(): number {
    return this.count
  }

  /** The value of `key`, if any. */
  get(key: string): V | undefined {
    return this.table[key]
  }

  /** Whether `key` has a value. */
  has(key: string): boolean {
    return this.table[key] !== undefined
  }

  /** Sets the value of `key` (not `undefined`). */
  set(key: string, value: V): this {
    if (value === undefined) throw new TypeError(`EntryTable: undefined is not a value (key ${key})`)
    if (this.table[key] === undefined) this.count++
    this.table[key] = value
    return this
  }

  /** Removes `key`; true when it had a value. */
  delete(key: string): boolean {
    if (this.table[key] === undefined) return false
    delete this.table[key]
    this.count--
    return true
  }

  /** Removes every entry. */
  clear(): void {
    this.table = Object.create(null) as Record<string, V>
    this.count = 0
  }

  /** The keys and values now, in insertion order (a snapshot). */
  entries(): Array<[string, V]> {
    const out: Array<[string, V]> = []
    const table = this.table
    for (const key in table) out.push([key, table[key]!])
    return out
  }

  /** The keys now (a snapshot). */
  keys(): Array<string> {
    return Object.keys(this.table)
  }

  /** The entries now (a snapshot), as a `Map` iterates. */
  [Symbol.iterator](): IterableIterator<[string, V]> {
    return this.entries()[Symbol.iterator]()
  }

  /**
   * Calls `f` with each value and key, in insertion order, without a snapshot (a read-only walk
   * allocates nothing): `f` must not change the table.
   */
  forEach(f: (value: V, key: string) => void): void {
    const table = this.table
    for (const key in table) f(table[key]!, key)
  }

  /** The values now, in insertion order (a snapshot). */
  values(): Array<V> {
    const out: Array<V> = []
    const table = this.table
    for (const key in table) out.push(table[key]!)
    return out
  }
}

/** An `EntryTable` as its readers see it. */
export type ReadonlyEntryTable<V> = Pick<EntryTable<V>, "size" | "get" | "has" | "values" | "forEach">
