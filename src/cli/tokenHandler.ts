/**
 * The built-in token-streaming handler that `demo` and `worker` serve: it splits a prompt
 * into words and streams them back as tokens, optionally with a delay between tokens.
 */
import { Effect } from "effect"
import type { EmitHandler } from "../Endpoint.ts"

/** A request to the built-in handler. */
export interface TokenRequest {
  readonly prompt?: string
  /** How many tokens to stream (default: one per prompt word, or 10). */
  readonly max_tokens?: number
  /** Delay between tokens in ms (default 0). */
  readonly delay_ms?: number
  /** When set, every token is this many "x" characters instead of a prompt word (benchmarks). */
  readonly token_size?: number
}

/** One streamed token. */
export interface TokenResponse {
  readonly index: number
  readonly token: string
}

const defaultWords = "the quick brown fox jumps over the lazy dog again".split(" ")

/** Streams `max_tokens` tokens taken from the prompt's words (cycled), emit-style. */
export const tokenHandler: EmitHandler<TokenRequest, TokenResponse> = (request, _context, emit) => {
  const words: Array<string> = typeof request?.prompt === "string" && request.prompt.trim() !== ""
    ? request.prompt.trim().split(/\s+/)
    : [...defaultWords]
  const count = Number.isInteger(request?.max_tokens) && request.max_tokens! > 0 ? request.max_tokens! : words.length
  const delay = typeof request?.delay_ms === "number" && request.delay_ms > 0 ? request.delay_ms : 0
  if (Number.isInteger(request?.token_size) && request.token_size! > 0) {
    const token = "x".repeat(Math.min(request.token_size!, 1 << 20))
    words.splice(0, words.length, token)
  }
  if (delay === 0) {
    return Effect.sync(() => {
      const batch: Array<TokenResponse> = []
      for (let i = 0; i < count; i++) batch.push({ index: i, token: words[i % words.length]! })
      emit.all(batch)
    })
  }
  return Effect.gen(function*() {
    for (let i = 0; i < count; i++) {
      emit({ index: i, token: words[i % words.length]! })
      yield* Effect.sleep(delay)
    }
  })
}
