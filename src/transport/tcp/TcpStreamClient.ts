/**
 * The worker's side of the TCP call-home response plane (PROTOCOL.md section 3), wire-compatible
 * with Dynamo's `TcpClient::create_response_stream`.
 *
 * What it does:
 * - `connect` checks the ConnectionInfo (transport `tcp_server`; `info` is JSON text with
 *   stream_type `response` and context equal to the request id, else a TransportProtocolError
 *   "BadHandshake" naming what is wrong), connects with TCP_NODELAY within `connectTimeoutMs`
 *   (TransportTimeoutError "ConnectTimeout"; a refused or failed connect is
 *   TransportConnectionError "ConnectFailed" naming the address), and queues the handshake
 *   frame `{"subject", "stream_type": "response"}`.
 * - The `ResponseWriter` it returns writes, in order: the header-only prologue (`{"error": null}`
 *   or `{"error": msg}`, after which it closes), data-only frames `{"data", "complete_final":
 *   false}` encoded with the request's payload codec, and then either `{"complete_final": true}`
 *   + the header-only `"sentinel"` (`complete`), our in-band `{"complete_final": false, "error"}`
 *   frame (`fail`, no sentinel), or nothing more (`close`). Then it ends its side and, once every
 *   byte has been handed to the kernel, waits at most `lingerMs` for the router to close the
 *   socket (a router that has paused reading, for a slow consumer, never loses the tail).
 * - Write batching: frames are pushed onto an array and flushed once per tick
 *   (`process.nextTick`) as ONE socket write (one `Buffer.concat`), so the handshake, prologue
 *   and every item emitted in the same tick leave in one segment. No write is awaited. Writes
 *   after the socket is gone are dropped silently (`onDisconnect` has reported it).
 *   `nextTick` rather than `setImmediate`: both batch a synchronous burst (and nextTick also
 *   batches across the microtasks of that burst) into one write, and measured the same within
 *   noise (router and worker in two processes, 10 x 50 B items: p50 about 0.3 ms for bursts,
 *   0.4 ms for items spread over event-loop turns, either way); nextTick never adds an
 *   event-loop turn before a token leaves, so it is the default.
 * - `onControl` receives the router's `"stop"` / `"kill"` frames (queued until a receiver is
 *   registered); `onDisconnect` fires once if the socket closes, errors or receives bytes that
 *   break the protocol before `complete`/`fail`/`close`.
 *
 * - A `tcp_response_mux_v1` ConnectionInfo (the router runs with `DYN_TCP_POOL_ENABLED=true`)
 *   is checked the same way (`mux/MuxProtocol.ts` `parseMuxInfo`) and served over a pooled,
 *   multiplexed connection from `pool/TcpResponseConnectionPool.ts`: the writer has the same
 *   semantics, its frames are response mux v1 frames (docs/protocol.md), and it releases its
 *   pool lease when the stream ends. Both kinds are always understood (`connectionTransports`);
 *   the pool is made with the client (`make`) or on first use (`makeUnsafe`), with the
 *   `DYN_TCP_POOL_*` defaults unless `options.pool` says otherwise.
 *
 * What it does not do: retry connects, TLS, or apply backpressure on one-shot connections (the
 * socket's buffer grows if the router reads slowly; pooled streams have credits). `send`
 * throws (a PayloadCodecError, or a TransportProtocolError "MessageTooLarge" for a frame above
 * `maxMessageSize`) when an item cannot be sent; the Endpoint layer turns that into a handler
 * failure.
 */
import * as net from "node:net"
import { Effect, Exit, Scope } from "effect"
import { payloadCodec } from "../../protocol/PayloadCodec.ts"
import type { PayloadCodec } from "../../protocol/PayloadCodec.ts"
import { encodeStreamComplete, encodeStreamError } from "../../protocol/RequestMessage.ts"
import { encodeFramePrefix, encodeHeaderOnlyJson, FRAME_PREFIX_SIZE, makeDecoder } from "../../protocol/TwoPartCodec.ts"
import type { ConnectOptions, ResponsePlaneClient, ResponseWriter } from "../../ResponsePlane.ts"
import { defaults } from "../../TransportConfig.ts"
import { ResponseWriteError, TransportConnectionError, TransportProtocolError, TransportTimeoutError } from "../../TransportError.ts"
import { encodeItem, encodeItems, tooLarge } from "../../internal/writeFailure.ts"
import type { WriteTarget } from "../../internal/writeFailure.ts"
import type { TransportError } from "../../TransportError.ts"
import { badHandshake, readInfoObject } from "../../protocol/ConnectionInfoText.ts"
import { Waiters } from "../../internal/Waiters.ts"
import { WriteBatcher } from "../../internal/WriteBatcher.ts"
import { MUX_CONNECTION_TRANSPORT, parseMuxInfo } from "../../protocol/MuxHandshake.ts"
import * as TcpResponseConnectionPool from "./pool/TcpResponseConnectionPool.ts"

/** The `ConnectionInfo.transport` this client calls home to. */
export const connectionTransport = "tcp_server"

/** Bound on a call-home connect (Dynamo has none; we fail rather than hang). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5000
/** Bound on the wait for the router to close the socket after we ended our side. */
export const DEFAULT_LINGER_MS = 2000

/** Options of the call-home client. */
export interface TcpStreamClientOptions {
  /** Largest frame sent, prefix included (`DYN_TCP_MAX_MESSAGE_SIZE`). */
  readonly maxMessageSize: number
  /** Connect timeout (default `DEFAULT_CONNECT_TIMEOUT_MS`). */
  readonly connectTimeoutMs?: number | undefined
  /** After our side has ended, how long to wait for the router's close before destroying (default `DEFAULT_LINGER_MS`). */
  readonly lingerMs?: number | undefined
  /**
   * When queued frames are flushed: "tick" (`process.nextTick`, the default: lowest latency)
   * or "immediate" (`setImmediate`: after I/O, batches across more work). For benchmarks.
   */
  readonly flush?: "tick" | "immediate" | undefined
  /**
   * Options of the pool that serves `tcp_response_mux_v1` streams (default: the `DYN_TCP_POOL_*`
   * defaults; `maxMessageSize` and `flush` come from this client's options).
   */
  readonly pool?: Partial<Omit<TcpResponseConnectionPool.TcpResponseConnectionPoolOptions, "maxMessageSize">> | undefined
}

/** The client, plus a way to close every socket it still has open. */
export interface TcpStreamClient extends ResponsePlaneClient {
  /** Destroys every open one-shot call-home socket (their writers report a disconnect), and closes a pool made on first use. */
  readonly closeAll: () => void
  /** How many one-shot call-home sockets are open (pooled connections are the pool's). */
  readonly openSockets: () => number
  /** The pool of mux connections, if it exists yet. */
  readonly pool: () => TcpResponseConnectionPool.TcpResponseConnectionPool | undefined
}

const SENTINEL_FRAME = encodeHeaderOnlyJson("sentinel")
const PROLOGUE_OK = encodeHeaderOnlyJson({ error: null })
const textDecoder = new TextDecoder()

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

/** The validated `info` of a tcp_server ConnectionInfo, or the error naming what is wrong. */
const parseInfo = (
  options: ConnectOptions
): { readonly address: string; readonly host: string; readonly port: number; readonly subject: string } | TransportProtocolError => {
  const { connectionInfo, requestId } = options
  if (connectionInfo.transport !== connectionTransport) {
    return badHandshake(
      connectionInfo.transport,
      `connection transport is ${JSON.stringify(connectionInfo.transport)}, not "tcp_server" or "${MUX_CONNECTION_TRANSPORT}"`
    )
  }
  const read = readInfoObject(connectionInfo)
  if (read instanceof TransportProtocolError) return read
  const { address } = read
  const { subject, context, stream_type } = read.fields
  if (typeof subject !== "string" || subject === "") return badHandshake(address, "connection info has no subject string")
  if (stream_type !== "response") {
    return badHandshake(address, `stream_type is ${JSON.stringify(stream_type)}, not "response"`)
  }
  if (context !== requestId) {
    return badHandshake(address, `context ${JSON.stringify(context)} is not the request id ${JSON.stringify(requestId)}`)
  }
  const parsed = parseAddress(address)
  if (parsed === undefined) return badHandshake(address, `address ${JSON.stringify(address)} is not host:port`)
  return { address, host: parsed.host, port: parsed.port, subject }
}

// Writer states.
const OPEN = 0 // writing
const ENDING = 1 // complete/fail/close/error-prologue called: flush, then end
const GONE = 2 // the socket closed, errored or broke the protocol

/** The pool options of a client: its own, or the `DYN_TCP_POOL_*` defaults. */
const poolOptions = (options: TcpStreamClientOptions): TcpResponseConnectionPool.TcpResponseConnectionPoolOptions => ({
  ...TcpResponseConnectionPool.optionsFromSettings(defaults),
  flush: options.flush,
  ...options.pool,
  maxMessageSize: options.maxMessageSize
})

/**
 * Builds the call-home client (no scope: see `make` for one that closes its sockets with a
 * scope). `options.maxMessageSize` bounds each frame sent. Mux streams go through `pool`, or
 * through a pool made on first use and closed by `closeAll`.
 */
export const makeUnsafe = (options: TcpStreamClientOptions, pool?: TcpResponseConnectionPool.TcpResponseConnectionPool): TcpStreamClient => {
  const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS
  const lingerMs = options.lingerMs ?? DEFAULT_LINGER_MS
  const maxMessageSize = options.maxMessageSize
  const schedule: (f: () => void) => void = options.flush === "immediate" ? setImmediate : process.nextTick
  const sockets = new Set<net.Socket>()
  /** Per live writer: sends its queued frames now; true when its stream has finished (ending). */
  const flushers = new Map<net.Socket, () => boolean>()

  const makeWriter = (socket: net.Socket, address: string, subject: string, codec: PayloadCodec): ResponseWriter => {
    let state = OPEN
    let lingerTimer: ReturnType<typeof setTimeout> | undefined
    let controlReceiver: ((message: "stop" | "kill") => void) | undefined
    let controls: Array<"stop" | "kill"> = []
    let disconnectReceiver: ((error: TransportError) => void) | undefined
    let disconnect: TransportError | undefined

    // Frames written in one tick go out in one write; once the stream is ending, the flush
    // that sends its last frames also ends our side (destroyed after `lingerMs` at the latest).
    const writes = new WriteBatcher(
      (chunk) => {
        if (state !== GONE && !socket.destroyed) socket.write(chunk)
      },
      schedule,
      () => {
        if (state === ENDING && !socket.destroyed && !socket.writableEnded) {
          socket.end()
          // The linger starts once everything is written: a router that paused reading (its
          // consumer lags) must not lose the stream's tail to our impatience.
          socket.once("finish", () => {
            lingerTimer ??= setTimeout(() => socket.destroy(), lingerMs)
            lingerTimer.unref?.()
          })
        }
      }
    )
    const push = (frame: Uint8Array) => writes.push(frame)

    const where: WriteTarget = { transport: "tcp", target: address }
    const oversized = (body: Uint8Array) =>
      FRAME_PREFIX_SIZE + body.length > maxMessageSize ? tooLarge(where, FRAME_PREFIX_SIZE + body.length, maxMessageSize) : undefined
    const pushData = (body: Uint8Array) => {
      push(encodeFramePrefix(0, body.length))
      push(body)
    }

    // Backpressure: writers waiting for the socket to drain (see `whenWritable`).
    const waiters = new Waiters()
    socket.on("drain", () => waiters.wake())

    const finish = () => {
      state = ENDING
      writes.requestFlush()
      waiters.wake() // nobody waits to write on a stream that is over
    }

    /** The socket is gone; reports `error()` (built only then: errors capture stacks) if the stream was open. */
    const gone = (error: () => TransportError) => {
      if (state === GONE) return
      const wasOpen = state === OPEN
      state = GONE
      writes.clear()
      waiters.wake()
      if (!wasOpen) return
      const e = error()
      disconnect = e
      const f = disconnectReceiver
      if (f !== undefined) f(e)
    }

    // Frames from the router: header-only "stop" / "kill".
    const decoder = makeDecoder({ maxMessageSize, target: address, transport: "tcp" })
    const onFrame = (header: Uint8Array, body: Uint8Array) => {
      if (state === GONE) return
      let message: unknown
      try {
        message = header.length > 0 && body.length === 0 ? JSON.parse(textDecoder.decode(header)) : undefined
      } catch {
        message = undefined
      }
      if (message !== "stop" && message !== "kill") {
        socket.destroy()
        gone(() =>
          new TransportProtocolError({
            reason: "UnexpectedMessage",
            transport: "tcp",
            target: address,
            detail: `expected a "stop" or "kill" control frame from the router, got ${header.length} header and ${body.length} body bytes`
          })
        )
        return
      }
      if (controlReceiver !== undefined) controlReceiver(message)
      else controls.push(message)
    }
    socket.on("data", (chunk: Buffer) => {
      if (state === GONE) return
      const error = decoder.decode(chunk, onFrame)
      if (error !== undefined && state !== GONE) {
        socket.destroy()
        gone(() => error)
      }
    })
    socket.on("error", (cause) => {
      gone(() => new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: address, detail: cause.message, cause }))
    })
    flushers.set(socket, () => {
      if (writes.pending) writes.flush()
      return state === ENDING
    })
    socket.on("close", () => {
      sockets.delete(socket)
      flushers.delete(socket)
      clearTimeout(lingerTimer)
      gone(() =>
        new TransportConnectionError({ reason: "ConnectionClosed", transport: "tcp", target: address, detail: "the router closed the call-home connection" })
      )
    })

    // The handshake goes out with whatever is written in the same tick (usually the prologue).
    push(encodeHeaderOnlyJson({ subject, stream_type: "response" }))

    return {
      prologue: (error) => {
        if (state !== OPEN) return
        if (error === undefined) push(PROLOGUE_OK)
        else {
          push(encodeHeaderOnlyJson({ error }))
          finish()
        }
      },
      send: (item) => {
        if (state !== OPEN) return Exit.void
        const body = encodeItem(codec, item, where)
        if (body instanceof ResponseWriteError) return Exit.fail(body)
        const error = oversized(body)
        if (error !== undefined) return Exit.fail(error)
        pushData(body)
        return Exit.void
      },
      sendAll: (items) => {
        if (state !== OPEN) return Exit.void
        // Encode and check every item first, so a failure sends none of them.
        const bodies = encodeItems(codec, items, where)
        if (bodies instanceof ResponseWriteError) return Exit.fail(bodies)
        for (let i = 0; i < bodies.length; i++) {
          const error = oversized(bodies[i]!)
          if (error !== undefined) return Exit.fail(error)
        }
        for (let i = 0; i < bodies.length; i++) pushData(bodies[i]!)
        return Exit.void
      },
      fail: (message) => {
        if (state !== OPEN) return
        const body = encodeStreamError(codec, message)
        // An error text too large for a frame is replaced by one that fits: the stream still fails.
        pushData(oversized(body) === undefined ? body : encodeStreamError(codec, "handler failed; its error text exceeds the maximum message size"))
        finish()
      },
      complete: () => {
        if (state !== OPEN) return
        pushData(encodeStreamComplete(codec))
        push(SENTINEL_FRAME)
        finish()
      },
      close: () => {
        if (state !== OPEN) return
        finish()
      },
      onControl: (f) => {
        controlReceiver = f
        if (controls.length > 0) {
          const queued = controls
          controls = []
          for (const m of queued) f(m)
        }
      },
      onDisconnect: (f) => {
        disconnectReceiver = f
        if (disconnect !== undefined) f(disconnect)
      },
      whenWritable: (f) => {
        if (state !== OPEN || socket.destroyed) return true
        writes.flushEarly()
        return !socket.writableNeedDrain || waiters.add(f)
      }
    }
  }

  let ownPool: { readonly pool: TcpResponseConnectionPool.TcpResponseConnectionPool; readonly scope: Scope.Closeable } | undefined
  const getPool = (): TcpResponseConnectionPool.TcpResponseConnectionPool => {
    if (pool !== undefined) return pool
    if (ownPool === undefined) {
      const scope = Scope.makeUnsafe()
      ownPool = { pool: Effect.runSync(Scope.provide(TcpResponseConnectionPool.make(poolOptions(options)), scope)), scope }
    }
    return ownPool.pool
  }

  /**
   * A `tcp_response_mux_v1` stream: a writer on a pooled connection. It yields once first:
   * with a free pooled connection nothing here waits for I/O, so without the yield the whole
   * handler would run before the request plane's ack (written by node:http2 on a later
   * turn) leaves, and the router would wait for that ack after the stream had already ended.
   * Measured (bench/tcp_pool_benchmark.ts, 64 in flight): pooled throughput went from about
   * 1.1x to 1.6-1.9x the unpooled with it. Re-measured once the router counted a completed
   * stream as acked and the pool lent spare leases synchronously: without the yield sequential
   * p50 was within noise, and 64 in flight fell from about 6,000 to 4,600 req/s, so it stays.
   */
  const connectMux = (connectOptions: ConnectOptions): Effect.Effect<ResponseWriter, TransportError> =>
    Effect.suspend(() => {
      const info = parseMuxInfo(connectOptions.connectionInfo, connectOptions.requestId)
      if (info instanceof TransportProtocolError) return Effect.fail(info)
      const parsed = parseAddress(info.address)
      if (parsed === undefined) return Effect.fail(badHandshake(info.address, `address ${JSON.stringify(info.address)} is not host:port`))
      const codec = payloadCodec(connectOptions.codec)
      const target = { address: info.address, host: parsed.host, port: parsed.port, frontendServerId: info.frontendServerId }
      return Effect.yieldNow.pipe(
        Effect.andThen(getPool().withConnection(target, (conn, release) => conn.openStream(info.streamIdBytes, codec, release))),
        Effect.flatMap((writer) => (writer instanceof TransportProtocolError ? Effect.fail(writer) : Effect.succeed(writer)))
      )
    })

  const connect = (options: ConnectOptions): Effect.Effect<ResponseWriter, TransportError> =>
    Effect.suspend(() => {
      if (options.connectionInfo.transport === MUX_CONNECTION_TRANSPORT) return connectMux(options)
      const info = parseInfo(options)
      if (info instanceof TransportProtocolError) return Effect.fail(info)
      const codec = payloadCodec(options.codec)
      return Effect.callback<ResponseWriter, TransportError>((resume) => {
        const socket = net.connect({ host: info.host, port: info.port, noDelay: true })
        sockets.add(socket)
        let settled = false
        const cleanup = () => {
          settled = true
          clearTimeout(timer)
          socket.off("connect", onConnect)
          socket.off("error", onError)
        }
        const abandon = () => {
          socket.destroy()
          sockets.delete(socket)
        }
        const timer = setTimeout(() => {
          cleanup()
          abandon()
          resume(
            Effect.fail(
              new TransportTimeoutError({ reason: "ConnectTimeout", transport: "tcp", target: info.address, detail: `no connection within ${connectTimeoutMs} ms` })
            )
          )
        }, connectTimeoutMs)
        const onError = (cause: Error) => {
          cleanup()
          abandon()
          resume(
            Effect.fail(new TransportConnectionError({ reason: "ConnectFailed", transport: "tcp", target: info.address, detail: cause.message, cause }))
          )
        }
        const onConnect = () => {
          cleanup()
          socket.setNoDelay(true)
          resume(Effect.succeed(makeWriter(socket, info.address, info.subject, codec)))
        }
        socket.once("connect", onConnect)
        socket.once("error", onError)
        socket.once("close", () => sockets.delete(socket))
        return Effect.sync(() => {
          if (settled) return
          cleanup()
          abandon()
        })
      })
    })

  return {
    transport: "tcp",
    connectionTransports: [connectionTransport, MUX_CONNECTION_TRANSPORT],
    connect,
    closeAll: () => {
      // Streams that finished still have their last frames queued for this tick: send them and
      // let those sockets end gracefully (bounded by the linger timer); cut every other one.
      for (const socket of sockets) {
        const flushNow = flushers.get(socket)
        if (flushNow === undefined || !flushNow()) socket.destroy()
      }
      sockets.clear()
      flushers.clear()
      if (ownPool !== undefined) {
        const { scope } = ownPool
        ownPool = undefined
        Effect.runFork(Scope.close(scope, Exit.void))
      }
    },
    openSockets: () => sockets.size,
    pool: () => pool ?? ownPool?.pool
  }
}

/**
 * Builds the call-home client and its connection pool; when the scope closes, every one-shot
 * socket is destroyed and the pool closes every pooled connection.
 */
export const make = (options: TcpStreamClientOptions): Effect.Effect<TcpStreamClient, never, Scope.Scope> =>
  Effect.gen(function*() {
    const pool = yield* TcpResponseConnectionPool.make(poolOptions(options))
    return yield* Effect.acquireRelease(Effect.sync(() => makeUnsafe(options, pool)), (client) => Effect.sync(client.closeAll))
  })
