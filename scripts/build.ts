// The package build (`npm run build`; `prepack` runs it, so `npm pack` and `npm publish` ship a
// fresh dist/): tsc over src/ with tsconfig.build.json (ESM JavaScript, .d.ts, source maps and
// declaration maps), then the relative `./x.ts` specifiers that tsc leaves in declaration files
// (microsoft/TypeScript#61037: it rewrites them in JavaScript only) become `./x.js`, as in any
// published package. ".ts" and ".js" have the same length, so the declaration maps stay exact.
import { execFileSync } from "node:child_process"
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { join } from "node:path"

const root = new URL("..", import.meta.url).pathname
const dist = join(root, "dist")
rmSync(dist, { recursive: true, force: true })
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc")
try {
  execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.build.json")], { stdio: "inherit" })
} catch {
  console.error("build: tsc failed (its errors are above); dist/ was not written")
  process.exit(1)
}

const relativeTs = /((?:from|import)\s*\(?\s*["'])(\.{1,2}\/[^"']+)\.ts(["'])/g
let files = 0
const walk = (dir: string): void => {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) walk(path)
    else if (entry.name.endsWith(".d.ts")) {
      const text = readFileSync(path, "utf8")
      const rewritten = text.replace(relativeTs, "$1$2.js$3")
      if (rewritten !== text) {
        writeFileSync(path, rewritten)
        files++
      }
    }
  }
}
walk(dist)
console.log(`dist/: built; relative .ts specifiers rewritten to .js in ${files} declaration files`)
