/**
 * A string-keyed table for entries that come and go with requests (open streams by subject,
 * pending calls by request id, response writers by request id), with the keys hashed in
 * JavaScript instead of being property names or `Map` keys.
 *
 * Why not a `Map`: a long-lived `Map` or `Set` whose entries churn is rehashed each time it grows
 * or shrinks, and V8 keeps every replaced table linked to the next one with its entries as they
 * were (so that live iterators can follow). Once one of those tables has been promoted to the old
 * generation, every later table and every value they held survive the young-generation
 * collections until the next full collection: per-request objects pile up in the old generation,
 * and each scavenge copies megabytes. Measured on this machine: a micro-benchmark adding and
 * deleting 30 request-like objects at a time: a `Map` kept 55% of the young generation alive and
 * ran 95k requests/s; a null-prototype object 0.3% and 503k/s; the full TCP mode's worker at 64
 * in flight: 11.5% of its young objects survived each scavenge (25 ms pauses plus 75 ms of helper
 * threads, every 200 ms) until its tables were no longer `Map`s (see docs/performance.md).
 *
 * Why not the key as a property name of such an object (what this table was before): a string
 * used as a property key is internalized, hashed and entered in V8's process-wide string table,
 * where it stays until a full collection, and the first lookup of each new key string (a request
 * id just decoded) probes that table. On the full TCP mode's worker at 64 in flight, that one
 * lookup per request was 6.8% of the CPU; keyed by a hash, CPU per call fell 9% (docs/performance.md).
 *
 * How: the key's 30-bit hash (FNV-1a over its UTF-16 code units, computed here) picks a chain in
 * buckets of our own (`HashBuckets`); each slot keeps its key, to tell keys of the same hash
 * apart, and its neighbours in insertion order (a doubly linked list), which iteration follows,
 * as a `Map`'s does.
 *
 * Values must not be `undefined` (absence is `undefined`). `values()`, `entries()`, `keys()` and
 * iteration take a snapshot, so the table may change while it is walked; `forEach` does not.
 */

import { HashBuckets } from "./HashBuckets.ts"

/** One key and its value, in its hash chain (`next`) and in insertion order (`before`, `after`). */
interface Slot<V> {
  readonly hash: number
  readonly key: string
  value: V
  next: Slot<V> | undefined
  before: Slot<V> | undefined
  after: Slot<V> | undefined
}

/** A 30-bit hash of `s` (FNV-1a over its UTF-16 code units, then mixed); exported for tests. */
export const stringKeyHash = (s: string): number => {
  let h = 0x811c9dc5 ^ s.length
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193)
  h ^= h >>> 15
  return Math.imul(h, 0x2c1b3c6d) >>> 2
}

/** A table of values by string key; see the module comment. */
export class EntryTable<V> {
  private readonly buckets = new HashBuckets<Slot<V>>()
  private first: Slot<V> | undefined = undefined
  private last: Slot<V> | undefined = undefined

  /** Entries now. */
  get size(): number {
    return this.buckets.count
  }

  /** The value of `key`, if any. */
  get(key: string): V | undefined {
    const hash = stringKeyHash(key)
    for (let slot = this.buckets.head(hash); slot !== undefined; slot = slot.next) {
      if (slot.hash === hash && slot.key === key) return slot.value
    }
    return undefined
  }

  /** Whether `key` has a value. */
  has(key: string): boolean {
    return this.get(key) !== undefined
  }

  /** Sets the value of `key` (not `undefined`); a new key goes last in iteration order. */
  set(key: string, value: V): this {
    if (value === undefined) throw new TypeError(`EntryTable: undefined is not a value (key ${key})`)
    const hash = stringKeyHash(key)
    for (let slot = this.buckets.head(hash); slot !== undefined; slot = slot.next) {
      if (slot.hash === hash && slot.key === key) {
        slot.value = value
        return this
      }
    }
    const slot: Slot<V> = { hash, key, value, next: undefined, before: this.last, after: undefined }
    this.buckets.add(slot)
    if (this.last === undefined) this.first = slot
    else this.last.after = slot
    this.last = slot
    return this
  }

  /** Removes `key`; true when it had a value. */
  delete(key: string): boolean {
    const hash = stringKeyHash(key)
    let prev: Slot<V> | undefined
    for (let slot = this.buckets.head(hash); slot !== undefined; prev = slot, slot = slot.next) {
      if (slot.hash !== hash || slot.key !== key) continue
      this.buckets.remove(slot, prev)
      if (slot.before === undefined) this.first = slot.after
      else slot.before.after = slot.after
      if (slot.after === undefined) this.last = slot.before
      else slot.after.before = slot.before
      // A removed slot may already be in the old generation, where it stays until a full
      // collection: pointing on into younger slots and their values, it would keep every later
      // entry alive through young collections (docs/performance.md, fifth session).
      slot.before = undefined
      slot.after = undefined
      slot.value = undefined as V
      return true
    }
    return false
  }

  /** Removes every entry. */
  clear(): void {
    this.buckets.clear()
    this.first = undefined
    this.last = undefined
  }

  /** The keys and values now, in insertion order (a snapshot). */
  entries(): Array<[string, V]> {
    const out: Array<[string, V]> = []
    for (let slot = this.first; slot !== undefined; slot = slot.after) out.push([slot.key, slot.value])
    return out
  }

  /** The keys now, in insertion order (a snapshot). */
  keys(): Array<string> {
    const out: Array<string> = []
    for (let slot = this.first; slot !== undefined; slot = slot.after) out.push(slot.key)
    return out
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
    for (let slot = this.first; slot !== undefined; slot = slot.after) f(slot.value, slot.key)
  }

  /** The values now, in insertion order (a snapshot). */
  values(): Array<V> {
    const out: Array<V> = []
    for (let slot = this.first; slot !== undefined; slot = slot.after) out.push(slot.value)
    return out
  }
}

/** An `EntryTable` as its readers see it. */
export type ReadonlyEntryTable<V> = Pick<EntryTable<V>, "size" | "get" | "has" | "values" | "forEach">
