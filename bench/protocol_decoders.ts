// The protocol core's incremental decoders (TwoPartCodec and response mux v1), in one process,
// beside a raw baseline in the same run: a bare length-prefix splitter with no validation, no
// checksum and no views beyond the payload (the floor of any decoder of these formats).
//
// Three shapes, as the transports see them:
//   - burst:    10 data frames of 50 B in one chunk (one call-home burst, the common case);
//   - spanning: 1 KiB frames cut into 100-byte chunks (every frame spans chunks);
//   - mixed:    64 KiB chunks of 50 B frames cut at arbitrary points.
// Each round decodes the same bytes; the table prints ns per frame at p50/p95/p99 over rounds,
// and frames/s at the median. Run: npm run bench:protocol [-- rounds]
import { encodeFrame, makeDecoder } from "../src/protocol/TwoPartCodec.ts"
import { encodeMuxFrame, makeMuxDecoder, MuxKind } from "../src/protocol/MuxCodec.ts"

const ROUNDS = Number(process.argv[2] ?? 60)
const ITEM = new TextEncoder().encode(JSON.stringify({ data: { token: "x".repeat(20) }, complete_final: false }).padEnd(50))
const STREAM_ID = new Uint8Array(16).fill(7)
// Extra fields are ignored by the decoders (older versions took them as error labels).
const OPTIONS: any = { maxMessageSize: 32 * 1024 * 1024, target: "bench", transport: "tcp" }

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}
const cut = (bytes: Uint8Array, size: number): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  for (let o = 0; o < bytes.length; o += size) out.push(bytes.subarray(o, Math.min(bytes.length, o + size)))
  return out
}
const cutAt = (bytes: Uint8Array, seed: number, mean: number): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  let s = seed
  let o = 0
  while (o < bytes.length) {
    s = (s * 1103515245 + 12345) & 0x7fffffff
    const n = 1 + (s % (2 * mean))
    out.push(bytes.subarray(o, Math.min(bytes.length, o + n)))
    o += n
  }
  return out
}

interface Shape {
  readonly name: string
  readonly chunks: Array<Uint8Array>
  readonly frames: number
}
const shapes = (frame: (body: Uint8Array) => Uint8Array): Array<Shape> => {
  const burst = concat(Array.from({ length: 10 }, () => frame(ITEM)))
  const big = frame(new Uint8Array(1024).fill(65))
  const many = concat(Array.from({ length: 20_000 }, () => frame(ITEM)))
  return [
    { name: "burst", chunks: Array.from({ length: 2000 }, () => burst), frames: 20_000 },
    { name: "spanning", chunks: Array.from({ length: 400 }, () => cut(big, 100)).flat(), frames: 400 },
    { name: "mixed", chunks: cutAt(many, 42, 65536), frames: 20_000 }
  ]
}

type Decode = (chunks: ReadonlyArray<Uint8Array>) => number

const twoPart: Decode = (chunks) => {
  const d = makeDecoder(OPTIONS)
  let n = 0
  const on = (_h: Uint8Array, b: Uint8Array) => {
    n += b.length > 0 ? 1 : 0
  }
  for (const c of chunks) if (d.decode(c, on) !== undefined) throw new Error("decode failed")
  return n
}
const mux: Decode = (chunks) => {
  const d = makeMuxDecoder(OPTIONS)
  let n = 0
  const on = (_k: number, _id: Uint8Array, p: Uint8Array) => {
    n += p.length > 0 ? 1 : 0
  }
  for (const c of chunks) if (d.decode(c, on) !== undefined) throw new Error("decode failed")
  return n
}
// The floor: a 24-byte prefix whose first u32 (mux) or second u64's low word (TwoPart) is the length.
const raw = (lengthAt: number, restOf: (p: Uint8Array, o: number) => number): Decode => (chunks) => {
  const prefix = new Uint8Array(24)
  let fill = 0
  let rest: Uint8Array | undefined
  let restFill = 0
  let n = 0
  for (const c of chunks) {
    let o = 0
    while (o < c.length) {
      if (rest !== undefined) {
        const k = Math.min(rest.length - restFill, c.length - o)
        rest.set(c.subarray(o, o + k), restFill)
        restFill += k
        o += k
        if (restFill < rest.length) break
        rest = undefined
        n++
        continue
      }
      const k = Math.min(24 - fill, c.length - o)
      prefix.set(c.subarray(o, o + k), fill)
      fill += k
      o += k
      if (fill < 24) break
      fill = 0
      const len = restOf(prefix, lengthAt)
      if (c.length - o >= len) {
        c.subarray(o, o + len)
        o += len
        n++
      } else {
        rest = new Uint8Array(len)
        rest.set(c.subarray(o), 0)
        restFill = c.length - o
        o = c.length
      }
    }
  }
  return n
}
const u32 = (b: Uint8Array, o: number) => ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0
const rawTwoPart = raw(0, (p) => u32(p, 4) + u32(p, 12))
const rawMux = raw(0, (p) => u32(p, 0))

const pct = (xs: Array<number>, q: number) => xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!

const cases: Array<{ label: string; decode: Decode; shape: Shape }> = []
for (const s of shapes((b) => encodeFrame(undefined, b))) {
  cases.push({ label: `twopart ${s.name}`, decode: twoPart, shape: s }, { label: `raw twopart ${s.name}`, decode: rawTwoPart, shape: s })
}
for (const s of shapes((b) => encodeMuxFrame(MuxKind.Data, STREAM_ID, b))) {
  cases.push({ label: `mux ${s.name}`, decode: mux, shape: s }, { label: `raw mux ${s.name}`, decode: rawMux, shape: s })
}

// Warm up, then alternate the cases round by round so drift hits them all alike.
for (const c of cases) for (let i = 0; i < 5; i++) c.decode(c.shape.chunks)
const samples = new Map<string, Array<number>>(cases.map((c) => [c.label, []]))
for (let r = 0; r < ROUNDS; r++) {
  for (const c of cases) {
    const t0 = process.hrtime.bigint()
    const n = c.decode(c.shape.chunks)
    const ns = Number(process.hrtime.bigint() - t0)
    if (n !== c.shape.frames) throw new Error(`${c.label}: ${n} frames, expected ${c.shape.frames}`)
    samples.get(c.label)!.push(ns / n)
  }
}
console.log(`node ${process.version}, ${ROUNDS} rounds; ns per frame (lower is better); ratio = this decoder / raw at p50`)
console.log("case".padEnd(22) + "p50".padStart(9) + "p95".padStart(9) + "p99".padStart(9) + "frames/s".padStart(13) + "ratio".padStart(8))
for (const c of cases) {
  const xs = samples.get(c.label)!
  const p50 = pct(xs, 0.5)
  const rawLabel = c.label.startsWith("raw ") ? undefined : `raw ${c.label}`
  const ratio = rawLabel === undefined ? "" : (p50 / pct(samples.get(rawLabel)!, 0.5)).toFixed(2)
  console.log(
    c.label.padEnd(22) + p50.toFixed(1).padStart(9) + pct(xs, 0.95).toFixed(1).padStart(9) + pct(xs, 0.99).toFixed(1).padStart(9) +
      Math.round(1e9 / p50).toLocaleString("en-US").padStart(13) + ratio.padStart(8)
  )
}
