/**
 * A streamed HTTP/2 response of the pure HTTP mode (`StreamedResponse.ts`) waits for trailers and
 * sends none (node ends it with an empty DATA frame carrying END_STREAM): its last write completes
 * before the stream closes, so node builds no `ERR_STREAM_DESTROYED` per response. It did for
 * every one: about 36,000 instructions of the SSE worker's 260,000. Counted in a child process
 * that can see node's internals (`support/streamDestroyedCount.ts`).
 */
import { describe, expect, it } from "@effect/vitest"
import { execFile } from "node:child_process"

const count = (env: Record<string, string>, calls: number) =>
  new Promise<{ control: number; items: number; built: number }>((resolve, reject) => {
    execFile(
      process.execPath,
      ["--expose-internals", "--experimental-strip-types", "--no-warnings", "test/support/streamDestroyedCount.ts", JSON.stringify(env), String(calls)],
      { timeout: 60_000 },
      (error, stdout, stderr) => (error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(JSON.parse(stdout.trim().split("\n").at(-1)!)))
    )
  })

describe("a streamed HTTP/2 response builds no ERR_STREAM_DESTROYED", () => {
  for (const format of ["sse", "ndjson", "binary"]) {
    it(`pure HTTP mode, ${format} over h2c: 40 calls, every item, no error built`, async () => {
      const r = await count({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_STREAM_FORMAT: format }, 40)
      // the control: a write after destroy() is counted
      expect(r.control).toBe(1)
      expect(r.items).toBe(120)
      expect(r.built).toBe(0)
    }, 60_000)
  }
})
