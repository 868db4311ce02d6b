/**
 * The built-in token-streaming handler that `demo` and `worker` serve: it splits a prompt
 * into words and streams them back as tokens, optionally with a delay between tokens.
 *
 * Its requests are decoded by `TokenRequestSchema` before it runs (serve it with
 * `requestSchema`): a request outside `tokenLimits` fails in the prologue with a `HandlerError`
 * that names the field and its bound, so no request can make the worker run out of memory.
 * It writes in batches and waits on `emit.ready` between them, so a slow router holds it back.
 */
import { Effect, Schema } from "effect"
import type { EmitHandler } from "../Endpoint.ts"
import type { ResponseWriteError } from "../TransportError.ts"

/** The bounds of the request fields. */
export const tokenLimits = {
  /** Longest prompt, in characters. */
  promptChars: 65_536,
  maxTokens: 100_000,
  /** Longest delay between tokens, in ms. */
  delayMs: 10_000,
  /** Largest `token_size`, in characters. */
  tokenSize: 65_536
} as const

const intField = (name: string, min: number, max: number) => {
  const message = `${name} must be an integer from ${min} to ${max}`
  return Schema.optionalKey(
    Schema.Number.annotate({ message }).check(Schema.isInt({ message }), Schema.isBetween({ minimum: min, maximum: max }, { message }))
  )
}

const promptMessage = `prompt must be a string of at most ${tokenLimits.promptChars} characters`

/** Decodes a request to the built-in handler; each failure names the field and its bound. */
export const TokenRequestSchema = Schema.Struct({
  prompt: Schema.optionalKey(
    Schema.String.annotate({ message: promptMessage }).check(Schema.isMaxLength(tokenLimits.promptChars, { message: promptMessage }))
  ),
  max_tokens: intField("max_tokens", 1, tokenLimits.maxTokens),
  delay_ms: intField("delay_ms", 0, tokenLimits.delayMs),
  token_size: intField("token_size", 1, tokenLimits.tokenSize)
}).annotate({ message: "the request must be a JSON object, e.g. {\"prompt\":\"hello world\"}" })

/** A request to the built-in handler (every field optional). */
export type TokenRequest = typeof TokenRequestSchema.Type

/** The request fields, one line each, as `worker --help` and the README show them. */
export const tokenRequestFields: ReadonlyArray<readonly [field: string, doc: string]> = [
  ["prompt", `string, at most ${tokenLimits.promptChars} characters: its words are the tokens (default: a ten-word sentence)`],
  ["max_tokens", `integer 1..${tokenLimits.maxTokens}: tokens to stream, the words cycled (default: one per word)`],
  ["delay_ms", `integer 0..${tokenLimits.delayMs}: delay between tokens in ms (default 0)`],
  ["token_size", `integer 1..${tokenLimits.tokenSize}: every token is this many "x" instead of a word (benchmarks)`]
]

/** One streamed token. */
export interface TokenResponse {
  readonly index: number
  readonly token: string
}

const defaultWords = "the quick brown fox jumps over the lazy dog again".split(" ")

/** Bytes of tokens written per batch before waiting on `emit.ready`. */
const BATCH_BYTES = 64 * 1024
const MAX_BATCH_ITEMS = 256

/**
 * Streams `max_tokens` tokens taken from the prompt's words (cycled), emit-style. It trusts its
 * request to be within `tokenLimits` (serve it with `requestSchema: TokenRequestSchema`).
 */
export const tokenHandler: EmitHandler<TokenRequest, TokenResponse, ResponseWriteError> = (request, _context, emit) => {
  const prompt = typeof request?.prompt === "string" ? request.prompt.trim() : ""
  const words: Array<string> = prompt !== "" ? prompt.split(/\s+/) : [...defaultWords]
  const count = request?.max_tokens ?? words.length
  const delay = request?.delay_ms ?? 0
  if (request?.token_size !== undefined) words.splice(0, words.length, "x".repeat(request.token_size))
  const tokenOf = (i: number): TokenResponse => ({ index: i, token: words[i % words.length]! })

  if (delay > 0) {
    return Effect.gen(function*() {
      for (let i = 0; i < count; i++) {
        yield* emit(tokenOf(i))
        yield* Effect.sleep(delay)
      }
    })
  }
  const longest = words.reduce((n, w) => Math.max(n, w.length), 1)
  const perBatch = Math.max(1, Math.min(MAX_BATCH_ITEMS, Math.floor(BATCH_BYTES / longest)))
  const batchFrom = (start: number): Array<TokenResponse> => {
    const batch: Array<TokenResponse> = []
    for (let i = start; i < Math.min(count, start + perBatch); i++) batch.push(tokenOf(i))
    return batch
  }
  // the common case, a short answer: one write, no fiber
  if (count <= perBatch) return Effect.sync(() => void emit.all(batchFrom(0)))
  return Effect.gen(function*() {
    for (let start = 0; start < count; start += perBatch) {
      yield* emit.all(batchFrom(start))
      yield* emit.ready
    }
  })
}
