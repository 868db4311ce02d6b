/**
 * `transport-registry list ns.comp.ep`: the instances of an endpoint in the configured discovery
 * (file by default for the CLI, etcd with `DYN_DISCOVERY_BACKEND=etcd`), one row each: the
 * instance id in hex (as subjects and keys print it) and in decimal (as the record stores it),
 * the request transport and its address, the response plane, and the record's other fields
 * (`request_plane_codec`, `device_type`, ...). `--json` prints each record as one JSON line
 * instead, exactly as discovery holds it.
 *
 * It only reads discovery: it builds no transport and calls nothing.
 */
import { Console, Effect } from "effect"
import { Discovery } from "../Discovery.ts"
import { parseEndpointPath } from "../endpoint/EndpointPath.ts"
import { extraFieldNames, formatEndpointPath, instanceToJson, requestTransportOf, responseTransportOf, stringifyWithU64 } from "../Instance.ts"
import type { Instance } from "../Instance.ts"
import { TransportConfig } from "../TransportConfig.ts"
import type { TransportSettings } from "../TransportConfig.ts"
import { columns } from "./help.ts"

/** Options of `list`. */
export interface ListOptions {
  readonly endpoint: string
  /** One JSON record per line instead of the table. */
  readonly json: boolean
}

const metadataText = (metadata: Readonly<Record<string, string>> | undefined): string => {
  const entries = Object.entries(metadata ?? {})
  return entries.length === 0 ? "" : ` (${entries.map(([k, v]) => `${k}=${v}`).join(", ")})`
}

/** How a record says requests reach it: transport, address, and the unified form's metadata. */
const requestText = (instance: Instance): string => {
  const r = requestTransportOf(instance.transport)
  return `${r.id} ${r.address}${metadataText(r.metadata)}`
}

/** How a record says its responses come back: the unified form's response transport, or call-home for the legacy forms. */
const responseText = (instance: Instance): string => {
  const r = responseTransportOf(instance.transport)
  if (r === undefined) return "tcp call-home"
  return `${r.id}${r.address === "" ? "" : ` ${r.address}`}${metadataText(r.metadata)}`
}

/** The record's fields beyond the instance and its transport, as `key=value`. */
const otherFieldsText = (instance: Instance): string =>
  extraFieldNames(instance)
    .map((k) => {
      const v = instance[k]
      return `${k}=${typeof v === "string" ? v : stringifyWithU64(v)}`
    })
    .join(" ")

/** The rows of the table: a header, then one row per instance. */
const rows = (instances: ReadonlyArray<Instance>): ReadonlyArray<string> =>
  columns([
    ["instance_id", "instance_id (decimal)", "request", "response", "other fields"],
    ...instances.map((i) => [i.instance_id.toString(16), i.instance_id.toString(), requestText(i), responseText(i), otherFieldsText(i)])
  ])

/** Where the instances were looked up, for the summary line. */
const describeDiscovery = (config: TransportSettings): string =>
  config.discoveryBackend === "file"
    ? `file discovery at ${config.discoveryPath}`
    : config.discoveryBackend === "etcd"
    ? `etcd discovery at ${config.etcdEndpoints.join(",")}`
    : "mem discovery (it only sees this process; use DYN_DISCOVERY_BACKEND=file or etcd)"

/** Lists the instances of the endpoint on stdout. */
export const list = (options: ListOptions) =>
  Effect.gen(function*() {
    const path = yield* parseEndpointPath(options.endpoint)
    const config = yield* TransportConfig
    const discovery = yield* Discovery
    const instances = [...(yield* discovery.list(path))].sort((a, b) => (a.instance_id < b.instance_id ? -1 : a.instance_id > b.instance_id ? 1 : 0))
    if (options.json) {
      for (const instance of instances) yield* Console.log(instanceToJson(instance))
      return
    }
    const count = `${instances.length} instance${instances.length === 1 ? "" : "s"}`
    yield* Console.log(`${formatEndpointPath(path)}: ${count} in ${describeDiscovery(config)}`)
    if (instances.length > 0) yield* Console.log(rows(instances).join("\n"))
  })
