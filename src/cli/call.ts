/**
 * `transport-registry call ns.comp.ep --data '<json>'`: sends one request through the
 * configured transports and prints each response item as a JSON line on stdout.
 *
 * It never waits forever: an inactivity bound (`--idle-timeout`, no item for that long) and an
 * optional overall bound (`--timeout`) fail the call with a `CallTimeout` naming the endpoint and
 * the wait; failing interrupts the call, which cancels the request on the worker. When no
 * instance appears in discovery it fails with an `EndpointNotFound` that says where it looked.
 */
import { Console, Data, Effect, Stream } from "effect"
import * as Endpoint from "../Endpoint.ts"
import { stringifyWithU64 } from "../Instance.ts"
import { TransportConfig } from "../TransportConfig.ts"
import { EndpointNotFound } from "../TransportError.ts"

/** Options of `call`. */
export interface CallCommandOptions {
  readonly endpoint: string
  readonly data: unknown
  /** How long to wait for an instance to appear in discovery, in ms. */
  readonly waitMs: number
  /** Overall bound on the call (instance wait included), in ms; 0 for none. */
  readonly timeoutMs: number
  /** Fail when no item arrives for this long (from the request on), in ms; 0 for none. */
  readonly idleTimeoutMs: number
}

/** A call gave up waiting: no item for `ms` (idle), or not complete within `ms` (overall). */
export class CallTimeout extends Data.TaggedError("CallTimeout")<{
  readonly endpoint: string
  readonly kind: "idle" | "overall"
  readonly ms: number
  /** Items received before giving up. */
  readonly items: number
}> {
  override get message(): string {
    const got = `${this.items} item${this.items === 1 ? "" : "s"} received`
    return this.kind === "idle"
      ? `call ${this.endpoint}: no response item for ${this.ms} ms (--idle-timeout), ${got}; the worker may be stuck, stopped or overloaded`
      : `call ${this.endpoint}: not complete within ${this.ms} ms (--timeout), ${got}`
  }
}

/** Fails with `onIdle` once `lastItemAt()` is `idleMs` old; never succeeds. */
const idleWatchdog = <E>(idleMs: number, lastItemAt: () => number, onIdle: () => E): Effect.Effect<never, E> => {
  const loop: Effect.Effect<never, E> = Effect.suspend(() => {
    const idle = Date.now() - lastItemAt()
    return idle >= idleMs ? Effect.fail(onIdle()) : Effect.flatMap(Effect.sleep(idleMs - idle), () => loop)
  })
  return loop
}

/** Calls the endpoint once and prints the items. */
export const call = (options: CallCommandOptions) =>
  Effect.suspend(() => {
    let items = 0
    let lastItemAt = Date.now()
    const run = Effect.gen(function*() {
      const config = yield* TransportConfig
      const client = yield* Endpoint.client<unknown, unknown>(options.endpoint)
      const deadline = Date.now() + options.waitMs
      while (client.instances().length === 0 && Date.now() < deadline) yield* Effect.sleep(50)
      if (client.instances().length === 0) {
        const where = config.discoveryBackend === "file"
          ? `file discovery at ${config.discoveryPath}`
          : config.discoveryBackend === "mem"
          ? "mem discovery (it only sees workers in this same process; use DYN_DISCOVERY_BACKEND=file)"
          : `${config.discoveryBackend} discovery`
        return yield* new EndpointNotFound({
          endpoint: options.endpoint,
          detail: `no instance appeared within ${options.waitMs} ms (--wait-ms) in ${where}; ` +
            `is a worker serving it with the same DYN_DISCOVERY_BACKEND and DYN_DISCOVERY_PATH?`
        })
      }
      lastItemAt = Date.now()
      const consume = client.generate(options.data).pipe(
        Stream.runForEach((item) => {
          items++
          lastItemAt = Date.now()
          return Console.log(stringifyWithU64(item))
        })
      )
      if (options.idleTimeoutMs <= 0) return yield* consume
      return yield* Effect.raceFirst(
        consume,
        idleWatchdog(options.idleTimeoutMs, () => lastItemAt, () =>
          new CallTimeout({ endpoint: options.endpoint, kind: "idle", ms: options.idleTimeoutMs, items }))
      )
    }).pipe(Effect.scoped)
    return options.timeoutMs <= 0 ? run : Effect.timeoutOrElse(run, {
      duration: options.timeoutMs,
      orElse: () => Effect.fail(new CallTimeout({ endpoint: options.endpoint, kind: "overall", ms: options.timeoutMs, items }))
    })
  })
