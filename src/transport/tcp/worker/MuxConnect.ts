/**
 * Opening a pooled call-home connection (response mux v1, docs/protocol.md): dial, handshake,
 * and the router's ConnectionAck(0), all within one `connectTimeoutMs`.
 *
 * What it does: `connectMux` dials (Dialer.ts: TCP_NODELAY and keepalive, "ConnectTimeout" or
 * "ConnectFailed"), builds the `MuxConnection` on the connected socket (which sends the
 * TwoPartCodec handshake at once) and waits for its handshake: the router's close before the ack
 * is TransportConnectionError "Refused" (it does not take mux connections, or the
 * frontend_server_id is stale), anything but a ConnectionAck(0) first is TransportProtocolError
 * "BadHandshake", no ack in time is TransportTimeoutError "ConnectTimeout" ("no mux
 * ConnectionAck within N ms"). Every error names the target.
 *
 * What it does not do: retry, or decide where to connect (the pool does).
 */
import { Effect } from "effect"
import { TransportTimeoutError } from "../../../TransportError.ts"
import type { TransportError } from "../../../TransportError.ts"
import { dial } from "./Dialer.ts"
import type { ClientTls } from "../../../internal/Tls.ts"
import { MuxConnection } from "./MuxConnection.ts"
import type { MuxConnectionEvents, MuxConnectionOptions } from "./MuxConnection.ts"

/** Where and how to open a mux connection. */
export interface MuxConnectOptions extends MuxConnectionOptions {
  readonly host: string
  readonly port: number
  /** Bound on connect + handshake + ConnectionAck. */
  readonly connectTimeoutMs: number
  /** TCP keepalive initial delay. */
  readonly keepaliveMs: number
  /** TLS of the dial (`DYN_TCP_TLS_CA_CERT_PATH`); plaintext when absent. */
  readonly tls?: ClientTls | undefined
}

/**
 * Connects a mux connection and completes its handshake, within `options.connectTimeoutMs`,
 * and succeeds with `onReady(connection)`, called synchronously once the router has
 * acknowledged the handshake (before any later socket event). Interrupting it destroys the socket.
 */
export const connectMux = <A>(
  options: MuxConnectOptions,
  events: MuxConnectionEvents,
  onReady: (connection: MuxConnection) => A
): Effect.Effect<A, TransportError> =>
  Effect.suspend(() => {
    const deadline = performance.now() + options.connectTimeoutMs
    const dialed = dial(
      { host: options.host, port: options.port, address: options.address, timeoutMs: options.connectTimeoutMs, keepaliveMs: options.keepaliveMs, tls: options.tls },
      (socket) => new MuxConnection(socket, crypto.randomUUID(), options, events)
    )
    return Effect.flatMap(dialed, (conn) => awaitHandshake(conn, deadline, options, onReady))
  })

/** Waits for `conn`'s handshake until `deadline` (`performance.now()` ms). */
const awaitHandshake = <A>(
  conn: MuxConnection,
  deadline: number,
  options: MuxConnectOptions,
  onReady: (connection: MuxConnection) => A
): Effect.Effect<A, TransportError> =>
  Effect.callback<A, TransportError>((resume) => {
    let settled = false
    const timer = setTimeout(() => {
      if (settled) return
      settled = true
      conn.destroy()
      resume(
        Effect.fail(
          new TransportTimeoutError({
            reason: "ConnectTimeout",
            transport: "tcp",
            target: options.address,
            detail: `no mux ConnectionAck within ${options.connectTimeoutMs} ms`
          })
        )
      )
    }, Math.max(0, deadline - performance.now()))
    conn.whenReady((error) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resume(error === undefined ? Effect.succeed(onReady(conn)) : Effect.fail(error))
    })
    return Effect.sync(() => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      conn.destroy()
    })
  })
