/**
 * `transport-registry demo` (what `npm start` runs): a worker and a router in one process. It
 * reads `DYN_*` like every command (the CLI puts its embedded defaults, loopback, free ports and
 * mem discovery, beneath the environment; bad values have already failed start-up), streams one
 * request over the configured mode, then prints a latency table for every built mode with the
 * configured one marked. The table is the user's output: stdout; logs go to stderr.
 */
import { Console, Effect, Stream } from "effect"
import * as Endpoint from "../Endpoint.ts"
import { TransportConfig } from "../TransportConfig.ts"
import { concurrent, sequential, table, us } from "./latency.ts"
import { layerFor, modeOf, modes } from "./modes.ts"
import type { Mode } from "./modes.ts"
import { tokenHandler, TokenRequestSchema } from "./tokenHandler.ts"
import type { TokenRequest, TokenResponse } from "./tokenHandler.ts"

const endpoint = "demo.backend.generate"

/** Options of the demo. */
export interface DemoOptions {
  readonly prompt: string
  readonly requests: number
  readonly inFlight: number
}

/** Serves the token handler and returns a client that sees its instance (discovery may poll). */
const serveAndConnect = Effect.gen(function*() {
  yield* Endpoint.serveEmit(endpoint, tokenHandler, { requestSchema: TokenRequestSchema })
  const client = yield* Endpoint.client<TokenRequest, TokenResponse>(endpoint)
  const deadline = Date.now() + 5000
  while (client.instances().length === 0 && Date.now() < deadline) yield* Effect.sleep(20)
  return client
})

const streamOne = (mode: Mode, prompt: string) =>
  Effect.gen(function*() {
    const client = yield* serveAndConnect
    yield* Console.log(`Streaming one request over ${mode.name}, the configured mode (${mode.description}):`)
    yield* Effect.sync(() => process.stdout.write("  "))
    yield* client.generate({ prompt, delay_ms: 40 }).pipe(
      Stream.runForEach((item) => Effect.sync(() => process.stdout.write(`${item.token} `)))
    )
    yield* Effect.sync(() => process.stdout.write("\n\n"))
  }).pipe(Effect.scoped, Effect.provide(layerFor(mode)))

const measure = (mode: Mode, options: DemoOptions) =>
  Effect.gen(function*() {
    const client = yield* serveAndConnect
    const request: TokenRequest = { max_tokens: 10 }
    let items = 0
    const once = client.call(request, (batch) => {
      items += batch.length
    })
    yield* sequential(Math.min(50, options.requests), once) // warm-up
    const seq = yield* sequential(options.requests, once)
    const conc = yield* concurrent(options.requests * 2, options.inFlight, once)
    return { seq, conc, items }
  }).pipe(Effect.scoped, Effect.provide(layerFor(mode)))

/** The marker of the configured mode in the table. */
export const configuredMarker = "(configured)"

/** Runs the demo. */
export const demo = (options: DemoOptions) =>
  Effect.gen(function*() {
    const configured = modeOf(yield* TransportConfig)
    yield* streamOne(configured, options.prompt)
    // every built mode, and the configured one first when it is not one of them
    const compared = modes.includes(configured) ? modes : [configured, ...modes]
    const rows: Array<Array<string>> = []
    for (const mode of compared) {
      yield* Effect.logDebug("measuring").pipe(Effect.annotateLogs({ mode: mode.name }))
      const r = yield* measure(mode, options)
      rows.push([
        mode === configured ? `${mode.name} ${configuredMarker}` : mode.name,
        us(r.seq.p50),
        us(r.seq.p95),
        us(r.seq.p99),
        `${Math.round(1e6 / Math.max(r.seq.mean, 1))}`,
        `${Math.round(r.conc.rps)}`,
        us(r.conc.stats.p99)
      ])
    }
    yield* Console.log(
      `Latency of ${options.requests} sequential calls, and throughput of ${options.requests * 2} calls with ${options.inFlight} in flight (10 tokens each):\n`
    )
    yield* Console.log(
      table(["mode", "p50", "p95", "p99", "req/s (seq)", `req/s (${options.inFlight} in flight)`, "p99 (in flight)"], rows)
    )
    yield* Console.log(
      `\n${configuredMarker}: the mode DYN_REQUEST_PLANE, DYN_RESPONSE_PLANE, DYN_TCP_POOL_ENABLED and DYN_TCP_FULL_MODE select; the other rows override only those.`
    )
  })
