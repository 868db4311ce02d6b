/**
 * The worker's side of the full mode as the TCP request server uses it (`FullModeAcceptor`):
 * takes a connection whose first bytes began the full-mode hello, answers it, and drives the
 * connection (`WorkerConnection`).
 *
 * What it does: reads the 12-byte hello from `head` and whatever follows (within
 * `helloTimeoutMs`); bytes that are not a hello close the socket. Version 1 is accepted
 * (status 0) unless the worker is draining or the acceptor shut down (status 2, "refused", with
 * the reason), another version is answered with status 1; after a refusal the socket is ended.
 * After an accept, the bytes that came with the hello go to the connection's decoder. `release`
 * runs exactly once, when the socket has closed. `shutdown` tells every connection's router why
 * (an Error frame with the nil id) and closes them gracefully (destroyed after the linger).
 *
 * What it does not do: listen, count connections against a cap, or route by path (the request
 * server does), or serve requests (`WorkerConnection` does).
 */
import type * as net from "node:net"
import { FULL_MODE_VERSION, encodeHelloAnswer, HelloStatus, readHello } from "../../../protocol/FullModeHello.ts"
import { isParseError } from "../../../protocol/ProtocolError.ts"
import type { ResponseWriter } from "../../../ResponsePlane.ts"
import { hostPort } from "../../../internal/net.ts"
import type { FullModeAcceptor, TcpEndpointTable } from "../request/FullModeHooks.ts"
import type { LogDebug } from "../router/StreamLink.ts"
import { WorkerConnection } from "./WorkerConnection.ts"
import type { EntryTable } from "../../../internal/EntryTable.ts"

/** Options of the acceptor. */
export interface AcceptorOptions {
  readonly maxMessageSize: number
  readonly heartbeatIntervalMs: number
  /** Drop a router silent this long, when shorter than two heartbeat intervals (`DYN_TCP_REQUEST_CONNECTION_TIMEOUT_SECS`). */
  readonly idleTimeoutMs?: number | undefined
  /** How long the rest of a hello may take to arrive. */
  readonly helloTimeoutMs: number
  /** Initial credit of each response stream and each request's items (default 256 KiB). */
  readonly streamWindow: number
  /** Response bytes in flight before a ConnectionAck (default 256 KiB). */
  readonly connectionWindow: number
  /** How long a graceful close waits for the router's close. */
  readonly lingerMs: number
  /** The process's full-mode writers (`FullModeHub.writers`). */
  readonly writers: EntryTable<ResponseWriter>
  readonly logDebug: LogDebug
}

/** The acceptor, plus what its owner and tests need. */
export interface Acceptor extends FullModeAcceptor {
  /** Connections open now. */
  readonly connections: () => ReadonlyArray<WorkerConnection>
  /** Refuses further hellos and closes every connection, telling each router `reason`. */
  readonly shutdown: (reason: string) => void
}

const ignore = () => {}

/** Builds the acceptor; see the module comment. */
export const makeAcceptor = (options: AcceptorOptions): Acceptor => {
  const connections = new Set<WorkerConnection>()
  let shutDown = false

  const accept = (socket: net.Socket, head: Uint8Array, endpoints: TcpEndpointTable, release: () => void): void => {
    let released = false
    socket.once("close", () => {
      if (released) return
      released = true
      release()
    })
    socket.on("error", ignore)
    socket.setNoDelay(true)
    const remote = hostPort(socket.remoteAddress ?? "?", socket.remotePort ?? 0)
    let bytes: Uint8Array = head
    let timer: ReturnType<typeof setTimeout> | undefined

    const refuse = (status: HelloStatus, reason: string) => {
      options.logDebug("refused full-mode connection", { remote, reason })
      socket.end(encodeHelloAnswer(status, reason))
      // Bounded: a router that keeps its side open is cut after the linger.
      setTimeout(() => socket.destroy(), options.lingerMs).unref?.()
    }

    /** True once the hello was handled (accepted, refused, or the socket destroyed). */
    const tryHello = (): boolean => {
      const hello = readHello(bytes)
      if (!isParseError(hello) && hello._tag === "NeedMore") return false
      clearTimeout(timer)
      socket.off("data", onData)
      if (isParseError(hello)) {
        options.logDebug("not a full-mode hello", { remote, error: hello.detail })
        socket.destroy()
        return true
      }
      if (hello.version !== FULL_MODE_VERSION) {
        refuse(HelloStatus.VersionNotSupported, `this worker speaks tcp_mux version ${FULL_MODE_VERSION}, not ${hello.version}`)
        return true
      }
      if (shutDown || endpoints.draining()) {
        refuse(HelloStatus.Refused, "the worker is draining")
        return true
      }
      socket.write(encodeHelloAnswer(HelloStatus.Accepted))
      const conn = new WorkerConnection(
        socket,
        {
          remote,
          maxMessageSize: options.maxMessageSize,
          heartbeatIntervalMs: options.heartbeatIntervalMs,
          idleTimeoutMs: options.idleTimeoutMs,
          streamWindow: options.streamWindow,
          connectionWindow: options.connectionWindow,
          lingerMs: options.lingerMs,
          endpoints,
          writers: options.writers,
          logDebug: options.logDebug
        },
        (closed) => connections.delete(closed)
      )
      connections.add(conn)
      conn.feed(bytes.subarray(hello.size))
      return true
    }

    const onData = (chunk: Buffer) => {
      bytes = bytes.length === 0 ? chunk : Buffer.concat([bytes, chunk])
      tryHello()
    }

    if (tryHello()) return
    timer = setTimeout(() => {
      options.logDebug("no full-mode hello in time", { remote, timeoutMs: options.helloTimeoutMs })
      socket.destroy()
    }, options.helloTimeoutMs)
    socket.on("data", onData)
    socket.resume()
  }

  return {
    accept,
    connections: () => [...connections],
    shutdown: (reason) => {
      shutDown = true
      for (const conn of [...connections]) conn.shutdown(reason)
    }
  }
}
