/**
 * `LinkedSet`, the set of per-request objects (one-shot call-home sockets) with a value each: it
 * behaves as a `Map` of objects (checked against one by fast-check), keeps insertion order, and an
 * object may belong to two sets at once.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { LinkedSet } from "../src/internal/LinkedSet.ts"

describe("LinkedSet", () => {
  it("agrees with a Map on every sequence of add, set, delete, get, has, size, items and clear", () => {
    const pool = Array.from({ length: 6 }, (_, i) => ({ name: `o${i}` }))
    const item = fc.constantFrom(...pool)
    const op = fc.oneof(
      fc.record({ op: fc.constant("add" as const), item }),
      fc.record({ op: fc.constant("set" as const), item, value: fc.integer() }),
      fc.record({ op: fc.constant("delete" as const), item }),
      fc.record({ op: fc.constant("get" as const), item }),
      fc.record({ op: fc.constant("clear" as const) })
    )
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const set = new LinkedSet<{ name: string }, number>()
        const model = new Map<{ name: string }, number | undefined>()
        for (const o of ops) {
          if (o.op === "add") {
            set.add(o.item)
            if (!model.has(o.item)) model.set(o.item, undefined)
          } else if (o.op === "set") {
            set.set(o.item, o.value)
            model.set(o.item, o.value)
          } else if (o.op === "delete") expect(set.delete(o.item)).toBe(model.delete(o.item))
          else if (o.op === "get") {
            expect(set.get(o.item)).toBe(model.get(o.item))
            expect(set.has(o.item)).toBe(model.has(o.item))
          } else {
            set.clear()
            model.clear()
          }
          expect(set.size).toBe(model.size)
          expect(set.items()).toEqual([...model.keys()])
        }
      })
    )
  })

  it("an object may be in two sets; each keeps its own membership and value", () => {
    const a = new LinkedSet<object, string>()
    const b = new LinkedSet<object, string>()
    const o = {}
    a.set(o, "in a")
    b.set(o, "in b")
    expect([a.get(o), b.get(o)]).toEqual(["in a", "in b"])
    a.delete(o)
    expect([a.has(o), b.has(o), b.get(o)]).toEqual([false, true, "in b"])
  })

  it("items() is a snapshot: members deleted while it is walked do not disturb it", () => {
    const set = new LinkedSet<{ n: number }>()
    const members = [{ n: 1 }, { n: 2 }, { n: 3 }]
    for (const m of members) set.add(m)
    const seen: Array<number> = []
    for (const m of set.items()) {
      seen.push(m.n)
      set.delete(members[1]!)
    }
    expect(seen).toEqual([1, 2, 3])
    expect(set.items()).toEqual([members[0], members[2]])
  })
})
