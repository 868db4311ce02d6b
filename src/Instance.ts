/**
 * Worker instances as discovery records (PROTOCOL.md section 5), byte-compatible with Dynamo.
 *
 * `instance_id` is an unsigned 64-bit integer, often above 2^53: it is a `bigint` here, parsed
 * from the JSON text without loss and written back as the same digits. This module only
 * defines and (de)serializes records; storing them is the job of `Discovery`.
 */
import { Schema } from "effect"
import { TransportCapabilities, TransportId } from "./Transport.ts"

/** One side of the seed's unified transport form: which transport, where, and what it can do. */
export const TransportEndpoint = Schema.Struct({
  transport_id: TransportId,
  address: Schema.String,
  capabilities: TransportCapabilities,
  metadata: Schema.Record(Schema.String, Schema.String)
})
/** One side of the seed's unified transport form: which transport, where, and what it can do. */
export type TransportEndpoint = typeof TransportEndpoint.Type

/**
 * How to reach an instance: the legacy Dynamo forms (`nats_tcp` subject, `http` url,
 * `tcp` "host:port/<id hex>/<endpoint>") and the seed's `unified` form.
 */
export const TransportType = Schema.Union([
  Schema.Struct({ nats_tcp: Schema.String }),
  Schema.Struct({ http: Schema.String }),
  Schema.Struct({ tcp: Schema.String }),
  Schema.Struct({
    unified: Schema.Struct({ request_transport: TransportEndpoint, response_transport: TransportEndpoint })
  })
])
/** How to reach an instance (see the schema). */
export type TransportType = typeof TransportType.Type

/** An endpoint instance as discovery stores it. */
export const Instance = Schema.Struct({
  type: Schema.Literal("Endpoint"),
  namespace: Schema.String,
  component: Schema.String,
  endpoint: Schema.String,
  instance_id: Schema.BigInt,
  transport: TransportType
})
/** An endpoint instance as discovery stores it. */
export type Instance = typeof Instance.Type

const U64_MAX = (1n << 64n) - 1n

const decodeInstance = Schema.decodeUnknownSync(Instance)

type ReviverContext = { readonly source?: string }
const JSONx = JSON as unknown as {
  parse(text: string, reviver: (this: unknown, key: string, value: unknown, context: ReviverContext) => unknown): unknown
  rawJSON(text: string): unknown
}

/**
 * Parses JSON text in which the given keys hold u64 integers, keeping their exact digits as
 * bigint. Throws a SyntaxError or RangeError naming the problem.
 */
export const parseJsonWithU64 = (text: string, u64Keys: ReadonlySet<string>): unknown =>
  JSONx.parse(text, (key, value, context) => {
    if (!u64Keys.has(key) || typeof value !== "number") return value
    const source = context.source ?? String(value)
    if (!/^\d+$/.test(source)) throw new RangeError(`${key} must be an unsigned integer, got ${source}`)
    const n = BigInt(source)
    if (n > U64_MAX) throw new RangeError(`${key} ${source} does not fit in 64 bits`)
    return n
  })

/** JSON.stringify that writes every bigint as a bare JSON number with its exact digits. */
export const stringifyWithU64 = (value: unknown): string =>
  JSON.stringify(value, (_key, v) => (typeof v === "bigint" ? JSONx.rawJSON(v.toString()) : v))

const instanceKeys = new Set(["instance_id"])

/** Decodes a discovery record from its JSON text. Throws a descriptive error on bad input. */
export const instanceFromJson = (text: string): Instance => decodeInstance(parseJsonWithU64(text, instanceKeys))

/** Encodes a discovery record as JSON text, in Dynamo's key order, with the u64 id's exact digits. */
export const instanceToJson = (instance: Instance): string =>
  stringifyWithU64({
    type: instance.type,
    namespace: instance.namespace,
    component: instance.component,
    endpoint: instance.endpoint,
    instance_id: instance.instance_id,
    transport: instance.transport
  })

/** The instance id as Dynamo prints it in subjects and keys: lowercase hex. */
export const instanceIdHex = (id: bigint): string => id.toString(16)

/** A fresh random instance id: a positive 63-bit integer, as etcd lease ids are. */
export const randomInstanceId = (): bigint => {
  const bytes = crypto.getRandomValues(new Uint8Array(8))
  bytes[0] = bytes[0]! & 0x7f
  let n = 0n
  for (const b of bytes) n = (n << 8n) | BigInt(b)
  return n === 0n ? 1n : n
}

/** "ns.component.endpoint", split and checked. */
export interface EndpointPath {
  readonly namespace: string
  readonly component: string
  readonly endpoint: string
}

/** Parses "ns.component.endpoint". Throws a TypeError naming the bad path. */
export const parseEndpointPath = (path: string): EndpointPath => {
  const parsed = decodeEndpointPath(path)
  if (typeof parsed === "string") throw new TypeError(`${parsed}, got ${JSON.stringify(path)}`)
  return parsed
}

/**
 * Like `parseEndpointPath`, but returns the problem as text instead of throwing (for callers
 * that turn it into a typed error).
 */
export const decodeEndpointPath = (path: string): EndpointPath | string => {
  const parts = typeof path === "string" ? path.split(".") : []
  if (parts.length !== 3 || parts.some((p) => p === "" || !/^[A-Za-z0-9_-]+$/.test(p))) {
    return `endpoint path must be "namespace.component.endpoint" with letters, digits, _ or -`
  }
  return { namespace: parts[0]!, component: parts[1]!, endpoint: parts[2]! }
}

/** "ns.component.endpoint" from its parts. */
export const formatEndpointPath = (p: EndpointPath): string => `${p.namespace}.${p.component}.${p.endpoint}`

/** The transport id an instance wants requests on, whatever record form it uses, and the unified form's metadata. */
export const requestTransportOf = (
  transport: TransportType
): { readonly id: TransportId; readonly address: string; readonly metadata?: Readonly<Record<string, string>> } => {
  if ("nats_tcp" in transport) return { id: "nats", address: transport.nats_tcp }
  if ("http" in transport) return { id: "http", address: transport.http }
  if ("tcp" in transport) return { id: "tcp", address: transport.tcp }
  const r = transport.unified.request_transport
  return { id: r.transport_id, address: r.address, metadata: r.metadata }
}
