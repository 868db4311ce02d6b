/**
 * What every side of a benchmark row implements: a server module exports `serve` (it answers
 * one request with `items` items of `itemSize` bytes, `delayMs` apart) and a client module
 * exports `connect`, which gives a `Driver` that runs streams with a number in flight and
 * records each one's latency and time to first item. The child process (childMain.ts) loads a
 * module by name, calls one of the two, and speaks IPC for it; the modules do no IPC.
 */

/** The options a side is started with (the same for its server and its client). */
export interface SideOptions {
  /** Which shape of the module to run (e.g. "callhome-pooled"); each module lists its own. */
  readonly variant: string
  readonly items: number
  readonly itemSize: number
  readonly delayMs: number
  /** This project's modes: the DYN_* settings of the mode (both sides). */
  readonly env?: Readonly<Record<string, string>> | undefined
  /** The NATS server rows that need one use. */
  readonly natsUrl?: string | undefined
}

/** What a server tells its client: its port and anything else the client needs. */
export type ServerInfo = Readonly<Record<string, unknown>>

/** A started server side. */
export interface Served {
  readonly info: ServerInfo
  readonly close: () => Promise<void>
}

/** Records one stream: its latency and its time to the first item, both in milliseconds. */
export type Recorder = (latencyMs: number, firstItemMs: number) => void

/** A raw router's call in flight that completes when both its ack and its end have come (the call-home baselines). */
export interface PendingCall {
  readonly resolve: () => void
  readonly reject: (e: Error) => void
  readonly onFirst: () => void
  items: number
  acked: boolean
  ended: boolean
}

/** A connected client side. */
export interface Driver {
  /** Runs `streams` streams with `concurrency` in flight; each finished stream is recorded. */
  readonly run: (streams: number, concurrency: number, record: Recorder) => Promise<void>
  readonly close: () => Promise<void>
}

/** A module that can serve. */
export interface ServerModule {
  readonly serve: (options: SideOptions) => Promise<Served>
}

/** A module that can drive. */
export interface ClientModule {
  readonly connect: (options: SideOptions, server: ServerInfo) => Promise<Driver>
}

/** The port in a server's info (throws when it has none). */
export const portOf = (info: ServerInfo): number => {
  const port = info.port
  if (typeof port !== "number") throw new Error(`the server's info has no port: ${JSON.stringify(info)}`)
  return port
}
