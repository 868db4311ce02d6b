/**
 * The call-home server's `net.Server`: listening, accepting, and reading each connection's first
 * frame to tell a one-shot call-home from a pooled (mux) connection.
 *
 * What it does:
 * - `ensureListening` starts the listener on first use and yields the advertised "host:port";
 *   concurrent first calls share one listen, a failed listen ("ListenFailed") is retried by the
 *   next call, and interrupting one caller never cancels the shared listen.
 * - At most `maxConnections` accepted sockets at once: one beyond is destroyed at once.
 * - Every accepted socket gets a bound on its handshake (`handshakeTimeoutMs`), and its first
 *   frame may be at most `MAX_HANDSHAKE_FRAME_SIZE` (64 KiB). Socket options are the routes'
 *   (TCP_NODELAY on mux connections); the peer's address is read only when a refusal or a mux
 *   connection names it.
 *   Its first TwoPartCodec frame, decoded synchronously in the 'data' handler, is read with
 *   `readCallHomeHandshake`; the decoder stops right after it and the bytes that followed go to
 *   the route with the socket: `routes.oneShot` for `{"subject", "stream_type": "response"}`,
 *   `routes.mux` for a response mux v1 handshake (only when `acceptMux`). A bad first frame, a
 *   missing handshake, or a route's refusal destroys that socket only, logged at debug.
 * - With `tls` (`DYN_TCP_TLS_CERT_PATH`/`_KEY_PATH`) the listener is a `tls.Server`: a socket
 *   reaches the above once its handshake completed, decrypted; a failed handshake (a plaintext or
 *   untrusting worker) closes that socket only, logged at debug.
 * - `shutdown` refuses further listens, runs `onShutdown`, destroys every accepted socket and
 *   closes the listener (waiting at most 2 s).
 *
 * What it does not do: know streams (the routes claim them) or drive a socket after its first
 * frame (OneShotConnection and MuxConnection do).
 */
import * as net from "node:net"
import { Effect } from "effect"
import { readCallHomeHandshake } from "../../../protocol/CallHome.ts"
import type { MuxHandshake } from "../../../protocol/MuxHandshake.ts"
import { makeDecoder } from "../../../protocol/TwoPartCodec.ts"
import { advertisedHost, hostPort, LISTEN_BACKLOG } from "../../../internal/net.ts"
import { DeadlineList } from "../../../internal/DeadlineList.ts"
import { TransportConnectionError } from "../../../TransportError.ts"
import { recordError } from "../../../observability/Metrics.ts"
import { createServer } from "../../../internal/Tls.ts"
import type { ServerTls } from "../../../internal/Tls.ts"
import type { LogDebug } from "./StreamLink.ts"

/**
 * Where an accepted socket goes after its handshake frame. Each route takes over the socket and
 * returns undefined, or returns why it refuses it (the listener then destroys the socket).
 */
export interface CallHomeRoutes {
  /** A one-shot handshake for `subject`; `rest` holds the bytes that followed it. */
  readonly oneShot: (socket: net.Socket, subject: string, rest: Uint8Array) => string | undefined
  /** A mux handshake from `remote`; `rest` holds the bytes that followed it. */
  readonly mux: (socket: net.Socket, remote: string, handshake: MuxHandshake, rest: Uint8Array) => string | undefined
}

/** Options of the listener. */
export interface CallHomeListenerOptions {
  readonly host: string
  readonly port: number
  readonly advertiseHost?: string | undefined
  readonly maxMessageSize: number
  readonly handshakeTimeoutMs: number
  /** Whether a mux handshake is accepted (mux mode), or refused as a bad handshake. */
  readonly acceptMux: boolean
  readonly routes: CallHomeRoutes
  /** Runs at the start of `shutdown`, after further listens are refused. */
  readonly onShutdown: () => void
  readonly logDebug: LogDebug
  /** TLS (`DYN_TCP_TLS_CERT_PATH`/`_KEY_PATH`): sockets reach the routes decrypted; undefined: plaintext. */
  readonly tls?: ServerTls | undefined
  /** Most accepted sockets at once (`DYN_TCP_RESPONSE_MAX_CONNECTIONS`); one beyond is destroyed at once. Absent: no cap. */
  readonly maxConnections?: number | undefined
}

/**
 * Largest first frame an accepted socket may send (64 KiB): a handshake is a few hundred bytes, and
 * a peer that has not said who it is gets no buffer of `maxMessageSize` (32 MiB) on a 24-byte claim.
 */
export const MAX_HANDSHAKE_FRAME_SIZE = 64 * 1024

/** A lazily started call-home listener; see the module comment. */
export interface CallHomeListener {
  /** The advertised "host:port", once listening. */
  readonly address: () => string | undefined
  /** True once `shutdown` has begun. */
  readonly isShutDown: () => boolean
  /** The advertised "host:port", starting the listener on first use. */
  readonly ensureListening: Effect.Effect<string, TransportConnectionError>
  /** Closes the listener and every accepted socket. */
  readonly shutdown: Effect.Effect<void>
}

const ignore = () => {}

/** Builds a listener that does nothing until `ensureListening`. */
export const makeListener = (options: CallHomeListenerOptions): CallHomeListener => {
  const { logDebug, routes } = options
  const bindTarget = hostPort(options.host, options.port)
  const sockets = new Set<net.Socket>()
  let server: net.Server | undefined
  let address: string | undefined
  let starting: Array<(effect: Effect.Effect<string, TransportConnectionError>) => void> | undefined
  let shutDown = false
  // Every accepted socket's handshake deadline, on one timer (DeadlineList.ts): a `setTimeout` per
  // connection cost the unpooled modes' router about 5,000 instructions a call in Node's timer
  // lists (counted with callgrind, MODE=dynamo). Sockets keep the process up, not this timer.
  const handshakes = new DeadlineList<() => void>(options.handshakeTimeoutMs, (onTimeout) => onTimeout(), false)

  const accept = (socket: net.Socket) => {
    if (options.maxConnections !== undefined && sockets.size >= options.maxConnections) {
      logDebug("refused call-home connection", { remote: socket.remoteAddress, reason: `too many connections (max ${options.maxConnections})` })
      socket.destroy()
      return
    }
    sockets.add(socket)
    socket.on("error", ignore) // the driver records errors once it has the socket
    // No NODELAY and no peer address here: a one-shot stream's router side only reads (a lone
    // stop or kill frame is not held by Nagle), and `getpeername` is a system call; the mux
    // route sets NODELAY, and the address is read only when a refusal or a mux connection names it.
    const remote = () => hostPort(socket.remoteAddress ?? "?", socket.remotePort ?? 0)
    const decoder = makeDecoder({ maxMessageSize: Math.min(options.maxMessageSize, MAX_HANDSHAKE_FRAME_SIZE) })
    let first: ReturnType<typeof readCallHomeHandshake> | undefined

    const refuse = (why: string, type: "timeout" | "protocol" = "protocol") => {
      recordError("tcp", type, "client")
      logDebug("refused call-home connection", { remote: remote(), reason: why })
      socket.destroy()
    }
    const onTimeout = () => refuse(`no handshake within ${options.handshakeTimeoutMs} ms`, "timeout")
    const onFrame = (header: Uint8Array, body: Uint8Array) => {
      first = readCallHomeHandshake(header, body, options.acceptMux)
      decoder.stop() // the bytes after the handshake belong to the route
    }
    const onData = (chunk: Buffer) => {
      const error = decoder.decode(chunk, onFrame)
      const handshake = first
      if (handshake === undefined) {
        if (error !== undefined) refuse(error.message)
        return
      }
      socket.off("data", onData)
      handshakes.remove(deadline)
      if (handshake._tag === "ProtocolParseError") return refuse(handshake.detail)
      const rest = chunk.subarray(decoder.stopOffset())
      const refusal = handshake._tag === "OneShot"
        ? routes.oneShot(socket, handshake.subject, rest)
        : routes.mux(socket, remote(), handshake.handshake, rest)
      if (refusal !== undefined) refuse(refusal)
    }
    // A deadline, not an inactivity timer: a handshake dribbled a byte at a time is cut as well.
    const deadline = handshakes.add(onTimeout)
    socket.once("close", () => {
      sockets.delete(socket)
      handshakes.remove(deadline)
    })
    socket.on("data", onData)
  }

  const unavailable = () =>
    new TransportConnectionError({ reason: "ServerUnavailable", transport: "tcp", target: bindTarget, detail: "the call-home server has shut down" })

  const ensureListening: Effect.Effect<string, TransportConnectionError> = Effect.callback((resume) => {
    if (shutDown) return resume(Effect.fail(unavailable()))
    if (address !== undefined) return resume(Effect.succeed(address))
    if (starting !== undefined) {
      starting.push(resume)
      return Effect.sync(() => {
        const i = starting?.indexOf(resume) ?? -1
        if (i >= 0) starting!.splice(i, 1)
      })
    }
    const waiters = [resume]
    starting = waiters
    const srv = createServer(options.tls, accept, (error, remote) => logDebug("refused call-home connection: TLS handshake failed", { remote, error: error.message }))
    server = srv
    const onError = (cause: Error) => {
      srv.off("listening", onListening)
      if (server === srv) server = undefined
      starting = undefined
      const error = new TransportConnectionError({ reason: "ListenFailed", transport: "tcp", target: bindTarget, detail: cause.message, cause })
      for (const w of waiters) w(Effect.fail(error))
    }
    const onListening = () => {
      srv.off("error", onError)
      starting = undefined
      if (shutDown) {
        // The scope closed while we were binding: close at once and refuse the waiters.
        srv.close()
        for (const w of waiters) w(Effect.fail(unavailable()))
        return
      }
      srv.on("error", (cause) => logDebug("call-home server error", { error: cause.message }))
      const bound = srv.address()
      const port = typeof bound === "object" && bound !== null ? bound.port : options.port
      address = hostPort(advertisedHost(options.host, options.advertiseHost), port)
      for (const w of waiters) w(Effect.succeed(address))
    }
    srv.once("error", onError)
    srv.once("listening", onListening)
    srv.listen({ port: options.port, host: options.host, backlog: LISTEN_BACKLOG })
    // Interrupting one waiter never cancels the shared listen.
    return Effect.sync(() => {
      const i = waiters.indexOf(resume)
      if (i >= 0) waiters.splice(i, 1)
    })
  })

  const shutdown = Effect.callback<void>((resume) => {
    shutDown = true
    handshakes.stop()
    options.onShutdown()
    for (const socket of sockets) socket.destroy()
    const srv = server
    server = undefined
    if (srv === undefined || !srv.listening) return resume(Effect.void)
    const timer = setTimeout(() => resume(Effect.void), 2000)
    srv.close(() => {
      clearTimeout(timer)
      resume(Effect.void)
    })
  })

  return { address: () => address, isShutDown: () => shutDown, ensureListening, shutdown }
}
