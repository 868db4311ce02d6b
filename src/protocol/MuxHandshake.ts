/**
 * The parts of response mux v1 (PROTOCOL.md section 7, docs/protocol.md "Pooled, multiplexed
 * call-home") that are JSON rather than compact frames, shared by the router's stream server and
 * the worker's connection pool:
 * - the `tcp_response_mux_v1` ConnectionInfo (`muxConnectionInfo` writes it, `parseMuxInfo`
 *   checks it against the request id);
 * - the connection handshake, a TwoPartCodec header-only frame (`encodeMuxHandshake`,
 *   `parseMuxHandshake`);
 * - the Prologue payload (`PROLOGUE_OK_PAYLOAD`, `encodeProloguePayload`);
 * - the flow-control defaults.
 *
 * Pure data and (de)serialization: no I/O, no Effect. The compact framing is codec/MuxCodec.ts.
 */
import { streamIdFromUuid } from "./MuxCodec.ts"
import { isUuid } from "./StreamId.ts"
import { encodeHeaderOnlyJson } from "./TwoPartCodec.ts"
import type { ConnectionInfo } from "../ConnectionInfo.ts"
import { ProtocolParseError } from "./ProtocolError.ts"
import { badHandshake, readInfoObject } from "./ConnectionInfoText.ts"

/** The `ConnectionInfo.transport` of a pooled, multiplexed call-home stream. */
export const MUX_CONNECTION_TRANSPORT = "tcp_response_mux_v1"

/** The handshake's `kind`. */
export const MUX_HANDSHAKE_KIND = "response_mux"

/** The only protocol version: the handshake's `version`. */
export const MUX_VERSION = 1

/** Default send window of one stream, in Data payload bytes (section 7: 256 KiB). */
export const DEFAULT_STREAM_WINDOW = 256 * 1024
/** Default send window of one connection, in frame bytes not yet acknowledged (section 7: 256 KiB). */
export const DEFAULT_CONNECTION_WINDOW = 256 * 1024
/** The router sends a credit update as soon as this many bytes are owed (section 7: 64 KiB). */
export const CREDIT_UPDATE_BYTES = 64 * 1024
/**
 * ... or at the latest this long after the first byte it owes, unless a write takes it first
 * (section 7: 50 ms). Not sooner: a timer due within a few ms, pending while the process waits
 * for its peer, makes each loopback round trip ~5 µs longer (docs/performance.md, "A pending
 * 1 ms timer"), and credit is no more urgent than that: 64 KiB owed go out at once, and windows
 * of at least 64 KiB (256 KiB by default) never wait for the timer's credit.
 */
export const CREDIT_UPDATE_MS = 50

/** The decoded `info` of a `tcp_response_mux_v1` ConnectionInfo. */
export interface MuxConnectionInfo {
  readonly address: string
  readonly frontend_server_id: string
  readonly stream_id: string
  readonly context: string
}

/** Builds the wire ConnectionInfo of a mux stream, encoding `info` twice as `tcp_server` does. */
export const muxConnectionInfo = (info: MuxConnectionInfo): ConnectionInfo => ({
  transport: MUX_CONNECTION_TRANSPORT,
  info: JSON.stringify({
    address: info.address,
    frontend_server_id: info.frontend_server_id,
    stream_id: info.stream_id,
    context: info.context
  })
})

/** A checked mux ConnectionInfo: the address parts and the 16 stream id bytes. */
export interface ParsedMuxInfo {
  readonly address: string
  readonly frontendServerId: string
  readonly streamId: string
  readonly streamIdBytes: Uint8Array
}


/** The last `frontend_server_id` that `parseMuxInfo` found to be a UUID. */
let lastFrontendServerId = ""

/**
 * Checks a `tcp_response_mux_v1` ConnectionInfo: `info` is JSON text with an address string,
 * UUIDs in `frontend_server_id` and `stream_id` (the nil UUID is refused for the stream), and a
 * `context` equal to the request id. Returns the error naming what is wrong otherwise.
 */
export const parseMuxInfo = (connectionInfo: ConnectionInfo, requestId: string): ParsedMuxInfo | ProtocolParseError => {
  const read = readInfoObject(connectionInfo)
  if (read instanceof ProtocolParseError) return read
  const { address } = read
  const { frontend_server_id, stream_id, context } = read.fields
  // The same router's id on every request: checked once, then compared (no bytes are made for it).
  if (typeof frontend_server_id !== "string" || (frontend_server_id !== lastFrontendServerId && !isUuid(frontend_server_id))) {
    return badHandshake(`frontend_server_id ${JSON.stringify(frontend_server_id)} is not a UUID`)
  }
  lastFrontendServerId = frontend_server_id
  const bytes = typeof stream_id === "string" ? streamIdFromUuid(stream_id) : undefined
  if (bytes === undefined || bytes.every((b) => b === 0)) {
    return badHandshake(`stream_id ${JSON.stringify(stream_id)} is not a non-nil UUID`)
  }
  if (context !== requestId) {
    return badHandshake(`context ${JSON.stringify(context)} is not the request id ${JSON.stringify(requestId)}`)
  }
  return { address, frontendServerId: frontend_server_id, streamId: stream_id as string, streamIdBytes: bytes }
}

/** The handshake's `ping` value that offers heartbeats (Ping/Pong, kinds 13 and 14). */
export const MUX_PING_VERSION = 1

/**
 * The worker's first frame on a new mux connection (a TwoPartCodec header-only frame). With
 * `heartbeats` it ends with `"ping":1`: the worker answers the router's Ping (kind 13) with a Pong
 * (kind 14) on this connection (docs/protocol.md section 6, "Heartbeats"); a router that does not
 * know the field ignores it and sends no Ping.
 */
export const encodeMuxHandshake = (frontendServerId: string, connectionId: string, heartbeats = false): Uint8Array =>
  encodeHeaderOnlyJson({
    kind: MUX_HANDSHAKE_KIND,
    version: MUX_VERSION,
    frontend_server_id: frontendServerId,
    connection_id: connectionId,
    ...(heartbeats ? { ping: MUX_PING_VERSION } : {})
  })

/** A checked handshake. */
export interface MuxHandshake {
  readonly frontendServerId: string
  readonly connectionId: string
  /** The worker offered heartbeats (`"ping": 1`); absent otherwise. */
  readonly heartbeats?: true | undefined
}

/**
 * True when a decoded handshake header is a mux handshake (its `kind` is "response_mux"), as
 * opposed to the one-shot `{"subject", "stream_type"}` handshake.
 */
export const isMuxHandshake = (value: Record<string, unknown>): boolean => value.kind === MUX_HANDSHAKE_KIND

/** Checks a mux handshake: version 1 and two UUID strings. Returns what is wrong as text otherwise. */
export const parseMuxHandshake = (value: Record<string, unknown>): MuxHandshake | string => {
  if (value.version !== MUX_VERSION) return `unsupported response mux version ${JSON.stringify(value.version)} (this router speaks 1)`
  const { frontend_server_id, connection_id } = value
  if (typeof frontend_server_id !== "string" || streamIdFromUuid(frontend_server_id) === undefined) {
    return `frontend_server_id ${JSON.stringify(frontend_server_id)} is not a UUID`
  }
  if (typeof connection_id !== "string" || connection_id === "") return `connection_id ${JSON.stringify(connection_id)} is not a string`
  return value.ping === MUX_PING_VERSION
    ? { frontendServerId: frontend_server_id, connectionId: connection_id, heartbeats: true }
    : { frontendServerId: frontend_server_id, connectionId: connection_id }
}

const textEncoder = new TextEncoder()

/** A Reset payload: the reason as UTF-8 text. */
export const encodeResetPayload = (reason: string): Uint8Array => textEncoder.encode(reason)
