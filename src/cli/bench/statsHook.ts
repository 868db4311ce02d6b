/**
 * Loaded with `--import` into a benchmark row's `transport-registry worker` process: answers the
 * orchestrator's `stats` message with this process's CPU time and peak RSS, and stops the worker
 * (SIGTERM, its graceful path) when the orchestrator goes away. It touches nothing else.
 */
import { processStats } from "./ipc.ts"
import type { FromChild, ToChild } from "./ipc.ts"

process.on("message", (msg: ToChild) => {
  if (msg.t === "stats") process.send?.({ t: "stats", ...processStats() } satisfies FromChild)
})
process.on("disconnect", () => process.kill(process.pid, "SIGTERM"))
