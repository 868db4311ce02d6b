/**
 * Process-wide V8 settings that suit a long-running router or worker process, for applications
 * to opt in to. The library never changes them by itself; the `transport-registry` program calls
 * `disableAllocationSitePretenuring` for each of its processes.
 */
import * as v8 from "node:v8"

/**
 * Turns off V8's allocation-site pretenuring (`--no-allocation-site-pretenuring`) for the rest of
 * the process's life. Call it once, before the application's modules are loaded: from a small
 * entry module that calls it and then `await import(...)`s the application (as this program's
 * `src/cli/main.ts` does), or pass `--no-allocation-site-pretenuring` to node. Calling it at the
 * top of a module that imports Effect is too late: every import is loaded and evaluated first,
 * and V8 decides what to pretenure while that happens (the full TCP mode's worker at one call in
 * flight: garbage collection 44,000 instructions a call set that way, 8,500 set before the
 * loading; docs/performance.md, "Ninth session"). Calling it again changes nothing.
 *
 * Why: V8 allocates objects directly in the old generation from an allocation site whose early
 * objects mostly survived a young-generation collection. While a process starts, some of the Effect
 * runtime's sites (the overlay a `Context.add` makes, for one) make long-lived objects, so V8
 * pretenures them; afterwards the same sites make a few short-lived objects per request (a
 * request's log annotations are such an `add`), born old, which keep the request's other objects
 * alive through every scavenge until the next full collection. Measured
 * on the full TCP mode's worker at 64 in flight (docs/performance.md, "Garbage collection"): 12%
 * of the young generation survived each scavenge (11-25 ms pauses plus helper threads, every
 * ~200 ms), CPU 21-25 µs per request; with this call, 0% and 15-19 µs, and its peak RSS 420 -> 310 MB.
 *
 * What it costs: an application whose own objects are long-lived from their first allocation
 * (large caches built at start) may see more young-generation copying. Measure the process with
 * and without it under its own load: `node --trace-gc-nvp` prints, per young-generation
 * collection, the pause and `new_space_survive_rate_` (near 0% is what a request path should
 * keep).
 */
export const disableAllocationSitePretenuring = (): void => {
  v8.setFlagsFromString("--no-allocation-site-pretenuring")
}
