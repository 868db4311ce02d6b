/**
 * Optional TLS on the TCP planes (`DYN_TCP_TLS_*`, as Dynamo names them): the secure contexts
 * built once from the validated settings, and the listen and dial points every TCP listener and
 * dialer goes through, so that each one is plaintext or TLS by the same rule.
 *
 * Dynamo's semantics (its `tls_utils` and TCP client/server, read and matched):
 * - server role: a listener speaks TLS when `DYN_TCP_TLS_CERT_PATH` and `DYN_TCP_TLS_KEY_PATH`
 *   are both set; it presents that certificate and asks for none (one-way TLS, no mTLS).
 * - client role: a dialer speaks TLS when `DYN_TCP_TLS_CA_CERT_PATH` is set; it verifies the
 *   server's chain against that CA only (not the system roots) and the server's name: the host it
 *   dials (IP SANs for an IP, DNS SANs for a name), or `DYN_TCP_TLS_SERVER_NAME` when set.
 * - the roles are independent, as in Dynamo: each process both listens and dials, so a TLS
 *   deployment sets all three on every process.
 *
 * What it does:
 * - `tcpTlsOf` reads the PEM files of the settings once (per settings object): the server's
 *   certificate and key, and the client's context holding the CA;
 * - `createServer` is `net.createServer`, or a `tls.Server` whose connection listener gets the
 *   decrypted `TLSSocket` after the handshake (so a listener that sniffs the first bytes sniffs
 *   plaintext); a failed handshake (a plaintext or wrong-CA peer, or none within
 *   `handshakeTimeoutMs`) closes that socket only and is reported to `onTlsError`;
 * - `connect` is `net.connect`, or `tls.connect` with the client context; TCP_NODELAY (and
 *   keepalive when asked) on both. A TLS dial offers the last session of that server for
 *   resumption (a one-shot call-home dials once per stream). `readyEvent` names the event a
 *   dialer waits for ("connect" or "secureConnect"), and `tlsHandshakeError` turns an error met
 *   after the TCP connect but before the handshake completed into TransportConnectionError
 *   "TlsHandshakeFailed" naming the target.
 *
 * What it does not do: read the environment or validate the paths (TransportConfig.ts does, at
 * start-up), client certificates (mTLS), reloading rotated certificates, or the HTTP/NATS planes.
 */
import { readFileSync } from "node:fs"
import * as net from "node:net"
import * as tls from "node:tls"
import type { TcpTlsSettings } from "../TransportConfig.ts"
import { TransportConnectionError } from "../TransportError.ts"

/** A listener's TLS: its certificate and key (PEM; a `tls.Server` builds its context from them), and the handshake bound. */
export interface ServerTls {
  readonly cert: Buffer
  readonly key: Buffer
  readonly handshakeTimeoutMs: number
}

/** A dialer's TLS: the context holding the CA it trusts, and the name it verifies (undefined: the dialled host). */
export interface ClientTls {
  readonly secureContext: tls.SecureContext
  readonly serverName: string | undefined
  /**
   * The last TLS session of each server ("name|host:port"), offered for resumption on the next
   * dial: a one-shot call-home dials once per stream, and a resumed handshake skips the
   * certificate's signature and its verification. Bounded (`SESSION_CACHE_SIZE`, oldest out).
   */
  readonly sessions?: Map<string, Buffer> | undefined
}

/** Most servers whose session a client context remembers. */
export const SESSION_CACHE_SIZE = 256

/** Both roles of a process; either is undefined when plaintext. */
export interface TcpTls {
  readonly server: ServerTls | undefined
  readonly client: ClientTls | undefined
}

/** No TLS in either role. */
export const PLAINTEXT: TcpTls = { server: undefined, client: undefined }

const loaded = new WeakMap<TcpTlsSettings, TcpTls>()

/**
 * The contexts of `settings`, read from its files on first use and kept for that settings object.
 * TransportConfig has already read and checked the files; a file that became unreadable since
 * throws here (a start-up defect), naming the variable and the path.
 */
export const tcpTlsOf = (settings: TcpTlsSettings): TcpTls => {
  const known = loaded.get(settings)
  if (known !== undefined) return known
  const read = (variable: string, path: string): Buffer => {
    try {
      return readFileSync(path)
    } catch (cause) {
      throw new Error(`${variable}=${JSON.stringify(path)}: cannot read it: ${(cause as Error).message}`, { cause })
    }
  }
  const server = settings.certPath !== undefined && settings.keyPath !== undefined
    ? {
      cert: read("DYN_TCP_TLS_CERT_PATH", settings.certPath),
      key: read("DYN_TCP_TLS_KEY_PATH", settings.keyPath),
      handshakeTimeoutMs: settings.handshakeTimeoutMs
    }
    : undefined
  const client = settings.caCertPath !== undefined
    ? {
      secureContext: tls.createSecureContext({ ca: read("DYN_TCP_TLS_CA_CERT_PATH", settings.caCertPath) }),
      serverName: settings.serverName,
      sessions: new Map<string, Buffer>()
    }
    : undefined
  const result = server === undefined && client === undefined ? PLAINTEXT : { server, client }
  loaded.set(settings, result)
  return result
}

/**
 * A TCP server calling `onSocket` with each accepted socket: plaintext, or with `serverTls` the
 * decrypted `TLSSocket` once its handshake completed. TCP_NODELAY on both. A failed handshake is
 * reported to `onTlsError` (its socket is already being destroyed); the server keeps serving.
 */
export const createServer = (
  serverTls: ServerTls | undefined,
  onSocket: (socket: net.Socket) => void,
  onTlsError?: (error: Error, remote: string) => void
): net.Server => {
  if (serverTls === undefined) return net.createServer({ noDelay: true }, onSocket)
  const server = tls.createServer(
    // A tls.Server takes no ready context: it builds its own from the PEM (its `secureContext` option is for sockets).
    { cert: serverTls.cert, key: serverTls.key, handshakeTimeout: serverTls.handshakeTimeoutMs, noDelay: true },
    (socket) => {
      socket.setNoDelay(true)
      onSocket(socket)
    }
  )
  server.on("tlsClientError", (error, socket) => {
    socket.destroy()
    if (onTlsError !== undefined) onTlsError(error, `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? 0}`)
  })
  return server
}

/** Where a dialer connects, and how. */
export interface ConnectOptions {
  readonly host: string
  readonly port: number
  /** TLS with this context; plaintext when undefined. */
  readonly tls?: ClientTls | undefined
  /** TCP keepalive initial delay; none when undefined. */
  readonly keepaliveMs?: number | undefined
}

/** TLS sockets that `connect` made, whose TCP connect completed: an error before `secureConnect` is the handshake's. */
const tcpConnected = new WeakSet<net.Socket>()
const secured = new WeakSet<net.Socket>()

/**
 * Dials `host:port`: `net.connect`, or `tls.connect` verifying the server against the client
 * context's CA and name. TCP_NODELAY always, keepalive when asked. Wait for `readyEvent(socket)`
 * before counting it connected; bytes written earlier are sent once it is.
 */
export const connect = (options: ConnectOptions): net.Socket => {
  const { host, port, keepaliveMs } = options
  const clientTls = options.tls
  if (clientTls === undefined) {
    return keepaliveMs === undefined
      ? net.connect({ host, port, noDelay: true })
      : net.connect({ host, port, noDelay: true, keepAlive: true, keepAliveInitialDelay: keepaliveMs })
  }
  const name = clientTls.serverName ?? host
  const sessions = clientTls.sessions
  const sessionKey = `${name}|${host}:${port}`
  const session = sessions?.get(sessionKey)
  const socket = tls.connect({
    host,
    port,
    secureContext: clientTls.secureContext,
    ...(session === undefined ? {} : { session }),
    // SNI carries DNS names only; an IP is still verified, against the certificate's IP SANs.
    ...(net.isIP(name) === 0 ? { servername: name } : {}),
    checkServerIdentity: (_host, cert) => tls.checkServerIdentity(name, cert)
  })
  socket.setNoDelay(true)
  socket.once("connect", () => {
    tcpConnected.add(socket)
    socket.setNoDelay(true)
    if (keepaliveMs !== undefined) socket.setKeepAlive(true, keepaliveMs)
  })
  socket.once("secureConnect", () => secured.add(socket))
  if (sessions !== undefined) {
    socket.on("session", (ticket: Buffer) => {
      sessions.delete(sessionKey)
      sessions.set(sessionKey, ticket)
      if (sessions.size > SESSION_CACHE_SIZE) sessions.delete(sessions.keys().next().value!)
    })
    // A session that failed its handshake is not offered again.
    socket.once("error", () => {
      if (!secured.has(socket)) sessions.delete(sessionKey)
    })
  }
  return socket
}

/** For a connect timeout's detail: " (…the TLS handshake did not complete)" when `socket` is TLS, TCP-connected and not yet secured, else "". */
export const handshakePending = (socket: net.Socket): string =>
  socket instanceof tls.TLSSocket && tcpConnected.has(socket) && !secured.has(socket) ? " (TCP connected; the TLS handshake did not complete)" : ""

/** The event after which a socket from `connect` is ready for the protocol: "secureConnect" for TLS, else "connect". */
export const readyEvent = (socket: net.Socket): "connect" | "secureConnect" => (socket instanceof tls.TLSSocket ? "secureConnect" : "connect")

/**
 * When `socket` (from `connect`) is TLS and failed after its TCP connect but before its handshake
 * completed: TransportConnectionError "TlsHandshakeFailed" naming `target` and the cause (a
 * certificate the CA does not verify, a name mismatch, a plaintext server). Else undefined: the
 * caller's own error applies (a refused connect is not a TLS failure).
 */
export const tlsHandshakeError = (socket: net.Socket, target: string, cause: Error | undefined): TransportConnectionError | undefined => {
  if (!(socket instanceof tls.TLSSocket) || !tcpConnected.has(socket) || secured.has(socket)) return undefined
  const code = (cause as { code?: unknown } | undefined)?.code
  const why = cause === undefined ? "the server closed the connection" : `${cause.message}${typeof code === "string" && !cause.message.includes(code) ? ` (${code})` : ""}`
  return new TransportConnectionError({ reason: "TlsHandshakeFailed", transport: "tcp", target, detail: `TLS handshake with ${target} failed: ${why}`, cause })
}
