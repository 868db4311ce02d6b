/**
 * `HashedKeyTable`, the table of per-request entries by request id: it behaves as a `Map` of
 * string keys (checked against one by fast-check), keys whose hashes collide live side by side,
 * and a prototype's names are ordinary keys.
 */
import * as fc from "fast-check"
import { beforeAll, describe, expect, it } from "vitest"
import { HashedKeyTable, stringKeyHash } from "../src/internal/HashedKeyTable.ts"

/** Keys "k0", "k1", ... until two share a hash: colliding pairs (deterministic). */
const collidingPairs = (count: number): Array<[string, string]> => {
  const seen = new Map<number, string>()
  const pairs: Array<[string, string]> = []
  for (let i = 0; pairs.length < count; i++) {
    const key = `k${i}`
    const h = stringKeyHash(key)
    const other = seen.get(h)
    if (other !== undefined) pairs.push([other, key])
    else seen.set(h, key)
  }
  return pairs
}

describe("HashedKeyTable", () => {
  let pairs: Array<[string, string]> = []
  beforeAll(() => {
    pairs = collidingPairs(2)
  })

  it("the hash is a small non-negative integer, and the colliding pairs used below share one", () => {
    fc.assert(fc.property(fc.string({ unit: "binary" }), (s) => {
      const h = stringKeyHash(s)
      expect(Number.isInteger(h) && h >= 0 && h < 2 ** 30).toBe(true)
    }))
    for (const [a, b] of pairs) expect(stringKeyHash(a)).toBe(stringKeyHash(b))
  })

  it("agrees with a Map on every sequence of set, delete, get, has, size and clear, colliding keys included", () => {
    const key = fc.oneof(
      fc.constantFrom(...pairs.flat(), "__proto__", "constructor", "toString", "", "0", "4294967295"),
      fc.uuid(),
      fc.string({ unit: "binary", maxLength: 40 })
    )
    const op = fc.oneof(
      fc.record({ op: fc.constant("set" as const), key, value: fc.integer() }),
      fc.record({ op: fc.constant("delete" as const), key }),
      fc.record({ op: fc.constant("get" as const), key }),
      fc.record({ op: fc.constant("clear" as const) })
    )
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        const table = new HashedKeyTable<number>()
        const model = new Map<string, number>()
        for (const o of ops) {
          if (o.op === "set") {
            table.set(o.key, o.value)
            model.set(o.key, o.value)
          } else if (o.op === "delete") expect(table.delete(o.key)).toBe(model.delete(o.key))
          else if (o.op === "get") {
            // A key equal in content but another string object, as a decoder makes each time.
            const copy = JSON.parse(JSON.stringify(o.key)) as string
            expect(table.get(copy)).toBe(model.get(o.key))
            expect(table.has(o.key)).toBe(model.has(o.key))
          } else {
            table.clear()
            model.clear()
          }
          expect(table.size).toBe(model.size)
        }
      })
    )
  })

  it("colliding keys: each keeps its own value, and deleting one in either order leaves the other", () => {
    const [a, b] = pairs[0]!
    for (const first of [a, b]) {
      const second = first === a ? b : a
      const table = new HashedKeyTable<string>()
      table.set(a, "A").set(b, "B")
      expect([table.get(a), table.get(b), table.size]).toEqual(["A", "B", 2])
      expect(table.delete(first)).toBe(true)
      expect([table.get(first), table.get(second), table.size]).toEqual([undefined, first === a ? "B" : "A", 1])
      expect(table.delete(first)).toBe(false)
      expect(table.delete(second)).toBe(true)
      expect(table.size).toBe(0)
    }
  })

  it("refuses an undefined value, naming the key", () => {
    const table = new HashedKeyTable<object>()
    expect(() => table.set("req-1", undefined as unknown as object)).toThrow(/undefined is not a value \(key req-1\)/)
    expect(table.size).toBe(0)
  })
})
