/**
 * The worker side of Endpoint over a real TCP stack (in-memory request plane, TCP call-home
 * response plane on 127.0.0.1): typed write failures end the stream with a HandlerError naming
 * the ResponseWriteError, and each request's call-home runs in the request's log annotations and
 * inside its `handle` span.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { describe, expect, it } from "@effect/vitest"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Context, Deferred, Effect, Layer, Logger, References, Stream, Tracer } from "effect"
import * as Endpoint from "../src/Endpoint.ts"
import type { ResponseWriteError } from "../src/TransportError.ts"
import { tcpStack } from "./support/stack.ts"

/**
 * An item with no JSON encoding. (A bigint is not one: the json codec writes it as a bare number.)
 */
const unencodable = (): unknown => {
  const item: Record<string, unknown> = { n: 1 }
  item.self = item
  return item
}

/** Calls `client` once, expecting a failure; the items that arrived and the error. */
const callFailing = <Res>(client: Endpoint.EndpointClient<unknown, Res>) =>
  Effect.gen(function*() {
    const seen: Array<Res> = []
    const error = yield* Effect.flip(client.call({}, (items) => {
      seen.push(...items)
    }))
    return { seen, error }
  })

/** The router's error is a stream HandlerError naming the ResponseWriteError, its reason and detail. */
const expectWriteFailure = (failure: { readonly _tag: string }) => {
  expect(failure._tag).toBe("HandlerError")
  const error = failure as { _tag: string; detail: string; phase: string }
  expect(error.phase).toBe("stream")
  expect(error.detail).toContain("ResponseWriteError")
  expect(error.detail).toContain("EncodeFailed")
  expect(error.detail).toMatch(/circular/i)
}

describe("response write failures over TCP call-home", () => {
  it.live("`yield* emit(item)` of an item with no JSON encoding fails the handler with ResponseWriteError, and the router with a HandlerError naming it", () =>
    Effect.gen(function*() {
      const seenByHandler = yield* Deferred.make<ResponseWriteError>()
      yield* Endpoint.serveEmit("wk.write.yielded", (_req: unknown, _ctx, emit: Endpoint.Emit<unknown>) =>
        Effect.gen(function*() {
          yield* emit(1)
          yield* emit.all([2, 3])
          yield* emit(unencodable())
          yield* emit(4)
        }).pipe(Effect.tapError((e) => Deferred.succeed(seenByHandler, e))))
      const client = yield* Endpoint.client<unknown, unknown>("wk.write.yielded")
      const { error, seen } = yield* callFailing(client)
      const handlerError = yield* Deferred.await(seenByHandler)
      expect(handlerError._tag).toBe("ResponseWriteError")
      expect(handlerError.reason).toBe("EncodeFailed")
      expect(seen).toEqual([1, 2, 3])
      expectWriteFailure(error)
    }).pipe(Effect.provide(tcpStack())))

  it.live("a handler that ignores the failed write and completes still fails the router: no complete-looking end, nothing after it", () =>
    Effect.gen(function*() {
      const results: Array<string> = []
      yield* Endpoint.serveEmit("wk.write.ignored", (_req: unknown, _ctx, emit: Endpoint.Emit<unknown>) =>
        Effect.sync(() => {
          results.push(emit(1)._tag)
          results.push(emit(unencodable())._tag)
          results.push(emit(3)._tag)
          results.push(emit.all([4, 5])._tag)
        }))
      const client = yield* Endpoint.client<unknown, unknown>("wk.write.ignored")
      const { error, seen } = yield* callFailing(client)
      expect(results).toEqual(["Success", "Failure", "Failure", "Failure"])
      expect(seen).toEqual([1])
      expectWriteFailure(error)
    }).pipe(Effect.provide(tcpStack())))

  it.live("a `serve` Stream handler producing such an item fails the router with a typed HandlerError after the items before it", () =>
    Effect.gen(function*() {
      let pulledAfter = false
      yield* Endpoint.serve("wk.write.stream", () =>
        Stream.make<Array<unknown>>(1, 2).pipe(
          Stream.concat(Stream.make<Array<unknown>>(unencodable())),
          Stream.concat(Stream.fromEffect(Effect.sync((): unknown => {
            pulledAfter = true
            return 4
          })))
        ))
      const client = yield* Endpoint.client<unknown, unknown>("wk.write.stream")
      const seen: Array<unknown> = []
      const error = yield* Effect.flip(client.generate({}).pipe(Stream.runForEach((item) => Effect.sync(() => seen.push(item)))))
      expect(seen).toEqual([1, 2])
      expectWriteFailure(error)
      // The adapter failed with the write's error: the handler's Stream was not pulled further.
      expect(pulledAfter).toBe(false)
    }).pipe(Effect.provide(tcpStack())))

  for (const pooled of [false, true]) {
    it.live(`a bad item inside one chunk: the items before it arrive, none after it, then a typed failure (pool ${pooled})`, () =>
      Effect.gen(function*() {
        let result: string | undefined
        yield* Endpoint.serveEmit("wk.write.chunk", (_req, _ctx, emit: Endpoint.Emit<unknown>) =>
          Effect.sync(() => {
            result = emit.all([1, 2, unencodable(), 4])._tag
          }))
        const client = yield* Endpoint.client<unknown, unknown>("wk.write.chunk")
        const { error, seen } = yield* callFailing(client)
        expect(result).toBe("Failure")
        expect(seen).toEqual([1, 2])
        expectWriteFailure(error)
      }).pipe(Effect.provide(tcpStack({ DYN_TCP_POOL_ENABLED: String(pooled) }))))
  }
})

interface LogLine {
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
  readonly span: string | undefined
}

/** A logger that keeps every line (debug and up) with its annotations and current span. */
const captureLogs = (lines: Array<LogLine>) =>
  Layer.mergeAll(
    Logger.layer([
      Logger.make((options) => {
        const span = Context.getOption(options.fiber.context, Tracer.ParentSpan)
        lines.push({
          message: String(options.message),
          annotations: options.fiber.getRef(References.CurrentLogAnnotations) as Readonly<Record<string, unknown>>,
          span: span._tag === "Some" && span.value._tag === "Span" ? span.value.name : undefined
        })
      })
    ]),
    Layer.succeed(References.MinimumLogLevel, "Debug")
  )

describe("call-home in the request's context", () => {
  it.live("the call-home log line carries the request's annotations; the call-home span's parent is `handle`, whose parent is the router's `send`", () => {
    const exporter = new InMemorySpanExporter()
    const otel = NodeSdk.layer(() => ({ spanProcessor: new SimpleSpanProcessor(exporter), resource: { serviceName: "test" } }))
    const lines: Array<LogLine> = []
    return Effect.gen(function*() {
      const requestIds: Array<string> = []
      yield* Endpoint.serveEmit("wk.home.traced", (_req: unknown, ctx, emit: Endpoint.Emit<number>) =>
        Effect.sync(() => {
          requestIds.push(ctx.requestId)
          emit(1)
        }))
      const client = yield* Endpoint.client<unknown, number>("wk.home.traced")
      expect(yield* Stream.runCollect(client.generate({}))).toEqual([1])
      yield* Effect.sleep(20)

      const line = lines.find((l) => l.message.includes("calling home"))
      expect(line, lines.map((l) => l.message).join(" | ")).toBeDefined()
      expect(line!.annotations.requestId).toBe(requestIds[0])
      expect(line!.annotations.endpoint).toBe("wk.home.traced")
      expect(line!.annotations.connectionTransport).toBeDefined()
      expect(line!.span).toBe("call-home")

      const spans = exporter.getFinishedSpans()
      const send = spans.find((s) => s.name === "send wk.home.traced")
      const handle = spans.find((s) => s.name === "handle wk.home.traced")
      const callHome = spans.find((s) => s.name === "call-home")
      expect(send, spans.map((s) => s.name).join(",")).toBeDefined()
      expect(handle).toBeDefined()
      expect(callHome).toBeDefined()
      expect(callHome!.spanContext().traceId).toBe(send!.spanContext().traceId)
      expect(callHome!.parentSpanContext?.spanId).toBe(handle!.spanContext().spanId)
      expect(handle!.parentSpanContext?.spanId).toBe(send!.spanContext().spanId)
    }).pipe(Effect.provide(Layer.mergeAll(tcpStack(), otel, captureLogs(lines))))
  })

  it.live("with DYN_TRACING=off there is no span, and the call-home line still carries the request's annotations", () => {
    const exporter = new InMemorySpanExporter()
    const otel = NodeSdk.layer(() => ({ spanProcessor: new SimpleSpanProcessor(exporter) }))
    const lines: Array<LogLine> = []
    return Effect.gen(function*() {
      yield* Endpoint.serveEmit("wk.home.off", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) => Effect.sync(() => emit(1)))
      const client = yield* Endpoint.client<unknown, number>("wk.home.off")
      expect(yield* Stream.runCollect(client.generate({}))).toEqual([1])
      yield* Effect.sleep(20)
      expect(exporter.getFinishedSpans()).toEqual([])
      const line = lines.find((l) => l.message.includes("calling home"))
      expect(line).toBeDefined()
      expect(line!.annotations.endpoint).toBe("wk.home.off")
      expect(typeof line!.annotations.requestId).toBe("string")
    }).pipe(Effect.provide(Layer.mergeAll(tcpStack({ DYN_TRACING: "off" }), otel, captureLogs(lines))))
  })
})
