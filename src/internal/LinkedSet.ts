/**
 * A set of objects that come and go with requests (the worker's one-shot call-home sockets), each
 * with an optional value, kept in a list linked through nodes the objects point to (a symbol
 * property of this set) instead of a `Set` or `Map`.
 *
 * Why: a long-lived `Set` or `Map` whose entries churn keeps its replaced tables linked to the
 * next one with the entries they held, so once one of those tables is in the old generation,
 * every object it saw survives young-generation collections until the next full collection (see
 * `EntryTable`). The worker's one-shot call-home client kept its sockets in a `Set` and their
 * writers in a `Map`, one entry each per request: at 64 in flight over HTTP with one-shot
 * call-home, 16-20% of the worker's young generation survived each scavenge.
 *
 * Adding, finding and deleting are constant time and allocate one node (of a `NodeList`).
 * Iteration takes a snapshot, so the set may change while it is walked.
 */
import { NodeList } from "./NodeList.ts"
import type { ListNode } from "./NodeList.ts"

/** One member, in insertion order: a `NodeList` node whose value is the member, and the member's own value. */
interface Node<T, V> extends ListNode<T> {
  extra: V | undefined
}

/** A set of objects with optional values; see the module comment. */
export class LinkedSet<T extends object, V = never> {
  /** This set's property on its members (a member may be in several sets). */
  private readonly key: symbol = Symbol("LinkedSet")
  private readonly list = new NodeList<T>()

  /** Members now. */
  get size(): number {
    return this.list.size
  }

  private nodeOf(item: T): Node<T, V> | undefined {
    return (item as unknown as Record<symbol, Node<T, V> | undefined>)[this.key]
  }

  /** Adds `item` (no change if it is a member). */
  add(item: T): this {
    if (this.nodeOf(item) !== undefined) return this
    ;(item as unknown as Record<symbol, Node<T, V> | undefined>)[this.key] = this.list.append<Node<T, V>>({
      value: item,
      extra: undefined,
      before: undefined,
      after: undefined,
      listed: false
    })
    return this
  }

  /** Whether `item` is a member. */
  has(item: T): boolean {
    return this.nodeOf(item) !== undefined
  }

  /** The value of member `item`, if it has one. */
  get(item: T): V | undefined {
    return this.nodeOf(item)?.extra
  }

  /** Sets the value of `item`, adding it if it is not a member. */
  set(item: T, value: V): this {
    this.add(item)
    this.nodeOf(item)!.extra = value
    return this
  }

  /** Removes `item`; true when it was a member. */
  delete(item: T): boolean {
    const node = this.nodeOf(item)
    if (node === undefined) return false
    ;(item as unknown as Record<symbol, Node<T, V> | undefined>)[this.key] = undefined
    node.extra = undefined
    this.list.remove(node)
    return true
  }

  /** Removes every member. */
  clear(): void {
    for (const item of this.items()) this.delete(item)
  }

  /** The members now, in insertion order (a snapshot). */
  items(): Array<T> {
    return this.list.values()
  }
}
