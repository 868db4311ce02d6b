import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Layer, Logger, References } from "effect"
import { layer, levelFor, makeLogger, parseSpec } from "../src/observability/Logging.ts"

describe("DYN_LOG", () => {
  it("parses a global level and per-module levels, longest prefix first", () => {
    const spec = parseSpec("warn,transport.tcp=info,transport.tcp.pool=debug")
    expect(spec.level).toBe("Warn")
    expect(levelFor(spec, undefined)).toBe("Warn")
    expect(levelFor(spec, "transport.http")).toBe("Warn")
    expect(levelFor(spec, "transport.tcp")).toBe("Info")
    expect(levelFor(spec, "transport.tcp.server")).toBe("Info")
    expect(levelFor(spec, "transport.tcp.pool")).toBe("Debug")
    expect(levelFor(spec, "transport.tcp.poolish")).toBe("Info")
  })

  it.effect("emits a module's debug lines only where the spec allows them", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const spec = parseSpec("info,transport.tcp.pool=debug")
      const layer = Layer.mergeAll(
        Logger.layer([makeLogger(spec, (l) => lines.push(l))]),
        Layer.succeed(References.MinimumLogLevel, "Debug")
      )
      yield* Effect.gen(function*() {
        yield* Effect.logDebug("pool reused").pipe(Effect.annotateLogs({ module: "transport.tcp.pool", target: "h:1" }))
        yield* Effect.logDebug("http detail").pipe(Effect.annotateLogs({ module: "transport.http" }))
        yield* Effect.logInfo("started").pipe(Effect.annotateLogs({ module: "transport.http" }))
      }).pipe(Effect.provide(layer))
      expect(lines.length).toBe(2)
      expect(lines[0]).toContain("pool reused")
      expect(lines[0]).toContain("target=h:1")
      expect(lines[0]).toContain("level=DEBUG")
      expect(lines[1]).toContain("started")
    }))
})

describe("DYN_LOG_FORMAT", () => {
  const capture = (format: "logfmt" | "json") =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      yield* Effect.gen(function*() {
        yield* Effect.logInfo("serving").pipe(Effect.annotateLogs({ endpoint: "a.b.c", instance: 42n }))
        yield* Effect.logDebug("hidden")
        yield* Effect.logWarning("call-home failed", Cause.fail(new Error("refused")))
      }).pipe(Effect.provide(layer({ log: "info", format, sink: (l) => lines.push(l) })))
      return lines
    })

  it.effect("logfmt: one line per entry with level, message and the annotations as fields", () =>
    Effect.gen(function*() {
      const lines = yield* capture("logfmt")
      expect(lines.length).toBe(2)
      expect(lines[0]).toMatch(/^timestamp=\S+ level=INFO fiber=#\d+ message=serving endpoint=a\.b\.c instance=42$/)
      expect(lines[1]).toMatch(/^timestamp=\S+ level=WARN .*message="call-home failed" cause=".*refused/)
    }))

  it.effect("json: one flat object per line, the same keys, bigints as text", () =>
    Effect.gen(function*() {
      const lines = yield* capture("json")
      expect(lines.length).toBe(2)
      const first = JSON.parse(lines[0]!) as Record<string, unknown>
      expect(first).toMatchObject({ level: "INFO", message: "serving", endpoint: "a.b.c", instance: "42" })
      expect(typeof first.timestamp).toBe("string")
      const second = JSON.parse(lines[1]!) as Record<string, unknown>
      expect(second).toMatchObject({ level: "WARN", message: "call-home failed" })
      expect(String(second.cause)).toContain("refused")
    }))

  it.effect("a --log-level override replaces the global level and keeps module levels", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      yield* Effect.gen(function*() {
        yield* Effect.logDebug("global debug")
        yield* Effect.logInfo("pool info").pipe(Effect.annotateLogs({ module: "transport.tcp.pool" }))
      }).pipe(Effect.provide(layer({ log: "warn,transport.tcp.pool=error", format: "logfmt", level: "Debug", sink: (l) => lines.push(l) })))
      expect(lines.length).toBe(1)
      expect(lines[0]).toContain("global debug")
    }))
})
