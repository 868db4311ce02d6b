/**
 * The chained hash buckets under `EntryTable` and `StreamIdTable`: a plain array of chains,
 * indexed by the low bits of a hash each slot carries, that doubles when it holds more slots than
 * buckets. Only a large array shrinks (past `SHRINK_ABOVE` buckets, when it holds fewer slots than
 * a 64th of them): a burst's array is given back, and a table of ordinary size, whose count swings
 * with the requests in flight, never resizes back and forth.
 *
 * Why an array of our own: those tables were first null-prototype objects keyed by the hash (a
 * number dictionary of V8's); with a request's worth of inserts and deletes, that dictionary cost
 * 473 ns a request against 56 ns for this array in a micro-benchmark (one insert, three lookups,
 * one delete, 64 live entries), as deleting from it shrinks and regrows it. Unlike a `Map`, a
 * replaced array is not linked to the next one, so it never holds finished requests' entries
 * alive (see `EntryTable`).
 *
 * It knows nothing of keys: a table walks a chain from `head(hash)` and compares its own keys.
 */

/** A slot of a chain: its key's 30-bit hash, and the next slot of the same bucket. */
export interface BucketSlot<S> {
  readonly hash: number
  next: S | undefined
}

/** Buckets a table starts with. */
const MIN_BUCKETS = 16
/** An array of more buckets than this halves when it holds fewer slots than a 64th of them. */
const SHRINK_ABOVE = 1024

/** Chains of slots by hash; see the module comment. */
export class HashBuckets<S extends BucketSlot<S>> {
  private buckets: Array<S | undefined> = new Array<S | undefined>(MIN_BUCKETS).fill(undefined)
  private mask = MIN_BUCKETS - 1
  /** Slots held. */
  count = 0

  /** The first slot of the chain `hash` falls in (slots of other hashes may share it). */
  head(hash: number): S | undefined {
    return this.buckets[hash & this.mask]
  }

  /** Adds `slot` (not already held) at the head of its chain. */
  add(slot: S): void {
    const i = slot.hash & this.mask
    slot.next = this.buckets[i]
    this.buckets[i] = slot
    if (++this.count > this.buckets.length) this.resize(this.buckets.length * 2)
  }

  /** Removes `slot`, found after `prev` in its chain (undefined: it is the chain's head). */
  remove(slot: S, prev: S | undefined): void {
    if (prev === undefined) this.buckets[slot.hash & this.mask] = slot.next
    else prev.next = slot.next
    slot.next = undefined
    if (--this.count < this.buckets.length >> 6 && this.buckets.length > SHRINK_ABOVE) this.resize(this.buckets.length >> 1)
  }

  /** Calls `f` with every slot, bucket by bucket; `f` must not add or remove slots. */
  forEach(f: (slot: S) => void): void {
    const buckets = this.buckets
    for (let i = 0; i < buckets.length; i++) {
      for (let slot = buckets[i]; slot !== undefined; slot = slot.next) f(slot)
    }
  }

  /** Forgets every slot. */
  clear(): void {
    this.buckets = new Array<S | undefined>(MIN_BUCKETS).fill(undefined)
    this.mask = MIN_BUCKETS - 1
    this.count = 0
  }

  private resize(size: number): void {
    const old = this.buckets
    const buckets = new Array<S | undefined>(size).fill(undefined)
    const mask = size - 1
    for (let i = 0; i < old.length; i++) {
      let slot = old[i]
      while (slot !== undefined) {
        const next: S | undefined = slot.next
        const j = slot.hash & mask
        slot.next = buckets[j]
        buckets[j] = slot
        slot = next
      }
    }
    this.buckets = buckets
    this.mask = mask
  }
}
