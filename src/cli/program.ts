/**
 * The `transport-registry` command-line program (effect/cli), loaded by `main.ts` once V8 is tuned.
 *
 * - `demo` (what `npm start` runs): a worker and a router in one process, every mode.
 * - `worker --endpoint ns.comp.ep`: serve the built-in token handler.
 * - `call ns.comp.ep --data '<json>'`: call an endpoint and print each item as a JSON line.
 * - `list ns.comp.ep`: the instances of an endpoint in discovery, with their transports and ids.
 * - `bench`: every mode against raw Node baselines and other stacks (`bench/command.ts`).
 *
 * Every command reads `DYN_*` (through `TransportConfig`, with the CLI's defaults of
 * `defaults.ts` beneath the environment) before it does anything, and fails on bad values
 * naming every bad variable. Output for the user goes to stdout (call's items, worker's instance
 * record, the demo's table); every log line, errors included, goes to stderr in one format:
 * logfmt, or json with `--log-format json` / `DYN_LOG_FORMAT=json`.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Cause, Data, Effect, Exit, Layer, Option } from "effect"
import { Argument, CliError, CliOutput, Command, Flag, GlobalFlag } from "effect/cli"
import * as Discovery from "../discovery/layerConfig.ts"
import * as Logging from "../observability/Logging.ts"
import * as MetricsServer from "../observability/MetricsServer.ts"
import * as Tracing from "../observability/Tracing.ts"
import { load, loadLogFormat, TransportConfig, TransportConfigError } from "../TransportConfig.ts"
import type { LogFormat } from "../TransportConfig.ts"
import * as TransportRegistry from "../registry/index.ts"
import { benchCommand } from "./bench/command.ts"
import { call } from "./call.ts"
import { cliDefaults, defaultDiscoveryPath, demoDefaults, layerDefaults } from "./defaults.ts"
import { demo } from "./demo.ts"
import { describe, environmentSection, formatter, HelpSections } from "./help.ts"
import { list } from "./list.ts"
import { tokenLimits, tokenRequestFields } from "./tokenHandler.ts"
import { worker } from "./worker.ts"

/** `--log-format`: overrides `DYN_LOG_FORMAT` for every command. */
const LogFormatFlag = GlobalFlag.Setting("log-format")({
  flag: Flag.Literals("log-format", ["logfmt", "json"]).pipe(
    Flag.optional,
    Flag.withMetavar("<logfmt|json>"),
    Flag.withDescription(describe("Format of the log lines on stderr: logfmt, or json for log shippers", {
      default: "logfmt",
      env: "DYN_LOG_FORMAT"
    }))
  )
})

/** A command failed and its failure has been logged; the process exits 1. */
class CommandFailed extends Data.TaggedError("CommandFailed")<{}> {}

/** A flag's value that cannot be used: which flag, and why. */
class InvalidFlag extends Data.TaggedError("InvalidFlag")<{ readonly flag: string; readonly detail: string }> {
  override get message(): string {
    return `${this.flag}: ${this.detail}`
  }
}

/** Logs a failure: a bad configuration as one line per bad variable, anything else as one line. */
const reportFailure = (cause: Cause.Cause<unknown>): Effect.Effect<void> => {
  const configErrors = cause.reasons.flatMap((r) => (r._tag === "Fail" && r.error instanceof TransportConfigError ? [r.error] : []))
  const others = cause.reasons.filter((r) => !(r._tag === "Fail" && r.error instanceof TransportConfigError))
  return Effect.forEach(configErrors, (error) => {
    const count = `${error.problems.length} bad variable${error.problems.length === 1 ? "" : "s"}`
    return Effect.logError(`invalid transport configuration (${count}: ${error.problems.map((p) => p.variable).join(", ")})`).pipe(
      Effect.andThen(Effect.forEach(error.problems, (p) =>
        Effect.logError(`bad ${p.variable}`).pipe(
          Effect.annotateLogs({ variable: p.variable, got: p.got, expected: p.expected })
        ), { discard: true }))
    )
  }, { discard: true }).pipe(
    Effect.andThen(Effect.forEach(Cause.prettyErrors(Cause.fromReasons(others)), (error) =>
      Effect.logError(error.message).pipe(Effect.annotateLogs({ error: (error as { _tag?: string })._tag ?? error.name })), { discard: true }))
  )
}

/**
 * Runs a command: reads the configuration under `defaults`, installs the one logger (DYN_LOG,
 * `--log-level`, DYN_LOG_FORMAT, `--log-format`), provides the settings, and logs any failure
 * in that format before failing with `CommandFailed`.
 */
/** A command's failure: logged (unless it is an interruption), then `CommandFailed` (exit 1). */
const failed = (cause: Cause.Cause<unknown>): Effect.Effect<never, CommandFailed> =>
  Cause.hasInterruptsOnly(cause)
    ? Effect.failCause(cause as Cause.Cause<never>)
    : reportFailure(cause).pipe(Effect.andThen(Effect.fail(new CommandFailed())))

const runCommand = <A, E, R>(
  defaults: Readonly<Record<string, string>>,
  program: Effect.Effect<A, E, R>
) =>
  Effect.gen(function*() {
    const formatFlag = yield* LogFormatFlag
    const levelFlag = yield* GlobalFlag.LogLevel
    const early: LogFormat = Option.isSome(formatFlag) ? formatFlag.value : yield* loadLogFormat
    // Before the settings are known, failures are reported at info level in the early format.
    const settings = yield* load.pipe(
      Effect.catchCause((cause) => failed(cause).pipe(Effect.provide(Logging.layer({ log: "info", format: early }))))
    )
    const format = Option.isSome(formatFlag) ? formatFlag.value : settings.logFormat
    const logging = Logging.layer({ log: settings.log, format, level: Option.getOrUndefined(levelFlag) })
    return yield* program.pipe(
      Effect.catchCause(failed),
      Effect.provideService(TransportConfig, settings),
      Effect.provide(logging)
    )
  }).pipe(Effect.provide(layerDefaults(defaults)))

/** The configured transports and discovery (given the settings). */
const Configured = Layer.mergeAll(Discovery.layerConfig, TransportRegistry.layerFromConfig)

/** A long-running process also serves /metrics, /health, /ready and exports traces. */
const Serving = Layer.mergeAll(MetricsServer.layer, Tracing.layerConfig).pipe(Layer.provideMerge(Configured))

const moreVariables = "every DYN_* variable, its default and what it accepts: docs/configuration.md"

const demoCommand = Command.make(
  "demo",
  {
    prompt: Flag.String("prompt").pipe(
      Flag.withDescription(describe("The prompt whose words the demo worker streams back", {
        default: "\"hello from the transport registry streaming tokens one by one\""
      })),
      Flag.withDefault("hello from the transport registry streaming tokens one by one")
    ),
    requests: Flag.Int("requests").pipe(Flag.withDescription(describe("Sequential requests per mode", { default: "500" })), Flag.withDefault(500)),
    inFlight: Flag.Int("in-flight").pipe(
      Flag.withDescription(describe("Concurrent requests in the throughput run", { default: "64" })),
      Flag.withDefault(64)
    )
  },
  (options) => runCommand({ ...cliDefaults, ...demoDefaults }, demo(options))
).pipe(
  Command.withDescription(
    "Run a worker and a router in one process: stream one request over the configured mode, then print a latency table of every built mode (the configured one marked)"
  ),
  Command.annotate(HelpSections, [
    environmentSection(
      ["DYN_REQUEST_PLANE", "DYN_RESPONSE_PLANE", "DYN_TCP_POOL_ENABLED", "DYN_DISCOVERY_BACKEND", "DYN_HTTP_RPC_HOST", "DYN_HTTP_RPC_PORT", "DYN_TCP_RESPONSE_PORT", "DYN_LOG", "DYN_LOG_FORMAT"],
      demoDefaults,
      [
        "The demo reads every DYN_* variable; a bad value fails it. It binds loopback and free ports unless told otherwise",
        "(every *_HOST is 127.0.0.1 and every *_PORT 0 here).",
        moreVariables
      ]
    )
  ])
)

const workerCommand = Command.make(
  "worker",
  {
    endpoint: Flag.String("endpoint").pipe(
      Flag.withDescription(describe("The endpoint to serve: namespace.component.endpoint", { required: true }))
    ),
    drainTimeout: Flag.Int("drain-timeout-ms").pipe(
      Flag.withDescription(describe("On SIGINT/SIGTERM, how long in-flight streams may take to finish, in ms", { default: "10000" })),
      Flag.withDefault(10_000)
    )
  },
  (options) =>
    runCommand(cliDefaults, worker({ endpoint: options.endpoint, drainTimeoutMs: options.drainTimeout }).pipe(Effect.provide(Serving)))
).pipe(
  Command.withDescription(
    "Serve the built-in token-streaming handler; prints the instance record as one JSON line on stdout, logs on stderr"
  ),
  Command.annotate(HelpSections, [
    {
      title: "REQUEST (the built-in handler's fields, all optional; a value out of bounds fails the call with a HandlerError naming the field)",
      lines: [
        ...tokenRequestFields.map(([field, doc]) => `${field.padEnd(12)}${doc}`),
        `e.g. {"prompt":"one two three"}  or  {"max_tokens":${tokenLimits.maxTokens},"token_size":64}`,
        "Each response item is {\"index\": n, \"token\": \"...\"}."
      ]
    },
    environmentSection(
      ["DYN_DISCOVERY_BACKEND", "DYN_DISCOVERY_PATH", "DYN_REQUEST_PLANE", "DYN_HTTP_RPC_HOST", "DYN_HTTP_RPC_PORT", "DYN_METRICS_PORT", "DYN_LOG", "DYN_LOG_FORMAT"],
      cliDefaults,
      [moreVariables]
    )
  ])
)

const callCommand = Command.make(
  "call",
  {
    endpoint: Argument.String("endpoint").pipe(Argument.withDescription("namespace.component.endpoint")),
    data: Flag.String("data").pipe(Flag.withDescription(describe("The request, as JSON", { default: "{}" })), Flag.withDefault("{}")),
    wait: Flag.Int("wait-ms").pipe(
      Flag.withDescription(describe("How long to wait for an instance to appear in discovery, in ms", { default: "2000" })),
      Flag.withDefault(2000)
    ),
    timeout: Flag.Int("timeout").pipe(
      Flag.withMetavar("ms"),
      Flag.withDescription(describe("Overall bound on the call, instance wait included, in ms; 0 for none", { default: "0, none" })),
      Flag.withDefault(0)
    ),
    idleTimeout: Flag.Int("idle-timeout").pipe(
      Flag.withMetavar("ms"),
      Flag.withDescription(describe("Fail when no response item arrives for this long, in ms; 0 for never", { default: "30000" })),
      Flag.withDefault(30_000)
    )
  },
  (options) =>
    runCommand(
      cliDefaults,
      Effect.gen(function*() {
        const data = yield* Effect.try({
          try: () => JSON.parse(options.data) as unknown,
          catch: (e) => new InvalidFlag({ flag: "--data", detail: `not valid JSON: ${(e as Error).message}` })
        })
        yield* call({
          endpoint: options.endpoint,
          data,
          waitMs: options.wait,
          timeoutMs: options.timeout,
          idleTimeoutMs: options.idleTimeout
        }).pipe(Effect.provide(Layer.mergeAll(Configured, Tracing.layerConfig)))
      })
    )
).pipe(
  Command.withDescription("Call an endpoint and print each response item as a JSON line on stdout; it never waits forever"),
  Command.annotate(HelpSections, [
    environmentSection(
      [
        "DYN_DISCOVERY_BACKEND",
        "DYN_DISCOVERY_PATH",
        "DYN_RESPONSE_PLANE",
        "DYN_TCP_RESPONSE_HOST",
        "DYN_TCP_POOL_ENABLED",
        "DYN_TCP_CALL_HOME_TIMEOUT_SECS",
        "NATS_SERVER",
        "DYN_ROUTER_MAX_ATTEMPTS",
        "DYN_LOG",
        "DYN_LOG_FORMAT"
      ],
      cliDefaults,
      [
        "call reaches a worker of any mode (http, tcp, nats request plane; tcp call-home or inline http responses), as its record says.",
        moreVariables
      ]
    )
  ])
)

const listCommand = Command.make(
  "list",
  {
    endpoint: Argument.String("endpoint").pipe(Argument.withDescription("namespace.component.endpoint")),
    json: Flag.Boolean("json").pipe(
      Flag.withDescription(describe("Print each instance record as one JSON line, exactly as discovery holds it, instead of the table", { default: "false" })),
      Flag.withDefault(false)
    )
  },
  (options) => runCommand(cliDefaults, list({ endpoint: options.endpoint, json: options.json }).pipe(Effect.provide(Discovery.layerConfig)))
).pipe(
  Command.withDescription(
    "List the instances of an endpoint in discovery: ids (hex and decimal), request transport and address, response plane, and the record's other fields"
  ),
  Command.annotate(HelpSections, [
    environmentSection(["DYN_DISCOVERY_BACKEND", "DYN_DISCOVERY_PATH", "ETCD_ENDPOINTS", "DYN_LOG", "DYN_LOG_FORMAT"], cliDefaults, [
      "The response column: \"tcp call-home\" for the legacy record forms (the worker calls the router back over TCP), else the unified form's response transport.",
      moreVariables
    ])
  ])
)

const root = Command.make("transport-registry").pipe(
  Command.withDescription(
    `Pluggable request/response transports for distributed inference. worker, call and list find each other through file discovery in ${defaultDiscoveryPath} unless DYN_DISCOVERY_* say otherwise.`
  ),
  Command.withSubcommands([demoCommand, workerCommand, callCommand, listCommand, benchCommand]),
  Command.withGlobalFlags([LogFormatFlag])
)

const program = Command.run(root, { version: "0.1.0" }).pipe(
  Effect.provide(Layer.mergeAll(NodeServices.layer, CliOutput.layer(formatter()))),
  Effect.catchCause((cause) =>
    // effect/cli has rendered its own errors (bad flags, help), and runCommand has logged the command's
    Cause.hasInterruptsOnly(cause) || CliError.isCliError(Cause.squash(cause)) || Cause.squash(cause) instanceof CommandFailed
      ? Effect.failCause(cause)
      : reportFailure(cause).pipe(Effect.provide(Logging.layer({ log: "info", format: "logfmt" })), Effect.andThen(Effect.failCause(cause)))
  )
)

// SIGINT/SIGTERM interrupt the program; finalizers run (deregister, drain); an interrupt is a clean exit 0.
NodeRuntime.runMain(program, {
  disableErrorReporting: true,
  teardown: (exit, onExit) => onExit(Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause) ? 1 : 0)
})
