/**
 * The package surface, checked on the sources (scripts/consumer-test.sh checks the packed
 * tarball): every `exports` subpath names a module of src/ that "." reaches too, `./internal/*`
 * is blocked, `files` ships no tests, `engines` is what the runtime dependencies need, and the
 * call-home server's test hooks are no part of its service shape.
 */
import { readFileSync } from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Root from "../src/index.ts"
import * as CallHomeServer from "../src/transport/tcp/router/CallHomeServer.ts"

const root = new URL("../", import.meta.url)
const readJson = (path: string) => JSON.parse(readFileSync(new URL(path, root), "utf8"))
const pkg = readJson("package.json")

type Version = readonly [number, number, number]
const parse = (text: string): Version => {
  const [a = 0, b = 0, c = 0] = text.trim().split(".").map(Number)
  return [a, b, c]
}
const compare = (x: Version, y: Version): number => x[0] - y[0] || x[1] - y[1] || x[2] - y[2]
/** `>=a.b.c`, `^a.b.c` and `||`: the forms the dependencies' `engines.node` use. */
const admits = (range: string, v: Version): boolean =>
  range.split("||").some((part) => {
    const m = /^\s*(>=|\^)\s*([\d.]+)\s*$/.exec(part)
    if (m === null) throw new Error(`unsupported engines range: ${range}`)
    const min = parse(m[2]!)
    return compare(v, min) >= 0 && (m[1] === ">=" || v[0] === min[0])
  })

describe("the package", () => {
  const subpaths = Object.entries(pkg.exports as Record<string, unknown>).filter(
    (entry): entry is [string, { types: string; import: string }] => entry[0].startsWith("./") && typeof entry[1] === "object" && entry[1] !== null
  )

  it("maps every subpath to a built module of src/, with types first, and blocks ./internal/*", () => {
    expect(pkg.exports["./internal/*"]).toBeNull()
    expect(pkg.exports["."]).toEqual({ types: "./dist/index.d.ts", import: "./dist/index.js" })
    for (const [, target] of subpaths) {
      expect(Object.keys(target)).toEqual(["types", "import"])
      const m = /^\.\/dist\/(.+)\.js$/.exec(target.import)
      expect(m).not.toBeNull()
      expect(target.types).toBe(`./dist/${m![1]}.d.ts`)
      expect(() => readFileSync(new URL(`src/${m![1]}.ts`, root))).not.toThrow()
      expect(m![1]).not.toMatch(/^internal\//)
    }
  })

  it("reaches every subpath's module from the root, as a namespace", async () => {
    const reachable = new Set<unknown>(Object.values(Root))
    for (const ns of Object.values(Root)) for (const v of Object.values(ns)) reachable.add(v)
    for (const [key, target] of subpaths) {
      const module = await import(new URL(target.import.replace(/^\.\/dist\//, "src/").replace(/\.js$/, ".ts"), root).href)
      expect(reachable.has(module), key).toBe(true)
    }
    // every transport, backend and observability layer named by the issue
    expect(Root.MemoryTransport.layer).toBeDefined()
    expect(Root.HttpRequestTransport.layer).toBeDefined()
    expect(Root.TcpResponseTransport.layer).toBeDefined()
    expect(Root.Discovery.MemoryDiscovery.layer).toBeDefined()
    expect(Root.Discovery.FileDiscovery.layer).toBeDefined()
    expect(Root.Discovery.layerConfig).toBeDefined()
    expect(Root.MetricsServer.layer).toBeDefined()
    expect(Root.Tracing.layerConfig).toBeDefined()
    expect(Root.Logging.layerConfig).toBeDefined()
    expect(Root.Health.isReady).toBeDefined()
    expect(Root.Metrics.transportRequestsTotal).toBeDefined()
  })

  it("ships the build, sources for the maps, and docs; no tests, benchmarks or CI", () => {
    expect(pkg.files).toEqual(expect.arrayContaining(["dist", "bin", "docs", "README.md"]))
    for (const entry of pkg.files as Array<string>) expect(entry).not.toMatch(/^(test|bench|\.ci|scripts)/)
    expect(pkg.scripts.prepack).toBeDefined()
    expect(readFileSync(new URL("bin/transport-registry.js", root), "utf8")).toContain("../dist/cli/main.js")
  })

  it("keeps effect, @effect/platform-node and @effect/opentelemetry as peers (and dev dependencies)", () => {
    for (const name of ["effect", "@effect/platform-node", "@effect/opentelemetry", "@opentelemetry/api"]) {
      expect(pkg.peerDependencies[name], name).toBeDefined()
      expect(pkg.devDependencies[name], name).toBeDefined()
      expect(pkg.dependencies[name], name).toBeUndefined()
    }
  })

  it("states in engines the lowest Node that every runtime dependency admits", () => {
    const minimum = parse(/^>=\s*([\d.]+)$/.exec(pkg.engines.node)![1]!)
    const runtime = [...Object.keys(pkg.dependencies), ...Object.keys(pkg.peerDependencies)]
    const ranges = runtime
      .map((name) => [name, readJson(`node_modules/${name}/package.json`).engines?.node] as const)
      .filter((entry): entry is readonly [string, string] => typeof entry[1] === "string")
    for (const [name, range] of ranges) expect(admits(range, minimum), `${name} engines ${range}`).toBe(true)
    // and no lower version would do: one of them needs exactly this minimum
    const lower: Version = minimum[2] > 0 ? [minimum[0], minimum[1], minimum[2] - 1] : [minimum[0], minimum[1] - 1, 99]
    expect(ranges.some(([, range]) => !admits(range, lower))).toBe(true)
  })

  it.live("keeps the call-home server's test hooks off its service shape", () =>
    Effect.gen(function*() {
      const server = yield* CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 1000, maxMessageSize: 1 << 20, mux: true })
      expect(Object.keys(server).sort()).toEqual(["open", "openNow", "transport"])
      // openNow: a stream opened at once once the server listens, as `open` opens it.
      const sink = { onItems: () => {}, onEnd: () => {}, onError: () => {} }
      const opened = yield* server.open({ requestId: "a", endpoint: "ns.c.e", codec: "json", sink })
      const now = server.openNow!({ requestId: "b", endpoint: "ns.c.e", codec: "json", sink })
      expect(now?.connectionInfo.transport).toBe(opened.connectionInfo.transport)
      expect(now?.isDone()).toBe(false)
      now?.close()
      opened.close()
      expect(CallHomeServer.muxDrill(server).connectionCount()).toBe(0)
      expect(() => CallHomeServer.muxDrill({ transport: "memory", open: () => Effect.die("unused") })).toThrow(/not a call-home server/)
    }).pipe(Effect.scoped))
})
