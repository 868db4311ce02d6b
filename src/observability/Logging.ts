/**
 * Logging through Effect's Logger, configured by `DYN_LOG`: a global level, optionally followed
 * by per-module levels, e.g. `DYN_LOG=info,transport.tcp.pool=debug`. A log line's module is its
 * `module` annotation (`Effect.annotateLogs({ module: "transport.tcp.pool" })`); the longest
 * matching module prefix decides its level. Lines are logfmt on stderr, with structured fields
 * from the annotations. Payloads are only ever logged at debug level or below.
 */
import { Effect, Layer, Logger, LogLevel, References } from "effect"
import { TransportConfig } from "../TransportConfig.ts"

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

/** A logger that applies `spec` per module and writes logfmt to stderr. */
export const makeLogger = (spec: LogSpec, sink: (line: string) => void = (line) => process.stderr.write(line + "\n")) =>
  Logger.make((options) => {
    const annotations = options.fiber.getRef(References.CurrentLogAnnotations) as Readonly<Record<string, unknown>>
    const module = typeof annotations.module === "string" ? annotations.module : undefined
    if (!LogLevel.isGreaterThanOrEqualTo(options.logLevel, levelFor(spec, module))) return
    sink(Logger.formatLogFmt.log(options))
  })

/** Installs the `DYN_LOG` logger in place of the default one. */
export const layerConfig: Layer.Layer<never, never, TransportConfig> = Layer.unwrap(
  Effect.gen(function*() {
    const spec = parseSpec((yield* TransportConfig).log)
    return Layer.mergeAll(
      Logger.layer([makeLogger(spec)]),
      Layer.succeed(References.MinimumLogLevel, lowest(spec))
    )
  })
)
