/**
 * Big-endian integer reads and writes on byte arrays, shared by the frame codecs, and `alloc`,
 * the zero-filled byte arrays they encode into. No checks: callers pass offsets inside the array.
 */

/** An empty byte array, handed out for absent frame parts (never written). */
export const EMPTY: Uint8Array = new Uint8Array(0)
/** 2^32. */
export const TWO_32 = 4294967296

/** The u32 at `b[o..o+4]`. */
export const u32 = (b: Uint8Array, o: number): number =>
  ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0

/** Writes `v` (a u32) at `b[o..o+4]`. */
export const putU32 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = v >>> 24
  b[o + 1] = (v >>> 16) & 0xff
  b[o + 2] = (v >>> 8) & 0xff
  b[o + 3] = v & 0xff
}

/** Arrays up to this size are V8's own on-heap arrays: cheaper than a view (`alloc`). */
const ON_HEAP_MAX = 64
/** Size of the slabs `alloc` carves arrays from. */
const SLAB_SIZE = 16 * 1024
/** Arrays above this size get memory of their own (`alloc`). */
const SLAB_MAX = 2048

let slab = new ArrayBuffer(SLAB_SIZE)
let slabUsed = SLAB_SIZE

/**
 * A zero-filled `Uint8Array` of `n` bytes, as `new Uint8Array(n)` gives, but cheaper on the hot
 * paths: measured on this project's VM, `new Uint8Array(n)` above 64 bytes costs 0.3-2 us (an
 * off-heap, zero-filled allocation of its own, and the GC's tracking of it) against tens of ns
 * here. Arrays of 65 to 2048 bytes are views into a shared 16 KiB slab whose bytes are each
 * handed out once (so they are zero, as a fresh `ArrayBuffer` is): their `byteOffset` is not 0
 * and their `buffer` is the slab (no caller may use `.buffer` as if it were the array's own), and
 * a live view keeps its slab alive. Smaller and larger arrays are plain `new Uint8Array(n)`.
 */
export const alloc = (n: number): Uint8Array => {
  if (n <= ON_HEAP_MAX || n > SLAB_MAX) return new Uint8Array(n)
  if (slabUsed + n > SLAB_SIZE) {
    slab = new ArrayBuffer(SLAB_SIZE)
    slabUsed = 0
  }
  const out = new Uint8Array(slab, slabUsed, n)
  slabUsed += (n + 7) & ~7
  return out
}
