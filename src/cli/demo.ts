/**
 * `transport-registry demo`: a worker and a router in one process on embedded defaults.
 * It streams one request to the terminal, then prints a latency table for every mode.
 */
import { Console, Effect, Stream } from "effect"
import * as Endpoint from "../Endpoint.ts"
import { concurrent, sequential, table, us } from "./latency.ts"
import { layerFor, modes } from "./modes.ts"
import type { Mode } from "./modes.ts"
import { tokenHandler } from "./tokenHandler.ts"
import type { TokenRequest, TokenResponse } from "./tokenHandler.ts"

const endpoint = "demo.backend.generate"

/** Options of the demo. */
export interface DemoOptions {
  readonly prompt: string
  readonly requests: number
  readonly inFlight: number
}

const streamOne = (mode: Mode, prompt: string) =>
  Effect.gen(function*() {
    yield* Endpoint.serveEmit(endpoint, tokenHandler)
    const client = yield* Endpoint.client<TokenRequest, TokenResponse>(endpoint)
    yield* Console.log(`Streaming one request over ${mode.name} (${mode.description}):`)
    yield* Effect.sync(() => process.stdout.write("  "))
    yield* client.generate({ prompt, delay_ms: 40 }).pipe(
      Stream.runForEach((item) => Effect.sync(() => process.stdout.write(`${item.token} `)))
    )
    yield* Effect.sync(() => process.stdout.write("\n\n"))
  }).pipe(Effect.scoped, Effect.provide(layerFor(mode)))

const measure = (mode: Mode, options: DemoOptions) =>
  Effect.gen(function*() {
    yield* Endpoint.serveEmit(endpoint, tokenHandler)
    const client = yield* Endpoint.client<TokenRequest, TokenResponse>(endpoint)
    const request: TokenRequest = { max_tokens: 10 }
    let items = 0
    const once = client.call(request, (batch) => {
      items += batch.length
    })
    yield* sequential(50, once) // warm-up
    const seq = yield* sequential(options.requests, once)
    const conc = yield* concurrent(options.requests * 2, options.inFlight, once)
    return { mode: mode.name, seq, conc, items }
  }).pipe(Effect.scoped, Effect.provide(layerFor(mode)))

/** Runs the demo. */
export const demo = (options: DemoOptions) =>
  Effect.gen(function*() {
    yield* streamOne(modes[0]!, options.prompt)
    const rows: Array<Array<string>> = []
    for (const mode of modes) {
      const r = yield* measure(mode, options)
      rows.push([
        r.mode,
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
  })
