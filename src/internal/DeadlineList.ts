/**
 * Deadlines of one fixed length for values that come and go with requests (the call-home server's
 * streams waiting for their worker), kept in the order they were added, with one timer for the
 * oldest instead of a `setTimeout` per value.
 *
 * Why: a `setTimeout` per request allocates a timer object, takes an async id, and inserts into
 * and removes from Node's timer lists, and the call-home server armed one per stream that almost
 * always lives a few milliseconds. Every deadline here is `timeoutMs` after it was added, so the
 * list (a `NodeList`) is in deadline order: adding appends, removing unlinks, and the timer only
 * ever waits for the first. While the list is empty the timer is unref'd (it no longer keeps the
 * process up) and left to fire on its own; it is not rescheduled then.
 *
 * What it does not do: judge deadlines after an I/O turn (`AckDeadlines` does, for acks that may
 * be waiting unread), or hold deadlines of different lengths.
 */
import { NodeList } from "./NodeList.ts"
import type { ListNode } from "./NodeList.ts"

/** The longest delay `setTimeout` takes. */
const MAX_TIMER_MS = 2 ** 31 - 1

/** One value's deadline; hand it back to `remove`. */
export interface Deadline<T> extends ListNode<T> {
  readonly due: number
}

/** Deadlines of one length, one timer; see the module comment. */
export class DeadlineList<T> {
  private readonly list = new NodeList<T>()
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  private stopped = false
  readonly timeoutMs: number
  private readonly expire: (value: T) => void
  private readonly keepsProcess: boolean

  /**
   * Deadlines `timeoutMs` after each `add`; `expire` gets each value whose deadline passed
   * (already removed). With `keepsProcess` false, the timer never keeps the process up, even while
   * values wait (as an unref'd `setTimeout`).
   */
  constructor(timeoutMs: number, expire: (value: T) => void, keepsProcess = true) {
    this.timeoutMs = timeoutMs
    this.expire = expire
    this.keepsProcess = keepsProcess
  }

  /** Values waiting now. */
  get size(): number {
    return this.list.size
  }

  /** Starts `value`'s deadline; keep the result to `remove` it. */
  add(value: T): Deadline<T> {
    const due = performance.now() + this.timeoutMs
    const node = this.list.append<Deadline<T>>({ value, due, before: undefined, after: undefined, listed: false })
    if (this.list.size === 1 && !this.stopped) {
      if (this.timer === undefined) this.arm(due)
      else if (this.keepsProcess) this.timer.ref()
    }
    return node
  }

  /** Ends `node`'s deadline (its value no longer waits); none, or a node already removed, is left alone. */
  remove(node: Deadline<T> | undefined): void {
    if (node === undefined || !node.listed) return
    this.list.remove(node)
    if (this.list.size === 0) this.timer?.unref()
  }

  /** Clears the timer for good (its owner's scope closes); values still listed never expire. */
  stop(): void {
    this.stopped = true
    clearTimeout(this.timer)
    this.timer = undefined
  }

  private arm(due: number): void {
    // setTimeout takes at most 2^31 - 1 ms (a longer delay fires after 1 ms); a later due re-arms.
    this.timer = setTimeout(this.onTimer, Math.min(MAX_TIMER_MS, Math.max(1, Math.ceil(due - performance.now()))))
    if (!this.keepsProcess) this.timer.unref()
  }

  private readonly onTimer = (): void => {
    this.timer = undefined
    const now = performance.now()
    for (let node = this.list.head as Deadline<T> | undefined; node !== undefined && node.due <= now; node = this.list.head as Deadline<T> | undefined) {
      const value = node.value as T
      this.remove(node)
      try {
        this.expire(value)
      } catch (error) {
        // Whatever threw must not strand the deadlines after it: rethrown on its own.
        queueMicrotask(() => {
          throw error
        })
      }
    }
    const first = this.list.head as Deadline<T> | undefined
    if (first !== undefined && !this.stopped) this.arm(first.due)
  }
}
