/**
 * The pure HTTP mode (`DYN_REQUEST_PLANE=http DYN_RESPONSE_PLANE=http`): the response streams in
 * the request's own HTTP response. Real curl against a running worker (SSE and NDJSON, HTTP/1.1
 * chunked), router cancellation (RST_STREAM), a client that leaves mid-stream, a slow HTTP/2
 * consumer whose window holds the handler back, discovery's unified form, and one shared hub.
 */
import { describe, expect, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import * as http2 from "node:http2"
import { Deferred, Effect, Exit, Fiber, Layer, Stream } from "effect"
import type { InlineExchange } from "../src/transport/http/HttpInlineHub.ts"
import { makeInlineWriter } from "../src/transport/http/InlineWriter.ts"
import { makeStreamDecoder } from "../src/protocol/HttpStreamFormat.ts"
import * as Endpoint from "../src/Endpoint.ts"
import * as TransportRegistry from "../src/registry/index.ts"
import { TransportConfig } from "../src/TransportConfig.ts"
import { baseEnv, httpHttpNdjson, httpHttpSse } from "./support/stacks.ts"

const urlOf = (served: Endpoint.ServedEndpoint): string => {
  const t = served.instance.transport
  if (!("unified" in t)) throw new Error(`expected the unified form, got ${JSON.stringify(t)}`)
  return t.unified.request_transport.address
}

/** Runs curl, calling `onOutput` with everything printed so far at each chunk; resolves with the output. */
const curl = (args: ReadonlyArray<string>, onOutput: (text: string, kill: () => void) => void) =>
  new Promise<{ out: string; code: number | null }>((resolve, reject) => {
    const child = spawn("curl", ["-sS", "-N", ...args], { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    const kill = () => {
      if (child.pid !== undefined) process.kill(child.pid, "SIGKILL")
    }
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString()
      onOutput(out, kill)
    })
    child.stderr.on("data", (c: Buffer) => void (err += c.toString()))
    child.on("error", reject)
    child.on("exit", (code) => resolve({ out: code === 0 || code === null ? out : `${out}${err}`, code }))
  })

const sseEvents = (text: string) =>
  text.split("\n\n").filter((e) => e.trim() !== "" && !e.startsWith(":")).map((e) => {
    const lines = e.split("\n")
    const event = lines.find((l) => l.startsWith("event: "))?.slice(7) ?? "message"
    const data = JSON.parse(lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n"))
    return { event, data }
  })

const ndjsonLines = (text: string) => text.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l))

/**
 * Serves an endpoint that emits "first", then waits until `go` is completed, then emits "second"
 * and "last" (recording whether "last" had been produced when the test saw the first event).
 */
const serveGated = (path: string) =>
  Effect.gen(function*() {
    const go = yield* Deferred.make<void>()
    let producedLast = false
    let request: unknown
    const served = yield* Endpoint.serveEmit(path, (req: unknown, _ctx, emit: Endpoint.Emit<string>) =>
      Effect.gen(function*() {
        request = req
        emit("first")
        yield* Deferred.await(go)
        emit("second")
        producedLast = true
        emit("last")
      }))
    return { served, go, producedLast: () => producedLast, request: () => request }
  })

/** An exchange that takes what the writer does and never pushes back; `over` replaces its calls. */
const fakeExchange = (format: "sse" | "ndjson", over: Partial<InlineExchange>): InlineExchange => ({
  requestId: "r",
  format,
  target: "t",
  respond: () => {},
  write: () => {},
  end: () => {},
  reset: () => {},
  needsDrain: () => false,
  onDrain: () => {},
  onClose: () => {},
  isClosed: () => false,
  ...over
})

describe("pure HTTP mode (http request plane + http response plane)", () => {
  it.live("curl -N with Accept: text/event-stream streams SSE; the first event comes before the handler's last item", () =>
    Effect.gen(function*() {
      const gated = yield* serveGated("ns.inline.sse")
      const url = urlOf(gated.served)
      let lastBeforeFirst: boolean | undefined
      const result = yield* Effect.promise(() =>
        curl(["-H", "Accept: text/event-stream", "-d", "{\"prompt\":\"hi\"}", url], (text) => {
          if (lastBeforeFirst === undefined && text.includes("\n\n")) {
            lastBeforeFirst = gated.producedLast()
            Deferred.doneUnsafe(gated.go, Exit.void)
          }
        })
      )
      expect(result.code).toBe(0)
      expect(lastBeforeFirst).toBe(false)
      expect(gated.request()).toEqual({ prompt: "hi" })
      expect(sseEvents(result.out)).toEqual([
        { event: "message", data: "first" },
        { event: "message", data: "second" },
        { event: "message", data: "last" },
        { event: "done", data: {} }
      ])
    }).pipe(Effect.provide(httpHttpSse.layer)))

  it.live("curl -N with Accept: application/x-ndjson streams NDJSON (over h2c too); 406 for a type it does not speak", () =>
    Effect.gen(function*() {
      const gated = yield* serveGated("ns.inline.ndjson")
      const url = urlOf(gated.served)
      let lastBeforeFirst: boolean | undefined
      const result = yield* Effect.promise(() =>
        curl(["-H", "Accept: application/x-ndjson", "-H", "Content-Type: application/json", "-d", "{\"prompt\":\"hi\"}", url], (text) => {
          if (lastBeforeFirst === undefined && text.includes("\n")) {
            lastBeforeFirst = gated.producedLast()
            Deferred.doneUnsafe(gated.go, Exit.void)
          }
        })
      )
      expect(lastBeforeFirst).toBe(false)
      expect(ndjsonLines(result.out)).toEqual([{ data: "first" }, { data: "second" }, { data: "last" }, { event: "done" }])

      const h2 = yield* Endpoint.serveEmit("ns.inline.h2", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) => Effect.sync(() => emit(7)))
      const viaH2 = yield* Effect.promise(() =>
        curl(["--http2-prior-knowledge", "-H", "Accept: application/x-ndjson", "-d", "{}", urlOf(h2)], () => {})
      )
      expect(ndjsonLines(viaH2.out)).toEqual([{ data: 7 }, { event: "done" }])

      const refused = yield* Effect.promise(() =>
        curl(["-o", "/dev/null", "-w", "%{http_code}", "-H", "Accept: image/png", "-d", "{}", urlOf(h2)], () => {})
      )
      expect(refused.out).toBe("406")
    }).pipe(Effect.provide(httpHttpNdjson.layer)))

  it.live("advertises the unified form with both sides' capabilities, and the router streams from it", () =>
    Effect.gen(function*() {
      const served = yield* Endpoint.serve("ns.inline.unified", (req: { n: number }) => Stream.range(1, req.n))
      const t = served.instance.transport
      expect("unified" in t && t.unified).toMatchObject({
        request_transport: { transport_id: "http", capabilities: { streaming: false } },
        response_transport: { transport_id: "http", capabilities: { streaming: true }, metadata: { connection_transport: "http_inline", format: "sse" } }
      })
      const client = yield* Endpoint.client<{ n: number }, number>("ns.inline.unified")
      expect(yield* Stream.runCollect(client.generate({ n: 5 }))).toEqual([1, 2, 3, 4, 5])
    }).pipe(Effect.provide(httpHttpSse.layer)))

  it.live("router cancellation resets the HTTP/2 stream: the handler is interrupted within 100 ms", () =>
    Effect.gen(function*() {
      const interrupted = yield* Deferred.make<number>()
      const flowing = yield* Deferred.make<void>()
      yield* Endpoint.serveEmit("ns.inline.cancel", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) =>
        Effect.gen(function*() {
          for (let i = 0;; i++) {
            emit(i)
            if (i === 3) yield* Deferred.succeed(flowing, undefined)
            yield* Effect.sleep(5)
          }
        }).pipe(Effect.onInterrupt(() => Deferred.succeed(interrupted, performance.now()))))
      const client = yield* Endpoint.client<unknown, number>("ns.inline.cancel")
      const fiber = yield* Effect.forkChild(Stream.runDrain(client.generate({})))
      yield* Deferred.await(flowing).pipe(Effect.timeout(5000))
      const cancelledAt = performance.now()
      yield* Fiber.interrupt(fiber)
      const at = yield* Deferred.await(interrupted).pipe(Effect.timeout(1000))
      expect(at - cancelledAt).toBeLessThan(100)
    }).pipe(Effect.provide(httpHttpSse.layer)))

  it.live("a client that disconnects mid-stream (curl killed, HTTP/1.1) stops the worker writing", () =>
    Effect.gen(function*() {
      const interrupted = yield* Deferred.make<number>()
      let produced = 0
      const served = yield* Endpoint.serveEmit("ns.inline.leave", (_req: unknown, _ctx, emit: Endpoint.Emit<number>) =>
        Effect.gen(function*() {
          for (;;) {
            emit(produced++)
            yield* Effect.sleep(5)
          }
        }).pipe(Effect.onInterrupt(() => Deferred.succeed(interrupted, performance.now()))))
      let killedAt = 0
      yield* Effect.promise(() =>
        curl(["-H", "Accept: text/event-stream", "-d", "{}", urlOf(served)], (text, kill) => {
          if (killedAt === 0 && text.split("\n\n").length > 3) {
            killedAt = performance.now()
            kill()
          }
        })
      )
      const at = yield* Deferred.await(interrupted).pipe(Effect.timeout(2000))
      expect(at - killedAt).toBeLessThan(500)
      const after = produced
      yield* Effect.sleep(100)
      expect(produced).toBe(after)
    }).pipe(Effect.provide(httpHttpSse.layer)))

  it.live("a slow HTTP/2 consumer: the stream's window holds the handler back (emit.ready waits), then every item arrives", () =>
    Effect.gen(function*() {
      const item = "x".repeat(1000)
      const total = 2000 // ~2 MB: far beyond the 64 KB stream window
      let produced = 0
      const served = yield* Endpoint.serveEmit("ns.inline.slow", (_req: unknown, _ctx, emit: Endpoint.Emit<string>) =>
        Effect.gen(function*() {
          for (let i = 0; i < total; i++) {
            emit(item)
            produced++
            yield* emit.ready
          }
        }))
      const url = new URL(urlOf(served))
      const session = http2.connect(url.origin)
      yield* Effect.addFinalizer(() => Effect.sync(() => session.destroy()))
      const stream = session.request({
        ":method": "POST",
        ":path": url.pathname,
        "content-type": "application/json",
        accept: "application/x-ndjson"
      })
      stream.end("{}")
      stream.pause() // nobody reads
      yield* Effect.promise(() => new Promise((resolve) => stream.once("response", resolve)))
      yield* Effect.sleep(400)
      const heldAt = produced
      expect(heldAt).toBeGreaterThan(0)
      expect(heldAt).toBeLessThan(400) // window (64 KB) + buffers, not the 2,000 items
      yield* Effect.sleep(200)
      expect(produced - heldAt).toBeLessThan(5)
      // Now read everything.
      const text = yield* Effect.promise(() =>
        new Promise<string>((resolve) => {
          const chunks: Array<Buffer> = []
          stream.on("data", (c: Buffer) => chunks.push(c))
          stream.on("end", () => resolve(Buffer.concat(chunks).toString()))
          stream.resume()
        })
      )
      const lines = ndjsonLines(text)
      expect(lines.length).toBe(total + 1)
      expect(lines[total]).toEqual({ event: "done" })
    }).pipe(Effect.provide(httpHttpSse.layer), Effect.scoped))

  it.live("a router whose consumer lags pauses the HTTP/2 stream: the handler waits, then the rest arrives", () =>
    Effect.gen(function*() {
      const item = "y".repeat(1000)
      const total = 3000
      let produced = 0
      yield* Endpoint.serveEmit("ns.inline.pause", (_req: unknown, _ctx, emit: Endpoint.Emit<string>) =>
        Effect.gen(function*() {
          for (let i = 0; i < total; i++) {
            emit(item)
            produced++
            yield* emit.ready
          }
        }))
      const client = yield* Endpoint.client<unknown, string>("ns.inline.pause", { maxBufferedItems: 16 })
      const gate = yield* Deferred.make<void>()
      let consumed = 0
      const fiber = yield* Effect.forkChild(
        Stream.runForEach(client.generate({}), () =>
          Effect.andThen(consumed === 0 ? Deferred.await(gate) : Effect.void, Effect.sync(() => void consumed++)))
      )
      yield* Effect.sleep(500)
      const held = produced
      expect(held).toBeGreaterThan(0)
      expect(held).toBeLessThan(total / 2)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(fiber).pipe(Effect.timeout(10_000))
      expect(consumed).toBe(total)
    }).pipe(Effect.provide(httpHttpSse.layer)))

  it("the writer: SSE heartbeat while idle (unref'd, stopped at the end), writes never throw, 422 prologue", () => {
    const written: Array<string> = []
    let status: number | undefined
    let ended = false
    const fake = (format: "sse" | "ndjson"): InlineExchange =>
      fakeExchange(format, {
        respond: (s, _ct, body) => {
          status = s
          if (body !== undefined) written.push(body)
        },
        write: (c) => void written.push(Buffer.from(c).toString()),
        end: () => void (ended = true)
      })
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
    const beats = () => written.filter((t) => t.includes(": heartbeat")).length
    return (async () => {
      const w = makeInlineWriter(fake("sse"), { maxMessageSize: 64, heartbeatMs: 20 })
      w.prologue()
      expect(status).toBe(200)
      const circular: Record<string, unknown> = {}
      circular.self = circular
      expect(Exit.isFailure(w.send(circular))).toBe(true) // no JSON encoding: a failed WriteResult
      expect(Exit.isFailure(w.send("z".repeat(100)))).toBe(true) // above maxMessageSize
      await sleep(70)
      expect(beats()).toBeGreaterThan(0)
      w.complete()
      await sleep(5)
      expect(ended).toBe(true)
      const after = beats()
      await sleep(80)
      expect(beats()).toBe(after)
      written.length = 0
      const refused = makeInlineWriter(fake("ndjson"), { maxMessageSize: 64 })
      refused.prologue("invalid request: n")
      expect(status).toBe(422)
      expect(JSON.parse(written[0]!)).toEqual({ error: "invalid request: n", tag: "HandlerError", phase: "prologue" })
      // An error text that does not fit in one event is replaced by one that does: the stream still fails.
      written.length = 0
      const failing = makeInlineWriter(fake("ndjson"), { maxMessageSize: 200 })
      failing.prologue()
      failing.fail("x".repeat(1000))
      await sleep(5)
      const lines = written.join("").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l))
      expect(lines).toEqual([{ event: "error", tag: "HandlerError", message: "handler failed; its error text exceeds the maximum message size" }])
    })()
  })

  it("the writer: a tick's items leave as one write in order with what comes after them; an item's size is its UTF-8, measured near the maximum", () => {
    const writes: Array<string> = []
    let ended = false
    const fake = (format: "sse" | "ndjson"): InlineExchange =>
      fakeExchange(format, { write: (c) => void writes.push(Buffer.from(c).toString("utf8")), end: () => void (ended = true) })
    const tick = () => new Promise((r) => setImmediate(r))
    return (async () => {
      for (const format of ["sse", "ndjson"] as const) {
        writes.length = 0
        ended = false
        const decoded: Array<unknown> = []
        let done = false
        const decoder = makeStreamDecoder(format, { maxMessageSize: 1 << 20 })
        // "é" is 2 bytes, "€" 3: an item of 20 of them is 40-60 bytes of UTF-8 in 20 UTF-16 units
        const overhead = format === "sse" ? "data: \"\"\n\n".length : "{\"data\":\"\"}\n".length
        const max = overhead + 50
        const w = makeInlineWriter(fake(format), { maxMessageSize: max })
        w.prologue()
        expect(Exit.isSuccess(w.send("é".repeat(25)))).toBe(true) // 50 bytes: fits exactly
        expect(Exit.isFailure(w.send("€".repeat(17)))).toBe(true) // 51 bytes: one over
        expect(Exit.isSuccess(w.send(1))).toBe(true)
        await tick()
        expect(writes.length).toBe(1) // both items in one write
        expect(Exit.isSuccess(w.send({ a: "b" }))).toBe(true)
        w.complete()
        await tick()
        expect(writes.length).toBe(2) // the next item and the end marker together, then the end
        expect(ended).toBe(true)
        for (const chunk of writes) {
          decoder.decode(Buffer.from(chunk, "utf8"), (e) => {
            if (e._tag === "Items") decoded.push(...e.items)
            else if (e._tag === "Done") done = true
          })
        }
        expect(decoded).toEqual(["é".repeat(25), 1, { a: "b" }])
        expect(done).toBe(true)
      }
    })()
  })

  it.live("the request and response layers share ONE HttpInlineHub when composed by layerFromConfig", () =>
    Effect.gen(function*() {
      // With separate hubs the request client would not find the pending stream the response
      // server opened, and would fail with BadPayload before connecting anywhere.
      const registry = yield* TransportRegistry.TransportRegistry
      const server = yield* registry.getResponseServer("http")
      const client = yield* registry.getRequestClient("http")
      const requestId = crypto.randomUUID()
      const pending = yield* server.open({ requestId, endpoint: "ns.inline.hub", codec: "json", sink: { onItems: () => {}, onEnd: () => {}, onError: () => {} } })
      const error = yield* Effect.flip(client.send({ address: "http://127.0.0.1:1/v1/rpc/x", endpoint: "ns.inline.hub" }, {
        control: { id: requestId, request_type: "single_in", response_type: "many_out", connection_info: pending.connectionInfo },
        payload: {},
        headers: {}
      }))
      expect(error).toMatchObject({ _tag: "TransportConnectionError", reason: "ConnectFailed" })
      pending.close()
      // An id nobody opened is refused before sending.
      const unknown = yield* Effect.flip(client.send({ address: "http://127.0.0.1:1/v1/rpc/x", endpoint: "ns.inline.hub" }, {
        control: { id: "nope", request_type: "single_in", response_type: "many_out", connection_info: pending.connectionInfo },
        payload: {},
        headers: {}
      }))
      expect(unknown).toMatchObject({ _tag: "TransportProtocolError", reason: "BadPayload" })
    }).pipe(Effect.provide(
      TransportRegistry.layerFromConfig.pipe(
        Layer.provideMerge(TransportConfig.layerFromRecord({ ...baseEnv, DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http" }))
      )
    )))
})
