/**
 * The address of an endpoint instance on Dynamo's TCP request plane (PROTOCOL.md sections 5 and
 * 8; docs/protocol.md, "Dynamo's TCP request plane"), and the endpoint path a request frame
 * carries for it.
 *
 * Two address forms, both read, the first one written:
 * - `host:port/<id hex>/<ns>/<comp>/<ep>` (Dynamo since 2026-09), each name part escaped:
 *   `%` as `%25`, `/` as `%2F`;
 * - `host:port/<id hex>/<endpoint>` (Dynamo before that).
 * `host` may be a bracketed IPv6 literal (`[::1]:9001`); an optional `tcp://` prefix is accepted,
 * as Dynamo's client accepts it.
 *
 * The wire path (what Dynamo found; see docs/protocol.md for the sources): Dynamo's router
 * (`egress/tcp_client.rs`, `parse_address`) splits the address at its first `/` and sends
 * everything after it, verbatim (no unescaping, the id's digits as written), as the frame's
 * endpoint_path and as the `x-endpoint-path` header. Dynamo's worker
 * (`ingress/shared_tcp_endpoint.rs`) looks the path up as an exact string among the keys it
 * registered with the same text its discovery record advertises: `{instance_id:x}/{endpoint}`,
 * where `{endpoint}` is the bare name in the older form and `ns/comp/ep` in the newer one
 * (`transports/tcp.rs`, `instance_path`, "shared by discovery and ingress"). A path it does not
 * know gets the ack `Unknown endpoint: <path>` and the connection stays open.
 *
 * So `tcpWirePath` gives the address's text after `host:port/`, and a worker routes by
 * `wirePathOf` (the newer form, which it advertises) plus, as an alias, the older
 * `<id hex>/<endpoint>` (`wirePathsOf`), which only a router holding an older-form address of
 * the same instance sends. The alias is ambiguous when one instance serves two endpoints of the
 * same name in different components: a table must then keep the first and never let an alias
 * replace an entry.
 *
 * What it does not do: resolve host names, validate that `host` is an IP literal (Dynamo's
 * client requires one; we accept names too), or any I/O. Nothing here throws.
 */
import { ProtocolParseError } from "./ProtocolError.ts"

/** The parts of an endpoint's name. */
export interface TcpEndpointPath {
  readonly namespace: string
  readonly component: string
  readonly endpoint: string
}

/** A parsed TCP address; `namespace` and `component` are absent in the older three-part form. */
export interface ParsedTcpAddress {
  /** `host:port` (`[v6]:port` for IPv6), as written. */
  readonly hostPort: string
  /** The instance id as lowercase hex digits (leading zeros kept as written). */
  readonly instanceIdHex: string
  readonly namespace?: string
  readonly component?: string
  readonly endpoint: string
  /** The address's text after `host:port/`, verbatim: the endpoint_path Dynamo's router sends. */
  readonly wirePath?: string
}

/** What a worker routes by: an endpoint's name and its instance id (lowercase hex, no leading zeros). */
export interface TcpRouteKey extends TcpEndpointPath {
  readonly instanceIdHex: string
}

/** Escapes one address part: `%` as `%25`, `/` as `%2F`. */
export const escapeAddressPart = (part: string): string =>
  part.indexOf("%") < 0 && part.indexOf("/") < 0 ? part : part.replaceAll("%", "%25").replaceAll("/", "%2F")

/** Undoes `escapeAddressPart` (either case of the hex digits); any other `%` sequence stays as it is. */
export const unescapeAddressPart = (part: string): string =>
  part.indexOf("%") < 0 ? part : part.replace(/%(?:25|2[fF])/g, (m) => (m === "%25" ? "%" : "/"))

/** The instance id as Dynamo writes it: lowercase hex of the unsigned 64-bit value, no padding. */
export const instanceIdHex = (instanceId: bigint): string => BigInt.asUintN(64, instanceId).toString(16)

/** `<ns>/<comp>/<ep>`, each part escaped. */
const namePath = (p: TcpEndpointPath): string =>
  `${escapeAddressPart(p.namespace)}/${escapeAddressPart(p.component)}/${escapeAddressPart(p.endpoint)}`

/** `host:port/<id hex>/<ns>/<comp>/<ep>`, each name part escaped (the form writers write). */
export const formatTcpAddress = (hostPort: string, instanceId: bigint, path: TcpEndpointPath): string =>
  `${hostPort}/${instanceIdHex(instanceId)}/${namePath(path)}`

const bad = (address: string, why: string): ProtocolParseError =>
  new ProtocolParseError("BadPayload", `TCP address ${JSON.stringify(address)}: ${why}`)

const HEX_ID = /^[0-9a-fA-F]{1,16}$/
const PORT = /^[0-9]{1,5}$/

/** Checks `host:port` / `[v6]:port`; returns why not, or undefined. */
const checkHostPort = (hp: string): string | undefined => {
  let port: string
  if (hp.startsWith("[")) {
    const close = hp.indexOf("]")
    if (close < 2 || hp[close + 1] !== ":") return "an IPv6 host must be written [addr]:port"
    port = hp.slice(close + 2)
  } else {
    const colon = hp.lastIndexOf(":")
    if (colon <= 0) return "expected host:port before the first /"
    if (hp.indexOf(":") !== colon) return "an IPv6 host must be written [addr]:port"
    port = hp.slice(colon + 1)
  }
  if (!PORT.test(port) || Number(port) > 65535) return `bad port ${JSON.stringify(port)}`
  return undefined
}

/**
 * Parses either address form (see the module comment); an optional `tcp://` prefix is dropped.
 * Returns "BadPayload" naming what is wrong: no `host:port`, a bad port, an instance id that is
 * not 1 to 16 hex digits, an empty part, or a part count that is neither form.
 */
export const parseTcpAddress = (address: string): ParsedTcpAddress | ProtocolParseError => {
  const text = address.startsWith("tcp://") ? address.slice(6) : address
  const slash = text.indexOf("/")
  if (slash <= 0) return bad(address, "expected host:port/<instance id hex>/<ns>/<comp>/<ep>")
  const hostPort = text.slice(0, slash)
  const hpError = checkHostPort(hostPort)
  if (hpError !== undefined) return bad(address, hpError)
  const wirePath = text.slice(slash + 1)
  const parts = wirePath.split("/")
  const id = parts[0]!
  if (!HEX_ID.test(id)) return bad(address, `the instance id ${JSON.stringify(id)} is not 1 to 16 hex digits`)
  if (parts.some((p) => p.length === 0)) return bad(address, "an empty path part")
  const instanceIdHex = id.toLowerCase()
  if (parts.length === 2) return { hostPort, instanceIdHex, endpoint: unescapeAddressPart(parts[1]!), wirePath }
  if (parts.length === 4) {
    return {
      hostPort,
      instanceIdHex,
      namespace: unescapeAddressPart(parts[1]!),
      component: unescapeAddressPart(parts[2]!),
      endpoint: unescapeAddressPart(parts[3]!),
      wirePath
    }
  }
  return bad(address, `${parts.length - 1} name parts after the instance id; expected 1 (<endpoint>) or 3 (<ns>/<comp>/<ep>)`)
}

/**
 * The endpoint_path a router puts in a request frame for this address, as Dynamo's router does:
 * the address's text after `host:port/`, verbatim. For a value built by hand (no `wirePath`), the
 * same text rebuilt from the parts.
 */
export const tcpWirePath = (parsed: ParsedTcpAddress): string => {
  if (parsed.wirePath !== undefined) return parsed.wirePath
  return parsed.namespace === undefined || parsed.component === undefined
    ? `${parsed.instanceIdHex}/${escapeAddressPart(parsed.endpoint)}`
    : `${parsed.instanceIdHex}/${namePath({ namespace: parsed.namespace, component: parsed.component, endpoint: parsed.endpoint })}`
}

/**
 * The wire path of an endpoint instance in the newer form, `<id hex>/<ns>/<comp>/<ep>` (escaped):
 * what a router sends for the address `formatTcpAddress` writes, and a worker's primary route.
 */
export const wirePathOf = (key: TcpRouteKey): string => `${key.instanceIdHex}/${namePath(key)}`

/**
 * Every wire path a router may send for an endpoint instance: `wirePathOf` first, then the older
 * `<id hex>/<endpoint>` alias (the name as Dynamo registered it, unescaped; and escaped too when
 * that differs). Entries after the first are aliases: see the module comment on collisions.
 */
export const wirePathsOf = (key: TcpRouteKey): ReadonlyArray<string> => {
  const paths = [wirePathOf(key), `${key.instanceIdHex}/${key.endpoint}`]
  const escaped = `${key.instanceIdHex}/${escapeAddressPart(key.endpoint)}`
  if (escaped !== paths[1]) paths.push(escaped)
  return paths
}
