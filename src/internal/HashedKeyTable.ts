/**
 * A table keyed by strings that are long and new with each request (request ids), looked up
 * without making V8 internalize them.
 *
 * Why not an `EntryTable`: a string used as a property key is internalized (hashed and entered
 * in V8's process-wide string table, where it stays until a full collection removes it), and the
 * first lookup of a new key string probes that table. Profiled on the full TCP mode's worker at 64
 * in flight, the one lookup of each request's id (is it already in progress?) was 6.8% of the
 * worker's CPU. Here the key is a 30-bit hash of the string, computed in JavaScript (a small
 * integer, kept among the object's elements in a number dictionary), and each slot keeps its key
 * to tell keys of the same hash apart (a chain).
 *
 * Values must not be `undefined`. Iteration is not offered: the tables it serves are only looked up.
 */

/** One key and its value; `next` holds another key of the same hash. */
interface Slot<V> {
  readonly key: string
  value: V
  next: Slot<V> | undefined
}

/** A 30-bit hash of `s` (FNV-1a over its UTF-16 code units, then mixed); exported for tests. */
export const stringKeyHash = (s: string): number => {
  let h = 0x811c9dc5 ^ s.length
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193)
  h ^= h >>> 15
  return Math.imul(h, 0x2c1b3c6d) >>> 2
}

/** A table of values by string key; see the module comment. */
export class HashedKeyTable<V> {
  private table: Record<number, Slot<V>> = Object.create(null) as Record<number, Slot<V>>
  private count = 0

  /** Entries now. */
  get size(): number {
    return this.count
  }

  /** The value of `key`, if any. */
  get(key: string): V | undefined {
    for (let slot: Slot<V> | undefined = this.table[stringKeyHash(key)]; slot !== undefined; slot = slot.next) {
      if (slot.key === key) return slot.value
    }
    return undefined
  }

  /** Whether `key` has a value. */
  has(key: string): boolean {
    return this.get(key) !== undefined
  }

  /** Sets the value of `key` (not `undefined`). */
  set(key: string, value: V): this {
    if (value === undefined) throw new TypeError(`HashedKeyTable: undefined is not a value (key ${key})`)
    const h = stringKeyHash(key)
    const first = this.table[h]
    for (let slot: Slot<V> | undefined = first; slot !== undefined; slot = slot.next) {
      if (slot.key === key) {
        slot.value = value
        return this
      }
    }
    this.table[h] = { key, value, next: first }
    this.count++
    return this
  }

  /** Removes `key`; true when it had a value. */
  delete(key: string): boolean {
    const h = stringKeyHash(key)
    let prev: Slot<V> | undefined
    for (let slot: Slot<V> | undefined = this.table[h]; slot !== undefined; prev = slot, slot = slot.next) {
      if (slot.key !== key) continue
      if (prev !== undefined) prev.next = slot.next
      else if (slot.next !== undefined) this.table[h] = slot.next
      else delete this.table[h]
      this.count--
      return true
    }
    return false
  }

  /** Removes every entry. */
  clear(): void {
    this.table = Object.create(null) as Record<number, Slot<V>>
    this.count = 0
  }
}
