/**
 * `NodeList`, the worker's list of handler fibers: values pushed and removed through their nodes
 * keep insertion order (checked against an array by fast-check), removing twice is harmless, and
 * a removed node holds neither its value nor its neighbours.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { NodeList } from "../src/internal/NodeList.ts"
import type { ListNode } from "../src/internal/NodeList.ts"

describe("NodeList", () => {
  it("agrees with an array on every sequence of push and remove (including removing twice)", () => {
    const op = fc.oneof(
      fc.record({ op: fc.constant("push" as const), value: fc.integer() }),
      fc.record({ op: fc.constant("remove" as const), pick: fc.nat() })
    )
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const list = new NodeList<{ v: number }>()
        const model: Array<{ v: number }> = []
        const nodes: Array<{ node: ListNode<{ v: number }>; value: { v: number } }> = []
        for (const o of ops) {
          if (o.op === "push") {
            const value = { v: o.value }
            nodes.push({ node: list.push(value), value })
            model.push(value)
          } else if (nodes.length > 0) {
            const { node, value } = nodes[o.pick % nodes.length]!
            list.remove(node)
            const i = model.indexOf(value)
            if (i >= 0) model.splice(i, 1)
            expect(node.value).toBeUndefined()
            expect(node.before).toBeUndefined()
            expect(node.after).toBeUndefined()
          }
          expect(list.values()).toEqual(model)
          expect(list.size).toBe(model.length)
        }
      })
    )
  })

  it("takes a snapshot: removing while walking the values skips none", () => {
    const list = new NodeList<number>()
    const nodes = [1, 2, 3, 4].map((v) => list.push(v))
    const seen: Array<number> = []
    for (const v of list.values()) {
      seen.push(v)
      list.remove(nodes[v - 1]!)
    }
    expect(seen).toEqual([1, 2, 3, 4])
    expect(list.size).toBe(0)
    expect(list.values()).toEqual([])
  })
})
