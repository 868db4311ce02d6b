/**
 * The worker's outbound TCP connect, for one-shot call-home sockets and pooled mux connections:
 * TCP_NODELAY always, TCP keepalive when asked, bounded by a timeout, with typed errors that
 * name the address.
 *
 * What it does: `dial` connects and, inside the socket's connect handler, hands the socket to
 * `onConnect`, whose result it succeeds with; whoever takes the socket attaches its listeners
 * there, before any later event. No connection within `timeoutMs` is TransportTimeoutError
 * "ConnectTimeout" ("no connection within N ms"); a refused or failed connect is
 * TransportConnectionError "ConnectFailed" with the cause's message. Interrupting it, a timeout
 * or a failure destroys the socket.
 *
 * With `tls` (`DYN_TCP_TLS_CA_CERT_PATH`) the socket is a TLS one (internal/Tls.ts) and "connected"
 * means its handshake completed, within the same timeout; a failed handshake is
 * TransportConnectionError "TlsHandshakeFailed" naming the address.
 *
 * What it does not do: retry, resolve anything itself (node:net does), or speak any protocol once
 * connected.
 */
import type * as net from "node:net"
import { Effect } from "effect"
import { TransportConnectionError, TransportTimeoutError } from "../../../TransportError.ts"
import type { TransportError } from "../../../TransportError.ts"
import { connect, handshakePending, readyEvent, tlsHandshakeError } from "../../../internal/Tls.ts"
import type { ClientTls } from "../../../internal/Tls.ts"
import type { Deadline, DeadlineList } from "../../../internal/DeadlineList.ts"

/** Where and how to connect. */
export interface DialOptions {
  readonly host: string
  readonly port: number
  /** "host:port", named in errors. */
  readonly address: string
  /** Bound on the connect. */
  readonly timeoutMs: number
  /** TCP keepalive initial delay (pooled connections); no keepalive when absent. */
  readonly keepaliveMs?: number | undefined
  /** TLS, verifying the router (`DYN_TCP_TLS_CA_CERT_PATH`); plaintext when absent. */
  readonly tls?: ClientTls | undefined
}

/**
 * Connects to `options.address` and succeeds with `onConnect(socket)`, called synchronously in
 * the connect handler. `sockets`, when given, holds the socket from the start of the connect
 * (so its owner can destroy it); a failed or abandoned connect removes it. `deadlines`, when
 * given, times the connect instead of a `setTimeout` of its own: one timer for every connect of
 * its owner (DeadlineList.ts), whose `timeoutMs` must be `options.timeoutMs`.
 */
export const dial = <A>(
  options: DialOptions,
  onConnect: (socket: net.Socket) => A,
  sockets?: { add(socket: net.Socket): unknown; delete(socket: net.Socket): unknown },
  deadlines?: DeadlineList<() => void>
): Effect.Effect<A, TransportError> =>
  Effect.callback<A, TransportError>((resume) => {
    const keepaliveMs = options.keepaliveMs
    const socket = connect({ host: options.host, port: options.port, keepaliveMs, tls: options.tls })
    const ready = readyEvent(socket)
    sockets?.add(socket)
    let settled = false
    // The two listeners stay on the socket once it is settled and do nothing then: taking them off
    // (and `once`'s wrappers) cost each one-shot call-home about as much as the listeners do.
    const cleanup = () => {
      settled = true
      if (deadline !== undefined) deadlines!.remove(deadline)
      else clearTimeout(timer)
    }
    const abandon = () => {
      socket.destroy()
      sockets?.delete(socket)
    }
    const onTimeout = () => {
      const detail = `no connection within ${options.timeoutMs} ms${handshakePending(socket)}`
      cleanup()
      abandon()
      resume(
        Effect.fail(
          new TransportTimeoutError({ reason: "ConnectTimeout", transport: "tcp", target: options.address, detail })
        )
      )
    }
    const deadline: Deadline<() => void> | undefined = deadlines?.add(onTimeout)
    const timer = deadline === undefined ? setTimeout(onTimeout, options.timeoutMs) : undefined
    const onError = (cause: Error) => {
      if (settled) return // the socket's new owner listens for its errors
      cleanup()
      abandon()
      const tlsError = tlsHandshakeError(socket, options.address, cause)
      resume(Effect.fail(tlsError ?? new TransportConnectionError({ reason: "ConnectFailed", transport: "tcp", target: options.address, detail: cause.message, cause })))
    }
    const onConnected = () => {
      if (settled) return
      cleanup()
      socket.setNoDelay(true)
      if (keepaliveMs !== undefined) socket.setKeepAlive(true, keepaliveMs)
      resume(Effect.succeed(onConnect(socket)))
    }
    socket.on(ready, onConnected)
    socket.on("error", onError)
    return Effect.sync(() => {
      if (settled) return
      cleanup()
      abandon()
    })
  })
