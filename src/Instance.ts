/**
 * Worker instances as discovery records (PROTOCOL.md section 5), byte-compatible with Dynamo.
 *
 * Every record form is read: the legacy `{"nats_tcp": subject}`, `{"http": url}` and
 * `{"tcp": address}`, and the seed's `{"unified": {request_transport, response_transport}}`.
 * Fields this project does not use are kept, at the top level (Dynamo's `device_type`, and
 * whatever later versions add) and inside the unified form's TransportEndpoints and
 * capabilities, so a record read and written back means the same. `request_plane_codec` (the
 * codec the worker wants request bodies in) is read, typed loosely (any text, so that a codec
 * this project does not speak still round-trips); the router honours it.
 *
 * `instance_id` is an unsigned 64-bit integer, often above 2^53: it is a `bigint` here, parsed
 * from the JSON text without loss and written back as the same digits. So is any other integer
 * beyond 2^53 in a kept field. This module only defines and (de)serializes records; storing them
 * is the job of `Discovery`.
 */
import { Schema } from "effect"
import { TransportCapabilities, TransportId } from "./Transport.ts"

/** Fields a reader does not know, kept as they were read. */
const Rest = [Schema.Record(Schema.String, Schema.Unknown)] as const

/** TransportCapabilities as records carry them: the known flags, plus any field a later writer adds. */
const RecordCapabilities = Schema.StructWithRest(TransportCapabilities, Rest)

/**
 * One side of the seed's unified transport form: which transport, where, and what it can do.
 * Unknown fields are kept.
 */
export const TransportEndpoint = Schema.StructWithRest(
  Schema.Struct({
    transport_id: TransportId,
    address: Schema.String,
    capabilities: RecordCapabilities,
    metadata: Schema.Record(Schema.String, Schema.String)
  }),
  Rest
)
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
    unified: Schema.StructWithRest(
      Schema.Struct({ request_transport: TransportEndpoint, response_transport: TransportEndpoint }),
      Rest
    )
  })
])
/** How to reach an instance (see the schema). */
export type TransportType = typeof TransportType.Type

/**
 * An endpoint instance as discovery stores it. Besides the fields below, a record keeps every
 * top-level field it was read with (Dynamo's `device_type`, ...): they are written back as read.
 */
export const Instance = Schema.StructWithRest(
  Schema.Struct({
    type: Schema.Literal("Endpoint"),
    namespace: Schema.String,
    component: Schema.String,
    endpoint: Schema.String,
    instance_id: Schema.BigInt,
    transport: TransportType,
    /** The codec the worker wants request bodies in (Dynamo: "json" | "msgpack"); absent: the router's own. */
    request_plane_codec: Schema.optionalKey(Schema.String)
  }),
  Rest
)
/** An endpoint instance as discovery stores it (plus any field it was read with). */
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
 * bigint. Any other integer beyond 2^53 is read as a bigint too, so that no digit is lost (a
 * field this reader does not know round-trips exactly). Throws a SyntaxError or RangeError
 * naming the problem.
 */
export const parseJsonWithU64 = (text: string, u64Keys: ReadonlySet<string>): unknown =>
  JSONx.parse(text, (key, value, context) => {
    if (typeof value !== "number") return value
    if (!u64Keys.has(key)) {
      if (Number.isSafeInteger(value)) return value
      const raw = context.source
      return raw !== undefined && /^-?\d+$/.test(raw) ? BigInt(raw) : value
    }
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

const knownKeys: ReadonlySet<string> = new Set(["type", "namespace", "component", "endpoint", "instance_id", "transport"])

/** A record's fields beyond Dynamo's six (`request_plane_codec`, and the ones kept from reading), in their order. */
export const extraFieldNames = (instance: Instance): ReadonlyArray<string> => Object.keys(instance).filter((key) => !knownKeys.has(key))

/**
 * Encodes a discovery record as JSON text: Dynamo's fields in Dynamo's order, then every other
 * field (`request_plane_codec`, and the ones kept from reading) in the order it has, with every
 * bigint written as its exact digits.
 */
export const instanceToJson = (instance: Instance): string => {
  const ordered: Record<string, unknown> = {
    type: instance.type,
    namespace: instance.namespace,
    component: instance.component,
    endpoint: instance.endpoint,
    instance_id: instance.instance_id,
    transport: instance.transport
  }
  for (const key of extraFieldNames(instance)) ordered[key] = instance[key]
  return stringifyWithU64(ordered)
}

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

/**
 * The response transport an instance asks for: the unified form's `response_transport`, or
 * undefined for the legacy forms (Dynamo's workers, which call home over TCP).
 */
export const responseTransportOf = (
  transport: TransportType
): { readonly id: TransportId; readonly address: string; readonly metadata: Readonly<Record<string, string>> } | undefined => {
  if (!("unified" in transport)) return undefined
  const r = transport.unified.response_transport
  return { id: r.transport_id, address: r.address, metadata: r.metadata }
}

