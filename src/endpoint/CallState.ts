/**
 * The router's state for one call, as a socket-free state machine. It takes the transports'
 * events (the request plane's ack; the response plane's items, end and error) and the consumer's
 * (cancel, finish), and decides how the call ends, when `stop` and `kill` go to the worker, and
 * when the pending stream is released.
 *
 * Phases: `pending` (request sent, no ack yet), `acked`, `streaming` (items arrived), then one of
 * `done`, `failed` or `cancelled`. A complete stream implies the ack, so the call can be `done`
 * before its ack; an ack failure after that is ignored.
 *
 * It does not open streams, send requests or build Effects: the router feeds it events and turns
 * its `CallOutcome` into the result of its one `Effect.callback`. Timers are injected, so every
 * transition can be driven without a socket or a clock. No work is done per item beyond handing
 * the batch to the consumer.
 */

/** Where a call stands. */
export type CallPhase = "pending" | "acked" | "streaming" | "done" | "failed" | "cancelled"

/** How a call ended, for the router to turn into its Effect's result. */
export type CallOutcome<E> =
  | { readonly _tag: "Done" }
  | { readonly _tag: "Failed"; readonly error: E }
  | { readonly _tag: "Defect"; readonly defect: unknown }

/** The part of the response plane's pending stream that a call drives. */
export interface CallStream {
  readonly control: (message: "stop" | "kill") => void
  readonly isDone: () => boolean
  readonly close: () => void
}

/** The timer functions a call uses for the kill grace period (the globals by default). */
export interface CallTimers {
  readonly setTimeout: (f: () => void, ms: number) => unknown
  readonly clearTimeout: (handle: unknown) => void
}

/** Observers for metrics; each is called at most once per call. */
export interface CallHooks<E> {
  /** The request plane answered: undefined at the ack, or its failure (even if it no longer decides the call). */
  readonly onAck?: ((error: E | undefined) => void) | undefined
  /** The response plane failed the call (only when that failure is how the call ends). */
  readonly onStreamError?: ((error: E) => void) | undefined
  /** The pending stream was closed and the call is over for the transport. */
  readonly onRelease?: (() => void) | undefined
}

/** Options of a `CallState`. */
export interface CallStateOptions<E> {
  /** After `stop`, how long the worker has before `kill`. */
  readonly graceMs: number
  readonly hooks?: CallHooks<E> | undefined
  readonly timers?: CallTimers | undefined
}

const DONE: CallOutcome<never> = { _tag: "Done" }

const globalTimers: CallTimers = {
  setTimeout: (f, ms) => setTimeout(f, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>)
}

/** The state machine of one router call; see the module comment. */
export class CallState<A, E> {
  private current: CallPhase = "pending"
  private outcome: CallOutcome<E> | undefined
  private resume: ((outcome: CallOutcome<E>) => void) | undefined
  private stream: CallStream | undefined
  private cancelSend: (() => void) | undefined
  private killTimer: unknown
  private ackSeen = false
  private ackOk = false
  private released = false
  private readonly consumer: (items: ReadonlyArray<A>) => void
  private readonly graceMs: number
  private readonly hooks: CallHooks<E> | undefined
  private readonly timers: CallTimers

  /** A call that hands each batch of items to `consumer`. */
  constructor(consumer: (items: ReadonlyArray<A>) => void, options: CallStateOptions<E>) {
    this.consumer = consumer
    this.graceMs = options.graceMs
    this.hooks = options.hooks
    this.timers = options.timers ?? globalTimers
  }

  /** The current phase. */
  get phase(): CallPhase {
    return this.current
  }

  /** True once the request plane acked the request. */
  get acked(): boolean {
    return this.ackOk
  }

  /** True once the pending stream was released. */
  get isReleased(): boolean {
    return this.released
  }

  // ---- wiring ---------------------------------------------------------------------------------

  /** The response plane opened the call's pending stream. */
  opened(stream: CallStream): void {
    this.stream = stream
  }

  /** The request went out; `cancel` stops waiting for its ack. */
  sent(cancel: () => void): void {
    this.cancelSend = cancel
  }

  /** Registers the call's waiter; it is called once, at once if the call has already ended. */
  wait(resume: (outcome: CallOutcome<E>) => void): void {
    if (this.outcome !== undefined && this.current !== "cancelled") resume(this.outcome)
    else this.resume = resume
  }

  // ---- transport events -----------------------------------------------------------------------

  /** The request plane's answer: undefined at the ack, or why the request was not accepted. */
  readonly ack = (error?: E): void => {
    if (this.ackSeen) return
    this.ackSeen = true
    this.hooks?.onAck?.(error)
    if (error !== undefined) return this.settle({ _tag: "Failed", error })
    this.ackOk = true
    if (this.current === "pending") this.current = "acked"
  }

  /** A batch of items, in order. A consumer that throws fails the call as a defect and kills the worker. */
  readonly items = (items: ReadonlyArray<unknown>): void => {
    const phase = this.current
    if (phase === "done" || phase === "failed" || phase === "cancelled") return
    this.current = "streaming"
    try {
      this.consumer(items as ReadonlyArray<A>)
    } catch (defect) {
      this.settle({ _tag: "Defect", defect })
      this.stream?.control("kill")
    }
  }

  /** The stream is complete. */
  readonly end = (): void => {
    this.settle(DONE)
  }

  /** The stream failed. */
  readonly error = (error: E): void => {
    if (this.outcome !== undefined) return
    this.hooks?.onStreamError?.(error)
    this.settle({ _tag: "Failed", error })
  }

  // ---- consumer events ------------------------------------------------------------------------

  /** The consumer went away: stop waiting for the ack, send `stop`, and `kill` after the grace period. */
  cancel(): void {
    if (this.current === "done" || this.current === "failed" || this.current === "cancelled") return
    this.current = "cancelled"
    this.resume = undefined
    this.cancelSend?.()
    const stream = this.stream
    if (stream === undefined) return this.release()
    stream.control("stop")
    this.killTimer = this.timers.setTimeout(() => {
      this.killTimer = undefined
      if (!stream.isDone()) stream.control("kill")
      this.release()
    }, this.graceMs)
  }

  /** The call's Effect exited: release now, unless a cancel is waiting for the worker to stop. */
  finish(): void {
    if (this.current !== "cancelled") this.release()
  }

  /** Closes the pending stream and reports the release, once. */
  release(): void {
    if (this.released) return
    this.released = true
    if (this.killTimer !== undefined) {
      this.timers.clearTimeout(this.killTimer)
      this.killTimer = undefined
    }
    this.stream?.close()
    this.hooks?.onRelease?.()
  }

  private settle(outcome: CallOutcome<E>): void {
    if (this.outcome !== undefined) return
    this.outcome = outcome
    if (this.current === "cancelled") return this.release()
    this.current = outcome._tag === "Done" ? "done" : "failed"
    const resume = this.resume
    this.resume = undefined
    resume?.(outcome)
  }
}
