/**
 * The `transport-registry` command-line program (effect/cli).
 * Commands: `demo` (the default of `npm start`). Room is left for `worker`, `call`, `list`
 * and `bench`.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect } from "effect"
import { Command, Flag } from "effect/cli"
import { demo } from "./demo.ts"

const demoCommand = Command.make(
  "demo",
  {
    prompt: Flag.String("prompt").pipe(
      Flag.withDescription("The prompt whose words the demo worker streams back"),
      Flag.withDefault("hello from the transport registry streaming tokens one by one")
    ),
    requests: Flag.Int("requests").pipe(Flag.withDescription("Sequential requests per mode"), Flag.withDefault(500)),
    inFlight: Flag.Int("in-flight").pipe(Flag.withDescription("Concurrent requests in the throughput run"), Flag.withDefault(64))
  },
  (options) => demo(options)
).pipe(Command.withDescription("Run a worker and a router in one process, stream a request, and print a latency table"))

const root = Command.make("transport-registry").pipe(
  Command.withDescription("Pluggable request/response transports for distributed inference"),
  Command.withSubcommands([demoCommand])
)

Command.run(root, { version: "0.1.0" }).pipe(Effect.provide(NodeServices.layer), NodeRuntime.runMain)
