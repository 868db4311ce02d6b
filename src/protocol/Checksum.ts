/**
 * The TwoPartCodec checksum: XXH3-64 (seed 0) over `header ‖ body` (PROTOCOL.md section 1).
 *
 * Backed by the native `@node-rs/xxhash` binding, which npm installs as a prebuilt binary for
 * the platform (an optional dependency of that package; nothing is compiled or downloaded at
 * install time). The binding is loaded lazily, on the first checksum actually computed:
 * Dynamo's release builds send checksum 0, so a process that never meets a non-zero checksum
 * never loads native code, and a platform without a prebuilt binary still encodes and decodes
 * every unchecked frame.
 *
 * Does not: frame, compare or decide anything; see TwoPartCodec for that.
 */
import { createRequire } from "node:module"

type XxHashModule = typeof import("@node-rs/xxhash")

let xxh3_64_native: ((input: Uint8Array) => bigint) | undefined

const load = (): ((input: Uint8Array) => bigint) => {
  if (xxh3_64_native === undefined) {
    const require = createRequire(import.meta.url)
    let mod: XxHashModule
    try {
      mod = require("@node-rs/xxhash") as XxHashModule
    } catch (cause) {
      throw new Error("xxh3_64: cannot load the native @node-rs/xxhash binding for this platform", { cause })
    }
    const fn = mod.xxh3.xxh64
    xxh3_64_native = (input) => fn(input)
  }
  return xxh3_64_native
}

/**
 * XXH3-64 with seed 0 of `bytes`, as an unsigned 64-bit bigint.
 * Throws only if the native binding cannot be loaded on this platform.
 */
export const xxh3_64 = (bytes: Uint8Array): bigint => load()(bytes)
