/**
 * The worker's TCP request server (docs/transports.md, "tcp"): one port, many endpoints, both
 * TCP framings.
 *
 * What it does:
 * - listens on `host:port` from the first `register` on (a failed listen is tried again by the
 *   next), with TCP_NODELAY on every accepted socket;
 * - serves every registered endpoint on that port, routed by the endpoint path a request carries
 *   (every wire path a router may send for it: `wirePathsOf`), and returns, per registration, the
 *   transport form to advertise: Dynamo's `{"tcp": "host:port/<id hex>/<ns>/<comp>/<ep>"}`, or the
 *   seed's unified form with metadata `{"tcp_mux": "1"}` when a full mode is given and
 *   `advertiseFullMode` is on;
 * - reads the first two bytes of each connection: zero (the full mode's hello) hands the socket to
 *   the full mode's `FullModeAcceptor`; anything else is Dynamo's framing, driven by a
 *   `DynamoConnection`. Without a full mode, a hello is answered "version not supported: full mode
 *   not available on this worker" and the connection closed;
 * - accepts at most `maxConnections` connections at once (both framings). One beyond it is refused
 *   in its own framing once its first bytes tell which (a `Server unavailable: too many connections
 *   (max N)` ack, or the hello answer "refused" with that reason), then closed;
 * - drops a Dynamo-framed connection silent for longer than `connectionTimeoutMs` (and one that
 *   never says which framing it speaks), or one whose request frame, once begun, takes longer than
 *   that to arrive whole (bytes dribbled one at a time), with a log line; a full-mode connection's liveness is the
 *   full mode's (heartbeats);
 * - with `tls` (`DYN_TCP_TLS_CERT_PATH`/`_KEY_PATH`) listens as a `tls.Server`: everything above
 *   happens on the decrypted socket once its handshake completed (the two-byte sniff included); a
 *   failed handshake (a plaintext or untrusting router) closes that connection only, with a log line;
 * - on scope close: refuses new requests ("unavailable", the table's `draining`), stops accepting,
 *   closes every connection (full-mode ones too) and the listener, waiting at most 2 s.
 *
 * What it does not do: decode requests itself (DynamoConnection.ts), speak the full mode
 * (`../full/`), run handlers, or carry responses.
 */
import type * as net from "node:net"
import { Effect } from "effect"
import type { Scope } from "effect"
import type { TransportType } from "../../../Instance.ts"
import { encodeHelloAnswer, HelloStatus, startsFullMode } from "../../../protocol/FullModeHello.ts"
import type { ProtocolParseError } from "../../../protocol/ProtocolError.ts"
import { formatTcpAddress, wirePathsOf } from "../../../protocol/TcpAddress.ts"
import { encodeTcpAck, unavailableAck } from "../../../protocol/TcpAck.ts"
import type { RequestPlaneServer } from "../../../RequestPlane.ts"
import type { TransportCapabilities } from "../../../Transport.ts"
import { advertisedHost, hostPort, listenOnce } from "../../../internal/net.ts"
import { recordError } from "../../../observability/Metrics.ts"
import { createServer } from "../../../internal/Tls.ts"
import type { ServerTls } from "../../../internal/Tls.ts"
import { DynamoConnection } from "./DynamoConnection.ts"
import { TCP_MUX_METADATA_KEY } from "./FullModeHooks.ts"
import type { FullModeAcceptor, ServedTcpEndpoint, TcpEndpointTable } from "./FullModeHooks.ts"

/** Options of the server. */
export interface TcpRequestServerOptions {
  readonly host: string
  readonly port: number
  /** The host routers dial; by default derived from `host` (`advertisedHost`). */
  readonly advertiseHost?: string | undefined
  readonly maxMessageSize: number
  /** Most connections at once, both framings together. */
  readonly maxConnections: number
  /** A Dynamo-framed connection silent this long is dropped. */
  readonly connectionTimeoutMs: number
  /** The full mode's worker side; without it a full-mode hello is refused. */
  readonly fullMode?: FullModeAcceptor | undefined
  /** With a full mode: advertise the unified form with `{"tcp_mux": "1"}` (default true). */
  readonly advertiseFullMode?: boolean | undefined
  /** TLS on the port, both framings (`DYN_TCP_TLS_CERT_PATH`/`_KEY_PATH`); undefined: plaintext. */
  readonly tls?: ServerTls | undefined
}

/** The server: a `RequestPlaneServer`, plus what tests and the layer read. */
export interface TcpRequestServer extends RequestPlaneServer {
  /** "host:port" as advertised, once listening. */
  readonly address: () => string | undefined
  /** Connections that count against the cap now. */
  readonly connectionCount: () => number
}

/** The reason of a refusal beyond `maxConnections`. */
export const tooManyConnections = (max: number): string => `too many connections (max ${max})`

/** The reason a worker without the full mode gives to a hello. */
export const FULL_MODE_UNAVAILABLE = "full mode not available on this worker"

/** The capabilities a worker advertises for its full mode. */
export const fullModeCapabilities = (maxMessageSize: number): TransportCapabilities => ({
  streaming: true,
  persistent_connections: true,
  bidirectional: true,
  max_message_size: maxMessageSize
})

const ignore = () => {}

/** Builds the server; it listens on the first `register` and stops when the scope of `make` closes. */
export const make = (options: TcpRequestServerOptions): Effect.Effect<TcpRequestServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const runSync = Effect.runSyncWith(yield* Effect.context<never>())
    const log = (level: "info" | "warn", message: string, annotations: Record<string, unknown>) => {
      try {
        runSync(
          (level === "info" ? Effect.logInfo(message) : Effect.logWarning(message)).pipe(
            Effect.annotateLogs({ module: "transport.tcp.request", ...annotations })
          )
        )
      } catch {
        // logging never breaks the socket path
      }
    }

    const endpoints = new Map<string, ServedTcpEndpoint>()
    let draining = false
    const table: TcpEndpointTable = { lookup: (path) => endpoints.get(path), draining: () => draining }
    const sockets = new Set<net.Socket>()
    const dynamo = new Set<DynamoConnection>()
    let active = 0
    const fullMode = options.fullMode
    const max = options.maxConnections

    const accept = (socket: net.Socket) => {
      if (draining) return void socket.destroy()
      sockets.add(socket)
      socket.once("close", () => sockets.delete(socket))
      socket.on("error", ignore)
      socket.setNoDelay(true)
      const remote = hostPort(socket.remoteAddress ?? "?", socket.remotePort ?? 0)
      const admitted = active < max
      let released = !admitted
      if (admitted) active++
      const release = () => {
        if (released) return
        released = true
        active--
      }
      socket.once("close", release)
      const onTimeout = () => {
        log("info", "dropping a TCP request connection: silent for longer than the connection timeout", {
          remote,
          timeoutMs: options.connectionTimeoutMs
        })
        socket.destroy()
      }
      socket.setTimeout(options.connectionTimeoutMs)
      socket.on("timeout", onTimeout)

      // Answered in the connection's own framing, then closed (the idle timeout bounds a peer that never closes).
      const refuse = (reason: string, full: boolean, status: HelloStatus = HelloStatus.Refused) => {
        log("warn", "refused a TCP request connection", { remote, reason, framing: full ? "full mode" : "dynamo" })
        recordError("tcp", "connection", "server")
        socket.end(full ? encodeHelloAnswer(status, reason) : encodeTcpAck(unavailableAck(reason)))
      }

      let head: Uint8Array | undefined
      const onData = (chunk: Buffer) => {
        const bytes = head === undefined ? chunk : Buffer.concat([head, chunk])
        const full = startsFullMode(bytes)
        if (full === undefined) {
          head = bytes
          return
        }
        socket.off("data", onData)
        if (!admitted) return refuse(tooManyConnections(max), full)
        if (full) {
          if (fullMode === undefined) return refuse(FULL_MODE_UNAVAILABLE, true, HelloStatus.VersionNotSupported)
          if (draining) return refuse("the worker is shutting down", true)
          socket.off("timeout", onTimeout)
          socket.setTimeout(0)
          fullMode.accept(socket, bytes, table, release)
          return
        }
        const connection = new DynamoConnection(socket, {
          maxMessageSize: options.maxMessageSize,
          frameTimeoutMs: options.connectionTimeoutMs,
          onFrameTimeout: () =>
            log("info", "dropping a TCP request connection: a request frame took longer than the connection timeout to arrive", {
              remote,
              timeoutMs: options.connectionTimeoutMs
            }),
          endpoints: table,
          onProtocolError: (error: ProtocolParseError) =>
            log("warn", "closing a TCP request connection: its bytes break Dynamo's framing", {
              remote,
              reason: error.reason,
              detail: error.detail
            })
        })
        dynamo.add(connection)
        socket.once("close", () => dynamo.delete(connection))
        connection.onData(bytes)
      }
      socket.on("data", onData)
    }

    const server = createServer(options.tls, accept, (error, remote) =>
      log("warn", "refused a TCP request connection: TLS handshake failed", { remote, error: error.message }))
    server.on("error", ignore)
    const start = yield* listenOnce(server, options.host, options.port, "tcp")
    const host = advertisedHost(options.host, options.advertiseHost)
    let bound: string | undefined

    yield* Effect.addFinalizer(() =>
      Effect.callback<void>((resume) => {
        draining = true
        for (const connection of dynamo) connection.close()
        for (const socket of sockets) socket.destroy()
        if (!server.listening) return resume(Effect.void)
        const timer = setTimeout(() => resume(Effect.void), 2000)
        server.close(() => {
          clearTimeout(timer)
          resume(Effect.void)
        })
      })
    )

    const advertiseFull = fullMode !== undefined && options.advertiseFullMode !== false
    const result: TcpRequestServer = {
      transport: "tcp",
      address: () => bound,
      connectionCount: () => active,
      register: (key, handler, registerOptions) =>
        Effect.gen(function*() {
          const port = yield* start
          bound = hostPort(host, port)
          const entry: ServedTcpEndpoint = { key, handler, admit: registerOptions?.admit }
          const paths = wirePathsOf({ instanceIdHex: key.instanceId.toString(16), ...key.path })
          yield* Effect.acquireRelease(
            Effect.sync(() => {
              // The first path is the endpoint's own; the older `<id hex>/<endpoint>` alias is set
              // only while free, so two endpoints of one name on one instance never take each other's.
              paths.forEach((path, i) => {
                if (i === 0 || !endpoints.has(path)) endpoints.set(path, entry)
              })
            }),
            () =>
              Effect.sync(() => {
                for (const path of paths) if (endpoints.get(path) === entry) endpoints.delete(path)
              })
          )
          const address = formatTcpAddress(bound, key.instanceId, key.path)
          if (!advertiseFull) return { tcp: address } satisfies TransportType
          const side = {
            transport_id: "tcp" as const,
            address,
            capabilities: fullModeCapabilities(options.maxMessageSize),
            metadata: { [TCP_MUX_METADATA_KEY]: "1" }
          }
          return { unified: { request_transport: side, response_transport: side } } satisfies TransportType
        })
    }
    return result
  })
