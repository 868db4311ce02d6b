/**
 * The seam between the TCP request plane's two framings on one port: what `TcpRequestServer`
 * (the listener, Dynamo framing) hands to the full mode (`../full/`), and what the request-plane
 * client asks of the full mode. Types only.
 */
import type * as net from "node:net"
import type { ConnectionInfo } from "../../../ConnectionInfo.ts"
import type { Admission, RequestHandler, RequestMessage, RequestTarget, ServedEndpointKey } from "../../../RequestPlane.ts"
import type { EndpointNotFound, TransportError } from "../../../TransportError.ts"

/** One endpoint a worker serves on its TCP request port. */
export interface ServedTcpEndpoint {
  readonly key: ServedEndpointKey
  readonly handler: RequestHandler
  readonly admit: Admission | undefined
}

/** The endpoints a TCP request server serves, by the endpoint path as it travels on the wire. */
export interface TcpEndpointTable {
  /** The endpoint for a wire path, or undefined when none is served under it. */
  readonly lookup: (path: string) => ServedTcpEndpoint | undefined
  /** True once the worker is draining (its scope is closing): new requests are refused "unavailable". */
  readonly draining: () => boolean
}

/** The worker side of the full mode, as the TCP request server sees it. */
export interface FullModeAcceptor {
  /**
   * Takes over `socket`, a connection whose first bytes (`head`, everything read so far, at least
   * the two zero bytes that start the hello) began with the full-mode hello. The server has removed
   * its own 'data' listener; the acceptor reads, writes and closes the socket from now on, and
   * calls `release` exactly once when the socket has closed.
   */
  readonly accept: (socket: net.Socket, head: Uint8Array, endpoints: TcpEndpointTable, release: () => void) => void
}

/** The router side of the full mode, as the TCP request-plane client sees it. */
export interface FullModeSender {
  /** Like `RequestPlaneClient.sendCallback`, over a persistent full-mode connection to the target. */
  readonly sendCallback: (
    target: RequestTarget,
    message: RequestMessage,
    onAck: (error: TransportError | EndpointNotFound | undefined) => void
  ) => () => void
}

/** The unified record's metadata key (value "1") that says a worker speaks the full mode. */
export const TCP_MUX_METADATA_KEY = "tcp_mux"

/**
 * The `connection_info` of every full-mode Request: fixed, never a call-home address (the
 * responses come back on the request's connection). Workers of this mode ignore it; a worker
 * of this project from before 2026-11-29 required the field, and with this value finds the
 * request's writer by request id as it always did (its transport names the TCP response
 * client; nothing dials `info`).
 */
export const FULL_MODE_CONNECTION_INFO: ConnectionInfo = { transport: "tcp_server", info: "{}" }

/** True when the target's instance record advertised the full mode. */
export const speaksFullMode = (target: Pick<RequestTarget, "metadata">): boolean => target.metadata?.[TCP_MUX_METADATA_KEY] === "1"
