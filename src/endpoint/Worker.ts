/**
 * The worker side of an endpoint: `serveEmit` registers an emit-style handler on a request-plane
 * server and the instance in discovery, and runs each accepted request on its own fiber in a
 * runtime captured from the caller's context (logger, tracer and services carry over); `serve`
 * is the Stream adapter over it.
 *
 * It does not run a request itself (`HandleRequest.ts` does: call-home, prologue, handler, end
 * of stream) nor write items (`Emit.ts`).
 */
import { Effect, FiberSet, LogLevel, References, Schema, Stream } from "effect"
import type { Scope } from "effect"
import { Discovery } from "../Discovery.ts"
import type { DiscoveryError } from "../Discovery.ts"
import { formatEndpointPath, randomInstanceId } from "../Instance.ts"
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
import { makeHandleRequest } from "./HandleRequest.ts"
import type { EmitHandler, StreamHandler } from "./Handler.ts"
import { makeInFlight } from "./InFlight.ts"

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
    const endpointPath = yield* parseEndpointPath(path)
    const endpoint = formatEndpointPath(endpointPath)
    const registry = yield* TransportRegistry
    const discovery = yield* Discovery
    const config = yield* TransportConfig
    const Metrics = MetricsModule.recorders(config.metrics)
    const transportId = options.transport ?? (yield* registry.select("request", noRequirements))
    const server = yield* registry.getRequestServer(transportId)
    const instanceId = options.instanceId ?? randomInstanceId()
    const inFlight = makeInFlight()

    const run = yield* FiberSet.makeRuntime<R>()
    // Finalizers run in reverse: leave discovery, leave the request plane, drain, then interrupt.
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
      inFlight.begin()
      Metrics.recordServerRequest(transportId)
      Metrics.streamDelta(transportId, "request", 1)
      const fiber = run(handleRequest(message))
      fiber.addObserver(() => {
        Metrics.streamDelta(transportId, "request", -1)
        inFlight.end()
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
    return { path: endpointPath, instance, inFlight: inFlight.count, drain: inFlight.drain } satisfies ServedEndpoint
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
    (request, context, emit) =>
      Stream.runForEachArray(handler(request, context), (items) => {
        const written = emit.all(items)
        return written._tag === "Failure" ? written : emit.ready
      }),
    options
  )
