/**
 * The in-memory transport: both planes inside one process, with the semantics of the wire
 * transports (ack before the handler runs, admission refusals, ordered streaming, streamed
 * requests with flow control, prologue errors, stop/kill, call-home timeout, "stream ended
 * before generation completed", unknown endpoints and subjects refused with typed errors) and
 * none of their bytes.
 *
 * It is what tests swap in, and the one-process embedded mode, and the reference request plane
 * for bidirectional streaming: a streamed request's items are pulled from the router's Stream
 * (on a fiber of the router's layer) only while fewer than `ITEM_WINDOW` wait for the worker.
 * Requests and items are passed by reference, not copied. Two layers that share a `MemoryHub`
 * can talk to each other.
 */
import { Cause, Effect, Exit, FiberSet, Layer, Queue, Stream } from "effect"
import type { Fiber } from "effect"
import type { ConnectionInfo } from "../../ConnectionInfo.ts"
import type { TransportType } from "../../Instance.ts"
import { instanceSubject } from "../../RequestPlane.ts"
import type { Admission, RequestHandler, RequestMessage, RequestPlaneClient, RequestPlaneServer, RequestTarget } from "../../RequestPlane.ts"
import type { ConnectOptions, PendingStream, ResponsePlaneClient, ResponsePlaneServer, ResponseSink, ResponseWriter } from "../../ResponsePlane.ts"
import type { TransportCapabilities } from "../../Transport.ts"
import { EndpointNotFound, HandlerError, TransportConnectionError, TransportProtocolError, TransportTimeoutError } from "../../TransportError.ts"
import type { TransportError } from "../../TransportError.ts"
import { recordError } from "../../observability/Metrics.ts"
import { TransportConfig } from "../../TransportConfig.ts"
import { TransportRegistry } from "../../TransportRegistry.ts"
import { Waiters } from "../../internal/Waiters.ts"
import { EntryTable } from "../../internal/EntryTable.ts"
import { connectFromNow } from "../../internal/connectFromNow.ts"

/** The `ConnectionInfo.transport` of an in-memory stream. */
export const connectionTransport = "memory"

/** The in-memory transport's capabilities on both planes. */
export const capabilities: TransportCapabilities = {
  streaming: true,
  persistent_connections: true,
  bidirectional: true
}

interface PendingEntry {
  readonly requestId: string
  readonly endpoint: string
  readonly sink: ResponseSink
  connected: boolean
  done: boolean
  onControl: ((message: "stop" | "kill") => void) | undefined
  onDisconnect: ((error: TransportConnectionError) => void) | undefined
  queuedControl: Array<"stop" | "kill">
  timer: ReturnType<typeof setTimeout> | undefined
  /** The router paused the stream: the writer reports it is behind until `resume`. */
  paused: boolean
  /** The writer's `whenWritable` callbacks waiting for `resume` (or the end). */
  readonly waiters: Waiters
}

/** A served endpoint in the hub: its handler and admission check. */
export interface MemoryServed {
  readonly handler: RequestHandler
  readonly admit: Admission | undefined
}

/** The shared state of in-memory request handlers and pending streams. */
export interface MemoryHub {
  readonly handlers: Map<string, MemoryServed>
  readonly pending: EntryTable<PendingEntry>
}

/** A fresh, empty hub. */
export const makeHub = (): MemoryHub => ({ handlers: new Map(), pending: new EntryTable() })

const addressPrefix = "memory://"

const noop = () => {}

/**
 * How many items of a streamed request may wait for the worker before the router's item Stream
 * is no longer pulled (the in-memory counterpart of the wire's per-stream credit).
 */
export const ITEM_WINDOW = 16

/** Runs a fiber in the router's layer (its logger, tracer and scope). */
export type RunFork = (effect: Effect.Effect<void, unknown>) => Fiber.Fiber<void, unknown>

/** The text of the router's item Stream failure: its squashed error's message. */
const describeCause = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (error instanceof Error) return error.message
  return typeof error === "string" ? error : String(error)
}

/**
 * Carries a streamed request's items to the worker: a fiber of the router's runtime pulls
 * `items` while the window has room, and the worker reads them as a Stream. The worker's Stream
 * ends when the router's does, and fails typed when it failed (its message) or was stopped
 * (`stop`, or the router's layer closing). Returns the worker's Stream and `stop`.
 */
const carryItems = (
  run: RunFork,
  items: Stream.Stream<unknown, unknown>,
  target: string
): { readonly stream: Stream.Stream<unknown, TransportError>; readonly stop: () => void } => {
  const queue = Effect.runSync(Queue.bounded<unknown, TransportError | Cause.Done>(ITEM_WINDOW))
  const fiber = run(Stream.runForEachArray(items, (chunk) => Queue.offerAll(queue, chunk)))
  fiber.addObserver((exit) => {
    if (Exit.isSuccess(exit)) Queue.endUnsafe(queue)
    else if (Cause.hasInterruptsOnly(exit.cause)) {
      Queue.failCauseUnsafe(
        queue,
        Cause.fail(
          new TransportConnectionError({
            reason: "ConnectionClosed",
            transport: "memory",
            target,
            detail: "the router stopped sending the request's items"
          })
        )
      )
    } else {
      Queue.failCauseUnsafe(
        queue,
        Cause.fail(
          new TransportConnectionError({
            reason: "StreamEndedEarly",
            transport: "memory",
            target,
            detail: `the router's request item stream failed: ${describeCause(exit.cause)}`,
            cause: Cause.squash(exit.cause)
          })
        )
      )
    }
  })
  return { stream: Stream.fromQueue(queue), stop: () => fiber.interruptUnsafe() }
}

/** Asks `served` to admit one more request: undefined, or the typed refusal. */
const refusal = (served: MemoryServed, target: RequestTarget): TransportConnectionError | undefined => {
  const refused = served.admit?.()
  if (refused === undefined) return undefined
  recordError("memory", "connection", "server")
  return new TransportConnectionError({
    reason: refused.refuse === "overloaded" ? "Overloaded" : "ServerUnavailable",
    transport: "memory",
    target: target.address,
    detail: `Server ${refused.refuse}: ${refused.detail}`
  })
}

/**
 * Hands `message` to the handler at `target` after the ack (as with HTTP 202), or names why
 * not; a streamed request's items start flowing at the ack. Returns the refusal, or the
 * function that stops a streamed request's items (`noop` for a plain one).
 */
const deliver = (
  hub: MemoryHub,
  run: RunFork,
  target: RequestTarget,
  message: RequestMessage
): EndpointNotFound | TransportConnectionError | (() => void) => {
  const served = hub.handlers.get(target.address)
  if (served === undefined) return new EndpointNotFound({ endpoint: target.endpoint, target: target.address })
  const refused = refusal(served, target)
  if (refused !== undefined) return refused
  const handler = served.handler
  if (message.items === undefined) {
    queueMicrotask(() => handler(message))
    return noop
  }
  const carried = carryItems(run, message.items, target.address)
  const delivered: RequestMessage = { control: message.control, payload: message.payload, headers: message.headers, items: carried.stream }
  queueMicrotask(() => handler(delivered))
  return carried.stop
}

/**
 * The request plane client and server over a hub. `run` forks the fibers that pull streamed
 * requests' items (default: the global runtime; the layer passes its own).
 */
export const makeRequestPlane = (
  hub: MemoryHub,
  run: RunFork = (effect) => Effect.runFork(effect)
): { client: RequestPlaneClient; server: RequestPlaneServer } => ({
  client: {
    transport: "memory",
    // The Effect form cannot stop a streamed request's items early; `sendCallback`'s cancel does.
    send: (target, message) =>
      Effect.suspend(() => {
        const delivered = deliver(hub, run, target, message)
        return typeof delivered === "function" ? Effect.void : Effect.fail(delivered)
      }),
    sendCallback: (target, message, onAck) => {
      const delivered = deliver(hub, run, target, message)
      if (typeof delivered === "function") {
        onAck(undefined)
        return delivered
      }
      onAck(delivered)
      return noop
    }
  },
  server: {
    transport: "memory",
    register: (key, handler, options) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          const address = addressPrefix + instanceSubject(key)
          hub.handlers.set(address, { handler, admit: options?.admit })
          const side = { transport_id: "memory" as const, address, capabilities, metadata: {} }
          const transport: TransportType = { unified: { request_transport: side, response_transport: side } }
          return { address, transport }
        }),
        ({ address }) => Effect.sync(() => hub.handlers.delete(address))
      ).pipe(Effect.map(({ transport }) => transport))
  }
})

/** The response plane client and server over a hub. */
export const makeResponsePlane = (
  hub: MemoryHub,
  options: { readonly callHomeTimeoutMs: number }
): { client: ResponsePlaneClient; server: ResponsePlaneServer } => {
  const server: ResponsePlaneServer = {
    transport: "memory",
    open: ({ endpoint, requestId, sink }) =>
      Effect.sync((): PendingStream => {
        const subject = crypto.randomUUID()
        const entry: PendingEntry = {
          requestId,
          endpoint,
          sink,
          connected: false,
          done: false,
          onControl: undefined,
          onDisconnect: undefined,
          queuedControl: [],
          timer: undefined,
          paused: false,
          waiters: new Waiters()
        }
        entry.timer = setTimeout(() => {
          if (entry.connected || entry.done) return
          entry.done = true
          hub.pending.delete(subject)
          sink.onError(
            new TransportTimeoutError({
              reason: "CallHomeTimeout",
              transport: "memory",
              target: subject,
              detail: `no worker called home within ${options.callHomeTimeoutMs} ms`
            })
          )
        }, options.callHomeTimeoutMs)
        hub.pending.set(subject, entry)
        const connectionInfo: ConnectionInfo = {
          transport: connectionTransport,
          info: JSON.stringify({ subject, context: requestId })
        }
        return {
          connectionInfo,
          isDone: () => entry.done,
          // Items still go straight to the sink; pausing only tells the writer it is behind.
          pause: () => {
            entry.paused = !entry.done
          },
          resume: () => {
            entry.paused = false
            entry.waiters.wake()
          },
          control: (message) => {
            if (entry.done) return
            if (entry.onControl !== undefined) entry.onControl(message)
            else entry.queuedControl.push(message)
          },
          close: () => {
            clearTimeout(entry.timer)
            hub.pending.delete(subject)
            if (entry.done) return entry.waiters.wake()
            entry.done = true
            const disconnect = entry.onDisconnect
            if (entry.connected && disconnect !== undefined) {
              queueMicrotask(() =>
                disconnect(
                  new TransportConnectionError({ reason: "ConnectionClosed", transport: "memory", target: subject, detail: "router closed the stream" })
                )
              )
            }
            // After the disconnect: a woken handler must already see its stream is gone.
            entry.waiters.wake()
          }
        }
      })
  }

  // Taking the pending stream never waits.
  const connectNow = ({ connectionInfo, requestId }: ConnectOptions): ResponseWriter | TransportProtocolError => {
    let info: { subject?: unknown; context?: unknown }
    try {
      info = JSON.parse(connectionInfo.info)
    } catch (cause) {
      return new TransportProtocolError({ reason: "BadHandshake", transport: "memory", target: connectionInfo.info, detail: "connection info is not JSON", cause })
    }
    const subject = String(info.subject)
    if (info.context !== requestId) {
      return new TransportProtocolError({ reason: "BadHandshake", transport: "memory", target: subject, detail: `context ${String(info.context)} is not the request id ${requestId}` })
    }
    const entry = hub.pending.get(subject)
    if (entry === undefined || entry.connected || entry.done) {
      return new TransportProtocolError({ reason: "UnknownSubject", transport: "memory", target: subject, detail: "subject unknown or already served" })
    }
    entry.connected = true
    clearTimeout(entry.timer)
    return makeWriter(hub, subject, entry)
  }

  const client: ResponsePlaneClient = {
    transport: "memory",
    connectionTransports: [connectionTransport],
    connect: connectFromNow(connectNow),
    connectNow
  }
  return { client, server }
}

const makeWriter = (hub: MemoryHub, subject: string, entry: PendingEntry): ResponseWriter => {
  let started = false
  const finish = () => {
    entry.done = true
    hub.pending.delete(subject)
    entry.waiters.wake()
  }
  const writer: ResponseWriter = {
    prologue: (error) => {
      if (entry.done) return
      if (error !== undefined) {
        finish()
        entry.sink.onError(new HandlerError({ endpoint: entry.endpoint, requestId: entry.requestId, detail: error, phase: "prologue" }))
        return
      }
      started = true
      entry.sink.onStart?.()
    },
    // Values are handed over as they are (never encoded), so a write cannot fail here.
    send: (item) => {
      if (!entry.done && started) entry.sink.onItems([item])
      return Exit.void
    },
    sendAll: (items) => {
      if (!entry.done && started && items.length > 0) entry.sink.onItems(items)
      return Exit.void
    },
    fail: (message) => {
      if (entry.done) return
      finish()
      entry.sink.onError(new HandlerError({ endpoint: entry.endpoint, requestId: entry.requestId, detail: message, phase: "stream" }))
    },
    complete: () => {
      if (entry.done) return
      finish()
      entry.sink.onEnd()
    },
    close: () => {
      if (entry.done) return
      finish()
      entry.sink.onError(
        new TransportConnectionError({ reason: "StreamEndedEarly", transport: "memory", target: subject, detail: "stream ended before generation completed" })
      )
    },
    onControl: (f) => {
      entry.onControl = f
      const queued = entry.queuedControl.splice(0)
      for (const m of queued) f(m)
    },
    onDisconnect: (f) => {
      entry.onDisconnect = f
    },
    whenWritable: (f) => {
      return entry.done || !entry.paused || entry.waiters.add(f)
    }
  }
  return writer
}

/** Options of the in-memory transport layer. */
export interface MemoryTransportOptions {
  /** Share a hub to connect separate layer stacks; fresh by default. */
  readonly hub?: MemoryHub | undefined
  /** Registration priority on both planes (default 0). */
  readonly priority?: number | undefined
  /** Which planes to register (default both). */
  readonly planes?: ReadonlyArray<"request" | "response"> | undefined
}

/** Registers the in-memory transport in the TransportRegistry for the layer's life. */
export const layerWith = (options: MemoryTransportOptions = {}) =>
  Layer.effectDiscard(
    Effect.gen(function*() {
      const registry = yield* TransportRegistry
      const config = yield* TransportConfig
      const hub = options.hub ?? makeHub()
      const priority = options.priority ?? 0
      const planes = options.planes ?? ["request", "response"]
      if (planes.includes("request")) {
        // Item pumps run in the layer's context and end with it.
        const run = yield* FiberSet.makeRuntime<never, void, unknown>()
        yield* registry.registerRequest({
          registration: { transport_id: "memory", plane_type: "request", capabilities, priority },
          ...makeRequestPlane(hub, run)
        })
      }
      if (planes.includes("response")) {
        yield* registry.registerResponse({
          registration: { transport_id: "memory", plane_type: "response", capabilities, priority },
          ...makeResponsePlane(hub, { callHomeTimeoutMs: config.tcpResponse.callHomeTimeoutMs })
        })
      }
    })
  )

/** The in-memory transport on both planes over a fresh hub. */
export const layer = layerWith()
