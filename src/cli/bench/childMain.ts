/**
 * The entry of a benchmark child process (a row's server or client side). It imports the side
 * module named in its first argument at once, then waits for a `start` message naming the module
 * and role, starts it, and answers the orchestrator: `stats` (CPU time, peak RSS), `run` (the
 * streams, with progress every 250 ms, then every stream's samples and the CPU time they took; a
 * warm-up is a run whose samples are dropped), `close`. Any failure is sent as an `error`
 * message. It exits when the orchestrator disconnects or sends SIGTERM. Before it loads this
 * project's side, it tunes V8 as the program does (`main.ts`); the other sides run on defaults.
 */
import { disableAllocationSitePretenuring } from "../../NodeTuning.ts"
import { processStats, sideModules } from "./ipc.ts"
import type { FromChild, ToChild } from "./ipc.ts"
import type { ClientModule, Driver, ServerModule, Served } from "./sides/side.ts"

const send = (msg: FromChild) => process.send?.(msg)
const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js"

let served: Served | undefined
let driver: Driver | undefined

type SideModuleExports = Partial<ServerModule & ClientModule>
const loading = new Map<string, Promise<SideModuleExports>>()
/** Imports a side module once; the orchestrator names it in argv so the import overlaps the other side's start. */
const load = (name: string): Promise<SideModuleExports> => {
  if (!(sideModules as ReadonlyArray<string>).includes(name)) return Promise.reject(new Error(`unknown side module ${name}`))
  let mod = loading.get(name)
  if (mod === undefined) {
    // This project's side runs as the program's processes do (main.ts): tuned before its modules
    // load. The other stacks' sides run on V8's defaults.
    if (name === "project") disableAllocationSitePretenuring()
    mod = import(new URL(`./sides/${name}${ext}`, import.meta.url).href) as Promise<SideModuleExports>
    loading.set(name, mod)
  }
  return mod
}
const preload = process.argv[2]
if (preload !== undefined) load(preload).catch(() => {})

const run = async (streams: number, concurrency: number) => {
  if (driver === undefined) throw new Error("run before the client started")
  const latencyUs: Array<number> = []
  const firstItemUs: Array<number> = []
  const progress = setInterval(() => send({ t: "progress", done: latencyUs.length }), 250)
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  try {
    await driver.run(streams, concurrency, (latencyMs, firstMs) => {
      latencyUs.push(latencyMs * 1000)
      firstItemUs.push(firstMs * 1000)
    })
  } finally {
    clearInterval(progress)
  }
  const seconds = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  send({ t: "result", latencyUs, firstItemUs, seconds, cpuUs: cpu.user + cpu.system })
}

const handle = async (msg: ToChild): Promise<void> => {
  switch (msg.t) {
    case "start": {
      const mod = await load(msg.module)
      if (msg.role === "server") {
        if (mod.serve === undefined) throw new Error(`${msg.module} cannot serve`)
        served = await mod.serve(msg.options)
        return void send({ t: "ready", info: served.info })
      }
      if (mod.connect === undefined) throw new Error(`${msg.module} cannot connect`)
      driver = await mod.connect(msg.options, msg.server ?? {})
      return void send({ t: "ready", info: {} })
    }
    case "stats":
      return void send({ t: "stats", ...processStats() })
    case "run":
      return run(msg.streams, msg.concurrency)
    case "close":
      await driver?.close()
      await served?.close()
      // exit once the message is out
      return void process.send?.({ t: "closed" } satisfies FromChild, () => process.exit(0))
  }
}

process.on("message", (msg: ToChild) => {
  handle(msg).catch((e: unknown) => send({ t: "error", message: e instanceof Error ? e.message : String(e) }))
})
process.on("disconnect", () => process.exit(0))
// a clean exit, so that `--cpu-prof` writes its profile
process.on("SIGTERM", () => process.exit(0))
