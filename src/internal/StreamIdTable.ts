/**
 * A table keyed by 16-byte stream ids (the mux framing's, docs/protocol.md sections 6 and 9), for
 * the streams and requests of one connection, looked up once or more per frame.
 *
 * Why not a string made of the id, as a property key (what these tables were before): a string
 * used as a property key is internalized, so each lookup with a new key string hashes it and
 * probes V8's process-wide string table, and each new stream adds an entry there that a later
 * garbage collection removes. Profiled on the full TCP mode at one call in flight, the string
 * table and the megamorphic keyed loads and stores of those keys took 5-7% of each process's CPU.
 * Here the key is a 30-bit hash of the id's bytes, in chained buckets of our own (`HashBuckets`),
 * and each slot keeps the id it holds to tell ids with the same hash apart (the rare collision, or
 * an id chosen to collide). `EntryTable` does the same for string keys.
 *
 * Values must not be `undefined`. `set` keeps the id it is given: pass bytes that will not change
 * (a copy, not a view of a read buffer). `values()` takes a snapshot; `forEach` does not. Neither
 * follows insertion order. `valueOfSubject` looks a value up by its id's UUID text, as a one-shot
 * handshake or a ConnectionInfo spells it.
 */
import { sameStreamId, streamIdFromUuid } from "../protocol/StreamId.ts"
import { HashBuckets } from "./HashBuckets.ts"

/** One id and its value. */
interface Slot<V> {
  readonly hash: number
  readonly id: Uint8Array
  value: V
  next: Slot<V> | undefined
}

/** A 30-bit hash of the 16 bytes of `b`; exported for tests. */
export const streamIdHash = (b: Uint8Array): number => {
  let h = Math.imul((b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) ^ 0x27d4eb2d, 0x9e3779b1)
  h = Math.imul(h ^ (b[4]! | (b[5]! << 8) | (b[6]! << 16) | (b[7]! << 24)), 0x85ebca6b)
  h = Math.imul((h ^ (h >>> 13)) ^ (b[8]! | (b[9]! << 8) | (b[10]! << 16) | (b[11]! << 24)), 0xc2b2ae35)
  h = Math.imul((h ^ (h >>> 16)) ^ (b[12]! | (b[13]! << 8) | (b[14]! << 16) | (b[15]! << 24)), 0x9e3779b1)
  return (h ^ (h >>> 15)) & 0x3fffffff
}

/** A table of values by 16-byte stream id. */
export class StreamIdTable<V> {
  private readonly buckets = new HashBuckets<Slot<V>>()

  /** Entries now. */
  get size(): number {
    return this.buckets.count
  }

  /** The value of `id`, if any (a view into a frame will do: it is only read). */
  get(id: Uint8Array): V | undefined {
    const hash = streamIdHash(id)
    for (let slot = this.buckets.head(hash); slot !== undefined; slot = slot.next) {
      if (slot.hash === hash && sameStreamId(slot.id, id)) return slot.value
    }
    return undefined
  }

  /** Whether the id has a value. */
  has(id: Uint8Array): boolean {
    return this.get(id) !== undefined
  }

  /** Sets the value of `id` (not `undefined`); the table keeps `id` itself. */
  set(id: Uint8Array, value: V): this {
    if (value === undefined) throw new TypeError("StreamIdTable: undefined is not a value")
    if (id.length !== 16) throw new RangeError(`StreamIdTable: a stream id has 16 bytes, not ${id.length}`)
    const hash = streamIdHash(id)
    for (let slot = this.buckets.head(hash); slot !== undefined; slot = slot.next) {
      if (slot.hash === hash && sameStreamId(slot.id, id)) {
        slot.value = value
        return this
      }
    }
    this.buckets.add({ hash, id, value, next: undefined })
    return this
  }

  /** Removes `id`; true when it had a value. */
  delete(id: Uint8Array): boolean {
    const hash = streamIdHash(id)
    let prev: Slot<V> | undefined
    for (let slot = this.buckets.head(hash); slot !== undefined; prev = slot, slot = slot.next) {
      if (slot.hash !== hash || !sameStreamId(slot.id, id)) continue
      this.buckets.remove(slot, prev)
      return true
    }
    return false
  }

  /** Removes every entry. */
  clear(): void {
    this.buckets.clear()
  }

  /**
   * Calls `f` with each value and its id, without a snapshot (a read-only walk allocates
   * nothing): `f` must not change the table.
   */
  forEach(f: (value: V, id: Uint8Array) => void): void {
    this.buckets.forEach((slot) => f(slot.value, slot.id))
  }

  /** The values now (a snapshot). */
  values(): Array<V> {
    const out: Array<V> = []
    this.buckets.forEach((slot) => out.push(slot.value))
    return out
  }
}

/** A `StreamIdTable` as its readers see it. */
export type ReadonlyStreamIdTable<V> = Pick<StreamIdTable<V>, "size" | "get" | "has" | "values" | "forEach">

/**
 * The value of `table` whose `subject` is `subject`, spelled exactly as it was given out (not
 * another spelling of the same bytes); undefined when there is none or `subject` is not a UUID.
 */
export const valueOfSubject = <V extends { readonly subject: string }>(
  table: ReadonlyStreamIdTable<V>,
  subject: string
): V | undefined => {
  const id = streamIdFromUuid(subject)
  const value = id === undefined ? undefined : table.get(id)
  return value?.subject === subject ? value : undefined
}
