/**
 * The ack deadlines of one router connection (`RouterConnection.ts`): which sent requests still
 * wait for the worker's first frame, since when, and when the oldest of them is overdue.
 *
 * What it does:
 * - `sent` queues a request in the order it was sent. Right after the tick's write (a
 *   `process.nextTick` queued behind the batch's flush) the requests of the tick are stamped as
 *   sent (`FullRequest.sentAt`): the deadline counts from when the bytes leave, so a router busy
 *   in one long synchronous stretch does not count its own busy time against the worker.
 * - One timer per connection, for the oldest request still waiting (`RequestState.Sent`). When it
 *   fires, the overdue requests are judged after one more I/O turn (`setImmediate`: answers may be
 *   waiting unread after a busy stretch), oldest first, each handed to `timedOut`; the timer is
 *   then re-armed for the next.
 * - `trim` lets go of the answered requests at the head of the queue, so that it holds only the
 *   requests still waiting, not every request of the last timeout.
 *
 * What it does not do: touch the socket, write the Reset, build the error, or change a request's
 * state (the connection's `timedOut` does all of that); it only reads `state` and `sentAt`.
 */
import { RequestState } from "./FullRequest.ts"
import type { FullRequest } from "./FullRequest.ts"

/** The sent requests of one connection waiting for their ack, and the timer for the oldest; see the module comment. */
export class AckDeadlines {
  /** Requests in the order they were sent (entries before `head` are done with). */
  private queue: Array<FullRequest> = []
  private head = 0
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  /** `stampSent` is queued for this tick. */
  private stampScheduled = false
  private readonly ackTimeoutMs: number
  private readonly isClosed: () => boolean
  private readonly timedOut: (req: FullRequest) => void

  /**
   * @param ackTimeoutMs bound on a request's wait for its first frame, from when it left.
   * @param isClosed true once the connection is closing: no timer is armed or swept any more.
   * @param timedOut called for each request (still `Sent`) whose ack is overdue, oldest first.
   */
  constructor(ackTimeoutMs: number, isClosed: () => boolean, timedOut: (req: FullRequest) => void) {
    this.ackTimeoutMs = ackTimeoutMs
    this.isClosed = isClosed
    this.timedOut = timedOut
  }

  /** `req`'s Request frame was queued for this tick's write (its `sentAt` is 0): it waits for its ack from when it leaves. */
  sent(req: FullRequest): void {
    this.queue.push(req)
    if (!this.stampScheduled) {
      this.stampScheduled = true
      process.nextTick(this.stampSent)
    }
  }

  /**
   * Lets go of the answered requests at the head of the queue (answers come about in order), so
   * that the queue holds only requests still waiting, not every request of the last timeout.
   */
  trim(): void {
    const queue = this.queue
    let head = this.head
    while (head < queue.length && queue[head]!.state !== RequestState.Sent) head++
    if (head === queue.length) {
      queue.length = 0
      head = 0
    } else if (head >= 1024 && head * 2 >= queue.length) {
      queue.splice(0, head)
      head = 0
    }
    this.head = head
  }

  /** The connection closed: the timer stops and the queue is emptied (its requests are failed by the connection). */
  stop(): void {
    clearTimeout(this.timer)
    this.timer = undefined
    this.queue = []
    this.head = 0
  }

  /**
   * Right after this tick's write (queued after the batch's flush): the requests submitted in the
   * tick count as sent from now. Their ack timeout starts when they leave, not when they were
   * submitted: a router busy for longer than the timeout in one synchronous stretch (thousands of
   * requests submitted at once) does not count its own busy time against the worker.
   */
  private readonly stampSent = (): void => {
    this.stampScheduled = false
    const queue = this.queue
    if (queue.length === 0) return
    const now = performance.now()
    // The requests not yet stamped are the newest: at the end of the queue (trims only drop its head).
    for (let i = queue.length - 1; i >= 0 && queue[i]!.sentAt === 0; i--) queue[i]!.sentAt = now
    if (this.timer === undefined && !this.isClosed()) {
      let head = this.head
      while (head < queue.length && queue[head]!.state !== RequestState.Sent) head++
      if (head < queue.length) this.arm(queue[head]!.sentAt)
    }
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
    const queue = this.queue
    let head = this.head
    while (head < queue.length) {
      const req = queue[head]!
      if (req.state !== RequestState.Sent) {
        head++
        continue
      }
      if (now - req.sentAt < this.ackTimeoutMs) break
      head++
      this.timedOut(req)
    }
    if (head === queue.length) {
      this.queue = []
      head = 0
    } else if (head >= 1024 && head * 2 >= queue.length) {
      this.queue = queue.slice(head)
      head = 0
    }
    this.head = head
    if (head < this.queue.length) this.arm(this.queue[head]!.sentAt)
  }
}
