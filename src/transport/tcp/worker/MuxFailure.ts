/**
 * How a worker's mux connection (MuxConnection.ts) fails, without doing any I/O: the typed
 * errors it reports, why it cannot take a stream, and, when its socket closes, the sorting of its
 * streams into those the router may not have seen finish.
 *
 * What it does: says why a connection cannot take a new stream (`connectionProblem`, from the
 * socket's flags and the connection's state); builds the connection's TransportErrors (a
 * duplicate stream id, a bad handshake answer, a frame only a worker may send, a Reset from the
 * router, the socket's close) with the reasons and texts the connection always reported; and
 * `takeUnfinished` empties the connection's stream map and ConnectionAck ledger into the
 * unfinished and unconfirmed ids that `MuxConnectionEvents.onClose` (declared here, re-exported by
 * MuxConnection.ts) reports.
 *
 * What it does not do: write, end or destroy the socket (it only reads its flags), touch the
 * window or the batcher, decide when the connection fails or closes, or call any stream's or
 * owner's callback (the connection does, in its own order). Nothing here runs per frame, except
 * `streamResetError` for a Reset.
 */
import type * as net from "node:net"
import { MuxKind } from "../../../protocol/MuxCodec.ts"
import { TransportConnectionError, TransportProtocolError } from "../../../TransportError.ts"
import type { TransportError } from "../../../TransportError.ts"
import type { AckLedger } from "./AckLedger.ts"
import type { MuxStream } from "./MuxStream.ts"
import type { StreamIdTable } from "../../../internal/StreamIdTable.ts"

const textDecoder = new TextDecoder()

/** The socket flags `connectionProblem` reads. */
export type SocketFlags = Pick<net.Socket, "destroyed" | "readableEnded" | "writable" | "writableEnded">

/**
 * Why a connection cannot take a new stream, or undefined when it can (`MuxConnection.problem`):
 * its socket is `closed` or destroyed, half-closed by the router, not writable, or the connection
 * is not `open` (handshaking or closing).
 */
export function connectionProblem(socket: SocketFlags, closed: boolean, open: boolean): string | undefined {
  if (closed || socket.destroyed) return "the socket is destroyed"
  if (socket.readableEnded) return "the router half-closed the connection"
  if (!socket.writable || socket.writableEnded) return "the socket is not writable"
  if (!open) return "the connection is closing"
  return undefined
}

/** `openStream` was given a stream id the connection to `address` already carries. */
export const duplicateStreamError = (address: string): TransportProtocolError =>
  new TransportProtocolError({ reason: "BadHandshake", transport: "tcp", target: address, detail: "the stream id is already open on this connection" })

/** The router at `address` answered the mux handshake with a frame of `kind` that is not a ConnectionAck(0). */
export const badHandshakeError = (address: string, kind: MuxKind): TransportProtocolError =>
  new TransportProtocolError({
    reason: "BadHandshake",
    transport: "tcp",
    target: address,
    detail: `expected ConnectionAck(0) after the mux handshake, got a ${kind === MuxKind.ConnectionAck ? "ConnectionAck with a non-zero offset" : `frame of kind ${kind}`}`
  })

/** The router at `address` sent a frame of `kind`, which only a worker may send. */
export const unexpectedFrameError = (address: string, kind: MuxKind): TransportProtocolError =>
  new TransportProtocolError({
    reason: "UnexpectedMessage",
    transport: "tcp",
    target: address,
    detail: `the router sent a frame of kind ${kind}, which only a worker may send`
  })

/**
 * What a stream reset by the router at `address` reports (`MuxStream.gone`): the Reset's
 * `payload` is decoded now (the decoder's buffer may be reused), the error built when asked.
 */
export const streamResetError = (address: string, payload: Uint8Array): () => TransportConnectionError => {
  const reason = textDecoder.decode(payload)
  return () => new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: address, detail: `the router reset the stream: ${reason}` })
}

/**
 * Why the connection to `address` closed, when no earlier failure says so: during the handshake
 * (`wasHandshaking`, reason "Refused"), by `close`/`destroy` (`byUs`), or by the router; `cause`
 * is the socket's first error, if any.
 */
export const socketClosedError = (address: string, wasHandshaking: boolean, byUs: boolean, cause: Error | undefined): TransportConnectionError =>
  new TransportConnectionError({
    reason: wasHandshaking ? "Refused" : "ConnectionClosed",
    transport: "tcp",
    target: address,
    detail: wasHandshaking
      ? `the router closed the connection during the mux handshake${cause === undefined ? "" : `: ${cause.message}`}`
      : byUs
      ? "the pooled call-home connection was closed"
      : `the router closed the pooled call-home connection${cause === undefined ? "" : `: ${cause.message}`}`,
    cause
  })

/** What a connection tells its owner, once its handshake has succeeded. */
export interface MuxConnectionEvents {
  /** The connection went from no stream to one (`busy`), or from one to none. */
  readonly onUsage: (busy: boolean) => void
  /**
   * The socket has closed. `byUs` is true when `close`/`destroy` closed it; otherwise `error` says
   * what happened. `unfinished` holds the 16-byte ids of streams still open or whose last frame
   * never reached the socket, `unconfirmed` those written but not yet covered by a ConnectionAck
   * (see `takeUnfinished`; none after a graceful `close`); both are empty in the common case.
   */
  readonly onClose: (error: TransportError, byUs: boolean, unfinished: ReadonlyArray<Uint8Array>, unconfirmed: ReadonlyArray<Uint8Array>) => void
}

/** The streams of a closed connection, and the ids the router may not have seen finish. */
export interface UnfinishedStreams {
  /** The streams that were still open, to be told the connection is gone. */
  readonly streams: ReadonlyArray<MuxStream>
  /** Ids of the open streams, then of ended ones whose last frame never reached the socket. */
  readonly unfinished: Array<Uint8Array>
  /** Ids of ended streams whose last frame was written but not covered by a ConnectionAck. */
  readonly unconfirmed: Array<Uint8Array>
}

/**
 * Empties `open` (the connection's stream map) and `ledger` once the socket has closed, after
 * `written` frame bytes were handed to it. Every stream still open is unfinished (one whose last
 * frame is held for credit too), and so is an ended one whose last frame never reached the
 * socket; one written but not acknowledged is unconfirmed. After a `graceful` close the socket
 * ended behind every queued byte, so ended streams count as whole.
 */
export function takeUnfinished(open: StreamIdTable<MuxStream>, ledger: AckLedger, written: number, graceful: boolean): UnfinishedStreams {
  const streams = open.values()
  open.clear()
  const unfinished = streams.map((s) => s.id)
  const unconfirmed: Array<Uint8Array> = []
  if (!graceful) ledger.takeAll(written, unfinished, unconfirmed)
  ledger.clear()
  return { streams, unfinished, unconfirmed }
}
