/**
 * A list of values that come and go with requests (the worker's handler fibers), each taken out
 * through the node its `push` returned, which its owner keeps (a fiber's observer, for one).
 *
 * Why not a `Set`: a long-lived `Set` whose entries churn keeps its replaced tables, with the
 * entries they held, so once one of them is in the old generation every value it saw survives
 * young-generation collections (see `LinkedSet`, which does the same for objects that can carry a
 * property of the set; a fiber is Effect's, so its node is kept by its owner instead). A removed
 * node lets go of its value and its neighbours for the same reason.
 *
 * Pushing and removing are constant time and allocate one node; `values` takes a snapshot.
 */

/** One value's place in a `NodeList`; hand it back to `remove`. */
export interface ListNode<T> {
  value: T | undefined
  before: ListNode<T> | undefined
  after: ListNode<T> | undefined
  listed: boolean
}

/** A list of values removed through their nodes; see the module comment. */
export class NodeList<T> {
  private first: ListNode<T> | undefined = undefined
  private last: ListNode<T> | undefined = undefined
  private count = 0

  /** Values now. */
  get size(): number {
    return this.count
  }

  /** The oldest value's node, if any. */
  get head(): ListNode<T> | undefined {
    return this.first
  }

  /** Appends `value`; keep the node to remove it. */
  push(value: T): ListNode<T> {
    return this.append({ value, before: undefined, after: undefined, listed: false })
  }

  /** Appends a node its caller made (one with fields of its own: `DeadlineList`'s due time); returns it. */
  append<N extends ListNode<T>>(node: N): N {
    node.before = this.last
    node.after = undefined
    node.listed = true
    if (this.last === undefined) this.first = node
    else this.last.after = node
    this.last = node
    this.count++
    return node
  }

  /** Takes `node`'s value out; a node already removed is left alone. */
  remove(node: ListNode<T>): void {
    if (!node.listed) return
    node.listed = false
    if (node.before === undefined) this.first = node.after
    else node.before.after = node.after
    if (node.after === undefined) this.last = node.before
    else node.after.before = node.before
    node.before = undefined
    node.after = undefined
    node.value = undefined
    this.count--
  }

  /** The values now, oldest first (a snapshot). */
  values(): Array<T> {
    const out: Array<T> = []
    for (let node = this.first; node !== undefined; node = node.after) out.push(node.value as T)
    return out
  }
}
