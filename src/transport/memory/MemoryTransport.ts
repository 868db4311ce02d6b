/**
 * The in-memory transport: both planes inside one process, with the semantics of the wire
 * transports (ack before the handler runs, ordered streaming, prologue errors, stop/kill,
 * call-home timeout, "stream ended before generation completed", unknown endpoints and
 * subjects refused with typed errors) and none of their bytes.
 *
 * It is what tests swap in, and the one-process embedded mode. Requests and items are passed
 * by reference, not copied. Two layers that share a `MemoryHub` can talk to each other.
 */
import { Effect, Exit, Layer } from "effect"
import type { ConnectionInfo } from "../../ConnectionInfo.ts"
import type { TransportType } from "../../Instance.ts"
import { instanceSubject } from "../../RequestPlane.ts"
import type { RequestHandler, RequestMessage, RequestPlaneClient, RequestPlaneServer, RequestTarget } from "../../RequestPlane.ts"
import type { PendingStream, ResponsePlaneClient, ResponsePlaneServer, ResponseSink, ResponseWriter } from "../../ResponsePlane.ts"
import type { TransportCapabilities } from "../../Transport.ts"
import { EndpointNotFound, HandlerError, TransportConnectionError, TransportProtocolError, TransportTimeoutError } from "../../TransportError.ts"
import { TransportConfig } from "../../TransportConfig.ts"
import { TransportRegistry } from "../../TransportRegistry.ts"
import { Waiters } from "../../internal/Waiters.ts"

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

/** The shared state of in-memory request handlers and pending streams. */
export interface MemoryHub {
  readonly handlers: Map<string, RequestHandler>
  readonly pending: Map<string, PendingEntry>
}

/** A fresh, empty hub. */
export const makeHub = (): MemoryHub => ({ handlers: new Map(), pending: new Map() })

const addressPrefix = "memory://"

const noop = () => {}

/** Hands `message` to the handler at `target` after the ack (as with HTTP 202), or names why not. */
const deliver = (hub: MemoryHub, target: RequestTarget, message: RequestMessage): EndpointNotFound | undefined => {
  const handler = hub.handlers.get(target.address)
  if (handler === undefined) return new EndpointNotFound({ endpoint: target.endpoint, target: target.address })
  queueMicrotask(() => handler(message))
  return undefined
}

/** The request plane client and server over a hub. */
export const makeRequestPlane = (hub: MemoryHub): { client: RequestPlaneClient; server: RequestPlaneServer } => ({
  client: {
    transport: "memory",
    send: (target, message) =>
      Effect.suspend(() => {
        const error = deliver(hub, target, message)
        return error === undefined ? Effect.void : Effect.fail(error)
      }),
    sendCallback: (target, message, onAck) => {
      onAck(deliver(hub, target, message))
      return noop
    }
  },
  server: {
    transport: "memory",
    register: (key, handler) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          const address = addressPrefix + instanceSubject(key)
          hub.handlers.set(address, handler)
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

  const client: ResponsePlaneClient = {
    transport: "memory",
    connectionTransports: [connectionTransport],
    connect: ({ connectionInfo, requestId }) =>
      Effect.suspend(() => {
        let info: { subject?: unknown; context?: unknown }
        try {
          info = JSON.parse(connectionInfo.info)
        } catch (cause) {
          return Effect.fail(
            new TransportProtocolError({ reason: "BadHandshake", transport: "memory", target: connectionInfo.info, detail: "connection info is not JSON", cause })
          )
        }
        const subject = String(info.subject)
        if (info.context !== requestId) {
          return Effect.fail(
            new TransportProtocolError({ reason: "BadHandshake", transport: "memory", target: subject, detail: `context ${String(info.context)} is not the request id ${requestId}` })
          )
        }
        const entry = hub.pending.get(subject)
        if (entry === undefined || entry.connected || entry.done) {
          return Effect.fail(
            new TransportProtocolError({ reason: "UnknownSubject", transport: "memory", target: subject, detail: "subject unknown or already served" })
          )
        }
        entry.connected = true
        clearTimeout(entry.timer)
        return Effect.succeed(makeWriter(hub, subject, entry))
      })
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
        yield* registry.registerRequest({
          registration: { transport_id: "memory", plane_type: "request", capabilities, priority },
          ...makeRequestPlane(hub)
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
