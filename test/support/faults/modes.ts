/**
 * The transport modes the fault-injection tests (`test/faults/`) run on, as `DYN_*` records on
 * top of `baseEnv` (loopback, port 0): http+tcp, http+tcp pooled, http+http (SSE), tcp+tcp in
 * Dynamo's framing with call-home, the full TCP mode, and nats+tcp (its record needs the url of a
 * nats-server the test file starts). A record builds a stack with `configStack` in the test
 * process, or configures a child process (`test/support/faults/faultWorker.ts`,
 * `faultRouter.ts`).
 *
 * It does not start servers or processes.
 */
import { baseEnv } from "../stacks.ts"

/** One mode: its name in test titles and its record (without `baseEnv`). */
export interface FaultMode {
  readonly name: string
  readonly env: Readonly<Record<string, string>>
  /** The request plane's transport name in typed errors ("http", "tcp", "nats"). */
  readonly requestTransport: "http" | "tcp" | "nats"
}

/** The modes without NATS. */
export const modes: ReadonlyArray<FaultMode> = [
  { name: "http+tcp", requestTransport: "http", env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp" } },
  { name: "http+tcp pooled", requestTransport: "http", env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_POOL_ENABLED: "true" } },
  { name: "http+http sse", requestTransport: "http", env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_STREAM_FORMAT: "sse" } },
  { name: "tcp+tcp (Dynamo framing, call-home)", requestTransport: "tcp", env: { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "false" } },
  { name: "tcp full mode", requestTransport: "tcp", env: { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "true", DYN_TCP_REQUEST_HEARTBEAT_INTERVAL_SECS: "1" } }
]

/** nats+tcp on the nats-server at `url`. */
export const natsMode = (url: string): FaultMode => ({
  name: "nats+tcp",
  requestTransport: "nats",
  env: { DYN_REQUEST_PLANE: "nats", DYN_RESPONSE_PLANE: "tcp", NATS_SERVER: url }
})

/** The full record of `mode` with `extra` on top. */
export const recordOf = (mode: FaultMode, extra: Readonly<Record<string, string>> = {}): Record<string, string> => ({
  ...baseEnv,
  ...mode.env,
  ...extra
})
