/**
 * The router's side of the TCP call-home response plane (docs/protocol.md section 4), wire-compatible
 * with Dynamo's `TcpStreamServer`: the `ResponsePlaneServer` that opens response streams and
 * takes the workers' call-homes on one port.
 *
 * What it does:
 * - `open` registers a pending stream (a `CallHomeStream`) under a fresh uuid v4 subject (single
 *   use) and returns the ConnectionInfo to send with the request: `tcp_server`, or with `mux`
 *   (`DYN_TCP_POOL_ENABLED=true`) `tcp_response_mux_v1` (`{address, frontend_server_id,
 *   stream_id, context}`; the stream id is the subject). The listener starts lazily on the first
 *   `open` (CallHomeListener); a failed listen is retried by the next `open`.
 * - Routes each accepted connection by its first frame: a one-shot handshake naming a waiting
 *   stream claims it (OneShotConnection drives the socket); an unknown or already-served subject
 *   is refused. In mux mode, a mux handshake naming this server's `frontend_server_id` becomes a
 *   MuxConnection (TCP_NODELAY, TCP keepalive `muxKeepaliveMs`) on which many streams are claimed by their
 *   Prologue; another server's id is refused. A stream opened in mux mode may also be claimed by
 *   a one-shot handshake whose subject is its stream id.
 * - Every stream keeps the semantics of CallHomeStream: exactly one of `onEnd`/`onError`, none
 *   after `close()`; "CallHomeTimeout" after `callHomeTimeoutMs`, "StreamEndedEarly" when cut
 *   short, HandlerError for the worker's prologue or in-band error, TransportProtocolError for
 *   bad bytes (a mux stream's worker gets a Reset; a one-shot socket is destroyed).
 * - Inactivity (`idleTimeoutMs`, `DYN_STREAM_IDLE_TIMEOUT_SECS`): one `IdleSweep` per server looks
 *   at every stream of its table that has called home (one-shot, pooled, and the full mode's,
 *   which share the table) and fails one that received nothing, no item and no heartbeat, for the
 *   timeout with TransportTimeoutError "StreamIdle" (`CallHomeStream.idleOut`); on the way it
 *   pings the pooled connections whose worker offered heartbeats and that have been silent for
 *   the ping interval (`MuxConnection.keepAlive`). The sweep runs while streams are open.
 * - When the scope closes: streams still open fail with TransportConnectionError
 *   "ConnectionClosed", every socket is destroyed and the listener closed.
 * - For tests and failure drills only, `muxDrill(server)` counts the accepted mux connections and
 *   resets them all (a crashed router). It is not part of the service shape, and no package
 *   subpath exports this module.
 *
 * What it does not do: pooling (the worker's side), TLS itself (the listener takes `tls`), request-plane work, or backpressure
 * beyond pause/resume and the mux credits (the sink is called synchronously). No Effect or fiber
 * runs per frame or per chunk; Effect starts and stops the listener, and logs from socket
 * callbacks through the context captured in `make`.
 */
import type * as net from "node:net"
import { Effect } from "effect"
import type { Scope } from "effect"
import { tcpConnectionInfo } from "../../../ConnectionInfo.ts"
import { muxConnectionInfo } from "../../../protocol/MuxHandshake.ts"
import type { MuxHandshake } from "../../../protocol/MuxHandshake.ts"
import { randomStreamId } from "../../../protocol/StreamId.ts"
import type { OpenStreamOptions, PendingStream, ResponsePlaneServer } from "../../../ResponsePlane.ts"
import { makeListener } from "./CallHomeListener.ts"
import { CallHomeStream } from "./CallHomeStream.ts"
import { Phase } from "./StreamLink.ts"
import type { CallHomeWaiter, LogDebug, StreamEnv } from "./StreamLink.ts"
import { DeadlineList } from "../../../internal/DeadlineList.ts"
import { MuxConnection } from "./MuxConnection.ts"
import { OneShotConnection } from "./OneShotConnection.ts"
import { makeDebugLog } from "../../../internal/debugLog.ts"
import { idleTimings, IdleSweep } from "../../../internal/IdleSweep.ts"
import type { ServerTls } from "../../../internal/Tls.ts"
import { StreamIdTable, valueOfSubject } from "../../../internal/StreamIdTable.ts"
import type { ReadonlyStreamIdTable } from "../../../internal/StreamIdTable.ts"


/** Options of the call-home stream server. */
export interface CallHomeServerOptions {
  /** Bind address (`DYN_TCP_RESPONSE_HOST`). */
  readonly host: string
  /** Bind port; 0 picks a free one (`DYN_TCP_RESPONSE_PORT`). */
  readonly port: number
  /** Host advertised to workers; by default derived from `host` (see `advertisedHost`). */
  readonly advertiseHost?: string | undefined
  /** How long a pending stream waits for its worker to call home (`DYN_TCP_CALL_HOME_TIMEOUT_SECS`). */
  readonly callHomeTimeoutMs: number
  /** Largest frame accepted, prefix included (`DYN_TCP_MAX_MESSAGE_SIZE`). */
  readonly maxMessageSize: number
  /** How long after `complete_final` the router waits for the sentinel before closing (default 1000 ms). */
  readonly sentinelTimeoutMs?: number | undefined
  /** How long an accepted socket may take to send its handshake frame (default 10000 ms, as Dynamo). */
  readonly handshakeTimeoutMs?: number | undefined
  /**
   * Pooled, multiplexed call-home (`DYN_TCP_POOL_ENABLED`): hand out `tcp_response_mux_v1`
   * ConnectionInfo and accept mux connections too. Off by default: exactly the one-shot server.
   */
  readonly mux?: boolean | undefined
  /** This server's `frontend_server_id` in mux mode (default: a fresh uuid v4). */
  readonly frontendServerId?: string | undefined
  /**
   * TCP keepalive initial delay of accepted call-home connections, mux and one-shot (`DYN_TCP_POOL_KEEPALIVE_SECS`,
   * default `DEFAULT_MUX_KEEPALIVE_MS`), so a worker that vanished without a FIN is noticed: mux
   * connections from the start, one-shot ones if still open `ONE_SHOT_KEEPALIVE_WITHIN_MS` (or
   * this delay, if shorter) after their call-home at the latest.
   */
  readonly muxKeepaliveMs?: number | undefined
  /**
   * The table the server keeps its open streams in, by subject (default: its own). The TCP
   * response transport passes the process's `FullModeHub` table, so that the full TCP mode's
   * connections feed the same streams.
   */
  readonly streams?: StreamIdTable<CallHomeStream> | undefined
  /**
   * A stream that has called home and receives nothing (no item, no heartbeat) for this long fails
   * with TransportTimeoutError "StreamIdle" (`DYN_STREAM_IDLE_TIMEOUT_SECS`); 0 or absent: off.
   */
  readonly idleTimeoutMs?: number | undefined
  /** TLS on the listener (`DYN_TCP_TLS_CERT_PATH`/`_KEY_PATH`, `internal/Tls.ts`); undefined: plaintext. */
  readonly tls?: ServerTls | undefined
  /** Most accepted sockets at once, one-shot and mux (`DYN_TCP_RESPONSE_MAX_CONNECTIONS`); absent: no cap. */
  readonly maxConnections?: number | undefined
}

/** The call-home server: a `ResponsePlaneServer` of transport "tcp". */
export interface CallHomeServer extends ResponsePlaneServer {}

/** A view of a call-home server's accepted mux connections, for tests and failure drills. */
export interface MuxDrill {
  /** Accepted mux connections open now. */
  readonly connectionCount: () => number
  /**
   * Resets every accepted mux connection, as a crashed router would (their streams fail with
   * "StreamEndedEarly").
   */
  readonly dropConnections: () => void
}

const drills = new WeakMap<ResponsePlaneServer, MuxDrill>()

/**
 * The mux connections of a server that `make` built (tests and failure drills only; kept off the
 * service, so it is no part of the public shape). Throws for any other server.
 */
export const muxDrill = (server: ResponsePlaneServer): MuxDrill => {
  const drill = drills.get(server)
  if (drill === undefined) throw new Error(`muxDrill: not a call-home server (transport ${server.transport})`)
  return drill
}

/** Default bound on the wait for the sentinel after `complete_final`. */
export const DEFAULT_SENTINEL_TIMEOUT_MS = 1000
/** Default bound on the wait for the handshake frame of an accepted socket (Dynamo uses 10 s). */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000
/** Default TCP keepalive initial delay of accepted mux connections (`DYN_TCP_POOL_KEEPALIVE_SECS`' default, 60 s). */
export const DEFAULT_MUX_KEEPALIVE_MS = 60_000
/** At the latest, how long after its call-home a one-shot stream still open gets TCP keepalive (one sweep, not four system calls per stream). */
export const ONE_SHOT_KEEPALIVE_WITHIN_MS = 1000

/**
 * Builds the call-home response server. The listener starts on the first `open` and is closed,
 * with all its sockets, when the scope closes; streams still open then fail with
 * TransportConnectionError "ConnectionClosed".
 */
export const make = (options: CallHomeServerOptions): Effect.Effect<CallHomeServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const logDebug: LogDebug = (yield* makeDebugLog("transport.tcp.router")).now
    const muxEnabled = options.mux === true
    const frontendServerId = options.frontendServerId ?? crypto.randomUUID()
    const muxKeepaliveMs = options.muxKeepaliveMs ?? DEFAULT_MUX_KEEPALIVE_MS

    /** Streams not yet settled or closed, by id (the subject's bytes). */
    const streams = options.streams ?? new StreamIdTable<CallHomeStream>()
    const muxConnections = new Set<MuxConnection>()
    // One timer each for every stream's call-home and sentinel deadlines (DeadlineList.ts), not a
    // setTimeout per stream; stopped after the listener's shutdown has settled the streams.
    const sentinelTimeoutMs = options.sentinelTimeoutMs ?? DEFAULT_SENTINEL_TIMEOUT_MS
    const callHomeDeadlines = new DeadlineList<CallHomeWaiter>(options.callHomeTimeoutMs, (stream) => stream.callHomeExpired())
    // A stream is whole once it awaits its sentinel: that wait never keeps the process up.
    const sentinelDeadlines = new DeadlineList<CallHomeWaiter>(sentinelTimeoutMs, (stream) => stream.sentinelExpired(), false)
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        callHomeDeadlines.stop()
        sentinelDeadlines.stop()
      })
    )
    const env: StreamEnv = {
      callHomeTimeoutMs: options.callHomeTimeoutMs,
      callHomeDeadlines,
      sentinelTimeoutMs,
      sentinelDeadlines,
      forget: (id) => streams.delete(id),
      logDebug,
      connectionInfo: (address, subject, requestId) =>
        muxEnabled
          ? muxConnectionInfo({ address, frontend_server_id: frontendServerId, stream_id: subject, context: requestId })
          : tcpConnectionInfo({ address, subject, context: requestId, stream_type: "response" })
    }

    const idleMs = options.idleTimeoutMs ?? 0
    const sweep = idleMs > 0 ? makeSweep(idleMs, streams, env, muxConnections) : undefined
    if (sweep !== undefined) yield* Effect.addFinalizer(() => Effect.sync(() => sweep.stop()))

    // Stops after each run (every open one-shot stream then has keepalive); each claim wakes it.
    const keepaliveSweep = new IdleSweep(Math.min(ONE_SHOT_KEEPALIVE_WITHIN_MS, muxKeepaliveMs), () => {
      streams.forEach((stream) => {
        if (stream.openedIn(env)) stream.link?.keepAlive?.(muxKeepaliveMs)
      })
      return false
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => keepaliveSweep.stop()))

    const claimOneShot = (socket: net.Socket, subject: string, rest: Uint8Array): string | undefined => {
      const stream = valueOfSubject(streams, subject)
      if (stream === undefined || stream.phase !== Phase.Waiting) return `unknown or already-served subject ${subject}`
      const conn = new OneShotConnection(socket, stream, options.maxMessageSize)
      // A stream can run for minutes: keepalive notices a worker whose host vanished without a FIN
      // (a network cut) after about the delay plus Node's ten 1 s probes, instead of never. It is
      // turned on for the streams still open at the next keepalive sweep (within
      // ONE_SHOT_KEEPALIVE_WITHIN_MS): most one-shot streams last milliseconds, and its four
      // setsockopt calls per stream were 8% of the router's busy time at 64 in flight.
      keepaliveSweep.wake()
      stream.claim(conn)
      conn.start(rest)
      return undefined
    }

    const acceptMux = (socket: net.Socket, remote: string, handshake: MuxHandshake, rest: Uint8Array): string | undefined => {
      if (handshake.frontendServerId !== frontendServerId) {
        return `mux handshake for frontend_server_id ${handshake.frontendServerId}, this server is ${frontendServerId}`
      }
      // Long-lived: keepalive notices a worker that vanished without a FIN; NODELAY, as the router
      // writes credit and heartbeats on it.
      socket.setNoDelay(true)
      socket.setKeepAlive(true, muxKeepaliveMs)
      const conn = new MuxConnection({
        socket,
        remote,
        connectionId: handshake.connectionId,
        maxMessageSize: options.maxMessageSize,
        streams,
        logDebug,
        onClose: (closed) => muxConnections.delete(closed),
        heartbeats: handshake.heartbeats === true
      })
      muxConnections.add(conn)
      logDebug("accepted mux connection", { remote, connection: handshake.connectionId })
      conn.start(rest)
      return undefined
    }

    const listener = makeListener({
      host: options.host,
      port: options.port,
      advertiseHost: options.advertiseHost,
      maxMessageSize: options.maxMessageSize,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
      acceptMux: muxEnabled,
      routes: { oneShot: claimOneShot, mux: acceptMux },
      onShutdown: () => {
        // Only this server's streams: the table may be shared (FullModeHub).
        for (const stream of streams.values()) if (stream.openedIn(env)) stream.serverClosed()
      },
      logDebug,
      tls: options.tls,
      maxConnections: options.maxConnections
    })
    yield* Effect.addFinalizer(() => listener.shutdown)

    const openAt = (address: string, openOptions: OpenStreamOptions): PendingStream => {
      // The stream is the PendingStream itself (its methods are the consumer's side). Its id is a
      // fresh UUID v4's bytes; the subject's text is made only if something asks for it.
      const stream = new CallHomeStream(env, randomStreamId(), address, openOptions)
      streams.set(stream.id, stream)
      sweep?.wake()
      return stream
    }

    /** A stream opened at once when the server listens, else undefined (`open` waits for it). */
    const openNow = (openOptions: OpenStreamOptions): PendingStream | undefined => {
      const address = listener.address()
      return address !== undefined && !listener.isShutDown() ? openAt(address, openOptions) : undefined
    }

    const server: CallHomeServer = {
      transport: "tcp",
      open: (openOptions) =>
        Effect.suspend(() => {
          const now = openNow(openOptions)
          return now !== undefined
            ? Effect.succeed(now)
            : Effect.flatMap(listener.ensureListening, (advertised) => Effect.sync(() => openAt(advertised, openOptions)))
        }),
      openNow
    }
    drills.set(server, {
      connectionCount: () => muxConnections.size,
      dropConnections: () => {
        for (const conn of muxConnections) conn.resetAndDestroy()
      }
    })
    return server
  })

/**
 * The server's inactivity sweep: pings silent pooled connections with heartbeats, and fails the
 * streams of `env` quiet for `idleMs` (judged again after one I/O turn). Runs while any is open.
 */
const makeSweep = (
  idleMs: number,
  streams: ReadonlyStreamIdTable<CallHomeStream>,
  env: StreamEnv,
  muxConnections: ReadonlySet<MuxConnection>
): IdleSweep => {
  const timings = idleTimings(idleMs)
  const sweep: IdleSweep = new IdleSweep(timings.periodMs, (now) => {
    for (const conn of muxConnections) conn.keepAlive(now, timings.pingMs)
    let watching = false
    let idle: Array<CallHomeStream> | undefined
    // A read-only walk: no snapshot of every open stream per sweep.
    streams.forEach((stream) => {
      if (!stream.openedIn(env)) return
      watching = true
      if (stream.quietFor(now) >= idleMs) (idle ??= []).push(stream)
    })
    if (idle !== undefined) {
      const candidates = idle
      sweep.confirm(() => {
        const later = performance.now()
        for (const stream of candidates) {
          const quiet = stream.quietFor(later)
          if (quiet >= idleMs) stream.idleOut(quiet, idleMs)
        }
      })
    }
    return watching
  })
  return sweep
}
