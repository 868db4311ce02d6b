// CPU-profiles both processes of one mode under load: the worker (the CLI's `worker`, started with
// `--cpu-prof`) and the router (this process, through node:inspector, over the measured phase only).
// Prints each side's CPU per request and its top functions by self time, grouped by source folder.
//
//   node --experimental-strip-types --no-warnings scripts/profile-mode.ts \
//     [--mode full|full-defaults|full-metrics|full-tracing|http|http-defaults|http-pooled|dynamo|dynamo-pooled|http-sse] [--requests 20000]
//     [--in-flight 64] [--top 25] [--no-profile]
//
// The .cpuprofile files stay in a temporary folder (printed) for Chrome DevTools / speedscope.
import { Session } from "node:inspector/promises"
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fork } from "node:child_process"
import * as net from "node:net"
import { Effect } from "effect"
import { concurrent, sequential } from "../src/cli/latency.ts"
import * as Endpoint from "../src/Endpoint.ts"
import { recommendedEnv, routerLayer } from "../bench/crossProcess.ts"

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1]! : def
}
const MODE = arg("mode", "full")
const REQUESTS = Number(arg("requests", "20000"))
const IN_FLIGHT = Number(arg("in-flight", "64"))
const TOP = Number(arg("top", "25"))
// --no-profile: the same run without profilers, for CPU per request and req/s alone (A/B rounds).
const PROFILE = !process.argv.includes("--no-profile")

const lean = { DYN_METRICS: "off", DYN_TRACING: "off" }
const tcp = { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_REQUEST_HOST: "127.0.0.1", DYN_TCP_REQUEST_PORT: "0" }
const modes: Record<string, Record<string, string>> = {
  full: { ...tcp, ...lean },
  "full-defaults": { ...tcp },
  "full-metrics": { ...tcp, DYN_TRACING: "off" },
  "full-tracing": { ...tcp, DYN_METRICS: "off" },
  http: { ...lean },
  "http-defaults": {},
  "http-pooled": { ...lean, DYN_TCP_POOL_ENABLED: "true" },
  dynamo: { ...tcp, ...lean, DYN_TCP_FULL_MODE: "false" },
  "dynamo-pooled": { ...tcp, ...lean, DYN_TCP_FULL_MODE: "false", DYN_TCP_POOL_ENABLED: "true" },
  "http-sse": { ...lean, DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_STREAM_FORMAT: "sse" }
}
const extra = modes[MODE]
if (extra === undefined) throw new Error(`unknown --mode ${MODE}; one of ${Object.keys(modes).join(", ")}`)

const root = new URL("..", import.meta.url).pathname
const profDir = mkdtempSync(join(tmpdir(), "profile-mode-"))
const discovery = mkdtempSync(join(tmpdir(), "profile-discovery-"))
const env = recommendedEnv(discovery, extra)

const child = fork(join(root, "src/cli/main.ts"), ["worker", "--endpoint", "bench.worker.generate"], {
  env: { ...process.env, ...env },
  execArgv: ["--no-warnings", "--experimental-strip-types", ...(PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${profDir}`, "--cpu-prof-interval=200"] : [])],
  stdio: ["ignore", "pipe", "inherit", "ipc"]
})
await new Promise<void>((resolve, reject) => {
  child.stdout!.once("data", () => resolve())
  child.once("exit", (code) => reject(new Error(`worker exited with ${code}`)))
})
const workerStat = () => {
  const f = readFileSync(`/proc/${child.pid}/stat`, "utf8").split(") ")[1]!.split(" ")
  return (Number(f[11]) + Number(f[12])) * 10_000 // µs (100 Hz ticks)
}

// Counts the router's socket writes (system calls, roughly) over the measured phase.
let writes = 0
const socketWrite = net.Socket.prototype.write
net.Socket.prototype.write = function(this: net.Socket, ...args: Array<any>) {
  writes++
  return (socketWrite as any).apply(this, args)
} as typeof socketWrite

/** Write system calls of a process so far (/proc/<pid>/io syscw). */
const syscw = (pid: number | "self") => Number(/syscw: (\d+)/.exec(readFileSync(`/proc/${pid}/io`, "utf8"))![1])
/** Read system calls of a process so far (/proc/<pid>/io syscr). */
const syscr = (pid: number | "self") => Number(/syscr: (\d+)/.exec(readFileSync(`/proc/${pid}/io`, "utf8"))![1])
/** Context switches of a process so far (voluntary: it slept; involuntary: it was preempted). */
const switches = (pid: number | "self") => {
  const text = readFileSync(`/proc/${pid}/status`, "utf8")
  return { sleeps: Number(/\nvoluntary_ctxt_switches:\s+(\d+)/.exec(text)![1]), preempted: Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(text)![1]) }
}

const session = new Session()
if (PROFILE) session.connect()
const program = Effect.gen(function*() {
  const client = yield* Endpoint.client<unknown, unknown>("bench.worker.generate")
  while (client.instances().length === 0) yield* Effect.sleep(20)
  const once = client.call({ max_tokens: 10, token_size: 50 }, () => {})
  yield* sequential(500, once)
  const seq = yield* sequential(2000, once)
  yield* concurrent(4000, IN_FLIGHT, once)
  if (PROFILE) yield* Effect.promise(async () => {
    await session.post("Profiler.enable")
    await session.post("Profiler.setSamplingInterval", { interval: 200 })
    await session.post("Profiler.start")
  })
  const w0 = workerStat()
  writes = 0
  const sw0 = { router: syscw("self"), worker: syscw(child.pid!) }
  const sr0 = { router: syscr("self"), worker: syscr(child.pid!) }
  const cs0 = { router: switches("self"), worker: switches(child.pid!) }
  const c0 = process.cpuUsage()
  const m0 = monoUs()
  const result = yield* concurrent(REQUESTS, IN_FLIGHT, once)
  measured = { from: m0, to: monoUs() }
  const c1 = process.cpuUsage(c0)
  const w1 = workerStat()
  if (PROFILE) {
    const { profile } = yield* Effect.promise(() => session.post("Profiler.stop"))
    writeFileSync(join(profDir, "router.cpuprofile"), JSON.stringify(profile))
  }
  console.log(`mode ${MODE}: sequential p50 ${seq.p50.toFixed(0)} µs; ${result.rps.toFixed(0)} req/s at ${IN_FLIGHT} in flight, p50 ${result.stats.p50.toFixed(0)} µs`)
  console.log(`router socket writes per request: ${(writes / REQUESTS).toFixed(2)}`)
  console.log(`write system calls per request: router ${((syscw("self") - sw0.router) / REQUESTS).toFixed(2)}, worker ${((syscw(child.pid!) - sw0.worker) / REQUESTS).toFixed(2)}`)
  console.log(`read system calls per request: router ${((syscr("self") - sr0.router) / REQUESTS).toFixed(2)}, worker ${((syscr(child.pid!) - sr0.worker) / REQUESTS).toFixed(2)}`)
  const perRequest = (now: ReturnType<typeof switches>, then: ReturnType<typeof switches>) =>
    `${((now.sleeps - then.sleeps) / REQUESTS).toFixed(3)} sleeps, ${((now.preempted - then.preempted) / REQUESTS).toFixed(3)} preemptions`
  console.log(`context switches per request: router ${perRequest(switches("self"), cs0.router)}; worker ${perRequest(switches(child.pid!), cs0.worker)}`)
  console.log(`CPU per request: router ${((c1.user + c1.system) / REQUESTS).toFixed(1)} µs, worker ${((w1 - w0) / REQUESTS).toFixed(1)} µs`)
})
// CLOCK_MONOTONIC in µs, the clock of V8's profile timestamps, shared by both processes.
const monoUs = () => Number(process.hrtime.bigint() / 1000n)
let measured = { from: 0, to: 0 }
await Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(routerLayer(env))))
child.kill("SIGTERM")
await new Promise((r) => child.once("exit", r))
rmSync(discovery, { recursive: true, force: true })

interface Node {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly children?: ReadonlyArray<number>
}
interface Profile {
  readonly nodes: ReadonlyArray<Node>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
  readonly startTime: number
  readonly endTime: number
}
const where = (url: string) => {
  if (url === "") return "(native)"
  const i = url.indexOf("/node_modules/")
  if (i >= 0) return url.slice(i + 14).split("/").slice(0, url.includes("/@", i) ? 2 : 1).join("/")
  const s = url.indexOf("/src/")
  if (s >= 0) return url.slice(s + 1).split("/").slice(0, -1).join("/")
  return url.replace(/^.*\//, "")
}
const summarize = (label: string, file: string, window?: { readonly from: number; readonly to: number }) => {
  const p = JSON.parse(readFileSync(file, "utf8")) as Profile
  const byId = new Map(p.nodes.map((n) => [n.id, n]))
  const self = new Map<number, number>()
  let t = p.startTime
  let total = 0
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i]!
    if (window !== undefined && (t < window.from || t > window.to)) continue
    const node = byId.get(p.samples[i]!)!
    if (node.callFrame.functionName === "(idle)" || node.callFrame.functionName === "(program)") continue
    self.set(node.id, (self.get(node.id) ?? 0) + (p.timeDeltas[i] ?? 0))
    total += p.timeDeltas[i] ?? 0
  }
  const fns = new Map<string, number>()
  const folders = new Map<string, number>()
  for (const [id, us] of self) {
    const f = byId.get(id)!.callFrame
    const key = `${f.functionName || "(anonymous)"} ${f.url.replace(/^.*\/(src|node_modules)\//, "$1/")}:${f.lineNumber + 1}`
    fns.set(key, (fns.get(key) ?? 0) + us)
    folders.set(where(f.url), (folders.get(where(f.url)) ?? 0) + us)
  }
  const pct = (us: number) => ((100 * us) / total).toFixed(1).padStart(5) + "%"
  console.log(`\n== ${label}: busy ${(total / 1000).toFixed(0)} ms sampled`)
  for (const [k, v] of [...folders].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`${pct(v)}  ${k}`)
  console.log("--")
  for (const [k, v] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, TOP)) console.log(`${pct(v)}  ${k}`)
}
if (!PROFILE) process.exit(0)
summarize("router (measured phase)", join(profDir, "router.cpuprofile"))
const workerFile = readdirSync(profDir).find((f) => f !== "router.cpuprofile" && f.endsWith(".cpuprofile"))
if (workerFile !== undefined) {
  // The worker's profile covers its whole life: only its samples in the measured phase count.
  summarize("worker (measured phase)", join(profDir, workerFile), measured)
}
console.log(`\nprofiles: ${profDir}`)
