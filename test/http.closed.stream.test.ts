/**
 * A closed HTTP/2 stream keeps none of our listeners, on the router or on the worker
 * (ClosedStream.ts): node:http2 keeps a closed stream reachable across young garbage collections,
 * and whatever its listeners reach with it. Each stream is caught as node creates it (the
 * `http2.client.stream.created` and `http2.server.stream.created` diagnostics channels); once it
 * has closed, only node's own listeners are left, plus one shared `error` listener, and a late
 * `error` does not throw.
 */
import { describe, expect, it } from "@effect/vitest"
import * as dc from "node:diagnostics_channel"
import * as http2 from "node:http2"
import type { AddressInfo } from "node:net"
import { Effect, Stream } from "effect"
import * as Endpoint from "../src/Endpoint.ts"
import type { RequestMessage } from "../src/RequestPlane.ts"
import * as HttpRequestClient from "../src/transport/http/HttpRequestClient.ts"
import { httpHttpSse, httpTcpPooled } from "./support/stacks.ts"

const EVENTS = ["response", "data", "end", "close", "drain", "error"] as const

/** The names of a stream's listeners, by event. */
const listenerNames = (stream: http2.Http2Stream): Record<string, Array<string>> =>
  Object.fromEntries(EVENTS.map((e) => [e, stream.listeners(e).map((f) => f.name)]))

/** Catches every stream node creates on `side` while `f` runs. */
const catchStreams = async <A>(side: "client" | "server", f: (caught: Array<http2.Http2Stream>) => Promise<A>): Promise<A> => {
  const caught: Array<http2.Http2Stream> = []
  const onCreated = (message: unknown) => void caught.push((message as { stream: http2.Http2Stream }).stream)
  dc.subscribe(`http2.${side}.stream.created`, onCreated)
  try {
    return await f(caught)
  } finally {
    dc.unsubscribe(`http2.${side}.stream.created`, onCreated)
  }
}

const waitClosed = async (caught: ReadonlyArray<http2.Http2Stream>, count: number) => {
  for (const end = Date.now() + 5000; Date.now() < end;) {
    if (caught.length >= count && caught.every((s) => s.closed)) break
    await new Promise((r) => setTimeout(r, 10))
  }
  // `close` listeners run in one emit; the check comes after it.
  await new Promise((r) => setImmediate(r))
  expect(caught.length).toBe(count)
  for (const s of caught) expect(s.closed).toBe(true)
}

/**
 * Each closed stream holds only node:http2's own listeners (its internal methods, named after
 * their symbol keys: "[kMaybeDestroy]") and the shared `error` listener that swallows a late error.
 */
const expectLetGo = (caught: ReadonlyArray<http2.Http2Stream>) => {
  for (const stream of caught) {
    const names = listenerNames(stream)
    const { error, ...others } = names
    for (const [event, list] of Object.entries(others)) {
      expect({ event, foreign: list.filter((n) => !n.startsWith("[")) }).toEqual({ event, foreign: [] })
    }
    expect(error!.length).toBeGreaterThanOrEqual(1)
    expect(error!.filter((n) => n !== "ignoreError")).toEqual([])
    expect(() => stream.emit("error", new Error("late"))).not.toThrow()
  }
}

const message = (i: number): RequestMessage => ({
  control: { id: `req-${i}`, request_type: "single_in", response_type: "many_out", payload_codec: "json", connection_info: { transport: "tcp_server", info: "{}" } },
  payload: i,
  headers: {}
})

describe("closed HTTP/2 streams let go of the router's listeners", () => {
  it("request plane: after a 202, a 404 with its body, and a reset", async () => {
    const server = http2.createServer()
    server.on("stream", (stream, headers) => {
      stream.on("error", () => {})
      stream.resume()
      stream.on("end", () => {
        const path = String(headers[":path"])
        if (path.endsWith("/ok")) stream.respond({ ":status": 202 }, { endStream: true })
        else if (path.endsWith("/missing")) {
          stream.respond({ ":status": 404, "content-type": "application/json" })
          stream.end(JSON.stringify({ error: "no such endpoint" }))
        } else stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR)
      })
    })
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/rpc`
    try {
      const acks = await catchStreams("client", async (caught) => {
        const acks = await Effect.runPromise(
          Effect.scoped(
            Effect.gen(function*() {
              const client = yield* HttpRequestClient.make({ timeoutMs: 5000, maxMessageSize: 1 << 20 })
              return yield* Effect.promise(() =>
                Promise.all(["ok", "missing", "reset"].map((path, i) =>
                  new Promise<string>((resolve) => {
                    client.sendCallback!({ address: `${base}/${path}`, endpoint: path }, message(i), (e) => resolve(e === undefined ? "acked" : e._tag))
                  })
                ))
              ).pipe(Effect.tap(() => Effect.promise(() => waitClosed(caught, 3))))
            })
          )
        )
        expectLetGo(caught)
        return acks
      })
      expect(acks).toEqual(["acked", "EndpointNotFound", "TransportConnectionError"])
    } finally {
      server.close()
    }
  })

  /** Three calls of a served endpoint that emits 1, 2, 3: the router's streams and the worker's, let go. */
  const threeCalls = (name: string) =>
    Effect.gen(function*() {
      yield* Endpoint.serveEmit(name, (_req: unknown, _ctx, emit: Endpoint.Emit<number>) => emit.all([1, 2, 3]))
      const client = yield* Endpoint.client<unknown, number>(name)
      while (client.instances().length === 0) yield* Effect.sleep(10)
      const results = yield* Effect.promise(() =>
        catchStreams("server", (servers) =>
          catchStreams("client", async (clients) => {
            const results = await Promise.all([0, 1, 2].map(() => Effect.runPromise(Stream.runCollect(client.generate({})))))
            await waitClosed(clients, 3)
            await waitClosed(servers, 3)
            expectLetGo(clients)
            expectLetGo(servers)
            return results
          }))
      )
      expect(results.map((r) => [...r])).toEqual([[1, 2, 3], [1, 2, 3], [1, 2, 3]])
    })

  it.live("pure HTTP mode: after whole SSE streams", () => threeCalls("closed.stream.sse").pipe(Effect.scoped, Effect.provide(httpHttpSse.layer)))

  it.live("HTTP request plane with pooled call-home: after acked requests", () =>
    threeCalls("closed.stream.pooled").pipe(Effect.scoped, Effect.provide(httpTcpPooled.layer)))
})
