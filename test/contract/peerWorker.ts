/**
 * The worker that dies in the transport contract's peer-death behaviour, run in its own process:
 * `node --experimental-strip-types peerWorker.ts <endpoint> <itemDelayMs>`, configured by `DYN_*`
 * in its environment (the stack's record plus file discovery). It serves `slowCounter` on the
 * endpoint, prints one line once its instance is in discovery, and runs until it is killed.
 */
import { Effect, Layer } from "effect"
import * as Discovery from "../../src/discovery/index.ts"
import * as Endpoint from "../../src/Endpoint.ts"
import * as TransportRegistry from "../../src/registry/index.ts"
import { slowCounter } from "../support/stacks.ts"

const [path, delay] = process.argv.slice(2)
if (path === undefined || delay === undefined) throw new Error("usage: peerWorker.ts <endpoint> <itemDelayMs>")

const Live = Discovery.layerConfig.pipe(Layer.provideMerge(TransportRegistry.layerConfig))

Effect.gen(function*() {
  const served = yield* Endpoint.serveEmit(path, slowCounter(Number(delay)))
  process.stdout.write(`${JSON.stringify({ pid: process.pid, instance_id: served.instance.instance_id.toString(16) })}\n`)
  return yield* Effect.never
}).pipe(Effect.scoped, Effect.provide(Live), Effect.runFork)
