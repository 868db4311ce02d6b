import { describe, expect, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as http from "node:http"
import * as net from "node:net"
import { promisify } from "node:util"
import { Effect, Exit, Fiber, Stream } from "effect"
import type { StreamFormat } from "../src/protocol/HttpStreamFormat.ts"
import type { TransportError } from "../src/TransportError.ts"
import * as HttpResponseReader from "../src/transport/http/HttpResponseReader.ts"
import * as HttpResponseServer from "../src/transport/http/HttpResponseServer.ts"
import type { HttpResponseServerOptions } from "../src/transport/http/HttpResponseServer.ts"

const run = promisify(execFile)

const server = (overrides: Partial<HttpResponseServerOptions> = {}) =>
  HttpResponseServer.make({
    host: "127.0.0.1",
    port: 0,
    rootPath: "/v1/rpc/response",
    streamFormat: "sse",
    timeoutMs: 10_000,
    ...overrides
  })

const curl = (args: ReadonlyArray<string>) => Effect.promise(() => run("curl", ["-s", ...args]).then((r) => r.stdout))
const status = (url: string, extra: ReadonlyArray<string> = []) =>
  curl(["-o", "/dev/null", "-w", "%{http_code}", ...extra, url]).pipe(Effect.map((s) => s.trim()))

/** A promise of the writer's first disconnect. */
const disconnected = (writer: { onDisconnect: (f: (e: TransportError) => void) => void }) =>
  new Promise<TransportError>((resolve) => writer.onDisconnect(resolve))

describe("HTTP response server", () => {
  it.live("serves a subject once: 200 then 409; 404 unknown; 405 wrong method; 406 bad Accept", () =>
    Effect.gen(function*() {
      const s = yield* server()
      const { address, subject, writer } = yield* s.createResponseStream()
      expect(subject).toMatch(/^[0-9a-f]{32}$/)
      expect(address._tag).toBe("Http")
      expect(address.url).toMatch(new RegExp(`^http://127\\.0\\.0\\.1:\\d+/v1/rpc/response/${subject}$`))
      writer.send(1)
      writer.complete()
      // a wrong method and a bad Accept do not use the subject up
      expect(yield* status(address.url, ["-X", "POST"])).toBe("405")
      expect(yield* status(address.url, ["--http2-prior-knowledge", "-X", "DELETE"])).toBe("405")
      expect(yield* status(address.url, ["-H", "Accept: image/png"])).toBe("406")
      expect(yield* status(address.url)).toBe("200")
      expect(yield* status(address.url)).toBe("409")
      expect(yield* status(address.url, ["--http2-prior-knowledge"])).toBe("409")
      const base = address.url.slice(0, address.url.lastIndexOf("/"))
      expect(yield* status(`${base}/nope`)).toBe("404")
      expect(yield* status(`${base}/nope`, ["--http2-prior-knowledge"])).toBe("404")
      expect(yield* status(`${base.slice(0, base.lastIndexOf("/"))}/other/x`)).toBe("404")
    }))

  it.live("holds items written before attach and flushes them on attach; whenWritable past the bound", () =>
    Effect.gen(function*() {
      const s = yield* server({ maxHeldBytes: 64 })
      const { address, writer } = yield* s.createResponseStream()
      expect(writer.whenWritable!(() => {})).toBe(true)
      for (let i = 0; i < 10; i++) expect(writer.send({ i, pad: "x".repeat(20) })).toBe(Exit.void)
      let woke = false
      expect(writer.whenWritable!(() => (woke = true))).toBe(false)
      const items = yield* HttpResponseReader.attach(address.url, "ndjson").pipe(
        Stream.take(10),
        Stream.runCollect
      )
      expect(items.map((x) => (x as { i: number }).i)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
      expect(woke).toBe(true)
    }))

  it.live("a stream with no client times out: onDisconnect with TransportTimeoutError, subject gone", () =>
    Effect.gen(function*() {
      const s = yield* server({ timeoutMs: 100 })
      const { address, writer } = yield* s.createResponseStream()
      writer.send("early")
      const error = yield* Effect.promise(() => disconnected(writer))
      expect(error._tag).toBe("TransportTimeoutError")
      expect(error.reason).toBe("StreamTimeout")
      expect(yield* status(address.url)).toBe("404")
      expect(writer.send("late")).toBe(Exit.void) // dropped, never throws
      // a per-stream timeout overrides the server's
      const other = yield* s.createResponseStream({ timeoutMs: 60_000 })
      yield* Effect.sleep("200 millis")
      other.writer.complete()
      expect(yield* status(other.address.url)).toBe("200")
    }))

  it.live("a client that disconnects mid-stream fires onDisconnect, and nothing more is written", () =>
    Effect.gen(function*() {
      const s = yield* server()
      const { address, writer } = yield* s.createResponseStream()
      const gone = disconnected(writer)
      writer.send("first")
      // an HTTP/1.1 client that reads the first item, then closes its socket
      const firstChunk = yield* Effect.promise(() =>
        new Promise<string>((resolve) => {
          const req = http.get(address.url, { headers: { accept: "application/x-ndjson" } }, (res) => {
            res.once("data", (chunk: Buffer) => {
              resolve(chunk.toString())
              req.destroy()
            })
          })
          req.on("error", () => {})
        })
      )
      expect(firstChunk).toContain("first")
      const error = yield* Effect.promise(() => gone)
      expect(error._tag).toBe("TransportConnectionError")
      expect(error.reason).toBe("ConnectionClosed")
      expect(writer.send("after")).toBe(Exit.void)
      expect(writer.whenWritable!(() => {})).toBe(true) // over: nobody waits
      writer.complete()
      // and through the reader (h2c): interrupting the Stream cancels the HTTP/2 stream
      const second = yield* s.createResponseStream()
      const gone2 = disconnected(second.writer)
      second.writer.send(1)
      second.writer.send(2)
      expect(yield* HttpResponseReader.attach(second.address.url).pipe(Stream.take(1), Stream.runCollect)).toEqual([1])
      expect((yield* Effect.promise(() => gone2)).reason).toBe("ConnectionClosed")
    }))

  it.live("curl -N -H 'Accept: text/event-stream' watches a stream (HTTP/1.1 and h2c)", () =>
    Effect.gen(function*() {
      const s = yield* server({ streamFormat: "ndjson" })
      for (const extra of [[], ["--http2-prior-knowledge"]]) {
        const { address, writer } = yield* s.createResponseStream()
        writer.send({ token: "hello" })
        const out = yield* Effect.forkChild(curl(["-N", "-H", "Accept: text/event-stream", ...extra, address.url]))
        yield* Effect.sleep("100 millis")
        writer.sendAll([{ token: "world" }, { token: "!" }])
        writer.complete()
        const text = yield* Fiber.join(out)
        const data = text.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6))
        expect(data.slice(0, 3).map((d) => JSON.parse(d))).toEqual([{ token: "hello" }, { token: "world" }, { token: "!" }])
        expect(text).toContain("event: done")
      }
    }))

  it.live("curl with Accept: application/x-ndjson gets one JSON object per line", () =>
    Effect.gen(function*() {
      const s = yield* server()
      const { address, writer } = yield* s.createResponseStream()
      writer.sendAll([1, "two", { three: 3 }])
      writer.complete()
      const text = yield* curl(["-N", "-H", "Accept: application/x-ndjson", address.url])
      const lines = text.trim().split("\n").map((l) => JSON.parse(l))
      expect(lines.length).toBe(4)
      expect(lines.at(-1)).toEqual({ event: "done" })
      expect(JSON.stringify(lines.slice(0, 3))).toContain("\"two\"")
    }))

  it.live("sends an SSE heartbeat on an idle stream", () =>
    Effect.gen(function*() {
      const s = yield* server({ heartbeatMs: 50 })
      const { address, writer } = yield* s.createResponseStream()
      const out = yield* Effect.forkChild(curl(["-N", address.url]))
      yield* Effect.sleep("300 millis")
      writer.complete()
      const text = yield* Fiber.join(out)
      expect(text).toContain(": heartbeat")
    }))

  for (const format of ["sse", "ndjson", "binary", undefined] as ReadonlyArray<StreamFormat | undefined>) {
    it.live(`the reader gets every item over ${format ?? "the server's default"} format`, () =>
      Effect.gen(function*() {
        const s = yield* server({ streamFormat: "binary" })
        const { address, writer } = yield* s.createResponseStream()
        const items = [1, "a\nb", { nested: [true, null] }, "x".repeat(100_000)]
        writer.send(items[0])
        const collected = yield* Effect.forkChild(Stream.runCollect(HttpResponseReader.attach(address.url, format)))
        yield* Effect.sleep("50 millis")
        writer.sendAll(items.slice(1))
        writer.complete()
        expect(yield* Fiber.join(collected)).toEqual(items)
      }))
  }

  it.live("the reader: fail is a HandlerError, prologue error a prologue HandlerError, close without the end marker StreamEndedEarly", () =>
    Effect.gen(function*() {
      const s = yield* server()
      for (const format of ["sse", "ndjson", "binary"] as const) {
        const failed = yield* s.createResponseStream()
        failed.writer.send(1)
        failed.writer.fail("boom")
        const e1 = yield* Stream.runCollect(HttpResponseReader.attach(failed.address.url, format)).pipe(Effect.flip)
        expect(e1._tag).toBe("HandlerError")
        expect(e1.message).toContain("boom")

        const closed = yield* s.createResponseStream()
        const reading = yield* Effect.forkChild(Stream.runCollect(HttpResponseReader.attach(closed.address.url, format)).pipe(Effect.flip))
        yield* Effect.sleep("50 millis")
        closed.writer.send(1)
        closed.writer.close()
        const e2 = yield* Fiber.join(reading)
        expect(e2._tag).toBe("TransportConnectionError")
        expect((e2 as TransportError).reason).toBe("StreamEndedEarly")
      }
      const prologue = yield* s.createResponseStream()
      prologue.writer.prologue("no such model")
      const e3 = yield* Stream.runCollect(HttpResponseReader.attach(prologue.address.url, "sse")).pipe(Effect.flip)
      expect(e3._tag).toBe("HandlerError")
      expect(e3._tag === "HandlerError" && e3.phase).toBe("prologue")
      // a used subject (409) through the reader
      const e4 = yield* Stream.runCollect(HttpResponseReader.attach(prologue.address.url, "sse")).pipe(Effect.flip)
      expect(e4._tag).toBe("TransportProtocolError")
    }))

  it.live("closing the server's scope disconnects open streams", () =>
    Effect.gen(function*() {
      const writer = yield* Effect.scoped(Effect.gen(function*() {
        const s = yield* server()
        return (yield* s.createResponseStream()).writer
      }))
      const error = yield* Effect.promise(() => disconnected(writer))
      expect(error.reason).toBe("ConnectionClosed")
    }))

  it.live("the reader's wait for a silent server is bounded: a typed ConnectTimeout, and the socket is closed", () =>
    Effect.gen(function*() {
      const accepted: Array<net.Socket> = []
      const silent = net.createServer((socket) => {
        accepted.push(socket)
      })
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve))),
        () => Effect.sync(() => {
          for (const socket of accepted) socket.destroy()
          silent.close()
        })
      )
      const port = (silent.address() as net.AddressInfo).port
      const started = performance.now()
      const exit = yield* Effect.exit(
        Stream.runCollect(HttpResponseReader.attach(`http://127.0.0.1:${port}/v1/rpc/response/x`, "sse", { responseTimeoutMs: 300 }))
      )
      expect(performance.now() - started).toBeLessThan(2000)
      expect(Exit.isFailure(exit) && JSON.stringify(exit.cause)).toContain("ConnectTimeout")
      // The reader gave up its connection: the silent server sees it close.
      yield* Effect.promise(() => new Promise<void>((resolve) => {
        const socket = accepted[0]!
        if (socket.destroyed || socket.readableEnded) return resolve()
        socket.once("close", () => resolve())
        socket.resume()
      })).pipe(Effect.timeout(2000))
    }))
})
