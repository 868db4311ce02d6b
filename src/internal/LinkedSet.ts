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
 * Adding, finding and deleting are constant time and allocate one node. Iteration takes a
 * snapshot, so the set may change while it is walked.
 */

/** One member, in insertion order. */
interface Node<T, V> {
  readonly item: T
  value: V | undefined
  before: Node<T, V> | undefined
  after: Node<T, V> | undefined
}

/** A set of objects with optional values; see the module comment. */
export class LinkedSet<T extends object, V = never> {
  /** This set's property on its members (a member may be in several sets). */
  private readonly key: symbol = Symbol("LinkedSet")
  private first: Node<T, V> | undefined = undefined
  private last: Node<T, V> | undefined = undefined
  private count = 0

  /** Members now. */
  get size(): number {
    return this.count
  }

  private nodeOf(item: T): Node<T, V> | undefined {
    return (item as unknown as Record<symbol, Node<T, V> | undefined>)[this.key]
  }

  /** Adds `item` (no change if it is a member). */
  add(item: T): this {
    if (this.nodeOf(item) !== undefined) return this
    const node: Node<T, V> = { item, value: undefined, before: this.last, after: undefined }
    ;(item as unknown as Record<symbol, Node<T, V> | undefined>)[this.key] = node
    if (this.last === undefined) this.first = node
    else this.last.after = node
    this.last = node
    this.count++
    return this
  }

  /** Whether `item` is a member. */
  has(item: T): boolean {
    return this.nodeOf(item) !== undefined
  }

  /** The value of member `item`, if it has one. */
  get(item: T): V | undefined {
    return this.nodeOf(item)?.value
  }

  /** Sets the value of `item`, adding it if it is not a member. */
  set(item: T, value: V): this {
    this.add(item)
    this.nodeOf(item)!.value = value
    return this
  }

  /** Removes `item`; true when it was a member. */
  delete(item: T): boolean {
    const node = this.nodeOf(item)
    if (node === undefined) return false
    ;(item as unknown as Record<symbol, Node<T, V> | undefined>)[this.key] = undefined
    if (node.before === undefined) this.first = node.after
    else node.before.after = node.after
    if (node.after === undefined) this.last = node.before
    else node.after.before = node.before
    node.before = undefined
    node.after = undefined
    this.count--
    return true
  }

  /** Removes every member. */
  clear(): void {
    for (const item of this.items()) this.delete(item)
  }

  /** The members now, in insertion order (a snapshot). */
  items(): Array<T> {
    const out: Array<T> = []
    for (let node = this.first; node !== undefined; node = node.after) out.push(node.item)
    return out
  }
}
