import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Schema, Stream } from "effect"
import { tokenHandler, tokenLimits, TokenRequestSchema } from "../src/cli/tokenHandler.ts"
import type { TokenResponse } from "../src/cli/tokenHandler.ts"
import * as Endpoint from "../src/Endpoint.ts"
import { memoryStack } from "./support/stack.ts"

const decode = Schema.decodeUnknownExit(TokenRequestSchema)
const problem = (request: unknown): string => {
  const exit = decode(request)
  if (Exit.isSuccess(exit)) throw new Error(`decoded: ${JSON.stringify(request)}`)
  return String((Cause.squash(exit.cause) as Error).message)
}

describe("the built-in handler's request schema", () => {
  it("accepts every field within its bounds, and no field at all", () => {
    expect(Exit.isSuccess(decode({}))).toBe(true)
    const at = { prompt: "x".repeat(tokenLimits.promptChars), max_tokens: tokenLimits.maxTokens, delay_ms: tokenLimits.delayMs, token_size: tokenLimits.tokenSize }
    expect(Exit.isSuccess(decode(at))).toBe(true)
  })

  it("names the field and its bound for each value out of bounds", () => {
    expect(problem({ max_tokens: 2_000_000 })).toContain(`max_tokens must be an integer from 1 to ${tokenLimits.maxTokens}`)
    expect(problem({ max_tokens: 0 })).toContain("max_tokens")
    expect(problem({ max_tokens: 1.5 })).toContain("max_tokens")
    expect(problem({ max_tokens: "5" })).toContain("max_tokens")
    expect(problem({ token_size: tokenLimits.tokenSize + 1 })).toContain(`token_size must be an integer from 1 to ${tokenLimits.tokenSize}`)
    expect(problem({ delay_ms: -1 })).toContain(`delay_ms must be an integer from 0 to ${tokenLimits.delayMs}`)
    expect(problem({ prompt: "x".repeat(tokenLimits.promptChars + 1) })).toContain(`at most ${tokenLimits.promptChars} characters`)
    expect(problem([1, 2])).toContain("JSON object")
  })
})

describe("the built-in handler", () => {
  it.effect("writes a long answer in bounded batches and waits on emit.ready between them", () =>
    Effect.gen(function*() {
      const batches: Array<number> = []
      let readyWaits = 0
      const emit = Object.assign(() => Exit.void, {
        all: (items: ReadonlyArray<TokenResponse>) => {
          batches.push(items.length)
          return Exit.void
        },
        ready: Effect.sync(() => {
          readyWaits++
        })
      })
      const context = { requestId: "r", endpoint: "a.b.c", instanceId: 1n, headers: {} }
      yield* tokenHandler({ max_tokens: 10_000 }, context, emit)
      expect(batches.reduce((a, b) => a + b, 0)).toBe(10_000)
      expect(Math.max(...batches)).toBeLessThanOrEqual(256)
      expect(readyWaits).toBeGreaterThanOrEqual(batches.length - 1)
      // big tokens: fewer per batch, so a batch stays near 64 KiB
      batches.length = 0
      yield* tokenHandler({ max_tokens: 10, token_size: 65_536 }, context, emit)
      expect(batches).toEqual(Array(10).fill(1))
    }))

  it.live("served with its schema, a request over a bound fails in the prologue with a HandlerError naming it", () =>
    Effect.gen(function*() {
      yield* Endpoint.serveEmit("cli.token.generate", tokenHandler, { requestSchema: TokenRequestSchema })
      const client = yield* Endpoint.client<unknown, TokenResponse>("cli.token.generate")
      const error = yield* Effect.flip(Stream.runCollect(client.generate({ max_tokens: 2_000_000 })))
      expect(error._tag).toBe("HandlerError")
      if (error._tag === "HandlerError") {
        expect(error.phase).toBe("prologue")
        expect(error.detail).toContain(`max_tokens must be an integer from 1 to ${tokenLimits.maxTokens}`)
      }
      const items = yield* Stream.runCollect(client.generate({ prompt: "a b c", max_tokens: 1000 }))
      expect(items.length).toBe(1000)
      expect(items[999]).toEqual({ index: 999, token: "a" })
    }).pipe(Effect.scoped, Effect.provide(memoryStack())))
})
