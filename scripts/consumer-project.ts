// The consumer project of scripts/consumer-test.sh: a fresh app that installs our tarball.
//
//   node scripts/consumer-project.ts <app-dir> <tarball>
//
// Writes into <app-dir>:
// - package.json: our tarball, our peerDependencies (at the versions this repository is tested
//   with, read from node_modules) and, as dev dependencies, typescript and @types/node. Nothing
//   else: whatever else the package needs at run time must come with it.
// - tsconfig.json: what `tsc --init` (TypeScript 5.9) writes, made for Node as its comments say
//   (`lib: ["esnext"]`, `types: ["node"]`): module nodenext, strict, noUncheckedIndexedAccess,
//   exactOptionalPropertyTypes, verbatimModuleSyntax, skipLibCheck; no allowImportingTsExtensions.
// - src/readme-N.ts: every ```ts block of README.md, as written there, so the docs cannot drift.
// - src/subpaths.ts: imports every public subpath of package.json `exports`, checks that each one
//   is the same module object that "." reaches, and that `./internal/*` and dist/ are not exported.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"

const [appDir, tarball] = process.argv.slice(2)
if (appDir === undefined || tarball === undefined) {
  console.error("usage: node scripts/consumer-project.ts <app-dir> <tarball>")
  process.exit(2)
}
const root = new URL("..", import.meta.url).pathname
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"))
const installed = (name: string): string => JSON.parse(readFileSync(join(root, "node_modules", name, "package.json"), "utf8")).version

mkdirSync(join(appDir, "src"), { recursive: true })
const write = (file: string, text: string): void => writeFileSync(join(appDir, file), text)
const json = (value: unknown): string => JSON.stringify(value, null, 2) + "\n"

const peers = Object.keys(pkg.peerDependencies ?? {})
write(
  "package.json",
  json({
    name: "transport-registry-consumer",
    private: true,
    type: "module",
    dependencies: Object.fromEntries([[pkg.name, `file:${tarball}`], ...peers.map((name) => [name, installed(name)])]),
    // @types/node of the oldest Node that `engines` admits, not ours: our .d.ts must not need more.
    devDependencies: { typescript: pkg.devDependencies.typescript, "@types/node": "^22.0.0" }
  })
)

write(
  "tsconfig.json",
  json({
    compilerOptions: {
      module: "nodenext",
      target: "esnext",
      lib: ["esnext"],
      types: ["node"],
      rootDir: "src",
      outDir: "out",
      sourceMap: true,
      declaration: true,
      declarationMap: true,
      noUncheckedIndexedAccess: true,
      exactOptionalPropertyTypes: true,
      strict: true,
      verbatimModuleSyntax: true,
      isolatedModules: true,
      noUncheckedSideEffectImports: true,
      moduleDetection: "force",
      skipLibCheck: true,
      noEmitOnError: true
    },
    include: ["src"]
  })
)

const readme = readFileSync(join(root, "README.md"), "utf8")
const blocks = [...readme.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]!)
if (blocks.length === 0) {
  console.error("README.md has no ```ts block")
  process.exit(1)
}
blocks.forEach((code, i) => write(`src/readme-${i + 1}.ts`, code))

const subpaths = Object.entries(pkg.exports as Record<string, unknown>)
  .filter(([key, target]) => key !== "." && key !== "./package.json" && target !== null && !key.includes("*"))
  .map(([key]) => key.slice(2))
write(
  "src/subpaths.ts",
  [
    `import * as Root from "${pkg.name}"`,
    ...subpaths.map((name, i) => `import * as M${i} from "${pkg.name}/${name}"`),
    "",
    "const modules: Record<string, object> = {",
    ...subpaths.map((name, i) => `  ${JSON.stringify(name)}: M${i},`),
    "}",
    "const reachable = new Set<unknown>(Object.values(Root))",
    "for (const ns of Object.values(Root)) for (const v of Object.values(ns)) reachable.add(v)",
    "for (const [name, module] of Object.entries(modules)) {",
    "  if (!reachable.has(module)) throw new Error(`subpath ${name} is not reachable from the package root`)",
    "}",
    "for (const hidden of [",
    `  "${pkg.name}/internal/net",`,
    `  "${pkg.name}/dist/index.js",`,
    `  "${pkg.name}/transport/tcp/router/CallHomeServer",`,
    "]) {",
    "  const code = await import(hidden).then(() => \"loaded\", (e: { code?: string }) => e.code)",
    "  if (code !== \"ERR_PACKAGE_PATH_NOT_EXPORTED\") throw new Error(`${hidden} should not be exported (${code})`)",
    "}",
    "console.log(`${Object.keys(modules).length} subpaths, each reachable from the root; internal paths blocked`)",
    ""
  ].join("\n")
)

console.log(`consumer project: ${blocks.length} README examples, ${subpaths.length} subpaths, peers ${peers.join(", ")}`)
