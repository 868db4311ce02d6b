/**
 * `EntryTable`, the string-keyed table of per-request entries: it behaves as a `Map` restricted to
 * string keys and defined values (checked against one by fast-check), keys whose hashes collide
 * live side by side, it iterates in insertion order, and `values()` is a snapshot the table may
 * change under.
 */
import * as fc from "fast-check"
import { beforeAll, describe, expect, it } from "vitest"
import { EntryTable, stringKeyHash } from "../src/internal/EntryTable.ts"

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

describe("EntryTable", () => {
  let pairs: Array<[string, string]> = []
  beforeAll(() => {
    pairs = collidingPairs(2)
  })

  it("the key hash is a small non-negative integer, and the colliding pairs used below share one", () => {
    fc.assert(fc.property(fc.string({ unit: "binary" }), (s) => {
      const h = stringKeyHash(s)
      expect(Number.isInteger(h) && h >= 0 && h < 2 ** 30).toBe(true)
    }))
    for (const [a, b] of pairs) expect(stringKeyHash(a)).toBe(stringKeyHash(b))
  })

  it("agrees with a Map on every sequence of set, delete, get, has, size, values and clear, colliding keys included", () => {
    const key = fc.oneof(
      fc.constantFrom("a", "b", "__proto__", "constructor", "toString", "hasOwnProperty", "", "0", "10", "4294967295", ...pairs.flat()),
      fc.string({ unit: fc.constantFrom(..."0123456789abcdef"), minLength: 32, maxLength: 32 }),
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
        const table = new EntryTable<number>()
        const model = new Map<string, number>()
        for (const o of ops) {
          if (o.op === "set") {
            table.set(o.key, o.value)
            model.set(o.key, o.value)
          } else if (o.op === "delete") expect(table.delete(o.key)).toBe(model.delete(o.key))
          else if (o.op === "get") {
            // A key equal in content but another string object, as a decoder makes each time.
            expect(table.get(JSON.parse(JSON.stringify(o.key)) as string)).toBe(model.get(o.key))
            expect(table.has(o.key)).toBe(model.has(o.key))
          } else {
            table.clear()
            model.clear()
          }
          expect(table.size).toBe(model.size)
        }
        expect(table.values()).toEqual([...model.values()])
        expect(table.entries()).toEqual([...model.entries()])
      })
    )
  })

  it("keeps every entry and its order while it grows to thousands and shrinks back (its buckets double and halve)", () => {
    const table = new EntryTable<number>()
    const keys = Array.from({ length: 5000 }, (_, i) => crypto.randomUUID() + i)
    keys.forEach((k, i) => table.set(k, i))
    expect(table.size).toBe(5000)
    for (let i = 0; i < 5000; i += 7) expect(table.get(keys[i]!)).toBe(i)
    for (let i = 0; i < 4990; i++) expect(table.delete(keys[i]!)).toBe(true)
    expect(table.keys()).toEqual(keys.slice(4990))
    expect(keys.slice(4990).map((k) => table.get(k))).toEqual(Array.from({ length: 10 }, (_, i) => 4990 + i))
    expect(table.get(keys[0]!)).toBeUndefined()
    keys.slice(0, 100).forEach((k, i) => table.set(k, -i))
    expect(table.size).toBe(110)
    expect(table.values().slice(10)).toEqual(Array.from({ length: 100 }, (_, i) => -i))
  })

  it("colliding keys: each keeps its own value, and deleting one in either order leaves the other", () => {
    const [a, b] = pairs[0]!
    for (const first of [a, b]) {
      const second = first === a ? b : a
      const table = new EntryTable<string>()
      table.set(a, "A").set(b, "B")
      expect([table.get(a), table.get(b), table.size]).toEqual(["A", "B", 2])
      expect(table.delete(first)).toBe(true)
      expect([table.get(first), table.get(second), table.size]).toEqual([undefined, first === a ? "B" : "A", 1])
      expect(table.keys()).toEqual([second])
      expect(table.delete(first)).toBe(false)
      expect(table.delete(second)).toBe(true)
      expect(table.size).toBe(0)
      expect(table.keys()).toEqual([])
    }
  })

  it("values() is a snapshot: entries deleted or added while it is walked do not disturb it", () => {
    const table = new EntryTable<string>()
    for (const k of ["k1", "k2", "k3"]) table.set(k, k.toUpperCase())
    const seen: Array<string> = []
    for (const v of table.values()) {
      seen.push(v)
      table.delete("k2")
      table.set("k4", "K4")
    }
    expect(seen).toEqual(["K1", "K2", "K3"])
    expect(table.values()).toEqual(["K1", "K3", "K4"])
    expect(table.size).toBe(3)
  })

  it("a key with no value reads as absent; a prototype's names are ordinary keys", () => {
    const table = new EntryTable<object>()
    expect(table.get("toString")).toBeUndefined()
    expect(table.has("__proto__")).toBe(false)
    const v = {}
    table.set("__proto__", v)
    expect(table.get("__proto__")).toBe(v)
    expect(table.size).toBe(1)
    expect(table.delete("__proto__")).toBe(true)
    expect(table.delete("__proto__")).toBe(false)
    expect(table.size).toBe(0)
  })

  it("iterates as a Map does (entries, keys, integer-like keys included), and refuses undefined as a value", () => {
    const table = new EntryTable<number>()
    table.set("b", 2).set("a", 1).set("10", 10).set("2", 20)
    expect([...table]).toEqual([["b", 2], ["a", 1], ["10", 10], ["2", 20]])
    expect(table.keys()).toEqual(["b", "a", "10", "2"])
    const walked: Array<string> = []
    table.forEach((v, k) => walked.push(`${k}=${v}`))
    expect(walked).toEqual(["b=2", "a=1", "10=10", "2=20"])
    expect(() => (table as EntryTable<number | undefined>).set("c", undefined)).toThrow(/undefined is not a value/)
    expect(table.size).toBe(4)
  })
})
