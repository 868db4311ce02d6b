/**
 * The rows a benchmark run can measure: this project's modes, the raw Node baselines of the same
 * exchanges, the anchors (other stacks a user could pick instead) and the in-process reference;
 * the presets `--modes` accepts; and the choice of rows for a `--modes` value. Data only.
 */
import type { SideModule } from "./ipc.ts"

/** What a row is. */
export type RowKind = "mode" | "baseline" | "anchor" | "reference"

/** One side of a row: a side module and its variant (sides/<module>.ts). */
export interface SideSpec {
  readonly module: SideModule
  readonly variant: string
}

/** A row. */
export interface RowSpec {
  readonly id: string
  readonly kind: RowKind
  /** One line: what the row runs. */
  readonly description: string
  /** The row its ratios are taken to (a baseline's id). */
  readonly baseline?: string
  /** The worker: a side module, or `transport-registry worker` with these DYN_* settings; none for in-process rows. */
  readonly server?: SideSpec | { readonly cliEnv: Readonly<Record<string, string>> }
  readonly client: SideSpec
  /** The router's DYN_* settings (this project's rows). */
  readonly env?: Readonly<Record<string, string>>
  /** The row needs a nats-server. */
  readonly nats?: boolean
  /** Both processes export their spans by OTLP/HTTP to a collector stand-in the row starts (otlpSink.ts). */
  readonly otlp?: boolean
  /** A problem with the worker's instance record (its first stdout line), if any: the row is then unavailable. */
  readonly check?: (record: string) => string | undefined
}

const transportOf = (record: string): string => {
  try {
    return JSON.stringify((JSON.parse(record) as { transport?: unknown }).transport)
  } catch {
    return record.slice(0, 200)
  }
}
/** The full mode runs only with a worker that advertises it (metadata tcp_mux). */
const advertisesFullMode = (record: string) =>
  /"tcp_mux"\s*:\s*"1"/.test(record) ? undefined : `the worker's record does not advertise the full mode ("tcp_mux": "1"): ${transportOf(record)}`
/** Dynamo's framing: a worker that advertises the full mode would be driven in it instead. */
const advertisesDynamoOnly = (record: string) =>
  /"tcp_mux"/.test(record) ? `the worker advertises the full mode although DYN_TCP_FULL_MODE=false: ${transportOf(record)}` : undefined
const advertisesNats = (record: string) => (/"nats_tcp"/.test(record) ? undefined : `the worker's record does not advertise nats_tcp: ${transportOf(record)}`)

const lean = { DYN_METRICS: "off", DYN_TRACING: "off" }
const tcpPlanes = { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_REQUEST_HOST: "127.0.0.1", DYN_TCP_REQUEST_PORT: "0" }

/** A row of this project: the CLI worker and `Endpoint.client`, both on `env`. */
const mode = (
  id: string,
  description: string,
  baseline: string | undefined,
  env: Record<string, string>,
  extra: Partial<Pick<RowSpec, "nats" | "check" | "otlp">> & { readonly api?: "call" | "generate" } = {}
): RowSpec => ({
  id,
  kind: "mode",
  description,
  ...(baseline === undefined ? {} : { baseline }),
  server: { cliEnv: env },
  client: { module: "project", variant: extra.api ?? "call" },
  env,
  ...(extra.nats === undefined ? {} : { nats: extra.nats }),
  ...(extra.otlp === undefined ? {} : { otlp: extra.otlp }),
  ...(extra.check === undefined ? {} : { check: extra.check })
})

const side = (module: SideModule, variant: string): SideSpec => ({ module, variant })
const raw = (id: string, description: string, module: SideModule, variant: string, nats = false): RowSpec => ({
  id,
  kind: "baseline",
  description,
  server: side(module, variant),
  client: side(module, variant),
  ...(nats ? { nats } : {})
})

/** Every row, in the order a run measures and prints them (each baseline before its modes). */
export const rows: ReadonlyArray<RowSpec> = [
  raw("raw-http+tcp", "node:http2 POST, 202, then a new node:net call-home connection per stream", "rawHttp", "callhome"),
  mode("http+tcp", "HTTP/2 request plane + TCP call-home, one connection per stream (metrics, tracing off)", "raw-http+tcp", {
    DYN_TCP_POOL_ENABLED: "false",
    ...lean
  }),
  mode("http+tcp-metrics", "http+tcp with metrics on, tracing off", "raw-http+tcp", { DYN_TCP_POOL_ENABLED: "false", DYN_METRICS: "on", DYN_TRACING: "off" }),
  mode("http+tcp-observed", "http+tcp with metrics and tracing on (the library's defaults)", "raw-http+tcp", { DYN_TCP_POOL_ENABLED: "false" }),
  mode("http+tcp-traced", "http+tcp with the defaults and a tracing backend: both processes export their spans by OTLP/HTTP to a local collector stand-in", "raw-http+tcp", { DYN_TCP_POOL_ENABLED: "false" }, { otlp: true }),
  mode("http+tcp-generate", "http+tcp through the Stream API (client.generate), defaults", "raw-http+tcp", { DYN_TCP_POOL_ENABLED: "false" }, { api: "generate" }),
  raw("raw-http+tcp-pooled", "node:http2 POST, 202, items on one pooled node:net call-home connection", "rawHttp", "callhome-pooled"),
  mode("http+tcp-pooled", "HTTP/2 request plane + pooled, multiplexed TCP call-home (metrics, tracing off)", "raw-http+tcp-pooled", {
    DYN_TCP_POOL_ENABLED: "true",
    ...lean
  }),
  raw("raw-http-sse", "node:http2 POST answered 200 with the items as server-sent events in the same response", "rawHttp", "sse"),
  mode("http+http-sse", "HTTP/2 request plane, each response streamed as SSE in its request's own HTTP/2 response (metrics, tracing off)", "raw-http-sse", {
    DYN_RESPONSE_PLANE: "http",
    DYN_HTTP_RESPONSE_STREAM_FORMAT: "sse",
    ...lean
  }),
  {
    id: "grpc-stream",
    kind: "anchor",
    description: "@grpc/grpc-js server streaming, JSON messages, one channel",
    baseline: "raw-http-sse",
    server: side("grpc", "stream"),
    client: side("grpc", "stream")
  },
  raw("raw-dynamo", "node:net Dynamo request frames with in-order acks, a new call-home connection per stream", "rawTcp", "dynamo"),
  mode("tcp+tcp-dynamo", "Dynamo's TCP request plane (pipelined frames, FIFO acks) + one-shot TCP call-home (metrics, tracing off)", "raw-dynamo", {
    ...tcpPlanes,
    DYN_TCP_FULL_MODE: "false",
    DYN_TCP_POOL_ENABLED: "false",
    ...lean
  }, { check: advertisesDynamoOnly }),
  raw("raw-dynamo-pooled", "node:net Dynamo request frames with in-order acks, items on one pooled call-home connection", "rawTcp", "dynamo-pooled"),
  mode("tcp+tcp-dynamo-pooled", "Dynamo's TCP request plane + pooled, multiplexed TCP call-home (metrics, tracing off)", "raw-dynamo-pooled", {
    ...tcpPlanes,
    DYN_TCP_FULL_MODE: "false",
    DYN_TCP_POOL_ENABLED: "true",
    ...lean
  }, { check: advertisesDynamoOnly }),
  raw("raw-corked", "one node:net connection, requests and responses multiplexed by stream id, each response corked into one write", "rawTcp", "corked"),
  mode("tcp-full", "the full TCP mode: requests and responses multiplexed on one persistent connection (metrics, tracing off)", "raw-corked", {
    ...tcpPlanes,
    DYN_TCP_FULL_MODE: "true",
    ...lean
  }, { check: advertisesFullMode }),
  mode("tcp-full-observed", "the full TCP mode with metrics and tracing on (the defaults)", "raw-corked", { ...tcpPlanes, DYN_TCP_FULL_MODE: "true" }, {
    check: advertisesFullMode
  }),
  mode("tcp-full-traced", "the full TCP mode with the defaults and a tracing backend: spans exported by OTLP/HTTP to a local collector stand-in", "raw-corked", { ...tcpPlanes, DYN_TCP_FULL_MODE: "true" }, {
    check: advertisesFullMode,
    otlp: true
  }),
  mode("tcp-full-sampled", "tcp-full-traced with DYN_TRACING=sampled: a tenth of the requests export their spans", "raw-corked", {
    ...tcpPlanes,
    DYN_TCP_FULL_MODE: "true",
    DYN_TRACING: "sampled"
  }, { check: advertisesFullMode, otlp: true }),
  {
    id: "effect-rpc",
    kind: "anchor",
    description: "effect/rpc streaming RPC over its socket protocol (NodeSocketServer / NodeSocket), ndjson",
    baseline: "raw-corked",
    server: side("effectRpc", "stream"),
    client: side("effectRpc", "stream")
  },
  raw("raw-nats+tcp", "NATS request (empty ack) through nats-server, then a new node:net call-home connection per stream", "rawNats", "callhome", true),
  mode("nats+tcp", "NATS request plane through nats-server + one-shot TCP call-home, Dynamo's legacy mode (metrics, tracing off)", "raw-nats+tcp", {
    DYN_REQUEST_PLANE: "nats",
    DYN_RESPONSE_PLANE: "tcp",
    DYN_TCP_POOL_ENABLED: "false",
    ...lean
  }, { nats: true, check: advertisesNats }),
  raw("raw-nats+tcp-pooled", "NATS request (empty ack), then items on one pooled node:net call-home connection", "rawNats", "callhome-pooled", true),
  mode("nats+tcp-pooled", "NATS request plane + pooled, multiplexed TCP call-home (metrics, tracing off)", "raw-nats+tcp-pooled", {
    DYN_REQUEST_PLANE: "nats",
    DYN_RESPONSE_PLANE: "tcp",
    DYN_TCP_POOL_ENABLED: "true",
    ...lean
  }, { nats: true, check: advertisesNats }),
  {
    id: "nats-publishes",
    kind: "anchor",
    description: "NATS alone: a request with a reply subject, each item published back to it, an empty message as the end",
    server: side("rawNats", "publishes"),
    client: side("rawNats", "publishes"),
    nats: true
  },
  {
    id: "memory",
    kind: "reference",
    description: "in-memory request and response planes, router and worker in one process (metrics, tracing off)",
    client: side("project", "memory"),
    env: { DYN_REQUEST_PLANE: "memory", DYN_RESPONSE_PLANE: "memory", ...lean }
  }
]

/** Named sets of rows for `--modes`. */
export const presets: Readonly<Record<string, ReadonlyArray<string>>> = {
  all: rows.map((r) => r.id),
  /** What `bench:pool` measured: the recommended mode pooled and not, against raw. */
  pool: ["http+tcp", "http+tcp-pooled"],
  /** What `bench:transport` measured: every mode of this project, with its baseline. */
  transport: rows.filter((r) => r.kind === "mode" || r.kind === "reference").map((r) => r.id),
  /** The other stacks. */
  anchors: rows.filter((r) => r.kind === "anchor").map((r) => r.id),
  /** The observability costs: metrics, tracing, the Stream API. */
  observability: ["http+tcp", "http+tcp-metrics", "http+tcp-observed", "http+tcp-traced", "http+tcp-generate"],
  /** The modes at their defaults left out, for a quicker run. */
  core: rows.filter((r) => !/-(metrics|observed|traced|sampled|generate)$/.test(r.id)).map((r) => r.id)
}

/**
 * The rows `spec` selects, in catalog order: a comma-separated list of row ids, presets, and
 * prefixes ending in `*` (e.g. `tcp*`); each selected row's baseline comes along. Unknown names
 * are returned as `unknown`.
 */
export const select = (spec: string): { readonly rows: ReadonlyArray<RowSpec>; readonly unknown: ReadonlyArray<string> } => {
  const wanted = new Set<string>()
  const unknown: Array<string> = []
  for (const raw of spec.split(",").map((s) => s.trim()).filter((s) => s.length > 0)) {
    const preset = presets[raw]
    if (preset !== undefined) for (const id of preset) wanted.add(id)
    else if (raw.endsWith("*")) {
      const matches = rows.filter((r) => r.id.startsWith(raw.slice(0, -1)))
      if (matches.length === 0) unknown.push(raw)
      for (const r of matches) wanted.add(r.id)
    } else if (rows.some((r) => r.id === raw)) wanted.add(raw)
    else unknown.push(raw)
  }
  for (const r of rows) if (wanted.has(r.id) && r.baseline !== undefined) wanted.add(r.baseline)
  return { rows: rows.filter((r) => wanted.has(r.id)), unknown }
}
