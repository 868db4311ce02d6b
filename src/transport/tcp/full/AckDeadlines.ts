/**
 * The ack deadlines of one router connection (`RouterConnection.ts`): which sent requests still
 * wait for the worker's first frame, since when, and when the oldest of them is overdue.
 *
 * What it does:
 * - `sent` appends a request to a list in the order it was sent (linked through the requests
 *   themselves: `FullRequest.prevWaiting`/`nextWaiting`). Right after the tick's write (a
 *   function queued for the end of the tick behind the batch's flush, `onNextTick`) the requests of the tick are stamped as
 *   sent (`FullRequest.sentAt`): the deadline counts from when the bytes leave, so a router busy
 *   in one long synchronous stretch does not count its own busy time against the worker.
 * - `answered` takes a request out of the list the moment it stops waiting (its Prologue came, or
 *   it was refused, reset or cancelled), wherever it is in the list, and clears its links. So
 *   the list holds only requests still waiting: a finished call is never kept alive by it, even
 *   behind one slow to start. (An array trimmed from its head held every answered request behind
 *   the oldest waiting one: at 64 in flight about 200 finished calls, each keeping its stream, state
 *   and items, which then survived the young-generation collections; docs/performance.md.)
 * - One timer per connection, for the oldest request still waiting. When it fires, the overdue
 *   requests are judged after one more I/O turn (`setImmediate`: answers may be waiting unread
 *   after a busy stretch), oldest first, each taken out and handed to `timedOut`; the timer is
 *   then re-armed for the next.
 *
 * What it does not do: touch the socket, write the Reset, build the error, or change a request's
 * state (the connection's `timedOut` does all of that); it writes only `sentAt` and the list
 * fields.
 */
import type { FullRequest } from "./FullRequest.ts"
import { onNextTick } from "../../../internal/SharedTick.ts"

/** The sent requests of one connection waiting for their ack, and the timer for the oldest; see the module comment. */
export class AckDeadlines {
  /** The oldest and newest requests waiting. */
  private first: FullRequest | undefined = undefined
  private last: FullRequest | undefined = undefined
  private count = 0
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  /** `stampSent` is queued for this tick. */
  private stampScheduled = false
  private readonly ackTimeoutMs: number
  private readonly isClosed: () => boolean
  private readonly timedOut: (req: FullRequest) => void

  /**
   * @param ackTimeoutMs bound on a request's wait for its first frame, from when it left.
   * @param isClosed true once the connection is closing: no timer is armed or swept any more.
   * @param timedOut called for each request whose ack is overdue, oldest first (already out of the list).
   */
  constructor(ackTimeoutMs: number, isClosed: () => boolean, timedOut: (req: FullRequest) => void) {
    this.ackTimeoutMs = ackTimeoutMs
    this.isClosed = isClosed
    this.timedOut = timedOut
  }

  /** Requests waiting now (in the list). */
  get waiting(): number {
    return this.count
  }

  /** `req`'s Request frame was queued for this tick's write (its `sentAt` is 0): it waits for its ack from when it leaves. */
  sent(req: FullRequest): void {
    if (req.waitingAck) return
    req.waitingAck = true
    req.prevWaiting = this.last
    req.nextWaiting = undefined
    if (this.last === undefined) this.first = req
    else this.last.nextWaiting = req
    this.last = req
    this.count++
    if (!this.stampScheduled) {
      this.stampScheduled = true
      onNextTick(this.stampSent)
    }
  }

  /** `req` no longer waits for its ack (answered, refused, reset or cancelled): out of the list, if in it. */
  answered(req: FullRequest): void {
    if (!req.waitingAck) return
    const prev = req.prevWaiting
    const next = req.nextWaiting
    if (prev === undefined) this.first = next
    else prev.nextWaiting = next
    if (next === undefined) this.last = prev
    else next.prevWaiting = prev
    req.prevWaiting = undefined
    req.nextWaiting = undefined
    req.waitingAck = false
    this.count--
  }

  /** The connection closed: the timer stops and the list is emptied (its requests are failed by the connection). */
  stop(): void {
    clearTimeout(this.timer)
    this.timer = undefined
    while (this.first !== undefined) this.answered(this.first)
  }

  /**
   * Right after this tick's write (queued after the batch's flush): the requests submitted in the
   * tick count as sent from now. Their ack timeout starts when they leave, not when they were
   * submitted: a router busy for longer than the timeout in one synchronous stretch (thousands of
   * requests submitted at once) does not count its own busy time against the worker.
   */
  private readonly stampSent = (): void => {
    this.stampScheduled = false
    const now = performance.now()
    // The requests not yet stamped are the newest: at the end of the list.
    for (let req = this.last; req !== undefined && req.sentAt === 0; req = req.prevWaiting) req.sentAt = now
    if (this.timer === undefined && this.first !== undefined && !this.isClosed()) this.arm(this.first.sentAt)
  }

  private arm(sentAt: number): void {
    const due = sentAt + this.ackTimeoutMs - performance.now()
    this.timer = setTimeout(this.onTimer, Math.max(1, Math.ceil(due)))
    this.timer.unref?.()
  }

  /** After one I/O turn (answers may be waiting unread after a busy stretch), sweeps the overdue acks. */
  private readonly onTimer = (): void => {
    setImmediate(this.sweep)
  }

  /** Fails the requests whose ack is overdue, oldest first, and re-arms for the next. */
  private readonly sweep = (): void => {
    this.timer = undefined
    if (this.isClosed()) return
    const now = performance.now()
    // A request sent from within `timedOut` (its slot went to the next one waiting) is not stamped
    // yet (`sentAt` 0): it is not overdue, and `stampSent` arms the timer for it.
    for (let req = this.first; req !== undefined && req.sentAt !== 0 && now - req.sentAt >= this.ackTimeoutMs; req = this.first) {
      this.answered(req)
      this.timedOut(req)
    }
    if (this.first !== undefined && this.first.sentAt !== 0 && this.timer === undefined) this.arm(this.first.sentAt)
  }
}
