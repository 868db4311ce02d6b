/**
 * A router's call cancelled before its ack, in a call-home mode, does not reset its HTTP/2
 * request stream: the request has already left whole, so a reset would save nothing, and each
 * reset counts against the worker's reset-flood guard on a session that other calls share
 * (issue 15). The stream ends with the worker's 202, which is read and dropped. Checked against a
 * node:http2 server that acks after 30 ms and counts the streams a client reset; and against one
 * that never acks, whose streams are reset at the ack deadline armed when each was sent.
 */
import * as http2 from "node:http2"
import type { AddressInfo } from "node:net"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { RequestMessage } from "../src/RequestPlane.ts"
import * as HttpRequestClient from "../src/transport/http/HttpRequestClient.ts"

const message = (i: number): RequestMessage => ({
  control: { id: `req-${i}`, request_type: "single_in", response_type: "many_out", payload_codec: "json", connection_info: { transport: "tcp_server", info: "{}" } },
  payload: i,
  headers: {}
})

describe("a call-home request cancelled before its ack", () => {
  let resets = 0
  let bodies = 0
  let closed = 0
  const server = http2.createServer()
  server.on("stream", (stream) => {
    stream.on("error", () => {})
    stream.on("aborted", () => void resets++)
    stream.on("close", () => {
      closed++
      if (stream.rstCode === http2.constants.NGHTTP2_CANCEL) resets++
    })
    stream.on("end", () => {
      bodies++
      setTimeout(() => {
        if (!stream.closed) stream.respond({ ":status": 202 }, { endStream: true })
      }, 30)
    })
    stream.resume()
  })
  let address = ""
  beforeAll(async () => {
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
    address = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/rpc/x`
  })
  afterAll(() => void server.close())

  it("leaves the stream to end with its ack: no reset reaches the worker, and no ack reaches the caller", async () => {
    const count = 300
    const acks = await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function*() {
          const client = yield* HttpRequestClient.make({ timeoutMs: 10_000, maxMessageSize: 1 << 20 })
          const acks: Array<unknown> = []
          for (let i = 0; i < count; i++) {
            const cancel = client.sendCallback!({ address, endpoint: "x" }, message(i), (e) => acks.push(e))
            cancel()
          }
          yield* Effect.promise(async () => {
            for (const end = Date.now() + 10_000; Date.now() < end && closed < count;) await new Promise((r) => setTimeout(r, 10))
          })
          return acks
        })
      )
    )
    expect(closed).toBe(count)
    expect(bodies).toBe(count)
    expect(resets).toBe(0)
    expect(acks).toEqual([])
  }, 20_000)

  it("resets the stream when no ack comes within the ack timeout counted from the send, and only then", async () => {
    // A worker that reads each request and never answers.
    let silentResets = 0
    let silentBodies = 0
    const silent = http2.createServer()
    silent.on("stream", (stream) => {
      stream.on("error", () => {})
      stream.on("close", () => {
        if (stream.rstCode === http2.constants.NGHTTP2_CANCEL) silentResets++
      })
      stream.on("end", () => void silentBodies++)
      stream.resume()
    })
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r))
    const silentAddress = `http://127.0.0.1:${(silent.address() as AddressInfo).port}/v1/rpc/x`
    const count = 50
    const timeoutMs = 300
    try {
      const seen = await Effect.runPromise(
        Effect.scoped(
          Effect.gen(function*() {
            const client = yield* HttpRequestClient.make({ timeoutMs, maxMessageSize: 1 << 20 })
            const acks: Array<unknown> = []
            const sentAt = Date.now()
            const cancels = Array.from({ length: count }, (_, i) =>
              client.sendCallback!({ address: silentAddress, endpoint: "x" }, message(i), (e) => acks.push(e)))
            // Cancelled late, at 2/3 of the timeout: every body has arrived, nothing is reset yet.
            yield* Effect.sleep(timeoutMs * 2 / 3)
            for (const cancel of cancels) cancel()
            const early = { bodies: silentBodies, resets: silentResets, elapsed: Date.now() - sentAt }
            yield* Effect.promise(async () => {
              for (const end = Date.now() + 5_000; Date.now() < end && silentResets < count;) await new Promise((r) => setTimeout(r, 10))
            })
            return { early, resets: silentResets, resetAfter: Date.now() - sentAt, acks }
          })
        )
      )
      expect(seen.early.elapsed).toBeLessThan(timeoutMs)
      expect(seen.early).toMatchObject({ bodies: count, resets: 0 })
      expect(seen.resets).toBe(count)
      // At the send's deadline, not a whole timeout after the cancel (that would be >= 500 ms).
      expect(seen.resetAfter).toBeGreaterThanOrEqual(timeoutMs)
      expect(seen.resetAfter).toBeLessThan(timeoutMs * 2 / 3 + timeoutMs)
      expect(seen.acks).toEqual([])
    } finally {
      silent.close()
    }
  }, 20_000)
})
