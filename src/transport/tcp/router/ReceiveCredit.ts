/**
 * The receiving side of mux flow control (docs/protocol.md, "Flow control"), without a socket:
 * the credit a receiver owes its sender, per stream and per connection. The router's mux
 * connections grant response Data credit with it; the full mode's worker grants request item
 * credit with it (the mirror image).
 *
 * What it does: `grant` records payload bytes a stream has consumed, on the stream's own
 * `OwedCredit` record (no map lookup per frame); a WindowUpdate goes out as soon as 64 KiB are
 * owed to one stream. `chunkDecoded` compares the bytes decoded with the last ConnectionAck:
 * 64 KiB unacknowledged send one at once. Whatever is owed, stream or connection, goes out with
 * `piggyback`, which its owner calls when it is about to write anyway (its batch's `beforeFlush`,
 * once per write): the credit then rides in the same write instead of costing a write (and a
 * wake-up of the peer) of its own. A piggyback also acknowledges every byte decoded so far, the
 * frames of the chunk still being decoded included. What no write took by the end of the tick
 * goes out 50 ms later (`CREDIT_UPDATE_MS`; one timer per connection, started at the end of the
 * tick that left credit owed, `refresh`ed rather than reallocated). Later is safe: credit goes out
 * at once at 64 KiB, so with windows of at least 64 KiB (256 KiB by default) a blocked sender is
 * always unblocked by a grant the consumer's progress makes, never by the timer's.
 *
 * Why the end of the tick, and why not 1 ms as before: a timer started as soon as credit is owed
 * is still pending when the process goes idle, even though the write of the same tick took the
 * credit. At one call in flight that left a 1 ms timer pending at every wait for the peer, so
 * every `epoll_wait` had a 1 ms timeout instead of none; on this project's machines that alone
 * made each round trip 5 µs longer (docs/performance.md, "A pending 1 ms timer"). A router whose
 * pooled call-home connection carries no writes of its own (its requests go over HTTP or another
 * socket) can only send credit with the timer: a short one would be pending at most waits.
 *
 * Credit frames (WindowUpdate, ConnectionAck) do not count on either side (`creditFrameDecoded`
 * takes the received ones out of the count): otherwise each side's ConnectionAck would make the
 * other owe one, and two idle peers would ack each other forever.
 *
 * What it does not do: decode, write (frames go to `push`), or decide when bytes count as
 * consumed (its owner calls `grant`).
 */
import { encodeConnectionAck, encodeWindowUpdate } from "../../../protocol/MuxCodec.ts"
import { CREDIT_UPDATE_BYTES, CREDIT_UPDATE_MS } from "../../../protocol/MuxHandshake.ts"
import { onNextTick } from "../../../internal/SharedTick.ts"

/** The credit owed to one stream (kept by the stream's owner, e.g. on its link). */
export interface OwedCredit {
  /** The stream's 16 id bytes. */
  readonly id: Uint8Array
  /** Payload bytes consumed and not yet granted back. */
  owed: number
  /** True while it sits in the connection's list of streams owed credit. */
  listed: boolean
}

/** A fresh record for the stream `id`. */
export const owedCredit = (id: Uint8Array): OwedCredit => ({ id, owed: 0, listed: false })

/** The credit one connection's receiver owes; see the module comment. */
export class ReceiveCredit {
  private owedList: Array<OwedCredit> = []
  private readonly push: (frame: Uint8Array) => void
  private readonly bytesDecoded: () => number
  private acked = 0
  /** Bytes of credit frames decoded: not acknowledged. */
  private uncounted = 0
  /** Credit is owed and has not gone out: it leaves with the next write, or when the timer fires. */
  private due = false
  /** The end-of-tick check (`endOfTick`) is queued. */
  private checkQueued = false
  /**
   * One timer for the connection's life, restarted (`refresh`) at the end of a tick that left
   * credit owed, and left to fire when a later write took the credit first (it then finds nothing
   * owed): a timer set and cleared per write cost two timer-list operations and an allocation.
   */
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  private stopped = false

  /**
   * Frames go to `push` (which must not count them against the owner's own send window: credit
   * frames are outside it); `bytesDecoded` is the decoder's cumulative count.
   */
  constructor(push: (frame: Uint8Array) => void, bytesDecoded: () => number) {
    this.push = push
    this.bytesDecoded = bytesDecoded
  }

  /** `n` payload bytes of the stream whose record is `credit` were consumed: owed to the sender. */
  grant(credit: OwedCredit, n: number): void {
    if (this.stopped || n <= 0) return
    credit.owed += n
    if (credit.owed >= CREDIT_UPDATE_BYTES) {
      const owed = credit.owed
      credit.owed = 0
      this.push(encodeWindowUpdate(credit.id, owed))
      return
    }
    if (!credit.listed) {
      credit.listed = true
      this.owedList.push(credit)
    }
    this.arm()
  }

  /** Drops what is owed to a stream that is over (it leaves the list at the next send). */
  forget(credit: OwedCredit): void {
    credit.owed = 0
  }

  /** A credit frame (WindowUpdate or ConnectionAck) of `bytes`, header included, was decoded: it is not acknowledged. */
  creditFrameDecoded(bytes: number): void {
    this.uncounted += bytes
  }

  /** A chunk was decoded: acknowledge at once past 64 KiB, else with the next write or the timer. */
  chunkDecoded(): void {
    if (this.stopped) return
    const unacked = this.bytesDecoded() - this.uncounted - this.acked
    if (unacked >= CREDIT_UPDATE_BYTES) this.ack()
    else if (unacked > 0) this.arm()
  }

  /**
   * The owner is sending frames this tick: whatever is owed goes with them now (no timer, no write
   * of its own), and so does an acknowledgement of every byte decoded so far.
   */
  piggyback(): void {
    if (this.stopped) return
    this.due = false
    this.sendOwed()
  }

  /** The connection is gone: nothing more is sent and the timer is cleared. */
  stop(): void {
    this.stopped = true
    this.due = false
    clearTimeout(this.timer)
    this.timer = undefined
    this.owedList = []
  }

  private ack(): void {
    this.acked = this.bytesDecoded() - this.uncounted
    this.push(encodeConnectionAck(this.acked))
  }

  private arm(): void {
    if (this.due || this.stopped) return
    this.due = true
    if (this.checkQueued) return
    this.checkQueued = true
    onNextTick(this.endOfTick)
  }

  /** The tick that made credit owed is over: what no write took leaves when the timer fires. */
  private readonly endOfTick = (): void => {
    this.checkQueued = false
    if (!this.due || this.stopped) return
    if (this.timer === undefined) this.timer = setTimeout(this.onTimer, CREDIT_UPDATE_MS)
    else this.timer.refresh()
  }

  private readonly onTimer = (): void => {
    if (!this.due || this.stopped) return
    this.due = false
    this.sendOwed()
  }

  private sendOwed(): void {
    const list = this.owedList
    if (list.length > 0) {
      this.owedList = []
      for (let i = 0; i < list.length; i++) {
        const credit = list[i]!
        credit.listed = false
        if (credit.owed > 0) {
          this.push(encodeWindowUpdate(credit.id, credit.owed))
          credit.owed = 0
        }
      }
    }
    if (this.bytesDecoded() - this.uncounted > this.acked) this.ack()
  }
}
