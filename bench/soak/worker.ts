// The soak tool's worker process: serves `soak.worker.generate` with the transports its DYN_*
// record names (argv[2], JSON) and file discovery, and prints its instance record as one line
// on stdout. Each request `{ r, n, d }` is answered with n items `{ r, i }` (i = 0 .. n-1), d ms
// apart (d = 0: all at once, waiting on emit.ready between batches), so the router can count
// lost, duplicated and out-of-order items per request. argv[3], when given, is the endpoint's
// in-flight cap (`maxInFlight`): beyond it requests are refused "overloaded".
import { Effect } from "effect"
import * as Endpoint from "../../src/Endpoint.ts"
import * as Logging from "../../src/observability/Logging.ts"
import { instanceToJson } from "../../src/Instance.ts"
import { routerLayer } from "../crossProcess.ts"

/** A soak request: its id, how many items, the delay between them in ms. */
export interface SoakRequest {
  readonly r: number
  readonly n: number
  readonly d: number
}

/** One item: the request's id and the item's index. */
export interface SoakItem {
  readonly r: number
  readonly i: number
}

/** The endpoint the soak tool serves and calls. */
export const SOAK_ENDPOINT = "soak.worker.generate"

const handler: Endpoint.EmitHandler<SoakRequest, SoakItem> = (req, _ctx, emit) =>
  Effect.gen(function*() {
    const n = Math.max(0, Math.min(1_000_000, Math.floor(req.n)))
    const delay = Math.max(0, Math.floor(req.d))
    for (let i = 0; i < n; i++) {
      emit({ r: req.r, i })
      if (delay > 0) yield* Effect.sleep(delay)
      else if ((i & 63) === 63) yield* emit.ready
    }
  })

const main = () => {
  const env = JSON.parse(process.argv[2] ?? "{}") as Record<string, string>
  const cap = process.argv[3] === undefined ? undefined : Number(process.argv[3])
  const program = Effect.gen(function*() {
    const served = yield* Endpoint.serveEmit(SOAK_ENDPOINT, handler, cap === undefined ? {} : { maxInFlight: cap })
    process.stdout.write(instanceToJson(served.instance) + "\n")
    return yield* Effect.never
  })
  Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(routerLayer(env)), Effect.provide(Logging.layer({ log: env["DYN_LOG"] ?? "warn", format: "logfmt" })))).catch((e: unknown) => {
    console.error(`level=ERROR message="soak worker failed: ${String(e).replace(/"/g, "'")}"`)
    process.exit(1)
  })
}

if (import.meta.url === `file://${process.argv[1]}`) main()
