#!/usr/bin/env node
// The `transport-registry` command: runs the built CLI (dist/cli/main.js; `npm run build` makes
// it, and `prepack` runs the build, so an installed package always has it). Plain JavaScript that
// any Node can parse, so that on a Node older than `engines` (Effect 4's platform packages and
// undici declare >=22.19.0) the user reads which version is needed instead of a stack trace.
import { existsSync, readFileSync } from "node:fs"

const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"))
const required = pkg.engines.node
const minimum = /(\d+)\.(\d+)\.(\d+)/.exec(required).slice(1).map(Number)
const current = process.versions.node.split(".").map(Number)
const tooOld = current[0] !== minimum[0] ? current[0] < minimum[0] : current[1] !== minimum[1] ? current[1] < minimum[1] : current[2] < minimum[2]
if (tooOld) {
  process.stderr.write(
    `transport-registry needs Node.js ${required} (package.json "engines", from its dependencies ` +
      `@effect/platform-node and undici); this is Node.js ${process.versions.node} (${process.execPath}).\n`
  )
  process.exit(1)
}
const main = new URL("../dist/cli/main.js", import.meta.url)
if (!existsSync(main)) {
  process.stderr.write("transport-registry: dist/ is missing; run `npm run build` (or `npm run cli -- ...` on the sources)\n")
  process.exit(1)
}
await import(main.href)
