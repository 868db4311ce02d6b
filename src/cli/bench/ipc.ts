/**
 * The messages between the benchmark's orchestrator and its child processes (over Node's IPC
 * channel, JSON). Types and the one reply every child gives, `stats`; no I/O of their own.
 */
import type { ServerInfo, SideOptions } from "./sides/side.ts"

/** The endpoint every row of this project serves and calls. */
export const BENCH_ENDPOINT = "bench.worker.generate"

/** The side modules a child can load (sides/<name>). */
export const sideModules = ["rawHttp", "rawTcp", "rawNats", "grpc", "effectRpc", "project"] as const
/** A side module's name. */
export type SideModule = (typeof sideModules)[number]

/** Orchestrator -> child. */
export type ToChild =
  | { readonly t: "start"; readonly role: "server" | "client"; readonly module: SideModule; readonly options: SideOptions; readonly server?: ServerInfo }
  | { readonly t: "stats" }
  | { readonly t: "run"; readonly streams: number; readonly concurrency: number }
  | { readonly t: "close" }

/** CPU time used so far (user + system, µs) and the peak resident set size (KiB). */
export interface ProcessStats {
  readonly cpuUs: number
  readonly maxRssKb: number
}

/** Child -> orchestrator. */
export type FromChild =
  | { readonly t: "ready"; readonly info: ServerInfo }
  | ({ readonly t: "stats" } & ProcessStats)
  | { readonly t: "progress"; readonly done: number }
  | {
    readonly t: "result"
    /** Each stream's latency and time to first item, µs, in completion order. */
    readonly latencyUs: ReadonlyArray<number>
    readonly firstItemUs: ReadonlyArray<number>
    readonly seconds: number
    /** The client process's CPU time over the measured streams, µs. */
    readonly cpuUs: number
  }
  | { readonly t: "closed" }
  | { readonly t: "error"; readonly message: string }

/** This process's stats. */
export const processStats = (): ProcessStats => {
  const cpu = process.cpuUsage()
  return { cpuUs: cpu.user + cpu.system, maxRssKb: process.resourceUsage().maxRSS }
}
