/**
 * Big-endian integer reads and writes on byte arrays, shared by the frame codecs. No checks:
 * callers pass offsets inside the array.
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
