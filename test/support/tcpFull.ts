/**
 * A full-mode router and worker over real loopback sockets, without the TCP request server or
 * the Endpoint layer: the worker is a plain `net.Server` that hands every connection to the full
 * mode's `acceptor.accept` (as `TcpRequestServer` does after sniffing the first two bytes), the
 * router is a call-home server (`router/CallHomeServer`, whose streams the full mode feeds) plus
 * the full mode's `sender`. Each side has its own `FullMode` and hub, as two processes would.
 *
 * Handlers are lean: `(message, writer) => void`, where `writer` is the response writer the full
 * mode opened (taken from the worker's hub, as the TCP response plane's client does).
 */
import { FULL_MODE_CONNECTION_INFO } from "../../src/transport/tcp/request/FullModeHooks.ts"
import * as net from "node:net"
import { Effect, Exit, Scope } from "effect"
import type { Stream } from "effect"
import { wirePathOf } from "../../src/protocol/TcpAddress.ts"
import type { Admission, RequestMessage } from "../../src/RequestPlane.ts"
import type { PendingStream, ResponseWriter } from "../../src/ResponsePlane.ts"
import type { EndpointNotFound, HandlerError, TransportError } from "../../src/TransportError.ts"
import * as FullMode from "../../src/transport/tcp/full/FullMode.ts"
import { makeHub } from "../../src/transport/tcp/full/FullModeHub.ts"
import type { FullModeHubShape } from "../../src/transport/tcp/full/FullModeHub.ts"
import type { ServedTcpEndpoint, TcpEndpointTable } from "../../src/transport/tcp/request/FullModeHooks.ts"
import * as CallHomeServer from "../../src/transport/tcp/router/CallHomeServer.ts"

/** The options every test starts from: small windows of time, 1 MiB frames. */
export const baseOptions: FullMode.FullModeOptions = {
  maxMessageSize: 1024 * 1024,
  heartbeatIntervalMs: 1000,
  connectTimeoutMs: 2000,
  ackTimeoutMs: 5000,
  maxStreamsPerConnection: 1024,
  maxConnectionsPerTarget: 4,
  lingerMs: 200
}

/** A lean handler: the request and the writer of its response stream. */
export type LeanHandler = (message: RequestMessage, writer: ResponseWriter) => void

/** The worker half: a net.Server feeding the full mode's acceptor, and its endpoints. */
export interface TestWorker {
  readonly port: number
  readonly hub: FullModeHubShape
  readonly fullMode: FullMode.FullMode
  /** Serves `name` ("ns/comp/ep" with instance id 1) with `handler`, admitted by `admit`. */
  readonly serve: (name: string, handler: LeanHandler, admit?: Admission) => void
  /** The address a router sends `name` to. */
  readonly address: (name: string) => string
  readonly setDraining: (draining: boolean) => void
  /** Sockets the net.Server accepted, still open. */
  readonly sockets: () => ReadonlyArray<net.Socket>
  readonly close: () => Promise<void>
}

/** The router half: a call-home server and the full mode's sender. */
export interface TestRouter {
  readonly hub: FullModeHubShape
  readonly fullMode: FullMode.FullMode
  readonly server: CallHomeServer.CallHomeServer
  /** Sends one request to `address`; see `Call`. */
  readonly call: (address: string, payload: unknown, options?: CallOptions) => Promise<Call>
  readonly close: () => Promise<void>
}

/** Options of one call. */
export interface CallOptions {
  readonly items?: Stream.Stream<unknown, unknown> | undefined
  readonly endpoint?: string | undefined
  /** Receives each batch as it arrives (besides collecting it). */
  readonly onItems?: ((items: ReadonlyArray<unknown>) => void) | undefined
  /** Runs when the stream ends whole, synchronously, in the sink's `onEnd` (before `done` settles). */
  readonly onEnd?: (() => void) | undefined
  /**
   * Send the call as a caller without the Endpoint layer would: a stream with a call-home timer,
   * found by the subject of its `connection_info` (no `responseStream`). Default: as the
   * Endpoint layer sends it (a carried stream, handed over as `responseStream`).
   */
  readonly viaConnectionInfo?: boolean | undefined
}

/** One call in progress: its ack, its outcome, and its pending stream. */
export interface Call {
  readonly requestId: string
  readonly pending: PendingStream
  readonly acked: Promise<TransportError | EndpointNotFound | undefined>
  readonly done: Promise<{ readonly items: ReadonlyArray<unknown>; readonly error: TransportError | HandlerError | undefined }>
  readonly items: Array<unknown>
  readonly cancelAck: () => void
}

const run = <A>(effect: Effect.Effect<A, never, Scope.Scope>, scope: Scope.Closeable): Promise<A> => Effect.runPromise(Scope.provide(effect, scope))

/** Starts a worker half on 127.0.0.1 with `options`. */
export const startWorker = async (options: Partial<FullMode.FullModeOptions> = {}): Promise<TestWorker> => {
  const scope = Scope.makeUnsafe()
  const hub = makeHub()
  const fullMode = await run(FullMode.make({ ...baseOptions, ...options }, hub), scope)
  const endpoints = new Map<string, ServedTcpEndpoint>()
  let draining = false
  const table: TcpEndpointTable = { lookup: (path) => endpoints.get(path), draining: () => draining }
  const sockets = new Set<net.Socket>()
  const server = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket)
    socket.once("close", () => sockets.delete(socket))
    socket.on("error", () => {})
    socket.once("data", (chunk) => fullMode.acceptor.accept(socket, chunk, table, () => {}))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as net.AddressInfo).port
  const keyOf = (name: string) => {
    const [namespace, component, endpoint] = name.split("/") as [string, string, string]
    return { namespace, component, endpoint, instanceIdHex: "1" }
  }
  return {
    port,
    hub,
    fullMode,
    serve: (name, handler, admit) => {
      const k = keyOf(name)
      endpoints.set(wirePathOf(k), {
        key: { path: { namespace: k.namespace, component: k.component, endpoint: k.endpoint }, instanceId: 1n },
        admit,
        handler: (message) => {
          const writer = hub.writers.get(message.control.id)!
          hub.writers.delete(message.control.id)
          handler(message, writer)
        }
      })
    },
    address: (name) => `127.0.0.1:${port}/1/${name}`,
    setDraining: (d) => {
      draining = d
    },
    sockets: () => [...sockets],
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  }
}

/** Starts a router half with `options`. */
export const startRouter = async (options: Partial<FullMode.FullModeOptions> = {}): Promise<TestRouter> => {
  const scope = Scope.makeUnsafe()
  const hub = makeHub()
  const merged = { ...baseOptions, ...options }
  const fullMode = await run(FullMode.make(merged, hub), scope)
  const server = await run(
    CallHomeServer.make({ host: "127.0.0.1", port: 0, callHomeTimeoutMs: 10_000, maxMessageSize: merged.maxMessageSize, streams: hub.streams }),
    scope
  )
  // Start the call-home listener now: every later `open` is synchronous.
  ;(await Effect.runPromise(server.open({ requestId: "warm-up", endpoint: "warm-up", codec: "json", sink: { onItems: () => {}, onEnd: () => {}, onError: () => {} } }))).close()
  const call = async (address: string, payload: unknown, callOptions: CallOptions = {}): Promise<Call> => {
    const requestId = crypto.randomUUID()
    const items: Array<unknown> = []
    let settle!: (r: { items: ReadonlyArray<unknown>; error: TransportError | HandlerError | undefined }) => void
    const done = new Promise<{ items: ReadonlyArray<unknown>; error: TransportError | HandlerError | undefined }>((r) => (settle = r))
    // The listener is up (started below), so opening a stream is synchronous.
    const carried = callOptions.viaConnectionInfo !== true
    const pending = Effect.runSync(
      server.open({
        requestId,
        endpoint: callOptions.endpoint ?? "ns.comp.ep",
        codec: "json",
        carried,
        sink: {
          onItems: (batch) => {
            for (const i of batch) items.push(i)
            callOptions.onItems?.(batch)
          },
          onEnd: () => {
            callOptions.onEnd?.()
            settle({ items, error: undefined })
          },
          onError: (error) => settle({ items, error })
        }
      })
    )
    let ack!: (e: TransportError | EndpointNotFound | undefined) => void
    const acked = new Promise<TransportError | EndpointNotFound | undefined>((r) => (ack = r))
    const message: RequestMessage = {
      control: {
        id: requestId,
        request_type: callOptions.items === undefined ? "single_in" : "many_in",
        response_type: "many_out",
        payload_codec: "json",
        connection_info: carried ? FULL_MODE_CONNECTION_INFO : pending.connectionInfo
      },
      payload,
      headers: { "x-request-id": requestId },
      ...(carried ? { responseStream: pending } : {}),
      ...(callOptions.items === undefined ? {} : { items: callOptions.items })
    }
    const cancelAck = fullMode.sender.sendCallback({ address, endpoint: callOptions.endpoint ?? "ns.comp.ep" }, message, ack)
    return { requestId, pending, acked, done, items, cancelAck }
  }
  return {
    hub,
    fullMode,
    server,
    call,
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

/** Resolves after `ms`. */
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Polls `f` every 5 ms until it is true, for at most `ms`. */
export const until = async (f: () => boolean, ms = 5000): Promise<void> => {
  const end = Date.now() + ms
  while (!f()) {
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`)
    await sleep(5)
  }
}

/** A handler that sends `count` items `{i}` then completes. */
export const counter = (count: number): LeanHandler => (_message, writer) => {
  writer.prologue()
  for (let i = 0; i < count; i++) writer.send({ i })
  writer.complete()
}
