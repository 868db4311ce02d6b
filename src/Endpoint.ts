/**
 * The API users call: `serve` an endpoint on a worker, and call it from a router through a
 * `client`.
 *
 * Beneath the Stream forms is a lean core (DESIGN.md, "The hot path"): on the worker an
 * emit-style handler `(request, context, emit) => Effect`, on the router `call(request,
 * onItems)`, which hands over each batch of items as it arrives through one
 * `Effect.callback` per request. `serve` with a Stream handler and `generate` returning a
 * Stream are thin adapters over them.
 *
 * Wiring: serving registers the handler on a request-plane server and the instance in
 * discovery; a call picks an instance, opens a pending stream on the response plane, sends
 * the request with its ConnectionInfo, and waits for the stream to end. A consumer that
 * interrupts sends `stop`, then `kill` after `DYN_CANCEL_GRACE_MS`; either interrupts the
 * worker's handler fiber. A handler failure reaches the router as a `HandlerError`.
 */
import { Cause, Channel, Deferred, Effect, Exit, FiberSet, Result, Schedule, Schema, Scope, Stream } from "effect"
import type { Array as Arr } from "effect"
import { Discovery } from "./Discovery.ts"
import type { DiscoveryError, DiscoveryEvent } from "./Discovery.ts"
import { decodeEndpointPath, formatEndpointPath, randomInstanceId, requestTransportOf } from "./Instance.ts"
import type { EndpointPath, Instance } from "./Instance.ts"
import type { RequestHeaders, RequestMessage, RequestPlaneClient, RequestTarget } from "./RequestPlane.ts"
import type { PendingStream, ResponseSink, ResponseWriter } from "./ResponsePlane.ts"
import type { TransportId } from "./Transport.ts"
import { TransportConfig } from "./TransportConfig.ts"
import { EndpointNotFound, errorTypeOf, InvalidEndpointPath, NoTransportAvailable, TransportConnectionError } from "./TransportError.ts"
import * as Health from "./observability/Health.ts"
import * as MetricsModule from "./observability/Metrics.ts"
import type { CallError, TransportError } from "./TransportError.ts"
import { TransportRegistry } from "./TransportRegistry.ts"
import type { RequestTransport } from "./TransportRegistry.ts"
import * as Tracing from "./observability/Tracing.ts"
import { noRequirements } from "./Transport.ts"

/** What a handler knows about the request it serves. */
export interface HandlerContext {
  readonly requestId: string
  /** "ns.component.endpoint" */
  readonly endpoint: string
  readonly instanceId: bigint
  /** Transport headers: traceparent, tracestate, x-request-id. */
  readonly headers: RequestHeaders
}

/** Sends response items from an emit-style handler. Synchronous; the transport batches writes. */
export interface Emit<A> {
  (item: A): void
  /** Sends several items at once. */
  readonly all: (items: ReadonlyArray<A>) => void
  /**
   * Backpressure: succeeds at once while the transport keeps up, otherwise once the router has
   * read enough (or the stream is over). `serve`'s Stream adapter waits on it after every chunk;
   * an emit-style handler that produces a lot should `yield* emit.ready` between batches, or its
   * items pile up in the worker's memory when the router is slow.
   */
  readonly ready: Effect.Effect<void>
}

/** The lean worker handler: emit items, and succeed to complete the stream. */
export type EmitHandler<Req, Res, E = never, R = never> = (
  request: Req,
  context: HandlerContext,
  emit: Emit<Res>
) => Effect.Effect<void, E, R>

/** The Stream worker handler. */
export type StreamHandler<Req, Res, E = never, R = never> = (
  request: Req,
  context: HandlerContext
) => Stream.Stream<Res, E, R>

/** Options of `serve` and `serveEmit`. */
export interface ServeOptions<Req> {
  /** The request transport to serve on; by default the highest-priority registered one. */
  readonly transport?: TransportId | undefined
  /** The instance id to advertise; by default a random 63-bit id. */
  readonly instanceId?: bigint | undefined
  /** Decodes each request; a request that does not decode fails in the prologue. */
  readonly requestSchema?: Schema.Codec<Req, unknown> | undefined
  /**
   * On shutdown, after the instance left discovery and the request plane, how long running
   * handlers may take to finish before they are interrupted (default 0: interrupt at once).
   */
  readonly drainTimeoutMs?: number | undefined
}

/** A served endpoint. */
export interface ServedEndpoint {
  readonly path: EndpointPath
  readonly instance: Instance
  /** Requests whose handler is still running. */
  readonly inFlight: () => number
  /** Waits until no handler runs, at most `timeoutMs`; true when drained. */
  readonly drain: (timeoutMs: number) => Effect.Effect<boolean>
}

/** The parsed path, or a typed `InvalidEndpointPath` naming the problem. */
const endpointPathOf = (path: string): Effect.Effect<EndpointPath, InvalidEndpointPath> => {
  const parsed = decodeEndpointPath(path)
  return typeof parsed === "string" ? Effect.fail(new InvalidEndpointPath({ path: String(path), detail: parsed })) : Effect.succeed(parsed)
}

/** In-band error texts are cut to this many characters, so the frame always fits. */
const MAX_ERROR_TEXT = 4096

const describeFailure = (cause: Cause.Cause<unknown>): string => {
  const text = describeSquashed(cause)
  return text.length > MAX_ERROR_TEXT ? `${text.slice(0, MAX_ERROR_TEXT)}… (${text.length} characters)` : text
}

const describeSquashed = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (error instanceof Error) return error.message
  if (typeof error === "string") return error
  try {
    return JSON.stringify(error)
  } catch {
    return String(error)
  }
}

/**
 * Serves `path` ("ns.component.endpoint") with an emit-style handler until the scope closes.
 * Closing the scope removes the instance from discovery, stops accepting requests, and
 * interrupts running handlers (their routers see a HandlerError, never a silent end).
 */
export const serveEmit = <Req, Res, E = never, R = never>(
  path: string,
  handler: EmitHandler<Req, Res, E, R>,
  options: ServeOptions<Req> = {}
): Effect.Effect<
  ServedEndpoint,
  TransportError | NoTransportAvailable | DiscoveryError | InvalidEndpointPath,
  Scope.Scope | TransportRegistry | Discovery | TransportConfig | R
> =>
  Effect.gen(function*() {
    const endpointPath = yield* endpointPathOf(path)
    const endpoint = formatEndpointPath(endpointPath)
    const registry = yield* TransportRegistry
    const discovery = yield* Discovery
    const config = yield* TransportConfig
    const tracing = config.tracing
    const Metrics = MetricsModule.recorders(config.metrics)
    const transportId = options.transport ?? (yield* registry.select("request", noRequirements))
    const server = yield* registry.getRequestServer(transportId)
    const instanceId = options.instanceId ?? randomInstanceId()
    const decode = options.requestSchema === undefined ? undefined : Schema.decodeUnknownExit(options.requestSchema)
    let inFlight = 0
    const idle = new Set<() => void>()

    const run = yield* FiberSet.makeRuntime<R>()
    const drain = (timeoutMs: number) =>
      Effect.callback<boolean>((resume) => {
        if (inFlight === 0) return resume(Effect.succeed(true))
        const done = () => {
          clearTimeout(timer)
          idle.delete(done)
          resume(Effect.succeed(true))
        }
        const timer = setTimeout(() => {
          idle.delete(done)
          resume(Effect.succeed(false))
        }, timeoutMs)
        idle.add(done)
        return Effect.sync(() => {
          clearTimeout(timer)
          idle.delete(done)
        })
      })
    // Finalizers run in reverse: leave discovery, leave the request plane, drain, then interrupt.
    const drainTimeoutMs = options.drainTimeoutMs ?? 0
    if (drainTimeoutMs > 0) {
      yield* Effect.addFinalizer(() =>
        Effect.flatMap(drain(drainTimeoutMs), (drained) =>
          drained
            ? Effect.void
            : Effect.logWarning("drain timed out; interrupting handlers").pipe(Effect.annotateLogs({ endpoint, inFlight }))
        )
      )
    }

    const handleOne = (message: RequestMessage): Effect.Effect<void, never, R> =>
      Effect.gen(function*() {
        const requestId = message.control.id
        const client = registry.responseClientFor(message.control.connection_info.transport)
        if (client === undefined) {
          yield* Effect.logWarning("no response transport for request").pipe(
            Effect.annotateLogs({ endpoint, requestId, connectionTransport: message.control.connection_info.transport })
          )
          return
        }
        const connected = yield* Effect.exit(
          client.connect({
            connectionInfo: message.control.connection_info,
            requestId,
            codec: message.control.payload_codec ?? "json"
          })
        )
        if (Exit.isFailure(connected)) {
          yield* Effect.logWarning("call-home failed", connected.cause).pipe(Effect.annotateLogs({ endpoint, requestId }))
          return
        }
        const writer = connected.value
        let request = message.payload as Req
        if (decode !== undefined) {
          const decoded = decode(message.payload)
          if (Exit.isFailure(decoded)) {
            writer.prologue(`invalid request: ${describeFailure(decoded.cause)}`)
            return
          }
          request = decoded.value
        }
        writer.prologue()
        const context: HandlerContext = { requestId, endpoint, instanceId, headers: message.headers }
        let items = 0
        const emit = ((item: Res) => {
          items++
          writer.send(item)
        }) as Emit<Res>
        ;(emit as { all: (items: ReadonlyArray<Res>) => void }).all = (batch) => {
          items += batch.length
          writer.sendAll(batch)
        }
        ;(emit as { ready: Effect.Effect<void> }).ready = readyOf(writer)
        const runHandler = tracing === "off"
          ? handler(request, context, emit)
          : Effect.useSpan(
            `handle ${endpoint}`,
            {
              kind: "server",
              parent: Tracing.extractParent(message.headers),
              attributes: Tracing.rpcAttributes(endpointPath, undefined, transportId, undefined)
            },
            (span) => handler(request, context, emit).pipe(Effect.ensuring(Effect.sync(() => span.attribute("rpc.response.items", items))))
          )
        let ended: "stop" | "kill" | "disconnect" | undefined
        yield* Effect.withFiber((fiber) => {
          writer.onControl((m) => {
            ended ??= m
            if (m === "kill") writer.close()
            fiber.interruptUnsafe()
          })
          writer.onDisconnect(() => {
            ended ??= "disconnect"
            fiber.interruptUnsafe()
          })
          return Effect.exit(runHandler)
        }).pipe(
          Effect.onExit((exit) =>
            Effect.sync(() => {
              if (exit._tag === "Success" && exit.value._tag === "Success") writer.complete()
              else if (ended !== undefined) writer.close()
              else if (exit._tag === "Success" && exit.value._tag === "Failure" && !Cause.hasInterruptsOnly(exit.value.cause)) {
                writer.fail(describeFailure(exit.value.cause))
              } else writer.fail("handler interrupted: the worker is shutting down")
            })
          )
        )
      })

    const onRequest = (message: RequestMessage) => {
      inFlight++
      Metrics.recordServerRequest(transportId)
      Metrics.streamDelta(transportId, "request", 1)
      const fiber = run(handleOne(message))
      fiber.addObserver(() => {
        Metrics.streamDelta(transportId, "request", -1)
        inFlight--
        if (inFlight === 0) for (const f of idle) f()
      })
    }

    const transport = yield* server.register({ path: endpointPath, instanceId }, onRequest)
    const instance: Instance = {
      type: "Endpoint",
      namespace: endpointPath.namespace,
      component: endpointPath.component,
      endpoint: endpointPath.endpoint,
      instance_id: instanceId,
      transport
    }
    yield* discovery.register(instance)
    yield* Effect.acquireRelease(Effect.sync(Health.endpointUp), () => Effect.sync(Health.endpointDown))
    return {
      path: endpointPath,
      instance,
      inFlight: () => inFlight,
      drain
    } satisfies ServedEndpoint
  })

/**
 * `emit.ready` for `writer`: waits on its `whenWritable` only when it holds writes back. One
 * wake callback and one wait per request; a writable check allocates nothing.
 */
const readyOf = (writer: ResponseWriter): Effect.Effect<void> => {
  if (writer.whenWritable === undefined) return Effect.void
  let resume: ((effect: Effect.Effect<void>) => void) | undefined
  let woken = false
  const wake = () => {
    woken = true
    const r = resume
    resume = undefined
    r?.(Effect.void)
  }
  const wait = Effect.callback<void>((r) => {
    if (woken) return r(Effect.void)
    resume = r
    return Effect.sync(() => {
      resume = undefined
    })
  })
  return Effect.suspend(() => {
    woken = false
    return writer.whenWritable!(wake) ? Effect.void : wait
  })
}

/** Serves `path` with a Stream handler: a thin adapter over `serveEmit`. It waits on `emit.ready` after every chunk. */
export const serve = <Req, Res, E = never, R = never>(
  path: string,
  handler: StreamHandler<Req, Res, E, R>,
  options: ServeOptions<Req> = {}
) =>
  serveEmit<Req, Res, E, R>(
    path,
    (request, context, emit) =>
      Stream.runForEachArray(handler(request, context), (items) =>
        Effect.suspend(() => {
          emit.all(items)
          return emit.ready
        })),
    options
  )

/** `client.sendCallback`, or `send` run on a fiber for transports without the lean form. */
const sendLean = (
  client: RequestPlaneClient,
  target: RequestTarget,
  message: RequestMessage,
  onAck: (error: TransportError | EndpointNotFound | undefined) => void
): (() => void) => {
  if (client.sendCallback !== undefined) return client.sendCallback(target, message, onAck)
  const fiber = Effect.runFork(client.send(target, message))
  fiber.addObserver((exit) => {
    if (Exit.isSuccess(exit)) onAck(undefined)
    else if (!Cause.hasInterruptsOnly(exit.cause)) {
      const typed = Cause.findError(exit.cause)
      onAck(
        Result.isSuccess(typed)
          ? typed.success
          : new TransportConnectionError({
            reason: "SendFailed",
            transport: client.transport,
            target: target.address,
            detail: `the request transport died: ${String(Cause.squash(exit.cause))}`,
            cause: Cause.squash(exit.cause)
          })
      )
    }
  })
  return () => fiber.interruptUnsafe()
}

/** How a client picks an instance. */
export type Routing = "round-robin" | "random" | { readonly instanceId: bigint }

/** Options of `client`. */
export interface ClientOptions {
  /** Instance choice: round-robin (default), random, or one instance id. */
  readonly routing?: Routing | undefined
  /** The response transport; by default the highest-priority registered streaming one. */
  readonly responseTransport?: TransportId | undefined
  /** Metadata sent in every request's control header. */
  readonly metadata?: Readonly<Record<string, unknown>> | undefined
  /**
   * `generate` only: how many items may wait for the Stream's consumer before the response
   * stream is paused (the transport stops reading it, so the worker is held back). Default
   * `DEFAULT_MAX_BUFFERED_ITEMS`.
   */
  readonly maxBufferedItems?: number | undefined
}

/** Default of `ClientOptions.maxBufferedItems`. */
export const DEFAULT_MAX_BUFFERED_ITEMS = 1024

/** Per-call options. */
export interface CallOptions {
  /** Overrides the client's routing for this call. */
  readonly routing?: Routing | undefined
  /** Extra transport headers (traceparent, ...). */
  readonly headers?: RequestHeaders | undefined
}

/** A router's handle on an endpoint. */
export interface EndpointClient<Req, Res> {
  readonly path: EndpointPath
  /** Streams the responses to `request`. */
  readonly generate: (request: Req, options?: CallOptions) => Stream.Stream<Res, CallError>
  /** The lean core: calls `onItems` with each batch, and succeeds when the stream is complete. */
  readonly call: (
    request: Req,
    onItems: (items: ReadonlyArray<Res>) => void,
    options?: CallOptions
  ) => Effect.Effect<void, CallError>
  /** The instances currently known. */
  readonly instances: () => ReadonlyArray<Instance>
}

/**
 * A client of `path` for the life of the scope. It keeps the endpoint's instance list
 * current through a discovery watch.
 */
export const client = <Req = unknown, Res = unknown>(
  path: string,
  options: ClientOptions = {}
): Effect.Effect<
  EndpointClient<Req, Res>,
  NoTransportAvailable | DiscoveryError | InvalidEndpointPath,
  Scope.Scope | TransportRegistry | Discovery | TransportConfig
> =>
  Effect.gen(function*() {
    const endpointPath = yield* endpointPathOf(path)
    const endpoint = formatEndpointPath(endpointPath)
    const registry = yield* TransportRegistry
    const discovery = yield* Discovery
    const config = yield* TransportConfig
    const responseId =
      options.responseTransport ??
      (yield* registry.select("response", { streaming: true, persistent_connections: false, bidirectional: false }))
    const responseServer = yield* registry.getResponseServer(responseId)
    const codec = config.requestPlaneCodec
    const graceMs = config.cancelGraceMs
    const tracing = config.tracing
    const Metrics = MetricsModule.recorders(config.metrics)

    let instances: ReadonlyArray<Instance> = []
    const first = yield* Deferred.make<void, DiscoveryError>()
    const apply = (event: DiscoveryEvent) => {
      if (event._tag === "Snapshot") instances = event.instances
      else if (event._tag === "Added") {
        instances = [...instances.filter((i) => i.instance_id !== event.instance.instance_id), event.instance]
      } else instances = instances.filter((i) => i.instance_id !== event.instance.instance_id)
    }
    // The first snapshot must arrive (or its failure is the client's); after that a failed
    // watch is logged and restarted, so the instance list never freezes silently.
    yield* discovery.watch(endpointPath).pipe(
      Stream.runForEach((event) => Effect.sync(() => apply(event)).pipe(Effect.andThen(Deferred.succeed(first, undefined)))),
      Effect.tapCause((cause) =>
        Effect.flatMap(Deferred.isDone(first), (started) =>
          started
            ? Effect.logWarning("discovery watch failed; restarting it", cause).pipe(
              Effect.annotateLogs({ module: "endpoint", endpoint })
            )
            : Deferred.failCause(first, cause)
        )
      ),
      Effect.retry({ while: () => Deferred.isDoneUnsafe(first), schedule: Schedule.spaced("1 second") }),
      Effect.ignore,
      Effect.forkScoped
    )
    yield* Deferred.await(first)

    let next = 0
    const pick = (routing: Routing): Instance | undefined => {
      if (instances.length === 0) return undefined
      if (routing === "round-robin") return instances[next++ % instances.length]
      if (routing === "random") return instances[Math.floor(Math.random() * instances.length)]
      return instances.find((i) => i.instance_id === routing.instanceId)
    }

    /** `call`, and `onOpen` receives the response plane's pending stream (for flow control). */
    const callFlow = (
      request: Req,
      onItems: (items: ReadonlyArray<Res>) => void,
      callOptions: CallOptions | undefined,
      onOpen: ((pending: PendingStream) => void) | undefined
    ): Effect.Effect<void, CallError> =>
      Effect.suspend(() => {
        const routing = callOptions?.routing ?? options.routing ?? "round-robin"
        const instance = pick(routing)
        if (instance === undefined) {
          return Effect.fail(
            new EndpointNotFound({
              endpoint,
              detail: typeof routing === "object" ? `no instance ${routing.instanceId}` : "no instance registered"
            })
          )
        }
        const target = requestTransportOf(instance.transport)
        const requestTransport = registry.requestTransportUnsafe(target.id)
        if (requestTransport === undefined) {
          return Effect.fail(new NoTransportAvailable({ plane: "request", required: noRequirements, transport: target.id }))
        }
        if (tracing === "off") return callOn(target.address, requestTransport, request, onItems, callOptions?.headers, onOpen)
        const sampled = tracing === "on" || Math.random() < Tracing.sampleRatio
        return Effect.useSpan(
          `send ${endpoint}`,
          {
            kind: "client",
            sampled,
            attributes: Tracing.rpcAttributes(endpointPath, target.address, requestTransport.registration.transport_id, responseId)
          },
          (span) => {
            let items = 0
            const counted = (batch: ReadonlyArray<Res>) => {
              items += batch.length
              onItems(batch)
            }
            const headers = { ...callOptions?.headers, ...Tracing.injectHeaders(span) }
            return callOn(target.address, requestTransport, request, counted, headers, onOpen).pipe(
              Effect.ensuring(Effect.sync(() => span.attribute("rpc.response.items", items)))
            )
          }
        )
      })

    const callOn = (
      address: string,
      requestTransport: RequestTransport,
      request: Req,
      onItems: (items: ReadonlyArray<Res>) => void,
      headers: RequestHeaders | undefined,
      onOpen: ((pending: PendingStream) => void) | undefined
    ): Effect.Effect<void, CallError> =>
      Effect.suspend(() => {
        const requestId = crypto.randomUUID()
        const requestTransportId = requestTransport.registration.transport_id
        const startedAt = performance.now()
        let result: Effect.Effect<void, CallError> | undefined
        let resume: ((effect: Effect.Effect<void, CallError>) => void) | undefined
        let cancelled = false
        let released = false
        let killTimer: ReturnType<typeof setTimeout> | undefined
        let pending: PendingStream | undefined
        // Closes the pending stream and records the response-plane metrics, once.
        const release = () => {
          if (released) return
          released = true
          clearTimeout(killTimer)
          pending?.close()
          Metrics.streamDelta(responseId, "response", -1)
          Metrics.recordRequest(responseId, "response", (performance.now() - startedAt) / 1000)
        }
        const settle = (effect: Effect.Effect<void, CallError>, error?: unknown) => {
          if (result !== undefined) return
          result = effect
          const type = errorTypeOf(error)
          if (type !== undefined) Metrics.recordError(responseId, type)
          if (cancelled) release()
          else resume?.(effect)
        }
        const sink: ResponseSink = {
          onItems: (items) => {
            if (result !== undefined) return
            try {
              onItems(items as ReadonlyArray<Res>)
            } catch (defect) {
              // A throwing consumer callback fails this call (as a defect) and stops the worker.
              settle(Effect.die(defect))
              pending?.control("kill")
            }
          },
          onEnd: () => settle(Effect.void),
          onError: (error) => settle(Effect.fail(error), error)
        }
        Metrics.streamDelta(responseId, "response", 1)
        return responseServer.open({ requestId, endpoint, codec, sink }).pipe(
          Effect.tapError((error) => Effect.sync(() => {
            const type = errorTypeOf(error)
            if (type !== undefined) Metrics.recordError(responseId, type)
          })),
          Effect.flatMap((opened) => {
            pending = opened
            onOpen?.(opened)
            const message: RequestMessage = {
              control: {
                id: requestId,
                request_type: "single_in",
                response_type: "many_out",
                payload_codec: codec,
                connection_info: opened.connectionInfo,
                ...(options.metadata === undefined ? {} : { metadata: options.metadata })
              },
              payload: request,
              headers: { ...headers, "x-request-id": requestId }
            }
            const onAck = (error: TransportError | EndpointNotFound | undefined) => {
              if (error === undefined) {
                Metrics.recordRequest(requestTransportId, "request", (performance.now() - startedAt) / 1000)
                return
              }
              const type = errorTypeOf(error)
              if (type !== undefined) Metrics.recordError(requestTransportId, type)
              // A stream that already completed was accepted, whatever the ack says now.
              settle(Effect.fail(error))
            }
            // One callback waits for both the ack and the stream: a complete stream implies the
            // ack, so the call ends with the stream even if the ack is still on its way.
            return Effect.callback<void, CallError>((r) => {
              resume = r
              const cancelSend = sendLean(requestTransport.client, { address, endpoint }, message, onAck)
              if (result !== undefined) return r(result)
              return Effect.sync(() => {
                // The consumer interrupted: stop, then kill after the grace period.
                cancelled = true
                cancelSend()
                opened.control("stop")
                killTimer = setTimeout(() => {
                  if (!opened.isDone()) opened.control("kill")
                  release()
                }, graceMs)
              })
            })
          }),
          Effect.onExit(() => Effect.sync(() => (cancelled ? undefined : release())))
        )
      })

    const call = (request: Req, onItems: (items: ReadonlyArray<Res>) => void, callOptions?: CallOptions) =>
      callFlow(request, onItems, callOptions, undefined)

    const maxBuffered = options.maxBufferedItems === undefined
      ? DEFAULT_MAX_BUFFERED_ITEMS
      : Math.max(1, Math.floor(options.maxBufferedItems) || 1)

    // A Stream over `call` with flow control: items wait in `buffer` until the consumer pulls;
    // past `maxBuffered` the response plane's stream is paused (no more reads or credit) until
    // the consumer has taken them. The call runs in the Stream's scope: a consumer that stops
    // early interrupts it (stop, then kill).
    const generate = (request: Req, callOptions?: CallOptions): Stream.Stream<Res, CallError> =>
      Stream.fromChannel(Channel.fromTransform((_upstream, scope) =>
        Effect.gen(function*() {
          let buffer: Array<Res> = []
          let exit: Exit.Exit<void, CallError> | undefined
          let waiting: (() => void) | undefined
          let pending: PendingStream | undefined
          let paused = false
          let cancelled = false
          // The consumer runs in a microtask, never inside the transport's read loop.
          const notify = () => {
            const w = waiting
            if (w === undefined) return
            waiting = undefined
            queueMicrotask(w)
          }
          yield* callFlow(request, (items) => {
            if (cancelled) return
            for (let i = 0; i < items.length; i++) buffer.push(items[i]!)
            if (!paused && buffer.length >= maxBuffered && pending?.pause !== undefined) {
              paused = true
              pending.pause()
            }
            notify()
          }, callOptions, (p) => {
            pending = p
          }).pipe(
            Effect.exit,
            Effect.flatMap((e) =>
              Effect.sync(() => {
                exit = e
                notify()
              })
            ),
            Effect.forkIn(scope)
          )
          // The consumer went away (runs before the call is interrupted): a paused stream is
          // resumed, so the worker's answer to stop is read at once, and nothing more is kept.
          yield* Scope.addFinalizer(
            scope,
            Effect.sync(() => {
              cancelled = true
              buffer = []
              if (paused) {
                paused = false
                pending?.resume?.()
              }
            })
          )
          const pull: Effect.Effect<Arr.NonEmptyReadonlyArray<Res>, CallError | Cause.Done> = Effect.suspend(() => {
            if (buffer.length > 0) {
              const out = buffer as unknown as Arr.NonEmptyReadonlyArray<Res>
              buffer = []
              if (paused) {
                paused = false
                pending?.resume?.()
              }
              return Effect.succeed(out)
            }
            if (exit !== undefined) return Exit.isSuccess(exit) ? Cause.done() : Effect.failCause(exit.cause)
            return Effect.callback<Arr.NonEmptyReadonlyArray<Res>, CallError | Cause.Done>((resume) => {
              waiting = () => resume(pull)
              return Effect.sync(() => {
                waiting = undefined
              })
            })
          })
          return pull
        })
      ))

    return { path: endpointPath, call, generate, instances: () => instances } satisfies EndpointClient<Req, Res>
  })
