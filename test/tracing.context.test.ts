/**
 * `Tracing.layerExporting`'s tracer (the one `Tracing.layerConfig` installs): without a global
 * OpenTelemetry context manager it leaves out `@effect/opentelemetry`'s per-step context hook,
 * which could do nothing there, and its spans and their parents are still exported; with one
 * registered, the hook is kept, so code instrumented by OpenTelemetry itself sees the Effect span
 * as active. And on the worker, a request whose call-home writer is at hand (the full TCP mode)
 * gets no `call-home` span, while one that connects does. And `DYN_TRACING=sampled` exports
 * about a tenth of the calls' spans, on both sides, not all of them.
 */
import * as Otel from "@opentelemetry/api"
import { describe, expect, it } from "@effect/vitest"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base"
import { Effect, Layer, Stream, Tracer } from "effect"
import * as Endpoint from "../src/Endpoint.ts"
import * as Tracing from "../src/observability/Tracing.ts"
import { configuredStack } from "./support/stack.ts"

/** A synchronous context manager: enough for `context.with` and `context.active` in one call stack. */
class StackContextManager implements Otel.ContextManager {
  private current: Otel.Context = Otel.ROOT_CONTEXT
  active() {
    return this.current
  }
  with<A extends Array<unknown>, F extends (...args: A) => ReturnType<F>>(context: Otel.Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    const previous = this.current
    this.current = context
    try {
      return fn.call(thisArg, ...args)
    } finally {
      this.current = previous
    }
  }
  bind<T>(_context: Otel.Context, target: T): T {
    return target
  }
  enable() {
    return this
  }
  disable() {
    this.current = Otel.ROOT_CONTEXT
    return this
  }
}

/**
 * The exporter's finished spans once `ready` holds of them (at most 2 s): a worker's `handle`
 * span ends after its last frame is written, so the router's call can return first.
 */
const finishedWhen = (exporter: InMemorySpanExporter, ready: (spans: ReadonlyArray<ReadableSpan>) => boolean) =>
  Effect.gen(function*() {
    const deadline = Date.now() + 2000
    while (!ready(exporter.getFinishedSpans()) && Date.now() < deadline) yield* Effect.sleep(10)
    return exporter.getFinishedSpans()
  })

/** The active OpenTelemetry span's id inside an Effect span `name`, and that span's own id. */
const activeInside = (name: string) =>
  Effect.withSpan(
    Effect.gen(function*() {
      const span = yield* Effect.currentSpan
      return { active: Otel.trace.getActiveSpan()?.spanContext().spanId, own: span.spanId }
    }),
    name
  )

describe("Tracing.layerExporting", () => {
  it.effect("with no context manager registered: no per-step hook, and spans export with their parents", () => {
    const exporter = new InMemorySpanExporter()
    return Effect.gen(function*() {
      expect(Tracing.otelContextPropagates()).toBe(false)
      const tracer = yield* Effect.tracer
      expect(tracer.context).toBeUndefined()
      const inner = yield* Effect.withSpan(activeInside("inner"), "outer")
      // nothing is active in OpenTelemetry's sense, as the hook could not have made it so
      expect(inner.active).toBeUndefined()
      const spans = exporter.getFinishedSpans()
      const outer = spans.find((s) => s.name === "outer")
      const innerSpan = spans.find((s) => s.name === "inner")
      expect(innerSpan?.spanContext().spanId).toBe(inner.own)
      expect(innerSpan?.parentSpanContext?.spanId).toBe(outer?.spanContext().spanId)
    }).pipe(Effect.provide(Tracing.layerExporting(new SimpleSpanProcessor(exporter), "test")))
  })

  it.effect("with a context manager registered: the hook is kept and the Effect span is OpenTelemetry's active span", () => {
    const exporter = new InMemorySpanExporter()
    const manager = new StackContextManager()
    expect(Otel.context.setGlobalContextManager(manager)).toBe(true)
    return Effect.gen(function*() {
      expect(Tracing.otelContextPropagates()).toBe(true)
      const tracer = yield* Effect.tracer
      expect(tracer.context).toBeTypeOf("function")
      const inner = yield* activeInside("seen")
      expect(inner.active).toBe(inner.own)
      expect(exporter.getFinishedSpans().map((s) => s.name)).toEqual(["seen"])
    }).pipe(
      Effect.provide(Tracing.layerExporting(new SimpleSpanProcessor(exporter), "test")),
      Effect.ensuring(Effect.sync(() => Otel.context.disable()))
    )
  })
})

describe("the worker's call-home span", () => {
  const spansOf = (env: Record<string, string>, endpoint: string) => {
    const exporter = new InMemorySpanExporter()
    return Effect.gen(function*() {
      yield* Endpoint.serveEmit(endpoint, (_req: unknown, _ctx, emit: Endpoint.Emit<number>) => Effect.sync(() => emit(1)))
      const client = yield* Endpoint.client<unknown, number>(endpoint)
      expect(yield* Stream.runCollect(client.generate({}))).toEqual([1])
      expect(yield* Stream.runCollect(client.generate({}))).toEqual([1])
      return yield* finishedWhen(exporter, (spans) => spans.filter((s) => s.name.startsWith("handle ")).length >= 2)
    }).pipe(
      Effect.provide(Layer.mergeAll(configuredStack(env), Tracing.layerExporting(new SimpleSpanProcessor(exporter), "test")))
    )
  }

  it.live("the full TCP mode hands the writer back at once: send and handle spans, no call-home", () =>
    Effect.gen(function*() {
      const spans = yield* spansOf(
        { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "true", DYN_TCP_REQUEST_HOST: "127.0.0.1", DYN_TCP_REQUEST_PORT: "0" },
        "tr.ctx.full"
      )
      const names = spans.map((s) => s.name)
      expect(names.filter((n) => n === "send tr.ctx.full")).toHaveLength(2)
      expect(names.filter((n) => n === "handle tr.ctx.full")).toHaveLength(2)
      expect(names).not.toContain("call-home")
      for (const handle of spans.filter((s) => s.name === "handle tr.ctx.full")) {
        const send = spans.find((s) => s.spanContext().spanId === handle.parentSpanContext?.spanId)
        expect(send?.name).toBe("send tr.ctx.full")
      }
    }))

  it.live("one connection per stream (http+tcp, not pooled): each request's call-home connects in a span of its own under handle", () =>
    Effect.gen(function*() {
      const spans = yield* spansOf({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_POOL_ENABLED: "false" }, "tr.ctx.unpooled")
      const callHomes = spans.filter((s) => s.name === "call-home")
      expect(callHomes).toHaveLength(2)
      const handles = spans.filter((s) => s.name === "handle tr.ctx.unpooled")
      for (const c of callHomes) expect(handles.map((h) => h.spanContext().spanId)).toContain(c.parentSpanContext?.spanId)
    }))
})

describe("DYN_TRACING=sampled with a backend", () => {
  const handlesUnder = (spans: ReadonlyArray<ReadableSpan>, name: string) => spans.filter((s) => s.name === `handle ${name}`)
  const sampledStack = (exporter: InMemorySpanExporter, tracing: string) =>
    Layer.mergeAll(
      configuredStack({ DYN_REQUEST_PLANE: "memory", DYN_RESPONSE_PLANE: "memory", DYN_TRACING: tracing }),
      Tracing.layerExporting(new SimpleSpanProcessor(exporter), "test")
    )

  it.live("at the root, about a tenth of the calls export their spans; an unsampled call exports none on either side", () => {
    const exporter = new InMemorySpanExporter()
    return Effect.gen(function*() {
      yield* Endpoint.serveEmit("tr.ctx.sampled", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) => Effect.sync(() => emit(1)))
      const client = yield* Endpoint.client<unknown, number>("tr.ctx.sampled")
      for (let i = 0; i < 200; i++) yield* client.call({}, () => {})
      const sendsOf = (spans: ReadonlyArray<ReadableSpan>) => spans.filter((s) => s.name === "send tr.ctx.sampled")
      const spans = yield* finishedWhen(exporter, (all) => handlesUnder(all, "tr.ctx.sampled").length >= sendsOf(all).length)
      const sends = sendsOf(spans)
      // 10% of 200: 20 expected; below 2 has odds of about 1 in 60 million, above 60 far less
      expect(sends.length).toBeGreaterThanOrEqual(2)
      expect(sends.length).toBeLessThanOrEqual(60)
      // each sampled call's worker span, under it, and no other
      expect(handlesUnder(spans, "tr.ctx.sampled").map((h) => h.parentSpanContext?.spanId).sort()).toEqual(sends.map((s) => s.spanContext().spanId).sort())
    }).pipe(Effect.provide(sampledStack(exporter, "sampled")))
  })

  it.live("inside the application's span, a call follows its decision: every call of a sampled trace, none of an unsampled one", () => {
    const exporter = new InMemorySpanExporter()
    // what each request's handler runs under
    const parents: Array<{ readonly traceId: string; readonly sampled: boolean }> = []
    return Effect.gen(function*() {
      yield* Endpoint.serveEmit("tr.ctx.parent", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) =>
        Effect.gen(function*() {
          const parent = yield* Effect.option(Effect.currentParentSpan)
          if (parent._tag === "Some") parents.push({ traceId: parent.value.traceId, sampled: parent.value.sampled })
          emit(1)
        }))
      const client = yield* Endpoint.client<unknown, number>("tr.ctx.parent")
      const calls = Effect.gen(function*() {
        for (let i = 0; i < 20; i++) yield* client.call({}, () => {})
      })
      yield* Effect.withSpan(calls, "app")
      yield* Effect.withParentSpan(calls, Tracer.externalSpan({ traceId: "1".repeat(32), spanId: "2".repeat(16), sampled: false }))
      const spans = yield* finishedWhen(exporter, (all) => handlesUnder(all, "tr.ctx.parent").length >= 20)
      const app = spans.find((s) => s.name === "app")!
      const sends = spans.filter((s) => s.name === "send tr.ctx.parent")
      expect(sends).toHaveLength(20)
      for (const send of sends) expect(send.parentSpanContext?.spanId).toBe(app.spanContext().spanId)
      expect(handlesUnder(spans, "tr.ctx.parent")).toHaveLength(20)
      // nothing of the unsampled trace; its handlers still ran in it, unsampled
      expect(spans.filter((s) => s.spanContext().traceId === "1".repeat(32))).toEqual([])
      expect(parents.filter((p) => p.traceId === app.spanContext().traceId && p.sampled)).toHaveLength(20)
      expect(parents.filter((p) => p.traceId === "1".repeat(32) && !p.sampled)).toHaveLength(20)
    }).pipe(Effect.provide(sampledStack(exporter, "sampled")))
  })
})

describe("Tracing.unsampledTraceparent", () => {
  it("a valid W3C traceparent, flagged not sampled: a new trace without a parent, the parent's trace with one, a fresh span id each time", () => {
    const shape = /^00-([0-9a-f]{32})-([0-9a-f]{16})-00$/
    const roots = Array.from({ length: 50 }, () => Tracing.unsampledTraceparent(undefined))
    for (const t of roots) {
      expect(t).toMatch(shape)
      expect(Tracing.extractParent({ traceparent: t })?.sampled).toBe(false)
    }
    expect(new Set(roots.map((t) => shape.exec(t)![1])).size).toBe(50)
    const parent = Tracer.externalSpan({ traceId: "a".repeat(32), spanId: "b".repeat(16), sampled: false })
    const children = [Tracing.unsampledTraceparent(parent), Tracing.unsampledTraceparent(parent)]
    for (const t of children) expect(shape.exec(t)![1]).toBe("a".repeat(32))
    expect(shape.exec(children[0]!)![2]).not.toBe(shape.exec(children[1]!)![2])
  })
})
