/**
 * Logging through Effect's Logger, configured by `DYN_LOG`: a global level, optionally followed
 * by per-module levels, e.g. `DYN_LOG=info,transport.tcp.pool=debug`. A log line's module is its
 * `module` annotation (`Effect.annotateLogs({ module: "transport.tcp.pool" })`); the longest
 * matching module prefix decides its level. Lines go to stderr, one per entry, in the format
 * `DYN_LOG_FORMAT` names: logfmt (the default) or json (one flat object per line, for log
 * shippers); both carry the same keys (timestamp, level, fiber, message, the annotations, and
 * cause when there is one). Payloads are only ever logged at debug level or below.
 *
 * It does not decide what a program prints for its user (stdout stays the program's own).
 */
import { Effect, Layer, Logger, LogLevel, References } from "effect"
import { TransportConfig } from "../TransportConfig.ts"
import type { LogFormat } from "../TransportConfig.ts"

export type { LogFormat }

/** A parsed `DYN_LOG`: the global level and per-module levels. */
export interface LogSpec {
  readonly level: LogLevel.LogLevel
  readonly modules: ReadonlyArray<readonly [string, LogLevel.LogLevel]>
}

const toLevel = (name: string): LogLevel.LogLevel =>
  (({ trace: "Trace", debug: "Debug", info: "Info", warn: "Warn", error: "Error", fatal: "Fatal", off: "None" }) as const)[
    name as "info"
  ] ?? "Info"

/** Parses a validated `DYN_LOG` value (TransportConfig has checked its syntax). */
export const parseSpec = (text: string): LogSpec => {
  const parts = text.split(",").map((s) => s.trim()).filter((s) => s !== "")
  let level: LogLevel.LogLevel = "Info"
  const modules: Array<readonly [string, LogLevel.LogLevel]> = []
  for (const part of parts) {
    const eq = part.indexOf("=")
    if (eq < 0) level = toLevel(part)
    else modules.push([part.slice(0, eq), toLevel(part.slice(eq + 1))])
  }
  modules.sort((a, b) => b[0].length - a[0].length)
  return { level, modules }
}

/** The level that applies to `module` (longest prefix match, else the global level). */
export const levelFor = (spec: LogSpec, module: string | undefined): LogLevel.LogLevel => {
  if (module !== undefined) {
    for (const [prefix, level] of spec.modules) {
      if (module === prefix || module.startsWith(prefix + ".")) return level
    }
  }
  return spec.level
}

const lowest = (spec: LogSpec): LogLevel.LogLevel =>
  [spec.level, ...spec.modules.map(([, l]) => l)].reduce((a, b) => (LogLevel.isGreaterThanOrEqualTo(a, b) ? b : a))

/** JSON that survives bigints (instance ids) and cycles: a bigint becomes its decimal text. */
const toJson = (value: unknown): string => {
  const seen = new WeakSet<object>()
  return JSON.stringify(value, (_key, v: unknown) => {
    if (typeof v === "bigint") return v.toString()
    if (typeof v === "object" && v !== null) {
      if (seen.has(v)) return "[circular]"
      seen.add(v)
    }
    return v
  })
}

const reserved = new Set(["timestamp", "level", "fiber", "message", "cause", "spans"])

type Structured = typeof Logger.formatStructured extends Logger.Logger<unknown, infer Output> ? Output : never

/**
 * The fields of one entry, in order: `timestamp`, `level`, `fiber`, `message`, the annotations
 * (a key that clashes with these is dropped), then `cause` and `spans` when present.
 */
const fieldsOf = (entry: Structured): Record<string, unknown> => {
  const out: Record<string, unknown> = {
    timestamp: entry.timestamp,
    level: entry.level,
    fiber: entry.fiberId,
    message: entry.message
  }
  for (const [key, value] of Object.entries(entry.annotations)) if (!reserved.has(key)) out[key] = value
  if (entry.cause !== undefined) out.cause = entry.cause
  if (Object.keys(entry.spans).length > 0) out.spans = entry.spans
  return out
}

/** A logfmt value: bare when it has no space, quote, `=` or control character, else JSON-quoted. */
const logfmtValue = (value: unknown): string => {
  const text = typeof value === "string"
    ? value
    : typeof value === "bigint" || typeof value === "number" || typeof value === "boolean"
    ? String(value)
    : toJson(value)
  return text !== "" && !/[\s"=\\\u0000-\u001f\u007f]/.test(text) ? text : JSON.stringify(text)
}

/** logfmt: `key=value` pairs, one line per entry. */
const formatLogfmt: Logger.Logger<unknown, string> = Logger.map(
  Logger.formatStructured,
  (entry) => Object.entries(fieldsOf(entry)).map(([k, v]) => `${k}=${logfmtValue(v)}`).join(" ")
)

/** JSON: one flat object per line, the same fields as logfmt. */
const formatJsonFlat: Logger.Logger<unknown, string> = Logger.map(Logger.formatStructured, (entry) => toJson(fieldsOf(entry)))

/** The formatter of one format. */
export const formatterFor = (format: LogFormat): Logger.Logger<unknown, string> =>
  format === "json" ? formatJsonFlat : formatLogfmt

const stderrSink = (line: string) => {
  process.stderr.write(line + "\n")
}

/** A logger that applies `spec` per module and writes each entry as one line (logfmt by default) to stderr. */
export const makeLogger = (spec: LogSpec, sink: (line: string) => void = stderrSink, format: LogFormat = "logfmt") => {
  const formatter = formatterFor(format)
  return Logger.make((options) => {
    const annotations = options.fiber.getRef(References.CurrentLogAnnotations) as Readonly<Record<string, unknown>>
    const module = typeof annotations.module === "string" ? annotations.module : undefined
    if (!LogLevel.isGreaterThanOrEqualTo(options.logLevel, levelFor(spec, module))) return
    sink(formatter.log(options))
  })
}

/** What `layer` installs: a `DYN_LOG` spec, a format, and optionally a global level that replaces the spec's. */
export interface LoggingOptions {
  readonly log: string
  readonly format: LogFormat
  /** Replaces the spec's global level (a command-line `--log-level`); module levels stay. */
  readonly level?: LogLevel.LogLevel | undefined
  readonly sink?: ((line: string) => void) | undefined
}

/** Installs the logger of `options` in place of every other one (so no line leaves in another format). */
export const layer = (options: LoggingOptions): Layer.Layer<never> => {
  const parsed = parseSpec(options.log)
  const spec = options.level === undefined ? parsed : { ...parsed, level: options.level }
  return Layer.mergeAll(
    Logger.layer([makeLogger(spec, options.sink ?? stderrSink, options.format)]),
    Layer.succeed(References.MinimumLogLevel, lowest(spec))
  )
}

/** Installs the `DYN_LOG` / `DYN_LOG_FORMAT` logger in place of the default one. */
export const layerConfig: Layer.Layer<never, never, TransportConfig> = Layer.unwrap(
  Effect.gen(function*() {
    const config = yield* TransportConfig
    return layer({ log: config.log, format: config.logFormat })
  })
)
