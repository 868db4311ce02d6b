/**
 * This project's router side of a benchmark row: `Endpoint.client` on the mode's DYN_* settings
 * (`TransportConfig.layerFromRecord`, the configured transports, file discovery, the tracing
 * backend when one is configured), as a router
 * process is built. Its worker is `transport-registry worker` in a process of its own, which the
 * run starts; the `memory` variants serve the built-in token handler in this process instead
 * (the in-process reference). Variants: `call` (the lean core, `client.call`), `generate` (the
 * Stream API), `memory`. Every call checks it got every item.
 */
import { Effect, Exit, Layer, Scope, Stream } from "effect"
import * as FileDiscovery from "../../../discovery/FileDiscovery.ts"
import * as Endpoint from "../../../Endpoint.ts"
import * as TransportRegistry from "../../../registry/index.ts"
import * as Tracing from "../../../observability/Tracing.ts"
import { TransportConfig } from "../../../TransportConfig.ts"
import { tokenHandler, TokenRequestSchema } from "../../tokenHandler.ts"
import { BENCH_ENDPOINT } from "../ipc.ts"
import { loadEffect } from "../loadEffect.ts"
import type { Driver, ServerInfo, SideOptions } from "./side.ts"

// Loaded by childMain.ts after it tuned V8 as the program does (main.ts).

/** How long the router waits for the worker's instance record in discovery. */
const INSTANCE_WAIT_MS = 20_000

/** Builds the router (and, for `memory`, the worker) and waits for the instance. */
export const connect = async (options: SideOptions, _server: ServerInfo): Promise<Driver> => {
  const env = options.env ?? {}
  // Tracing.layerConfig exports spans when the row sets OTEL_EXPORTER_OTLP_ENDPOINT (the -traced rows), and is empty otherwise.
  const layer = Layer.mergeAll(TransportRegistry.layerFromConfig, FileDiscovery.layer, Tracing.layerConfig).pipe(
    Layer.provideMerge(TransportConfig.layerFromRecord(env))
  )
  const scope = await Effect.runPromise(Scope.make())
  const services = await Effect.runPromise(Layer.buildWithScope(layer, scope))
  const inScope = <A, E>(effect: Effect.Effect<A, E, Layer.Success<typeof layer> | Scope.Scope>) =>
    Effect.runPromise(effect.pipe(Effect.provideContext(services), Scope.provide(scope)))
  if (options.variant === "memory") {
    await inScope(Endpoint.serveEmit(BENCH_ENDPOINT, tokenHandler, { requestSchema: TokenRequestSchema }))
  }
  const client = await inScope(Endpoint.client<unknown, unknown>(BENCH_ENDPOINT))
  const deadline = Date.now() + INSTANCE_WAIT_MS
  while (client.instances().length === 0) {
    if (Date.now() > deadline) throw new Error(`no instance of ${BENCH_ENDPOINT} appeared in discovery within ${INSTANCE_WAIT_MS} ms`)
    await new Promise((r) => setTimeout(r, 20))
  }
  const request = { max_tokens: options.items, token_size: options.itemSize, ...(options.delayMs > 0 ? { delay_ms: options.delayMs } : {}) }
  // One Effect per lane, run once per stream: a stream's item count is the lane's, checked (and
  // reset) at its end, so that a stream pays no Effect step of the harness's own beyond the check.
  const once = (onFirst: () => void) => {
    let items = 0
    const check = Effect.suspend(() => {
      const n = items
      items = 0
      return n === options.items ? Effect.void : Effect.fail(new Error(`${n} items, expected ${options.items}`))
    })
    return options.variant === "generate"
      ? Effect.andThen(
        Stream.runForEach(client.generate(request), () =>
          Effect.sync(() => {
            if (items++ === 0) onFirst()
          })),
        check
      )
      : Effect.andThen(
        client.call(request, (batch) => {
          if (items === 0) onFirst()
          items += batch.length
        }),
        check
      )
  }
  return {
    // In the layer's context, as a router program's calls run: its tracer (a -traced row's) included.
    run: (streams, concurrency, record) => Effect.runPromise(loadEffect(streams, concurrency, once, record).pipe(Effect.provideContext(services))),
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}
