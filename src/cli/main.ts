/**
 * The `transport-registry` command-line program (effect/cli).
 *
 * - `demo` (what `npm start` runs): a worker and a router in one process, every mode.
 * - `worker --endpoint ns.comp.ep`: serve the built-in token handler.
 * - `call ns.comp.ep --data '<json>'`: call an endpoint and print each item as a JSON line.
 *
 * `worker` and `call` use the transports and discovery that `DYN_*` configures. Room is left
 * for `list` and `bench`.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Cause, Effect, Exit, Layer } from "effect"
import { Argument, CliError, Command, Flag } from "effect/cli"
import * as Discovery from "../discovery/layerConfig.ts"
import * as Logging from "../observability/Logging.ts"
import * as MetricsServer from "../observability/MetricsServer.ts"
import * as Tracing from "../observability/Tracing.ts"
import { TransportConfig } from "../TransportConfig.ts"
import * as TransportRegistry from "../registry/index.ts"
import { call } from "./call.ts"
import { demo } from "./demo.ts"
import { worker } from "./worker.ts"

/** The configured stack: DYN_* from the environment, transports and discovery. */
const Configured = Layer.mergeAll(Discovery.layerConfig, TransportRegistry.layerFromConfig).pipe(
  // beneath the transports, so their loggers (captured when they are built) use DYN_LOG
  Layer.provideMerge(Logging.layerConfig),
  Layer.provideMerge(TransportConfig.layer)
)

/** A long-running process also serves /metrics, /health, /ready and exports traces. */
const Serving = Layer.mergeAll(MetricsServer.layer, Tracing.layerConfig).pipe(Layer.provideMerge(Configured))

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

const workerCommand = Command.make(
  "worker",
  {
    endpoint: Flag.String("endpoint").pipe(Flag.withDescription("The endpoint to serve: namespace.component.endpoint")),
    drainTimeout: Flag.Int("drain-timeout-ms").pipe(
      Flag.withDescription("On SIGINT/SIGTERM, how long in-flight streams may take to finish"),
      Flag.withDefault(10_000)
    )
  },
  (options) => worker({ endpoint: options.endpoint, drainTimeoutMs: options.drainTimeout }).pipe(Effect.provide(Serving))
).pipe(Command.withDescription("Serve the built-in token-streaming handler; prints the instance record as JSON"))

const callCommand = Command.make(
  "call",
  {
    endpoint: Argument.String("endpoint").pipe(Argument.withDescription("namespace.component.endpoint")),
    data: Flag.String("data").pipe(Flag.withDescription("The request, as JSON"), Flag.withDefault("{}")),
    wait: Flag.Int("wait-ms").pipe(Flag.withDescription("How long to wait for an instance to appear"), Flag.withDefault(2000))
  },
  (options) =>
    Effect.gen(function*() {
      const data = yield* Effect.try({
        try: () => JSON.parse(options.data) as unknown,
        catch: (e) => new Error(`--data is not valid JSON: ${(e as Error).message}`)
      })
      yield* call({ endpoint: options.endpoint, data, waitMs: options.wait }).pipe(Effect.provide(Configured))
    })
).pipe(Command.withDescription("Call an endpoint and print each response item as a JSON line"))

const root = Command.make("transport-registry").pipe(
  Command.withDescription("Pluggable request/response transports for distributed inference"),
  Command.withSubcommands([demoCommand, workerCommand, callCommand])
)

/** One line per failure, on stderr: the error's tag and message (typed errors name the problem). */
const report = (cause: Cause.Cause<unknown>): string =>
  Cause.prettyErrors(cause)
    .map((e) => `${(e as { _tag?: string })._tag ?? e.name}: ${e.message}`)
    .join("\n")

const program = Command.run(root, { version: "0.1.0" }).pipe(
  Effect.provide(NodeServices.layer),
  Effect.tapCause((cause) =>
    // effect/cli has already rendered its own errors (bad flags, help)
    Cause.hasInterruptsOnly(cause) || CliError.isCliError(Cause.squash(cause))
      ? Effect.void
      : Effect.sync(() => process.stderr.write(`error: ${report(cause)}\n`))
  )
)

// SIGINT/SIGTERM interrupt the program; finalizers run (deregister, drain); an interrupt is a clean exit 0.
NodeRuntime.runMain(program, {
  disableErrorReporting: true,
  teardown: (exit, onExit) => onExit(Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause) ? 1 : 0)
})
