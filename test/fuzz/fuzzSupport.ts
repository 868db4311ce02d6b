/**
 * What the decoder fuzz tests (test/fuzz/*.fuzz.test.ts) share: arbitraries for byte streams cut
 * into random chunks, a generic driver for the `IncrementalDecoder` shape (FrameAssembler,
 * TcpRequestFrame, TcpAck), the "no throw outside the typed channel" check, and a bounded measure
 * of `process.memoryUsage().arrayBuffers` growth.
 *
 * Independent of the code under test: nothing here decodes.
 */
import * as fc from "fast-check"
import { expect } from "vitest"
import { ProtocolParseError } from "../../src/protocol/ProtocolError.ts"

/** fast-check runs per property: enough to find edge cases, small enough for ~20 s per file on a loaded 2-vCPU box. */
export const RUNS = 300

/** `parts` joined in one new array. */
export const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}

export const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s)

/** Splits `bytes` at the given cut points (taken modulo its length + 1, sorted); chunks may be empty. */
export const splitAt = (bytes: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = cuts.map((c) => c % (bytes.length + 1)).sort((a, b) => a - b)
  const out: Array<Uint8Array> = []
  let prev = 0
  for (const p of points) {
    out.push(bytes.subarray(prev, p))
    prev = p
  }
  out.push(bytes.subarray(prev))
  return out
}

/** Cut points for `splitAt`: up to 12 arbitrary offsets. */
export const cutsArb: fc.Arbitrary<Array<number>> = fc.array(fc.nat({ max: 1 << 20 }), { maxLength: 12 })

/** Random bytes up to `maxLength` (default 512), biased towards small values (lengths that look plausible). */
export const bytesArb = (maxLength = 512): fc.Arbitrary<Uint8Array> =>
  fc.oneof(
    fc.uint8Array({ maxLength }),
    fc.uint8Array({ maxLength, max: 3 }),
    fc.array(fc.constantFrom(0, 1, 0xff, 0x7b, 0x22, 0x0a, 0x0d, 0x3a), { maxLength }).map((a) => Uint8Array.from(a))
  )

/**
 * Calls `f`; fails the test, naming the input, if it throws anything. Returns what `f` returned.
 * This is the "nothing throws outside the typed error channel" check of decoders that return
 * `ProtocolParseError` values.
 */
export const noThrow = <A>(what: string, f: () => A): A => {
  try {
    return f()
  } catch (e) {
    throw new Error(`${what} threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`, { cause: e })
  }
}

/** The method set of the incremental decoders (protocol/FrameAssembler.ts `IncrementalDecoder`). */
export interface Incremental<H> {
  decode(chunk: Uint8Array, handler: H): ProtocolParseError | undefined
  bytesDecoded(): number
  bufferedBytes(): number
  isIdle(): boolean
  failure(): ProtocolParseError | undefined
}

/**
 * Feeds `chunks` to `decoder` and checks, after every chunk: no throw; the result is undefined or a
 * `ProtocolParseError`; once failed, every later call returns the same error; never more than
 * `max` bytes held (a partial frame is never buffered beyond the maximum message size).
 * Returns the first error, or undefined.
 */
export const feedChecked = <H>(
  decoder: Incremental<H>,
  chunks: ReadonlyArray<Uint8Array>,
  handler: H,
  max: number
): ProtocolParseError | undefined => {
  let first: ProtocolParseError | undefined
  for (const chunk of chunks) {
    const r = noThrow("decode", () => decoder.decode(chunk, handler))
    if (r !== undefined) expect(r).toBeInstanceOf(ProtocolParseError)
    if (first !== undefined) expect(r).toBe(first)
    first ??= r
    expect(decoder.bufferedBytes()).toBeLessThanOrEqual(max)
  }
  if (first !== undefined) {
    expect(decoder.failure()).toBe(first)
    expect(decoder.decode(new Uint8Array([1, 2, 3]), handler)).toBe(first)
  }
  return first
}

/**
 * Growth of `process.memoryUsage().arrayBuffers` while `f` runs, keeping whatever `f` returns
 * alive until measured (so a buffer it allocated and holds is counted). Without `--expose-gc`
 * garbage from before can only make the figure smaller, never larger: a bound on it is sound.
 */
export const arrayBufferGrowth = <A>(f: () => A): { readonly growth: number; readonly result: A } => {
  const before = process.memoryUsage().arrayBuffers
  const result = f()
  const growth = process.memoryUsage().arrayBuffers - before
  return { growth, result }
}

/** A 64-bit big-endian length field for a claim (prefix builders). */
export const putU64 = (out: Uint8Array, o: number, v: bigint): void => {
  new DataView(out.buffer, out.byteOffset, out.byteLength).setBigUint64(o, v)
}

/** Claims far beyond any maximum: up to 2^64 - 1, with the edge values always in the mix. */
export const hugeU64Arb: fc.Arbitrary<bigint> = fc.oneof(
  fc.constantFrom(2n ** 32n, 2n ** 32n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n, 4n * 1024n ** 3n),
  fc.bigInt({ min: 1n << 27n, max: 2n ** 64n - 1n })
)

/** JSON values as they come back from JSON text (no -0, no undefined in arrays). */
export const normJson = (v: unknown): unknown => JSON.parse(JSON.stringify(v))
