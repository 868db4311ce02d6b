/**
 * The transport contract: the behaviours every transport owes, whatever carries the requests and
 * the response streams, written once against the public API (`Endpoint.serve`/`serveEmit`,
 * `client`, `generate`, `call`, `Discovery`, the typed errors) and run against each stack.
 *
 * `transportContract(stack)` registers one `describe` block with six behaviours:
 * 1. order and completeness: 1,000 concurrent `generate` streams of 5-15 items each, half from an
 *    emit handler and half from a Stream handler; every item arrives, in order, none twice;
 * 2. a handler error arrives typed: `HandlerError` phase "stream" with the handler's message after
 *    the items sent before it, and phase "prologue" when `requestSchema` rejects the request;
 * 3. consumer cancellation reaches the handler: interrupting the fiber that consumes `generate`,
 *    or a consumer that stops early (`Stream.take`), interrupts the worker's handler fiber (seen
 *    by `Effect.onInterrupt`) within 100 ms;
 * 4. a peer that dies mid-stream fails the router's call with a tagged failure the stack names
 *    (not a hang, a defect or a success) within 1 s of the death; what "dies" means is the
 *    stack's `peerDeath` hook (a SIGKILLed child process on the wire stacks);
 * 5. (a) an unknown endpoint fails with `EndpointNotFound`; (b) so does (by default) an instance record
 *    that points at a request server which no longer serves the endpoint (`staleInstance`);
 * 6. after the stack's scope closes, socket handles, socket FDs and timers are back at the
 *    baseline taken before it was built (total FDs within a tolerance of 2, see `handlesSettle`).
 *
 * Stacks and their hooks live in `test/support/stacks.ts`. A new transport joins with one line in
 * a new `test/contract/<name>.test.ts`, once `registry/layerConfig.ts` builds it from `DYN_*`:
 *
 *     transportContract(configStack({ DYN_REQUEST_PLANE: "nats", DYN_RESPONSE_PLANE: "tcp" }))
 *
 * (a stack that needs other hooks passes them as `configStack`'s second argument, or is a
 * `ContractStack` of its own). Every test bounds its waits, so a broken transport fails the test
 * with what it saw instead of hanging the suite.
 */
import { readdirSync, readlinkSync } from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Option, Result, Schema, Scope, Stream } from "effect"
import { Discovery } from "../../src/discovery/index.ts"
import * as Endpoint from "../../src/Endpoint.ts"
import type { ContractStack, StackServices } from "../support/stacks.ts"
import { slowCounter } from "../support/stacks.ts"

// ---- outcomes ---------------------------------------------------------------------------------

/** How a call ended, with the time it ended (performance.now()). */
export type Outcome<A> =
  | { readonly kind: "success"; readonly value: A; readonly at: number }
  | { readonly kind: "fail"; readonly error: { readonly _tag: string; readonly message: string }; readonly at: number }
  | { readonly kind: "die"; readonly defect: unknown; readonly at: number }
  | { readonly kind: "interrupt"; readonly at: number }
  | { readonly kind: "hang"; readonly at: number }

/** Runs `effect`, at most `limitMs`, and says how it ended; never fails. */
export const outcomeOf = <A, E extends { readonly _tag: string; readonly message: string }, R>(
  effect: Effect.Effect<A, E, R>,
  limitMs: number
): Effect.Effect<Outcome<A>, never, R> =>
  Effect.map(Effect.exit(Effect.timeoutOption(effect, limitMs)), (exit): Outcome<A> => {
    const at = performance.now()
    if (Exit.isSuccess(exit)) return Option.isSome(exit.value) ? { kind: "success", value: exit.value.value, at } : { kind: "hang", at }
    const error = Cause.findError(exit.cause)
    if (Result.isSuccess(error)) return { kind: "fail", error: error.success, at }
    if (Cause.hasInterruptsOnly(exit.cause)) return { kind: "interrupt", at }
    return { kind: "die", defect: Cause.squash(exit.cause), at }
  })

/** One line for assertion messages. */
const show = (o: Outcome<unknown>): string =>
  o.kind === "fail" ? `fail ${o.error._tag}: ${o.error.message}` : o.kind === "die" ? `die ${String(o.defect)}` : o.kind

// ---- open handles -----------------------------------------------------------------------------

/** What the process holds open: the handles keeping the loop alive, and its FDs. */
interface Handles {
  /** `TCPSocketWrap` + `TCPServerWrap` in `process.getActiveResourcesInfo()`. */
  readonly sockets: number
  /** `Timeout` in `process.getActiveResourcesInfo()` (ref'ed timers). */
  readonly timers: number
  /** Entries of /proc/self/fd that are sockets. */
  readonly socketFds: number
  /** Entries of /proc/self/fd. */
  readonly fds: number
}

const handles = (): Handles => {
  const resources = process.getActiveResourcesInfo()
  const links = readdirSync("/proc/self/fd").map((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`)
    } catch {
      return "" // the directory's own fd, closed once readdir returned
    }
  }).filter((l) => l !== "")
  return {
    sockets: resources.filter((r) => r === "TCPSocketWrap" || r === "TCPServerWrap").length,
    timers: resources.filter((r) => r === "Timeout").length,
    socketFds: links.filter((l) => l.startsWith("socket:")).length,
    fds: links.length
  }
}

/**
 * Total FDs may exceed the baseline by this much: the runtime opens a few descriptors lazily,
 * once per process and never per connection (libuv's threadpool wakeup eventfd on the first fs
 * or DNS call, an inotify or signal fd), and keeps them. Sockets are held to the baseline exactly
 * (by handle and by FD), and so are ref'ed timers: nothing else in the test process opens or
 * leaves those while the test runs.
 */
const FD_TOLERANCE = 2

/** Real-time sleep outside Effect's clock (its timer is gone once it fires). */
const pause = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))

/**
 * The baseline: waits until the counts hold still for 260 ms (at most 3 s), and returns them.
 * Longer than vitest's own 100 ms throttle timer for task updates, armed as a test starts, so
 * the baseline is taken once it fired: a leaked timer of the stack cannot hide behind it.
 */
const stableHandles = Effect.gen(function*() {
  let last = handles()
  for (let stable = 0, i = 0; stable < 13 && i < 150; i++) {
    yield* pause(20)
    const now = handles()
    stable = JSON.stringify(now) === JSON.stringify(last) ? stable + 1 : 0
    last = now
  }
  return last
})

const atBaseline = (now: Handles, base: Handles) =>
  now.sockets <= base.sockets && now.socketFds <= base.socketFds && now.timers <= base.timers &&
  now.fds <= base.fds + FD_TOLERANCE

/**
 * Settle wait after the scope closed: sockets close and timers clear asynchronously (a FIN to
 * read, a linger or kill-grace timer of 100 ms to fire), so poll for up to 3 s until the counts
 * are back at the baseline, and return what was seen last.
 */
const handlesSettle = (base: Handles) =>
  Effect.gen(function*() {
    const deadline = performance.now() + 3000
    let now = handles()
    while (!atBaseline(now, base) && performance.now() < deadline) {
      yield* pause(10)
      now = handles()
    }
    return now
  })

// ---- the contract -----------------------------------------------------------------------------

type Item = { readonly id: number; readonly i: number }

const range = (n: number) => Array.from({ length: n }, (_, i) => i)

/** Registers the contract's `describe` block for `stack`. */
export const transportContract = (stack: ContractStack) =>
  describe(`transport contract: ${stack.name}`, () => {
    /** Runs `effect` in its own scope on a fresh stack, closing the endpoints before the stack. */
    const onStack = <A, E>(effect: Effect.Effect<A, E, Scope.Scope | StackServices>) =>
      effect.pipe(Effect.scoped, Effect.provide(stack.layer))

    it.live("1. order and completeness: 1,000 concurrent streams, every item arrives once and in order", () =>
      onStack(Effect.gen(function*() {
        const STREAMS = 1000
        const itemsOf = (id: number) => 5 + (id % 11)
        yield* Endpoint.serveEmit("contract.order.emit", (req: { id: number }, _ctx, emit: Endpoint.Emit<Item>) =>
          Effect.gen(function*() {
            for (let i = 0; i < itemsOf(req.id); i++) {
              emit({ id: req.id, i })
              if (i % 3 === 2) yield* Effect.yieldNow
            }
          }))
        yield* Endpoint.serve("contract.order.stream", (req: { id: number }) =>
          Stream.range(0, itemsOf(req.id) - 1).pipe(Stream.rechunk(2), Stream.map((i): Item => ({ id: req.id, i }))))
        const emitClient = yield* Endpoint.client<{ id: number }, Item>("contract.order.emit")
        const streamClient = yield* Endpoint.client<{ id: number }, Item>("contract.order.stream")
        const results = yield* Effect.forEach(
          range(STREAMS),
          (id) => outcomeOf(Stream.runCollect((id % 2 === 0 ? emitClient : streamClient).generate({ id })), 20_000),
          { concurrency: "unbounded" }
        )
        const wrong: Array<string> = []
        let items = 0
        results.forEach((o, id) => {
          if (o.kind !== "success") return void wrong.push(`stream ${id}: ${show(o)}`)
          items += o.value.length
          const expected = range(itemsOf(id)).map((i) => ({ id, i }))
          if (JSON.stringify(o.value) !== JSON.stringify(expected)) {
            wrong.push(`stream ${id}: got ${JSON.stringify(o.value.map((x) => `${x.id}:${x.i}`))}`)
          }
        })
        expect(wrong.length, `${wrong.length} of ${STREAMS} streams wrong, the first ones:\n${wrong.slice(0, 5).join("\n")}`).toBe(0)
        expect(items).toBe(range(STREAMS).reduce((n, id) => n + itemsOf(id), 0))
      })), 30_000)

    it.live("2. a handler error arrives typed: HandlerError phase stream after the items before it; phase prologue on a rejected request", () =>
      onStack(Effect.gen(function*() {
        const message = `model exploded ${crypto.randomUUID()}`
        yield* Endpoint.serveEmit("contract.error.stream", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) =>
          Effect.gen(function*() {
            emit(1)
            emit(2)
            yield* Effect.yieldNow
            return yield* Effect.fail(new Error(message))
          }))
        yield* Endpoint.serve("contract.error.prologue", (req: { n: number }) => Stream.make(req.n), {
          requestSchema: Schema.Struct({ n: Schema.Number })
        })
        const failing = yield* Endpoint.client<unknown, number>("contract.error.stream")
        const seen: Array<number> = []
        const stream = yield* outcomeOf(failing.generate({}).pipe(Stream.runForEach((n) => Effect.sync(() => seen.push(n)))), 5000)
        expect(stream.kind, show(stream)).toBe("fail")
        expect(seen).toEqual([1, 2])
        if (stream.kind === "fail") {
          expect(stream.error).toMatchObject({ _tag: "HandlerError", phase: "stream", detail: message, endpoint: "contract.error.stream" })
        }
        // The lean form sees the same.
        const lean = yield* outcomeOf(failing.call({}, () => {}), 5000)
        expect(lean.kind === "fail" && lean.error, show(lean)).toMatchObject({ _tag: "HandlerError", phase: "stream", detail: message })

        const typed = yield* Endpoint.client<unknown, number>("contract.error.prologue")
        const accepted = yield* outcomeOf(Stream.runCollect(typed.generate({ n: 7 })), 5000)
        expect(accepted.kind === "success" && accepted.value, show(accepted)).toEqual([7])
        const rejected = yield* outcomeOf(Stream.runCollect(typed.generate({ n: "seven" })), 5000)
        expect(rejected.kind, show(rejected)).toBe("fail")
        if (rejected.kind === "fail") {
          expect(rejected.error).toMatchObject({ _tag: "HandlerError", phase: "prologue", endpoint: "contract.error.prologue" })
          expect((rejected.error as { detail?: string }).detail).toContain("invalid request")
        }
      })))

    it.live("3. consumer cancellation (fiber interrupted, or Stream.take done) interrupts the worker's handler within 100 ms", () =>
      onStack(Effect.gen(function*() {
        let interruptedAt: Deferred.Deferred<number> | undefined
        yield* Endpoint.serveEmit("contract.cancel.gen", (req: unknown, ctx, emit: Endpoint.Emit<number>) => {
          const mine = interruptedAt!
          return slowCounter(5)(req, ctx, emit).pipe(Effect.onInterrupt(() => Deferred.succeed(mine, performance.now())))
        })
        const client = yield* Endpoint.client<unknown, number>("contract.cancel.gen")
        for (const how of ["interrupt", "take"] as const) {
          const interrupted = yield* Deferred.make<number>()
          interruptedAt = interrupted
          const received: Array<number> = []
          let thirdAt = 0
          const flowing = yield* Deferred.make<void>()
          const consumer = yield* client.generate({}).pipe(
            how === "take" ? Stream.take(3) : (s) => s,
            Stream.runForEach((n) =>
              Effect.sync(() => {
                received.push(n)
                if (received.length === 3) {
                  thirdAt = performance.now()
                  Deferred.doneUnsafe(flowing, Effect.void)
                }
              })
            ),
            Effect.forkChild
          )
          yield* Deferred.await(flowing).pipe(Effect.timeout(5000))
          // "interrupt": the clock starts as the consumer's fiber is interrupted; "take": the
          // consumer is done with the stream at its third item, so the clock starts there.
          let cancelledAt = thirdAt
          if (how === "interrupt") {
            expect(Deferred.isDoneUnsafe(interrupted)).toBe(false) // the handler runs until the consumer stops
            cancelledAt = performance.now()
            yield* Fiber.interrupt(consumer)
          } else {
            yield* Fiber.join(consumer)
          }
          const at = yield* Deferred.await(interrupted).pipe(Effect.timeout(1000))
          expect(at - cancelledAt, how).toBeLessThan(100)
          expect(received, how).toEqual(range(how === "take" ? 3 : received.length))
        }
      })))

    it.live(`4. a peer that dies mid-stream (${stack.peerDeath.description}) fails the call typed within 1 s`, () =>
      onStack(Effect.gen(function*() {
        const peer = yield* stack.peerDeath.start("contract.death.gen", 20)
        const received: Array<number> = []
        const flowing = yield* Deferred.make<void>()
        const call = yield* outcomeOf(
          peer.client.generate({}).pipe(Stream.runForEach((n) =>
            Effect.sync(() => {
              received.push(n)
              if (received.length === 5) Deferred.doneUnsafe(flowing, Effect.void)
            })
          )),
          15_000
        ).pipe(Effect.forkChild)
        yield* Deferred.await(flowing).pipe(Effect.timeout(10_000))
        const killedAt = performance.now()
        yield* peer.kill
        const o = yield* Fiber.join(call)
        expect(o.kind, `${peer.label}: ${show(o)}`).toBe("fail")
        if (o.kind === "fail") expect(stack.peerDeath.expectedErrors, `${peer.label}: ${show(o)}`).toContain(o.error._tag)
        expect(o.at - killedAt, `${peer.label}: ${show(o)}`).toBeLessThan(1000)
        expect(received.length).toBeGreaterThanOrEqual(5)
        expect(received).toEqual(range(received.length))
      })), 30_000)

    it.live("5a. a call to an endpoint nobody serves fails with EndpointNotFound", () =>
      onStack(Effect.gen(function*() {
        const client = yield* Endpoint.client<unknown, number>("contract.nobody.gen")
        for (const o of [
          yield* outcomeOf(Stream.runCollect(client.generate({})), 5000),
          yield* outcomeOf(client.call({}, () => {}), 5000)
        ]) {
          expect(o.kind === "fail" && o.error._tag, show(o)).toBe("EndpointNotFound")
          if (o.kind === "fail") expect(o.error.message).toContain("contract.nobody.gen")
        }
      })))

    if (stack.staleInstance !== false) {
      const expected = stack.staleInstanceErrors ?? ["EndpointNotFound"]
      it.live(`5b. an instance record whose worker does not serve the endpoint fails typed (${expected.join(" | ")})`, () =>
        onStack(Effect.gen(function*() {
          const worker = yield* Scope.fork(yield* Scope.Scope, "sequential")
          const served = yield* Endpoint.serveEmit("contract.stale.gen", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) =>
            Effect.sync(() => emit(1))).pipe(Scope.provide(worker))
          const live = yield* Endpoint.client<unknown, number>("contract.stale.gen")
          const ok = yield* outcomeOf(Stream.runCollect(live.generate({})), 5000)
          expect(ok.kind === "success" && ok.value, show(ok)).toEqual([1])
          // The worker stops serving; its record comes back, pointing at the same request server.
          yield* Scope.close(worker, Exit.void)
          yield* (yield* Discovery).register(served.instance)
          const client = yield* Endpoint.client<unknown, number>("contract.stale.gen")
          expect(client.instances().map((i) => i.instance_id)).toEqual([served.instance.instance_id])
          const o = yield* outcomeOf(Stream.runCollect(client.generate({})), 5000)
          expect(o.kind, show(o)).toBe("fail")
          if (o.kind === "fail") expect(expected, show(o)).toContain(o.error._tag)
        })))
    }

    it.live("6. open sockets, socket FDs and timers are back at the baseline once the stack's scope closes", () =>
      Effect.gen(function*() {
        const before = yield* stableHandles
        let during: Handles | undefined
        yield* onStack(Effect.gen(function*() {
          yield* Endpoint.serve("contract.handles.gen", (n: number) => Stream.range(1, n))
          yield* Endpoint.serveEmit("contract.handles.fail", () => Effect.fail(new Error("boom")))
          yield* Endpoint.serveEmit("contract.handles.slow", slowCounter(5))
          const gen = yield* Endpoint.client<number, number>("contract.handles.gen")
          const fail = yield* Endpoint.client<unknown, number>("contract.handles.fail")
          const slow = yield* Endpoint.client<unknown, number>("contract.handles.slow")
          const nobody = yield* Endpoint.client<unknown, number>("contract.handles.nobody")
          yield* Effect.forEach(range(20), (n) => Stream.runDrain(gen.generate(n + 1)), { concurrency: 5 })
          yield* Effect.exit(Stream.runDrain(fail.generate({})))
          yield* Effect.exit(Stream.runDrain(nobody.generate({})))
          // A consumer that stops early (stop, then kill after the grace), and a stream still
          // running when the scope closes.
          yield* Stream.runDrain(slow.generate({}).pipe(Stream.take(3)))
          const running = yield* Deferred.make<void>()
          yield* Effect.forkScoped(slow.call({}, () => Deferred.doneUnsafe(running, Effect.void)))
          yield* Deferred.await(running).pipe(Effect.timeout(5000))
          during = handles()
        }))
        const after = yield* handlesSettle(before)
        // The counts saw the stack: its sockets (wire) or its timers (memory) while it ran.
        expect(during!.sockets + during!.timers).toBeGreaterThan(before.sockets + before.timers)
        const leaked = {
          sockets: Math.max(0, after.sockets - before.sockets),
          socketFds: Math.max(0, after.socketFds - before.socketFds),
          timers: Math.max(0, after.timers - before.timers),
          fdsBeyondTolerance: Math.max(0, after.fds - before.fds - FD_TOLERANCE)
        }
        expect(leaked, JSON.stringify({ before, during, after })).toEqual({ sockets: 0, socketFds: 0, timers: 0, fdsBeyondTolerance: 0 })
      }))
  })
