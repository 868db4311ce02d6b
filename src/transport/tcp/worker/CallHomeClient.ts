/**
 * The worker's side of the TCP call-home response plane (docs/protocol.md sections 4 and 6), the
 * `ResponsePlaneClient`, wire-compatible with Dynamo's `TcpClient::create_response_stream`.
 *
 * What it does:
 * - `connect` checks the ConnectionInfo and picks how to call home. A `tcp_server` info (`info`
 *   is JSON text with `address`, `subject`, stream_type `response` and context equal to the
 *   request id) gets a one-shot socket (Dialer.ts, within `connectTimeoutMs`) and its
 *   `OneShotWriter`. A `tcp_response_mux_v1` info (`parseMuxInfo`) gets a stream on a pooled,
 *   multiplexed connection from the `ConnectionPool`, which it releases when the stream ends.
 *   Anything else, or a field that is wrong, is a TransportProtocolError "BadHandshake" naming
 *   what is wrong (target: the address when the info has one). Both kinds are always understood
 *   (`connectionTransports`).
 * - The pool is made with the client (`make`, in the caller's context), or on first use
 *   (`makeUnsafe`, run with the context it was given), with the `DYN_TCP_POOL_*` defaults unless
 *   `options.pool` says otherwise. `closeAll` flushes and ends one-shot sockets whose stream has
 *   finished, destroys the others, and closes a pool made on first use.
 *
 * What it does not do: write frames (OneShotWriter.ts, MuxStream.ts), retry connects, or TLS
 * itself (`options.tls` goes to the Dialer, one-shot and pooled).
 */
import type * as net from "node:net"
import { Context, Effect, Exit, Scope } from "effect"
import type { ConnectionInfo } from "../../../ConnectionInfo.ts"
import { badHandshake, readInfoObject } from "../../../protocol/ConnectionInfoText.ts"
import { MUX_CONNECTION_TRANSPORT, parseMuxInfo } from "../../../protocol/MuxHandshake.ts"
import { payloadCodec } from "../../../protocol/PayloadCodec.ts"
import { isParseError } from "../../../protocol/ProtocolError.ts"
import type { ProtocolParseError } from "../../../protocol/ProtocolError.ts"
import type { ConnectOptions, ResponsePlaneClient, ResponseWriter } from "../../../ResponsePlane.ts"
import { defaults } from "../../../TransportConfig.ts"
import { TransportProtocolError } from "../../../TransportError.ts"
import type { TransportError } from "../../../TransportError.ts"
import { toTransportProtocolError } from "../../../internal/protocolError.ts"
import { nextTurn } from "../../../internal/SharedTurn.ts"
import { dial } from "./Dialer.ts"
import { LinkedSet } from "../../../internal/LinkedSet.ts"
import type { ClientTls } from "../../../internal/Tls.ts"
import type { MuxConnection } from "./MuxConnection.ts"
import { makeOneShotWriter } from "./OneShotWriter.ts"
import type { OneShotSettings, OneShotWriter } from "./OneShotWriter.ts"
import * as ConnectionPool from "./pool/ConnectionPool.ts"
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_LINGER_MS } from "./pool/PoolOptions.ts"
import { DeadlineList } from "../../../internal/DeadlineList.ts"
import { onNextTick } from "../../../internal/SharedTick.ts"

/** The `ConnectionInfo.transport` of a one-shot call-home stream. */
export const connectionTransport = "tcp_server"

// A call-home connect is bounded (Dynamo has none; we fail rather than hang), and so is the wait
// for the router to close the socket after we ended our side: the pool's defaults, one-shot too.

/** Options of the call-home client. */
export interface CallHomeClientOptions {
  /** Largest frame sent, prefix included (`DYN_TCP_MAX_MESSAGE_SIZE`). */
  readonly maxMessageSize: number
  /** Connect timeout (default `DEFAULT_CONNECT_TIMEOUT_MS`). */
  readonly connectTimeoutMs?: number | undefined
  /** After our side has ended, how long to wait for the router's close before destroying (default `DEFAULT_LINGER_MS`). */
  readonly lingerMs?: number | undefined
  /**
   * When queued frames are flushed: "tick" (the end of the tick, `onNextTick`; the default: lowest latency)
   * or "immediate" (`setImmediate`: after I/O, batches across more work). For benchmarks.
   */
  readonly flush?: "tick" | "immediate" | undefined
  /**
   * Options of the pool that serves `tcp_response_mux_v1` streams (default: the `DYN_TCP_POOL_*`
   * defaults; `maxMessageSize` and `flush` come from this client's options).
   */
  readonly pool?: Partial<Omit<ConnectionPool.ConnectionPoolOptions, "maxMessageSize">> | undefined
  /** TLS of every call-home dial, one-shot and pooled (`DYN_TCP_TLS_CA_CERT_PATH`); plaintext when absent. */
  readonly tls?: ClientTls | undefined
}

/** The client, plus a way to close every socket it still has open. */
export interface CallHomeClient extends ResponsePlaneClient {
  /** Destroys every open one-shot call-home socket (their writers report a disconnect), and closes a pool made on first use. */
  readonly closeAll: () => void
  /** How many one-shot call-home sockets are open (pooled connections are the pool's). */
  readonly openSockets: () => number
  /** The pool of mux connections, if it exists yet. */
  readonly pool: () => ConnectionPool.ConnectionPool | undefined
}

/** Splits "host:port" or "[v6]:port"; undefined when it is not one. */
export const parseAddress = (address: string): { readonly host: string; readonly port: number } | undefined => {
  const colon = address.lastIndexOf(":")
  if (colon <= 0) return undefined
  let host = address.slice(0, colon)
  const portText = address.slice(colon + 1)
  if (!/^\d{1,5}$/.test(portText)) return undefined
  const port = Number(portText)
  if (port < 1 || port > 65535) return undefined
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1)
  else if (host.includes(":")) return undefined
  return host === "" ? undefined : { host, port }
}

/** A ConnectionInfo's problem as the typed error: target is its address, else its raw text. */
const badInfo = (connectionInfo: ConnectionInfo, error: ProtocolParseError): TransportProtocolError => {
  const read = readInfoObject(connectionInfo)
  return toTransportProtocolError(error, "tcp", isParseError(read) ? connectionInfo.info : read.address)
}

/** The validated `info` of a tcp_server ConnectionInfo, or the parse error naming what is wrong. */
const parseOneShotInfo = (
  options: ConnectOptions
): { readonly address: string; readonly host: string; readonly port: number; readonly subject: string } | ProtocolParseError => {
  const { connectionInfo, requestId } = options
  if (connectionInfo.transport !== connectionTransport) {
    return badHandshake(`connection transport is ${JSON.stringify(connectionInfo.transport)}, not "tcp_server" or "${MUX_CONNECTION_TRANSPORT}"`)
  }
  const read = readInfoObject(connectionInfo)
  if (isParseError(read)) return read
  const { address } = read
  const { subject, context, stream_type } = read.fields
  if (typeof subject !== "string" || subject === "") return badHandshake("connection info has no subject string")
  if (stream_type !== "response") return badHandshake(`stream_type is ${JSON.stringify(stream_type)}, not "response"`)
  if (context !== requestId) return badHandshake(`context ${JSON.stringify(context)} is not the request id ${JSON.stringify(requestId)}`)
  const parsed = parseAddress(address)
  if (parsed === undefined) return badHandshake(`address ${JSON.stringify(address)} is not host:port`)
  return { address, host: parsed.host, port: parsed.port, subject }
}

/** A mux stream's pool target and how to open it on a connection, from its ConnectionInfo, or the typed error. */
const muxStreamOf = (connectOptions: ConnectOptions): {
  readonly target: ConnectionPool.PoolTarget
  readonly open: (conn: MuxConnection, release: () => void) => ResponseWriter | TransportProtocolError
} | TransportProtocolError => {
  const info = parseMuxInfo(connectOptions.connectionInfo, connectOptions.requestId)
  if (isParseError(info)) return badInfo(connectOptions.connectionInfo, info)
  const parsed = parseAddress(info.address)
  if (parsed === undefined) {
    return toTransportProtocolError(badHandshake(`address ${JSON.stringify(info.address)} is not host:port`), "tcp", info.address)
  }
  const codec = payloadCodec(connectOptions.codec)
  return {
    target: { address: info.address, host: parsed.host, port: parsed.port, frontendServerId: info.frontendServerId },
    open: (conn, release) => conn.openStream(info.streamIdBytes, codec, release)
  }
}

/** After a request on these request planes, a mux stream starts without waiting a turn (see `connectMux`). */
const waitsNoTurn = (plane: ConnectOptions["requestTransport"]): boolean => plane === "tcp" || plane === "http"

/** The pool options of a client: its own, or the `DYN_TCP_POOL_*` defaults. */
const poolOptions = (options: CallHomeClientOptions): ConnectionPool.ConnectionPoolOptions => ({
  ...ConnectionPool.optionsFromSettings(defaults),
  flush: options.flush,
  tls: options.tls,
  ...options.pool,
  maxMessageSize: options.maxMessageSize
})

/**
 * Builds the call-home client (no scope: see `make` for one that closes its sockets with a
 * scope). `options.maxMessageSize` bounds each frame sent. Mux streams go through `pool`, or
 * through a pool made on first use, run with `context` (default: an empty one) and closed by
 * `closeAll`.
 */
export const makeUnsafe = (
  options: CallHomeClientOptions,
  pool?: ConnectionPool.ConnectionPool,
  context: Context.Context<never> = Context.empty()
): CallHomeClient => {
  const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS
  /** Every one-shot socket, from the start of its connect until it closes, and the writer of each connected one (not a Set and a Map: LinkedSet.ts). */
  const sockets = new LinkedSet<net.Socket, OneShotWriter>()
  // One timer each for every one-shot connect and linger (DeadlineList.ts), not two per stream;
  // a linger never keeps the process up, as its unref'd setTimeout did.
  const connects = new DeadlineList<() => void>(connectTimeoutMs, (expire) => expire())
  const lingers = new DeadlineList<net.Socket>(options.lingerMs ?? DEFAULT_LINGER_MS, (socket) => socket.destroy(), false)
  const settings: OneShotSettings = {
    maxMessageSize: options.maxMessageSize,
    lingers,
    schedule: options.flush === "immediate" ? setImmediate : onNextTick,
    onSocketClosed: (socket) => {
      sockets.delete(socket)
    }
  }

  let ownPool: { readonly pool: ConnectionPool.ConnectionPool; readonly scope: Scope.Closeable } | undefined
  const getPool = (): ConnectionPool.ConnectionPool => {
    if (pool !== undefined) return pool
    if (ownPool === undefined) {
      const scope = Scope.makeUnsafe()
      ownPool = { pool: Effect.runSyncWith(context)(Scope.provide(ConnectionPool.make(poolOptions(options)), scope)), scope }
    }
    return ownPool.pool
  }

  /**
   * A `tcp_response_mux_v1` stream: a writer on a pooled connection. With a free pooled
   * connection nothing here waits for I/O, so the whole handler can run inside the request
   * plane's read. Whether it waits one event-loop turn first depends on the request plane
   * (`requestTransport`), as measured (router and worker in two processes, alternating rounds;
   * docs/performance.md):
   * - after a request in Dynamo's TCP framing ("tcp"), it does not wait. That connection queues
   *   its ack for the tick's write before it calls the handler, so the ack's write comes first
   *   anyway, and the stream's frames leave in the same tick, right after it. At 1 in flight a
   *   call took about 15 µs less (a median of 104-108 µs against 118-122 from the call's start to
   *   its end); at 64 in flight nothing changed (26.6-27.4k req/s, 25-26.5 µs of worker CPU per
   *   request, either way): every stream started by one read still leaves in that tick's write.
   * - after an http request, it does not wait either: the HTTP request plane decides when the
   *   handler starts (HttpRequestServer.ts): at once when the request is alone on its HTTP/2
   *   session, else on the next turn, after node:http2 has written the 202. (It waited here on
   *   its own, `Effect.yieldNow`, when that plane started every handler at once: 9.2-15.0k req/s
   *   at 64 in flight, against 8.4-13.5k with no wait and 6.2-9.6k on the shared turn.)
   * - after a request on an unknown plane, on its own (`Effect.yieldNow`), in case its ack too
   *   leaves on a later turn;
   * - after a NATS request, on the turn it shares with every stream started in the same tick
   *   (SharedTurn.ts), since the NATS client writes its reply from a microtask, which need not
   *   run before this tick's flush. Each fiber's own yield is a `setImmediate` of its own, with a
   *   `process.nextTick` flush between any two, so the worker wrote about 0.6 times per request
   *   (15,000 writes in 2 s against 1,700); Dynamo pooled, which then waited on that turn too,
   *   went from 16-18k to about 20k req/s, and the worker's CPU per request fell by a third.
   */
  const connectMux = (connectOptions: ConnectOptions): Effect.Effect<ResponseWriter, TransportError> =>
    Effect.suspend(() => {
      const stream = muxStreamOf(connectOptions)
      if (stream instanceof TransportProtocolError) return Effect.fail(stream)
      const plane = connectOptions.requestTransport
      const open = Effect.flatMap(
        getPool().withConnection(stream.target, stream.open),
        (writer) => (writer instanceof TransportProtocolError ? Effect.fail(writer) : Effect.succeed(writer))
      )
      if (waitsNoTurn(plane)) return open
      return Effect.andThen(plane === undefined ? Effect.yieldNow : nextTurn, open)
    })

  /**
   * `connect` at once for a mux stream that need not wait a turn (see `connectMux`) when the pool
   * has a spare lease on an open connection (`ConnectionPool.lendNow`), or its typed error; else
   * undefined. One-shot streams always connect first.
   */
  const connectNow = (connectOptions: ConnectOptions): ResponseWriter | TransportError | undefined => {
    if (connectOptions.connectionInfo.transport !== MUX_CONNECTION_TRANSPORT || !waitsNoTurn(connectOptions.requestTransport)) return undefined
    const stream = muxStreamOf(connectOptions)
    if (stream instanceof TransportProtocolError) return stream
    return getPool().lendNow(stream.target, stream.open)
  }

  const connect = (connectOptions: ConnectOptions): Effect.Effect<ResponseWriter, TransportError> =>
    Effect.suspend(() => {
      if (connectOptions.connectionInfo.transport === MUX_CONNECTION_TRANSPORT) return connectMux(connectOptions)
      const info = parseOneShotInfo(connectOptions)
      if (isParseError(info)) return Effect.fail(badInfo(connectOptions.connectionInfo, info))
      const codec = payloadCodec(connectOptions.codec)
      return dial({ host: info.host, port: info.port, address: info.address, timeoutMs: connectTimeoutMs, tls: options.tls }, (socket) => {
        const writer = makeOneShotWriter(socket, info.address, info.subject, codec, settings)
        sockets.set(socket, writer)
        return writer
      }, sockets, connects)
    })

  return {
    transport: "tcp",
    connectionTransports: [connectionTransport, MUX_CONNECTION_TRANSPORT],
    connect,
    connectNow,
    closeAll: () => {
      // Streams that finished still have their last frames queued for this tick: send them and
      // let those sockets end gracefully (bounded by the linger timer); cut every other one.
      for (const socket of sockets.items()) {
        const writer = sockets.get(socket)
        if (writer === undefined || !writer.flushNow()) socket.destroy()
      }
      sockets.clear()
      if (ownPool !== undefined) {
        const { scope } = ownPool
        ownPool = undefined
        Effect.runForkWith(context)(Scope.close(scope, Exit.void))
      }
    },
    openSockets: () => sockets.size,
    pool: () => pool ?? ownPool?.pool
  }
}

/**
 * Builds the call-home client and its connection pool in the caller's context; when the scope
 * closes, every one-shot socket is destroyed and the pool closes every pooled connection.
 */
export const make = (options: CallHomeClientOptions): Effect.Effect<CallHomeClient, never, Scope.Scope> =>
  Effect.gen(function*() {
    const context = (yield* Effect.context<never>()) as Context.Context<never>
    const pool = yield* ConnectionPool.make(poolOptions(options))
    return yield* Effect.acquireRelease(Effect.sync(() => makeUnsafe(options, pool, context)), (client) => Effect.sync(client.closeAll))
  })
