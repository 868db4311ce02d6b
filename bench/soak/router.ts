// The soak tool's router process. argv[2] is a JSON `RouterJob`: the DYN_* record and the
// workload. It builds its transports and file discovery from the record, waits for the worker's
// instance, makes one warm-up call, prints "ready" on stdout, and on the parent's "go" message
// (IPC) runs the workload: `requests` calls keeping `concurrency` in flight (the scale run: all
// at once), each cancelled with probability `cancelRate` either at a random moment in its first
// 3 ms (usually before the ack) or after a random number of items. It sends a progress message
// every second and the ledger's summary at the end, then waits to be killed.
import { Cause, Effect, Exit } from "effect"
import type { Fiber } from "effect"
import * as Endpoint from "../../src/Endpoint.ts"
import * as Logging from "../../src/observability/Logging.ts"
import { routerLayer } from "../crossProcess.ts"
import { Ledger, prng } from "./ledger.ts"
import type { CallOutcome, LedgerSummary } from "./ledger.ts"
import { SOAK_ENDPOINT } from "./worker.ts"
import type { SoakItem, SoakRequest } from "./worker.ts"

/** What the parent asks the router to do. */
export interface RouterJob {
  readonly env: Record<string, string>
  readonly requests: number
  readonly concurrency: number
  readonly cancelRate: number
  readonly items: number
  readonly itemDelayMs: number
  readonly seed: number
  /** At most this many calls are started per event-loop turn (the first `concurrency` ones; default all at once). */
  readonly burst?: number | undefined
}

/** Messages from the router to the parent. */
export type RouterMessage =
  | { readonly type: "progress"; readonly progress: Progress }
  | { readonly type: "result"; readonly summary: LedgerSummary; readonly elapsedMs: number }

/** The counts a progress line shows (cheap to take every second). */
export interface Progress {
  readonly finished: number
  readonly completed: number
  readonly cancelled: number
  readonly failed: number
  readonly lost: number
  readonly duplicated: number
  readonly inFlight: number
  readonly elapsedMs: number
}

/** A call's failure as a type (`_tag(reason)`) and its message. */
const outcomeOf = (exit: Exit.Exit<void, unknown>): CallOutcome => {
  if (Exit.isSuccess(exit)) return { _tag: "complete" }
  if (Cause.hasInterruptsOnly(exit.cause)) return { _tag: "interrupted" }
  for (const reason of exit.cause.reasons) {
    if (reason._tag === "Fail") {
      const e = reason.error as { _tag?: string; reason?: string; message?: string }
      const type = `${e._tag ?? "Error"}${e.reason === undefined ? "" : `(${e.reason})`}`
      return { _tag: "failed", type, message: e.message ?? String(e) }
    }
    if (reason._tag === "Die") return { _tag: "failed", type: "Defect", message: String(reason.defect) }
  }
  return { _tag: "failed", type: "Unknown", message: Cause.pretty(exit.cause).slice(0, 300) }
}

/** Runs the workload on `client`, reporting progress; resolves with the elapsed ms. */
const drive = (
  client: Endpoint.EndpointClient<SoakRequest, SoakItem>,
  job: RouterJob,
  ledger: Ledger,
  onProgress: (inFlight: number, elapsedMs: number) => void
) =>
  new Promise<number>((resolve) => {
    const random = prng(job.seed)
    const t0 = performance.now()
    // `next` is the id of the next call; `launched` and `inFlight` count calls decided (started or queued).
    let next = 0
    let launched = 0
    let inFlight = 0
    const progress = setInterval(() => onProgress(inFlight, performance.now() - t0), 1000)
    const launch = () => {
      const r = next++
      const n = job.items
      const track = ledger.start(r, n)
      let fiber: Fiber.Fiber<void, unknown> | undefined
      let timer: ReturnType<typeof setTimeout> | undefined
      const cancel = () => {
        if (track.cancelRequested || fiber === undefined) return
        track.cancelRequested = true
        fiber.interruptUnsafe()
      }
      let onItems = (items: ReadonlyArray<SoakItem>) => track.onItems(items)
      if (job.cancelRate > 0 && random() < job.cancelRate) {
        if (n < 2 || random() < 0.5) {
          // Early: at a random moment of the first 3 ms, usually before the ack or the first item.
          timer = setTimeout(cancel, Math.floor(random() * 3))
        } else {
          // After some items: 1 .. n-1 of them.
          const after = 1 + Math.floor(random() * (n - 1))
          onItems = (items) => {
            track.onItems(items)
            if (track.got >= after) queueMicrotask(cancel)
          }
        }
      }
      fiber = Effect.runFork(client.call({ r, n, d: job.itemDelayMs }, onItems))
      fiber.addObserver((exit) => {
        if (timer !== undefined) clearTimeout(timer)
        inFlight--
        ledger.finish(track, outcomeOf(exit))
        if (launched < job.requests) {
          launched++
          inFlight++
          queueMicrotask(launch)
        } else if (inFlight === 0) {
          clearInterval(progress)
          resolve(performance.now() - t0)
        }
      })
    }
    const first = Math.min(job.concurrency, job.requests)
    if (first === 0) {
      clearInterval(progress)
      return resolve(0)
    }
    launched = first
    inFlight = first
    // The first calls go out in bursts of `burst`, one burst per event-loop turn, so that the
    // requests already started are written while the next ones are built.
    const burst = Math.max(1, job.burst ?? first)
    let started = 0
    const startBurst = () => {
      const until = Math.min(first, started + burst)
      for (; started < until; started++) launch()
      if (started < first) setImmediate(startBurst)
    }
    startBurst()
  })

const send = (message: RouterMessage) => process.send?.(message)

const main = () => {
  const job = JSON.parse(process.argv[2]!) as RouterJob
  const program = Effect.gen(function*() {
    const client = yield* Endpoint.client<SoakRequest, SoakItem>(SOAK_ENDPOINT)
    const deadline = Date.now() + 30_000
    while (client.instances().length === 0) {
      if (Date.now() > deadline) return yield* Effect.die(new Error("no worker instance in discovery after 30 s"))
      yield* Effect.sleep(20)
    }
    // One call end to end before the start is measured: sessions, pools and listeners are up.
    yield* client.call({ r: -1, n: 3, d: 0 }, () => {})
    const go = new Promise<void>((resolve) => process.once("message", () => resolve()))
    process.stdout.write("ready\n")
    yield* Effect.promise(() => go)
    const ledger = new Ledger()
    const elapsedMs = yield* Effect.promise(() =>
      drive(client, job, ledger, (inFlight, elapsedMs) =>
        send({
          type: "progress",
          progress: {
            finished: ledger.finished,
            completed: ledger.completed,
            cancelled: ledger.cancelledBeforeFirst + ledger.cancelledAfterItems,
            failed: ledger.failureCount(),
            lost: ledger.lostItems,
            duplicated: ledger.duplicatedItems,
            inFlight,
            elapsedMs
          }
        }))
    )
    send({ type: "result", summary: ledger.summary(), elapsedMs })
    return yield* Effect.never
  })
  Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(routerLayer(job.env)), Effect.provide(Logging.layer({ log: job.env["DYN_LOG"] ?? "warn", format: "logfmt" })))).catch((e: unknown) => {
    console.error(`level=ERROR message="soak router failed: ${String(e).replace(/"/g, "'")}"`)
    process.exit(1)
  })
}

if (import.meta.url === `file://${process.argv[1]}`) main()
