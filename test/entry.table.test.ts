/**
 * `EntryTable`, the string-keyed table of per-request entries: it behaves as a `Map` restricted to
 * string keys and defined values (checked against one by fast-check), iterates in insertion order,
 * and `values()` is a snapshot the table may change under.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { EntryTable } from "../src/internal/EntryTable.ts"

describe("EntryTable", () => {
  it("agrees with a Map on every sequence of set, delete, get, has, size, values and clear", () => {
    const key = fc.oneof(fc.constantFrom("a", "b", "__proto__", "constructor", "toString", "hasOwnProperty", ""), fc.string({ unit: fc.constantFrom(..."0123456789abcdef"), minLength: 32, maxLength: 32 }), fc.uuid())
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
            expect(table.get(o.key)).toBe(model.get(o.key))
            expect(table.has(o.key)).toBe(model.has(o.key))
          } else {
            table.clear()
            model.clear()
          }
          expect(table.size).toBe(model.size)
        }
        expect(table.values()).toEqual([...model.values()])
      })
    )
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

  it("iterates as a Map does (entries, keys), refuses undefined as a value, and lists integer-like keys first", () => {
    const table = new EntryTable<number>()
    table.set("b", 2).set("a", 1).set("10", 10).set("2", 20)
    expect([...table]).toEqual([["2", 20], ["10", 10], ["b", 2], ["a", 1]])
    expect(table.keys()).toEqual(["2", "10", "b", "a"])
    const walked: Array<string> = []
    table.forEach((v, k) => walked.push(`${k}=${v}`))
    expect(walked).toEqual(["2=20", "10=10", "b=2", "a=1"])
    expect(() => (table as EntryTable<number | undefined>).set("c", undefined)).toThrow(/undefined is not a value/)
    expect(table.size).toBe(4)
  })
})
