/**
 * The shared first step of reading a call-home ConnectionInfo (one-shot `tcp_server` and
 * `tcp_response_mux_v1` alike): `info` is JSON text holding an object with an `address`
 * string. Each kind then checks its own fields. Errors are `BadHandshake` parse errors naming
 * the problem.
 */
import type { ConnectionInfo } from "../ConnectionInfo.ts"
import { ProtocolParseError } from "./ProtocolError.ts"

/** A `BadHandshake` parse error: a call-home ConnectionInfo or handshake that is not as specified. */
export const badHandshake = (detail: string, cause?: unknown): ProtocolParseError =>
  new ProtocolParseError("BadHandshake", detail, cause)

/** Parses `info` as a JSON object with an `address` string; returns its fields and address. */
export const readInfoObject = (
  connectionInfo: ConnectionInfo
): { readonly fields: Readonly<Record<string, unknown>>; readonly address: string } | ProtocolParseError => {
  let info: unknown
  try {
    info = JSON.parse(connectionInfo.info)
  } catch (cause) {
    return badHandshake(`connection info ${JSON.stringify(connectionInfo.info.slice(0, 64))} is not JSON text`, cause)
  }
  if (typeof info !== "object" || info === null || Array.isArray(info)) {
    return badHandshake("connection info is not a JSON object")
  }
  const fields = info as Record<string, unknown>
  if (typeof fields.address !== "string") return badHandshake("connection info has no address string")
  return { fields, address: fields.address }
}
