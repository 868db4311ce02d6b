/**
 * The hello side of a router connection (`RouterConnection.ts`): reading the worker's answer to
 * the full-mode hello, and the typed error a connection's requests fail with when it closes.
 *
 * What it does:
 * - `HelloAnswerReader` gathers the answer across chunks and judges it: a malformed answer is the
 *   parse error as a TransportProtocolError; status 1 (VersionNotSupported) is TransportProtocolError
 *   "BadHandshake"; status 2 (Refused) is TransportConnectionError "Refused"; Accepted hands back
 *   the bytes after the answer (the first mux frames).
 * - `ConnectDeadline` bounds the connect (from the dial), then the answer (from the connect, when
 *   the hello leaves), by `connectTimeoutMs` each: TransportTimeoutError "ConnectTimeout". The
 *   deadline is judged after one more I/O turn, so a router busy in one long synchronous stretch
 *   right after dialling does not count its own busy time against the worker.
 * - `closeError` names why a connection closed, by how far it got: not connected ("ConnectFailed"),
 *   connected but not answered ("Refused"), or open ("ConnectionClosed", with the worker's reason
 *   when it gave one); a cause already typed is kept as it is. `closedError` is what a request
 *   submitted to a closed connection fails with; `peerClosingError` is the worker's nil-id Error.
 *
 * What it does not do: touch the socket, write the hello, or destroy the connection (the
 * connection does that with what these hand it).
 */
import { HelloStatus, readHelloAnswer } from "../../../protocol/FullModeHello.ts"
import { isParseError } from "../../../protocol/ProtocolError.ts"
import { TransportConnectionError, TransportProtocolError, TransportTimeoutError } from "../../../TransportError.ts"
import type { TransportError } from "../../../TransportError.ts"
import { toTransportProtocolError } from "../../../internal/protocolError.ts"

/** What the worker's answer came to, once read (`HelloAnswerReader.read`). */
export interface HelloOutcome {
  /** False when the answer is malformed (`error` is then its parse error). */
  readonly complete: boolean
  /** Why the connection cannot open, or undefined when the worker accepted. */
  readonly error: TransportError | undefined
  /** The bytes after the answer (empty unless accepted). */
  readonly rest: Uint8Array
}

const EMPTY = new Uint8Array(0)

/** Gathers and judges the worker's hello answer; see the module comment. */
export class HelloAnswerReader {
  private buffered: Uint8Array = EMPTY
  private readonly remote: string

  /** @param remote the worker's "host:port" (named in errors). */
  constructor(remote: string) {
    this.remote = remote
  }

  /** Adds `chunk` to the bytes so far: undefined while the answer is incomplete, else what it came to. */
  read(chunk: Buffer): HelloOutcome | undefined {
    const bytes = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk])
    const answer = readHelloAnswer(bytes)
    if (isParseError(answer)) return { complete: false, error: toTransportProtocolError(answer, "tcp", this.remote), rest: EMPTY }
    if (answer._tag === "NeedMore") {
      this.buffered = bytes
      return undefined
    }
    this.buffered = EMPTY
    if (answer.status === HelloStatus.VersionNotSupported) {
      const error = new TransportProtocolError({
        reason: "BadHandshake",
        transport: "tcp",
        target: this.remote,
        detail: `the worker does not speak full-mode version 1 (it speaks ${answer.version}): ${answer.reason}`
      })
      return { complete: true, error, rest: EMPTY }
    }
    if (answer.status !== HelloStatus.Accepted) {
      const detail = `the worker refused the full-mode connection: ${answer.reason}`
      return { complete: true, error: new TransportConnectionError({ reason: "Refused", transport: "tcp", target: this.remote, detail }), rest: EMPTY }
    }
    return { complete: true, error: undefined, rest: bytes.subarray(answer.size) }
  }
}

/** The connect-and-answer deadline of one connection; see the module comment. */
export class ConnectDeadline {
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  private readonly ms: number
  private readonly address: string
  private readonly isLive: () => boolean
  private readonly expire: (error: TransportTimeoutError) => void

  /**
   * @param ms `connectTimeoutMs`; @param address the worker's "host:port" (named in the error);
   * @param isLive true while the connection still waits for the answer (not open, not closing);
   * @param expire called with the timeout error when the deadline passed while `isLive`.
   */
  constructor(ms: number, address: string, isLive: () => boolean, expire: (error: TransportTimeoutError) => void) {
    this.ms = ms
    this.address = address
    this.isLive = isLive
    this.expire = expire
  }

  /** Starts the deadline again from now, for the connect (`connected` false) or the answer (true). */
  arm(connected: boolean): void {
    clearTimeout(this.timer)
    // Timers run before I/O in a turn of the event loop: after a busy stretch the connect or the
    // answer may be waiting unread. The deadline is judged after one more I/O turn (setImmediate),
    // and only if that turn did not connect (a connect re-arms the timer for the answer).
    const timer = setTimeout(() => {
      setImmediate(() => {
        if (!this.isLive() || this.timer !== timer) return
        const ms = this.ms
        this.expire(
          new TransportTimeoutError({
            reason: "ConnectTimeout",
            transport: "tcp",
            target: this.address,
            detail: connected ? `no full-mode hello answer within ${ms} ms of the hello` : `no connection within ${ms} ms`
          })
        )
      })
    }, this.ms)
    this.timer = timer
  }

  /** The answer came or the connection closed: no deadline any more. */
  clear(): void {
    clearTimeout(this.timer)
    this.timer = undefined
  }
}

/**
 * The typed error the requests of a closed connection fail with.
 *
 * @param connected the socket connected; @param opened the worker accepted the hello;
 * @param peerReason the text of the worker's nil-id Error frame, if it sent one.
 */
export const closeError = (
  cause: Error | undefined,
  remote: string,
  connected: boolean,
  opened: boolean,
  peerReason: string | undefined
): TransportError => {
  if (cause instanceof TransportConnectionError || cause instanceof TransportProtocolError || cause instanceof TransportTimeoutError) return cause
  const why = cause === undefined ? "" : `: ${cause.message}`
  if (!connected) {
    return new TransportConnectionError({ reason: "ConnectFailed", transport: "tcp", target: remote, detail: `cannot connect${why}`, cause })
  }
  if (!opened) {
    return new TransportConnectionError({
      reason: "Refused",
      transport: "tcp",
      target: remote,
      detail: `the worker closed the connection before answering the full-mode hello${why}`,
      cause
    })
  }
  const reason = peerReason === undefined ? why : `: ${peerReason}`
  return new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: remote, detail: `the full-mode connection closed${reason}`, cause })
}

/** What a request submitted to a closed connection fails with: TransportConnectionError "ConnectionClosed". */
export const closedError = (remote: string): TransportError =>
  new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: remote, detail: "the full-mode connection is closed" })

/** The worker's reason for closing (its Error frame with the nil id) as TransportConnectionError "ConnectionClosed". */
export const peerClosingError = (text: string, remote: string): TransportConnectionError =>
  new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: remote, detail: `the worker is closing the full-mode connection: ${text}` })
