// The modes the soak tool runs, each as the DYN_* record a deployment would set, with a check
// of the worker's instance record (a mode measures the wire it names, or is reported unavailable).

/** A mode of the soak tool. */
export interface SoakMode {
  /** Short name, for `--modes`. */
  readonly id: string
  /** What it is, for the report. */
  readonly name: string
  /** DYN_* settings on top of the loopback base (both processes). */
  readonly env: Readonly<Record<string, string>>
  /** Why the worker's record does not advertise this mode's wire, or undefined when it does. */
  readonly check?: ((record: string) => string | undefined) | undefined
  /** Needs a nats-server (NATS_SERVER is added by the tool). */
  readonly nats?: boolean | undefined
  /**
   * Connections the mode keeps open by design once the load is over, beyond the start's: the
   * worker's call-home pool keeps up to DYN_TCP_POOL_MAX_PER_TARGET (50) connections per router
   * until DYN_TCP_POOL_IDLE_TIMEOUT_SECS. Added to each process's FD bound.
   */
  readonly keptConnections?: number | undefined
}

/** The call-home pool's connections per router at most (DYN_TCP_POOL_MAX_PER_TARGET's default). */
const POOL = 50

const transportOf = (record: string): string => {
  try {
    return JSON.stringify((JSON.parse(record) as { transport?: unknown }).transport)
  } catch {
    return record.slice(0, 200)
  }
}

const tcp = (extra: Record<string, string>): Record<string, string> => ({
  DYN_REQUEST_PLANE: "tcp",
  DYN_RESPONSE_PLANE: "tcp",
  ...extra
})

const dynamoOnly = (record: string) =>
  /"tcp_mux"/.test(record) ? `the worker advertises the full mode although DYN_TCP_FULL_MODE=false: ${transportOf(record)}` : undefined
const fullMode = (record: string) =>
  /"tcp_mux"\s*:\s*"1"/.test(record) ? undefined : `the worker does not advertise the full mode: ${transportOf(record)}`
const natsTcp = (record: string) => (/"nats_tcp"/.test(record) ? undefined : `the worker does not advertise nats_tcp: ${transportOf(record)}`)

/** Every mode, in the order they run. */
export const SOAK_MODES: ReadonlyArray<SoakMode> = [
  { id: "http-tcp", name: "http + tcp (call-home, one connection per stream)", env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_POOL_ENABLED: "false" } },
  { id: "http-tcp-pooled", name: "http + tcp pooled", env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_POOL_ENABLED: "true" }, keptConnections: POOL },
  {
    id: "http-http-sse",
    name: "http + http sse (pure HTTP mode)",
    env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_STREAM_FORMAT: "sse" }
  },
  { id: "tcp-dynamo", name: "tcp + tcp (Dynamo framing, call-home)", env: tcp({ DYN_TCP_FULL_MODE: "false", DYN_TCP_POOL_ENABLED: "false" }), check: dynamoOnly },
  { id: "tcp-dynamo-pooled", name: "tcp + tcp pooled (Dynamo framing)", env: tcp({ DYN_TCP_FULL_MODE: "false", DYN_TCP_POOL_ENABLED: "true" }), check: dynamoOnly, keptConnections: POOL },
  { id: "tcp-full", name: "tcp full mode", env: tcp({ DYN_TCP_FULL_MODE: "true" }), check: fullMode },
  { id: "nats-tcp", name: "nats + tcp (call-home)", env: { DYN_REQUEST_PLANE: "nats", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_POOL_ENABLED: "false" }, check: natsTcp, nats: true }
]


/** The modes named in `list` (comma-separated ids), in the tool's order; all when undefined. */
export const selectModes = (list: string | undefined): ReadonlyArray<SoakMode> => {
  if (list === undefined || list === "all") return SOAK_MODES
  const ids = list.split(",").map((s) => s.trim()).filter((s) => s.length > 0)
  const unknown = ids.filter((id) => !SOAK_MODES.some((m) => m.id === id))
  if (unknown.length > 0) throw new Error(`unknown mode(s) ${unknown.join(", ")}; known: ${SOAK_MODES.map((m) => m.id).join(", ")}`)
  return SOAK_MODES.filter((m) => ids.includes(m.id))
}
