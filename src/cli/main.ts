/**
 * The entry of the `transport-registry` program: tunes V8 for a long-running router or worker
 * (`NodeTuning.disableAllocationSitePretenuring`), then loads the program (`program.ts`).
 *
 * Why the program is loaded only now: the setting must be in place before the modules are even
 * loaded, not only before they run. Loading them (Node's module loader, the TypeScript stripping
 * when run from the sources, Effect's and our modules' top-level code) is where V8 decides to
 * pretenure allocation sites, Node's own among them; decided then, they keep handing each request
 * objects born old. Counted with `scripts/instruction-count.sh` (the full TCP mode's worker at
 * one call in flight): with the setting made by a module imported ahead of the others, garbage
 * collection took 44,000 instructions a call; made before the loading, 8,600 (docs/performance.md,
 * "Ninth session").
 */
import { disableAllocationSitePretenuring } from "../NodeTuning.ts"

disableAllocationSitePretenuring()
await import(new URL(`./program${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url).href)
