/**
 * The shared first step of reading a call-home ConnectionInfo (one-shot `tcp_server` and
 * `tcp_response_mux_v1` alike): `info` is JSON text holding an object with an `address`
 * string. Each kind then checks its own fields. Errors are `BadHandshake` naming the problem.
 */
import type { ConnectionInfo } from "../ConnectionInfo.ts"
import { TransportProtocolError } from "../TransportError.ts"

/** A `BadHandshake` protocol error of the TCP call-home plane. */
export const badHandshake = (target: string, detail: string, cause?: unknown) =>
  new TransportProtocolError({ reason: "BadHandshake", transport: "tcp", target, detail, cause })

/** Parses `info` as a JSON object with an `address` string; returns its fields and address. */
export const readInfoObject = (
  connectionInfo: ConnectionInfo
): { readonly fields: Readonly<Record<string, unknown>>; readonly address: string } | TransportProtocolError => {
  let info: unknown
  try {
    info = JSON.parse(connectionInfo.info)
  } catch (cause) {
    return badHandshake(connectionInfo.info, "connection info is not JSON text", cause)
  }
  if (typeof info !== "object" || info === null || Array.isArray(info)) {
    return badHandshake(connectionInfo.info, "connection info is not a JSON object")
  }
  const fields = info as Record<string, unknown>
  if (typeof fields.address !== "string") return badHandshake(connectionInfo.info, "connection info has no address string")
  return { fields, address: fields.address }
}
