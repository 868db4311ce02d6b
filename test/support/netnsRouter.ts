/**
 * A router in a process of its own, driven over stdin/stdout, for the multi-host test
 * (test/multihost.netns.test.ts), which runs it in a network namespace:
 * `node --experimental-strip-types netnsRouter.ts <endpoint>...`, configured by `DYN_*`,
 * `NATS_SERVER` and `ETCD_*` in its environment.
 *
 * It keeps a client of each endpoint and writes one JSON line on stdout per event:
 * - `{"event":"ready"}` once every client has its first discovery snapshot;
 * - `{"event":"instances","endpoint","ids","records"}` whenever an endpoint's instance set
 *   changes (polled every 20 ms), with the records as `instanceToJson` writes them, and `at`
 *   (`Date.now()`);
 * - per call, `{"event":"items","call","items"}` for each batch, then `{"event":"end","call"}` or
 *   `{"event":"error","call","tag","reason","message"}` (a `CallError`), each with `at`.
 *
 * A call is a JSON line on stdin: `{"call":"c1","endpoint":"ns.comp.ep","request":{...}}`.
 * `{"cancel":"c1"}` interrupts that call (the router sends stop, then kill). It runs until it is
 * killed or its stdin closes. It has no call timeout of its own: the library's behaviour is what
 * the test observes.
 */
import { createInterface } from "node:readline"
import { Effect, Fiber, FiberSet, Layer } from "effect"
import * as Discovery from "../../src/discovery/index.ts"
import * as Endpoint from "../../src/Endpoint.ts"
import { instanceToJson } from "../../src/Instance.ts"
import * as TransportRegistry from "../../src/registry/index.ts"

const endpoints = process.argv.slice(2)
if (endpoints.length === 0) throw new Error("usage: netnsRouter.ts <endpoint>...")

const emit = (event: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify({ ...event, at: Date.now() })}\n`)

const Live = Discovery.layerConfig.pipe(Layer.provideMerge(TransportRegistry.layerConfig))

Effect.gen(function*() {
  const clients = new Map<string, Endpoint.EndpointClient<unknown, unknown>>()
  for (const path of endpoints) clients.set(path, yield* Endpoint.client<unknown, unknown>(path))
  const run = yield* FiberSet.makeRuntime<never>()

  // The instance sets, reported on change.
  const known = new Map<string, string>()
  const poll = () => {
    for (const [path, client] of clients) {
      const instances = client.instances()
      const ids = instances.map((i) => i.instance_id.toString(16)).sort()
      const key = ids.join(",")
      if (known.get(path) === key) continue
      known.set(path, key)
      emit({ event: "instances", endpoint: path, ids, records: instances.map((i) => JSON.parse(instanceToJson(i)) as unknown) })
    }
  }
  poll()
  const timer = setInterval(poll, 20)
  yield* Effect.addFinalizer(() => Effect.sync(() => clearInterval(timer)))

  const calls = new Map<string, Fiber.Fiber<void, never>>()
  const onLine = (line: string) => {
    if (line.trim() === "") return
    const command = JSON.parse(line) as { call?: string; cancel?: string; endpoint?: string; request?: unknown }
    if (command.cancel !== undefined) {
      const fiber = calls.get(command.cancel)
      if (fiber !== undefined) run(Fiber.interrupt(fiber))
      return
    }
    const id = command.call!
    const client = clients.get(command.endpoint!)
    if (client === undefined) return emit({ event: "error", call: id, tag: "UnknownEndpoint", message: command.endpoint })
    const fiber = run(
      client.call(command.request, (items) => emit({ event: "items", call: id, items })).pipe(
        Effect.matchEffect({
          onSuccess: () => Effect.sync(() => emit({ event: "end", call: id })),
          onFailure: (e) =>
            Effect.sync(() =>
              emit({ event: "error", call: id, tag: e._tag, reason: (e as { reason?: string }).reason, message: e.message })
            )
        }),
        Effect.onInterrupt(() => Effect.sync(() => emit({ event: "cancelled", call: id })))
      )
    )
    calls.set(id, fiber)
  }
  const lines = createInterface({ input: process.stdin })
  lines.on("line", onLine)
  emit({ event: "ready" })
  yield* Effect.callback<void>((resume) => {
    lines.once("close", () => resume(Effect.void))
  })
}).pipe(Effect.scoped, Effect.provide(Live), Effect.runFork)
