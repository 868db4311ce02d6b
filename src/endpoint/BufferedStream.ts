/**
 * `generate`: a Stream over the router's lean `call`, with flow control. Items wait in a buffer
 * until the consumer pulls; past `maxBuffered` the response plane's stream is paused (no more
 * reads or credit) until the consumer has taken them. The call runs in the Stream's scope: a
 * consumer that stops early interrupts it (stop, then kill), and a paused stream is resumed so
 * the worker's answer to stop is read at once.
 *
 * It does not pick instances, send requests or count metrics: the call it wraps does. Per batch
 * it does one push loop and at most one wake-up; there is no fiber or Effect per item.
 */
import { Cause, Channel, Effect, Exit, Scope, Stream } from "effect"
import type { Array as Arr } from "effect"
import type { PendingStream } from "../ResponsePlane.ts"

/**
 * A call that hands over each batch, and its pending stream once opened (for pause/resume);
 * `items`, when given, is the streamed request's item Stream.
 */
export type FlowCall<Req, Res, O, E> = (
  request: Req,
  onItems: (items: ReadonlyArray<Res>) => void,
  options: O | undefined,
  onOpen: (pending: PendingStream) => void,
  items?: Stream.Stream<unknown, unknown> | undefined
) => Effect.Effect<void, E>

/**
 * `generate` over `flow`, holding at most about `maxBuffered` items for a slow consumer; with
 * `requestItems`, the call sends a streamed request (`generateDuplex`).
 */
export const makeGenerate = <Req, Res, O, E>(flow: FlowCall<Req, Res, O, E>, maxBuffered: number) =>
(request: Req, options?: O, requestItems?: Stream.Stream<unknown, unknown>): Stream.Stream<Res, E> =>
  Stream.fromChannel(Channel.fromTransform((_upstream, scope) =>
    Effect.gen(function*() {
      let buffer: Array<Res> = []
      let exit: Exit.Exit<void, E> | undefined
      let waiting: (() => void) | undefined
      let pending: PendingStream | undefined
      let paused = false
      let cancelled = false
      // The consumer runs in a microtask, never inside the transport's read loop.
      const notify = () => {
        const w = waiting
        if (w === undefined) return
        waiting = undefined
        queueMicrotask(w)
      }
      const unpause = () => {
        if (!paused) return
        paused = false
        pending?.resume?.()
      }
      yield* flow(request, (items) => {
        if (cancelled) return
        for (let i = 0; i < items.length; i++) buffer.push(items[i]!)
        if (!paused && buffer.length >= maxBuffered && pending?.pause !== undefined) {
          paused = true
          pending.pause()
        }
        notify()
      }, options, (p) => {
        pending = p
      }, requestItems).pipe(
        Effect.exit,
        Effect.flatMap((e) =>
          Effect.sync(() => {
            exit = e
            notify()
          })
        ),
        // Started now, not on the scheduler's next turn (a setImmediate away): the request leaves
        // in this tick's write, as `call`'s does, and no async context is captured for the start.
        Effect.forkIn(scope, { startImmediately: true })
      )
      // The consumer went away (runs before the call is interrupted): a paused stream is
      // resumed, so the worker's answer to stop is read at once, and nothing more is kept.
      yield* Scope.addFinalizer(
        scope,
        Effect.sync(() => {
          cancelled = true
          buffer = []
          unpause()
        })
      )
      const pull: Effect.Effect<Arr.NonEmptyReadonlyArray<Res>, E | Cause.Done> = Effect.suspend(() => {
        if (buffer.length > 0) {
          const out = buffer as unknown as Arr.NonEmptyReadonlyArray<Res>
          buffer = []
          unpause()
          return Effect.succeed(out)
        }
        if (exit !== undefined) return Exit.isSuccess(exit) ? Cause.done() : Effect.failCause(exit.cause)
        return Effect.callback<Arr.NonEmptyReadonlyArray<Res>, E | Cause.Done>((resume) => {
          waiting = () => resume(pull)
          return Effect.sync(() => {
            waiting = undefined
          })
        })
      })
      return pull
    })
  ))
