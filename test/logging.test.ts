import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Logger, References } from "effect"
import { levelFor, makeLogger, parseSpec } from "../src/observability/Logging.ts"

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
