/**
 * `StreamIdTable`, the table of a connection's streams by 16-byte stream id: it behaves as a
 * `Map` keyed by the id's bytes (checked against one by fast-check), ids whose hashes collide
 * live side by side, and a lookup may read the id inside a larger buffer.
 */
import * as fc from "fast-check"
import { beforeAll, describe, expect, it } from "vitest"
import { StreamIdTable, streamIdHash } from "../src/internal/StreamIdTable.ts"

const hex = (id: Uint8Array) => Buffer.from(id).toString("hex")

/** Ids made from a counter (deterministic), until two share a hash: a colliding pair. */
const collidingPairs = (count: number): Array<[Uint8Array, Uint8Array]> => {
  const seen = new Map<number, Uint8Array>()
  const pairs: Array<[Uint8Array, Uint8Array]> = []
  for (let i = 1; pairs.length < count; i++) {
    const id = new Uint8Array(16)
    new DataView(id.buffer).setUint32(12, i)
    new DataView(id.buffer).setUint32(0, i * 2654435761)
    const h = streamIdHash(id)
    const other = seen.get(h)
    if (other !== undefined) pairs.push([other, id])
    else seen.set(h, id)
  }
  return pairs
}

describe("StreamIdTable", () => {
  let pairs: Array<[Uint8Array, Uint8Array]> = []
  beforeAll(() => {
    pairs = collidingPairs(2)
  })

  it("finds ids whose hashes collide: the two pairs used below share a hash and differ", () => {
    for (const [a, b] of pairs) {
      expect(streamIdHash(a)).toBe(streamIdHash(b))
      expect(hex(a)).not.toBe(hex(b))
    }
  })

  it("agrees with a Map on every sequence of set, delete, get, has, size, values and clear, colliding ids included", () => {
    const pool = [...pairs.flat(), new Uint8Array(16), new Uint8Array(16).fill(255)]
    const id = fc.oneof(
      fc.constantFrom(...pool),
      fc.uint8Array({ minLength: 16, maxLength: 16 }),
      fc.uint8Array({ minLength: 16, maxLength: 16, max: 1 })
    )
    const op = fc.oneof(
      fc.record({ op: fc.constant("set" as const), id, value: fc.integer() }),
      fc.record({ op: fc.constant("delete" as const), id }),
      fc.record({ op: fc.constant("get" as const), id, at: fc.nat({ max: 7 }) }),
      fc.record({ op: fc.constant("clear" as const) })
    )
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        const table = new StreamIdTable<number>()
        const model = new Map<string, number>()
        for (const o of ops) {
          if (o.op === "set") {
            table.set(o.id.slice(), o.value)
            model.set(hex(o.id), o.value)
          } else if (o.op === "delete") expect(table.delete(o.id)).toBe(model.delete(hex(o.id)))
          else if (o.op === "get") {
            // The id read where it lies in a larger buffer, as a decoder hands it over.
            const frame = new Uint8Array(o.at + 20).fill(7)
            frame.set(o.id, o.at)
            expect(table.get(frame.subarray(o.at, o.at + 16))).toBe(model.get(hex(o.id)))
            expect(table.has(o.id)).toBe(model.has(hex(o.id)))
          } else {
            table.clear()
            model.clear()
          }
          expect(table.size).toBe(model.size)
        }
        expect(table.values().sort((x, y) => x - y)).toEqual([...model.values()].sort((x, y) => x - y))
        const walked: Array<string> = []
        table.forEach((value, key) => walked.push(`${hex(key)}=${value}`))
        expect(walked.sort()).toEqual([...model].map(([k, v]) => `${k}=${v}`).sort())
      })
    )
  })

  it("keeps every entry while it grows to thousands and shrinks back (its buckets double and halve)", () => {
    const table = new StreamIdTable<number>()
    const ids = Array.from({ length: 5000 }, () => crypto.getRandomValues(new Uint8Array(16)))
    ids.forEach((id, i) => table.set(id, i))
    expect(table.size).toBe(5000)
    expect(ids.every((id, i) => table.get(id) === i)).toBe(true)
    for (let i = 0; i < 4990; i++) expect(table.delete(ids[i]!)).toBe(true)
    expect(table.size).toBe(10)
    expect(table.values().sort((x, y) => x - y)).toEqual(Array.from({ length: 10 }, (_, i) => 4990 + i))
    expect(ids.slice(0, 4990).some((id) => table.has(id))).toBe(false)
    ids.slice(0, 100).forEach((id, i) => table.set(id, -i))
    expect(table.size).toBe(110)
    expect(ids.slice(0, 100).every((id, i) => table.get(id) === -i)).toBe(true)
  })

  it("colliding ids: each keeps its own value, and deleting one in either order leaves the other", () => {
    const [a, b] = pairs[0]!
    for (const first of [a, b]) {
      const second = first === a ? b : a
      const table = new StreamIdTable<string>()
      table.set(a, "A").set(b, "B")
      expect([table.get(a), table.get(b), table.size]).toEqual(["A", "B", 2])
      table.set(b, "B2")
      expect([table.get(b), table.size]).toEqual(["B2", 2])
      expect(table.delete(first)).toBe(true)
      expect(table.get(first)).toBeUndefined()
      expect(table.get(second)).toBe(first === a ? "B2" : "A")
      expect(table.delete(first)).toBe(false)
      expect(table.delete(second)).toBe(true)
      expect(table.size).toBe(0)
    }
  })

  it("refuses an undefined value and an id that is not 16 bytes, naming the problem", () => {
    const table = new StreamIdTable<object>()
    expect(() => table.set(new Uint8Array(16), undefined as unknown as object)).toThrow(/undefined is not a value/)
    expect(() => table.set(new Uint8Array(15), {})).toThrow(/16 bytes, not 15/)
    expect(table.size).toBe(0)
  })
})
