/**
 * The ConnectionAck ledger of one pooled connection (docs/protocol.md, "When a connection
 * dies"), without a socket: which ended streams' last frames the router has not acknowledged yet.
 *
 * What it does: remembers each ended stream's id with the offset (in frame bytes sent) where its
 * last frame ends, forgets it once a ConnectionAck covers that offset, and, when the connection
 * dies, sorts what it still remembers into streams whose last frame never reached the socket
 * (unfinished) and those written but unconfirmed. It remembers at most `cap` streams: beyond, the
 * oldest are forgotten, so a router that never acknowledges cannot make it grow.
 *
 * What it does not do: count bytes (the connection passes offsets), send Resets (the pool does),
 * or allocate per frame: one entry per ended stream.
 */

/** Most ended streams remembered until a ConnectionAck covers them (the oldest are forgotten beyond). */
export const MAX_REMEMBERED = 65_536

/** Ended streams awaiting the router's ConnectionAck; see the module comment. */
export class AckLedger {
  /** Ids and end offsets, oldest first from `head` (entries before it are forgotten). */
  private ids: Array<Uint8Array | undefined> = []
  private at: Array<number> = []
  private head = 0
  private acked = 0
  private readonly cap: number

  constructor(cap: number = MAX_REMEMBERED) {
    this.cap = cap
  }

  /** Streams remembered now. */
  get size(): number {
    return this.at.length - this.head
  }

  /** Stream `id` has ended; its last frame ends at byte `offset` of the connection. */
  ended(id: Uint8Array, offset: number): void {
    this.ids.push(id)
    this.at.push(offset)
    if (this.at.length - this.head > this.cap) this.trim(1)
  }

  /** The router's ConnectionAck: it has read `offset` bytes, so the streams ended within them are whole. */
  acknowledge(offset: number): void {
    if (offset > this.acked) this.acked = offset
    if (this.head < this.at.length) this.trim(0)
  }

  /**
   * Empties the ledger (the connection died): each remembered id goes to `unwritten` when its
   * last frame ends after `written` (the bytes handed to the socket), else to `unconfirmed`.
   */
  takeAll(written: number, unwritten: Array<Uint8Array>, unconfirmed: Array<Uint8Array>): void {
    for (let i = this.head; i < this.at.length; i++) (this.at[i]! > written ? unwritten : unconfirmed).push(this.ids[i]!)
    this.clear()
  }

  /** Forgets everything. */
  clear(): void {
    this.ids = []
    this.at = []
    this.head = 0
  }

  /** Forgets the streams the latest ack covers, and at least `drop` of the oldest. */
  private trim(drop: number): void {
    const at = this.at
    const ids = this.ids
    let head = this.head
    const min = head + drop
    while (head < at.length && (head < min || at[head]! <= this.acked)) ids[head++] = undefined
    if (head === at.length) {
      at.length = 0
      ids.length = 0
      head = 0
    } else if (head >= 1024 && head * 2 >= at.length) {
      at.splice(0, head)
      ids.splice(0, head)
      head = 0
    }
    this.head = head
  }
}
