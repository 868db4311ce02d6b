/**
 * The worker side of an endpoint: `serveEmit` registers an emit-style handler on a request-plane
 * server and the instance in discovery, and runs each accepted request on its own fiber in a
 * runtime captured from the caller's context (logger, tracer and services carry over); `serve`
 * is the Stream adapter over it, and `serveDuplex` the adapter for a handler that also takes the
 * request's item Stream (bidirectional streaming). Each endpoint has an admission check
 * (`Admission.ts`: the in-flight cap, and refusal while draining) that its request server asks
 * before each ack.
 *
 * It does not run a request itself (`HandleRequest.ts` does: call-home, prologue, handler, end
 * of stream) nor write items (`Emit.ts`).
 */
import { Effect, Fiber, LogLevel, References, Schema, Stream } from "effect"
import type { Scope } from "effect"
import { Discovery } from "../Discovery.ts"
import type { DiscoveryError } from "../Discovery.ts"
import { formatEndpointPath } from "../Instance.ts"
import type { EndpointPath, Instance } from "../Instance.ts"
import type { RequestMessage } from "../RequestPlane.ts"
import { noRequirements } from "../Transport.ts"
import type { TransportId } from "../Transport.ts"
import { TransportConfig } from "../TransportConfig.ts"
import type { InvalidEndpointPath, NoTransportAvailable, ResponseWriteError, TransportError } from "../TransportError.ts"
import { TransportRegistry } from "../TransportRegistry.ts"
import * as Health from "../observability/Health.ts"
import * as MetricsModule from "../observability/Metrics.ts"
import { parseEndpointPath } from "./EndpointPath.ts"
import { makeAdmission } from "./Admission.ts"
import type { Emit } from "./Emit.ts"
import { makeHandleRequest } from "./HandleRequest.ts"
import type { DuplexHandler, EmitHandler, RunnableHandler, StreamHandler } from "./Handler.ts"
import { NodeList } from "../internal/NodeList.ts"
import { makeInFlight } from "./InFlight.ts"

/** Options of `serve` and `serveEmit`. */
export interface ServeOptions<Req> {
  /** The request transport to serve on; by default the highest-priority registered one. */
  readonly transport?: TransportId | undefined
  /**
   * The instance id to advertise; by default discovery's `instanceId` (etcd: the process lease's
   * id; mem and file: a random 63-bit id).
   */
  readonly instanceId?: bigint | undefined
  /** Decodes each request; a request that does not decode fails in the prologue. */
  readonly requestSchema?: Schema.Codec<Req, unknown> | undefined
  /**
   * On shutdown, after the instance left discovery, how long running handlers may take to
   * finish before they are interrupted (default 0: interrupt at once). Meanwhile the request
   * plane still answers for the endpoint, refusing new requests "unavailable" (a router with a
   * stale instance list gets a typed `ServerUnavailable`, not `EndpointNotFound`); it stops
   * serving the endpoint after the drain.
   */
  readonly drainTimeoutMs?: number | undefined
  /**
   * The most requests this endpoint runs at once (admitted and not finished). Beyond it, its
   * request server refuses a request before the ack, "overloaded" (memory and http: a
   * `TransportConnectionError` with reason "Overloaded" at the router; TCP: Dynamo's `Server
   * overloaded: ...` ack). Default: unlimited. A positive integer (its integer part, at least 1);
   * `Infinity` also means unlimited.
   */
  readonly maxInFlight?: number | undefined
}

/** A served endpoint. */
export interface ServedEndpoint {
  readonly path: EndpointPath
  readonly instance: Instance
  /** Requests whose handler is still running. */
  readonly inFlight: () => number
  /** Waits until no handler runs, at most `timeoutMs`; true when drained. */
  readonly drain: (timeoutMs: number) => Effect.Effect<boolean>
  /** True once the scope started closing: new requests are refused "unavailable". */
  readonly draining: () => boolean
}

/** What `serveEmit`, `serve` and `serveDuplex` return. */
type Served<R> = Effect.Effect<
  ServedEndpoint,
  TransportError | NoTransportAvailable | DiscoveryError | InvalidEndpointPath,
  Scope.Scope | TransportRegistry | Discovery | TransportConfig | R
>

/**
 * Serves `path` ("ns.component.endpoint") with an emit-style handler until the scope closes.
 * Closing the scope first refuses new requests ("unavailable"), then removes the instance from
 * discovery, drains (`drainTimeoutMs`), leaves the request plane, and interrupts running
 * handlers (their routers see a HandlerError, never a silent end).
 */
export const serveEmit = <Req, Res, E = never, R = never>(
  path: string,
  handler: EmitHandler<Req, Res, E, R>,
  options: ServeOptions<Req> = {}
): Served<R> => serveRunnable(path, handler, options)

/** `serveEmit` for a handler that also takes the request's item Stream. */
const serveRunnable = <Req, Res, E = never, R = never>(
  path: string,
  handler: RunnableHandler<Req, Res, E, R>,
  options: ServeOptions<Req>
): Served<R> =>
  Effect.gen(function*() {
    const endpointPath = yield* parseEndpointPath(path)
    const endpoint = formatEndpointPath(endpointPath)
    const registry = yield* TransportRegistry
    const discovery = yield* Discovery
    const config = yield* TransportConfig
    const Metrics = MetricsModule.recorders(config.metrics, "server")
    const transportId = options.transport ?? (yield* registry.select("request", noRequirements))
    const server = yield* registry.getRequestServer(transportId)
    // etcd: the process lease's id, held while the endpoint is served (mem, file: random).
    const instanceId = options.instanceId ?? (yield* discovery.instanceId)
    const inFlight = makeInFlight()
    const admission = makeAdmission({ endpoint, maxInFlight: options.maxInFlight, running: inFlight.count })

    // The handlers' fibers, forked straight from the caller's context (logger, tracer, services)
    // and interrupted when the scope closes: what `FiberSet.makeRuntime` did, without its
    // per-request overhead. Its finalizer is added here, before `register`, so it still runs after
    // the request plane was left.
    const runFork = Effect.runForkWith(yield* Effect.context<R>())
    const fibers = new NodeList<Fiber.Fiber<void>>()
    let closed = false
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closed = true
        return Fiber.interruptAll(fibers.values())
      })
    )
    const handleRequest = makeHandleRequest<Req, Res, E, R>({
      endpoint,
      endpointPath,
      instanceId,
      transportId,
      tracing: config.tracing,
      // Read once: a request builds its debug line only when debug logs are on.
      debug: LogLevel.isGreaterThanOrEqualTo("Debug", yield* References.MinimumLogLevel),
      registry,
      decode: options.requestSchema === undefined ? undefined : Schema.decodeUnknownExit(options.requestSchema),
      handler
    })

    const onRequest = (message: RequestMessage) => {
      admission.started()
      Metrics.recordServerRequest(transportId)
      // As the closed FiberSet did: the handler never runs.
      if (closed) return
      inFlight.begin()
      Metrics.streamDelta(transportId, "request", 1)
      const served = Metrics.serving(transportId, registry.responseClientFor(message.control.connection_info.transport)?.transport)
      const fiber = runFork(handleRequest(message))
      const node = fiber.pollUnsafe() === undefined ? fibers.push(fiber) : undefined
      fiber.addObserver(() => {
        if (node !== undefined) fibers.remove(node)
        Metrics.streamDelta(transportId, "request", -1)
        served()
        inFlight.end()
      })
    }

    const transport = yield* server.register({ path: endpointPath, instanceId }, onRequest, { admit: admission.admit })
    // Finalizers run in reverse: refuse new requests ("unavailable"), leave discovery, drain
    // (the request plane still answers, refusing), leave the request plane, then interrupt.
    const drainTimeoutMs = options.drainTimeoutMs ?? 0
    if (drainTimeoutMs > 0) {
      yield* Effect.addFinalizer(() =>
        Effect.flatMap(inFlight.drain(drainTimeoutMs), (drained) =>
          drained
            ? Effect.void
            : Effect.logWarning("drain timed out; interrupting handlers").pipe(
              Effect.annotateLogs({ endpoint, inFlight: inFlight.count() })
            ))
      )
    }
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
    // Added last, so it runs first when the scope closes: from then on, requests are refused
    // "unavailable" while the instance leaves discovery and the request plane.
    yield* Effect.addFinalizer(() => Effect.sync(admission.startDraining))
    return {
      path: endpointPath,
      instance,
      inFlight: inFlight.count,
      drain: inFlight.drain,
      draining: admission.draining
    } satisfies ServedEndpoint
  })

/**
 * Serves `path` with a Stream handler: a thin adapter over `serveEmit`. It writes each chunk
 * with `emit.all`, fails with the `ResponseWriteError` of a chunk it could not write, and waits
 * on `emit.ready` after every chunk.
 */
export const serve = <Req, Res, E = never, R = never>(
  path: string,
  handler: StreamHandler<Req, Res, E, R>,
  options: ServeOptions<Req> = {}
) =>
  serveEmit<Req, Res, E | ResponseWriteError, R>(
    path,
    (request, context, emit) => writeAll(handler(request, context), emit),
    options
  )

/** Writes every chunk of `stream` with `emit.all`, waiting on `emit.ready` after each. */
const writeAll = <Res, E, R>(stream: Stream.Stream<Res, E, R>, emit: Emit<Res>): Effect.Effect<void, E | ResponseWriteError, R> =>
  Stream.runForEachArray(stream, (chunk) => {
    const written = emit.all(chunk)
    return written._tag === "Failure" ? written : emit.ready
  })

/**
 * Serves `path` with a duplex Stream handler (bidirectional streaming): the handler gets the
 * request value and a Stream of the items the router streams after it (`generateDuplex`), and
 * returns the response Stream, written as `serve` writes it. A request sent without items
 * (`generate`, `call`) gives an empty item Stream. The item Stream fails with a typed
 * `TransportError` when the router's own item Stream failed (the error carries its message) or
 * the connection died; what the handler does then (fail, or go on) is how the call ends. Items
 * are not checked against a schema (`requestSchema` covers the request value only).
 */
export const serveDuplex = <Req, Item, Res, E = never, R = never>(
  path: string,
  handler: DuplexHandler<Req, Item, Res, E, R>,
  options: ServeOptions<Req> = {}
): Served<R> =>
  serveRunnable<Req, Res, E | ResponseWriteError, R>(
    path,
    (request, context, emit, items) =>
      writeAll(handler(request, items === undefined ? Stream.empty : (items as Stream.Stream<Item, TransportError>), context), emit),
    options
  )
