/**
 * The router side of an endpoint: `client` builds an `EndpointClient` for the life of a scope.
 * Each call picks an instance from the live instance set, opens the `send <endpoint>` span
 * (unless tracing is off), and runs one call on that instance; `generate` is the buffered
 * Stream over it. The duplex forms (`generateDuplex`, `callDuplex`) also send a Stream of request
 * items, and need an instance whose request transport is bidirectional. Sends that need a fiber
 * run in a runtime captured when the client was built, so they keep its logger, tracer and
 * services, and end with its scope.
 *
 * Mixed deployments: each instance is called the way its record says (`Route.ts`): its request
 * transport, its response plane (per call, from the picked instance), its codec. The route is
 * cached per record, so the per-call path does no registry lookup.
 *
 * Failover: a call that fails before the ack in a way that means the worker never took it
 * (`Failover.ts`) goes to another instance, at most `DYN_ROUTER_MAX_ATTEMPTS` instances in all,
 * never one it already tried; round-robin and random routing only (a call routed to one instance
 * id, and a streamed request, are not retried). Nothing is retried after the ack. Instances that
 * keep failing before their ack are quarantined (`Quarantine.ts`, `DYN_ROUTER_QUARANTINE_SECS`):
 * picks skip them while others are left; each quarantine is logged (warning) and counted. An
 * instance this router cannot reach (no client for its transport, a codec it does not speak) is
 * skipped while another can be reached; when none can, the call fails with the typed reason.
 *
 * It does not run the call's transitions (`CallState.ts`), wire the transports (`Call.ts`),
 * resolve routes (`Route.ts`), watch discovery (`InstanceSet.ts`) or buffer items
 * (`BufferedStream.ts`).
 */
import { Context, Effect, FiberSet, Stream, Tracer } from "effect"
import type { Scope } from "effect"
import type { Discovery, DiscoveryError } from "../Discovery.ts"
import { formatEndpointPath } from "../Instance.ts"
import type { EndpointPath, Instance } from "../Instance.ts"
import type { RequestHeaders } from "../RequestPlane.ts"
import type { PendingStream, ResponsePlaneServer } from "../ResponsePlane.ts"
import type { TransportId } from "../Transport.ts"
import { TransportConfig } from "../TransportConfig.ts"
import { EndpointNotFound, NoTransportAvailable } from "../TransportError.ts"
import type { CallError, InvalidEndpointPath } from "../TransportError.ts"
import { TransportRegistry } from "../TransportRegistry.ts"
import * as MetricsModule from "../observability/Metrics.ts"
import * as Tracing from "../observability/Tracing.ts"
import { makeGenerate } from "./BufferedStream.ts"
import { makeCallOn } from "./Call.ts"
import { parseEndpointPath } from "./EndpointPath.ts"
import { countsTowardsQuarantine, isPreAckFailure } from "./Failover.ts"
import type { PreAckFailure } from "./Failover.ts"
import * as InstanceSet from "./InstanceSet.ts"
import type { Routing } from "./InstanceSet.ts"
import { Quarantine } from "./Quarantine.ts"
import { bidirectional, makeRoutes } from "./Route.ts"
import type { Route, RouteResult } from "./Route.ts"
import type { AckError } from "./SendRequest.ts"

/** Options of `client`. */
export interface ClientOptions {
  /** Instance choice: round-robin (default), random, or one instance id. */
  readonly routing?: Routing | undefined
  /**
   * The response transport for every instance. By default each instance's record decides: the
   * unified form's `response_transport`, else "tcp" call-home (`Route.ts`).
   */
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
  /**
   * Bidirectional streaming: sends `request`, then streams `items` after it as a streamed
   * request (request_type "many_in"), and streams the responses. The request transport pulls
   * `items` only as fast as it sends them (flow control), and interrupts it when the call is
   * over (complete, failed or cancelled), so a worker that ends early stops the producer. If
   * `items` fails, the call does not: the worker's item Stream fails with a `TransportError`
   * carrying its message, and the call ends as the worker's handler decides. The instance's
   * request transport must be bidirectional (registered so here, and advertised so in the
   * instance's unified record), otherwise the Stream fails at once with `NoTransportAvailable`
   * requiring `bidirectional: true`.
   */
  readonly generateDuplex: <Item, E2>(
    request: Req,
    items: Stream.Stream<Item, E2>,
    options?: CallOptions
  ) => Stream.Stream<Res, CallError>
  /** The lean core of `generateDuplex`: `call` with a Stream of request items. */
  readonly callDuplex: <Item, E2>(
    request: Req,
    items: Stream.Stream<Item, E2>,
    onItems: (items: ReadonlyArray<Res>) => void,
    options?: CallOptions
  ) => Effect.Effect<void, CallError>
  /** The instances currently known. */
  readonly instances: () => ReadonlyArray<Instance>
}

/** The most instances one call may skip over because this router cannot reach them. */
const MAX_UNREACHABLE_SKIPS = 64

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
    const endpointPath = yield* parseEndpointPath(path)
    const endpoint = formatEndpointPath(endpointPath)
    const registry = yield* TransportRegistry
    const config = yield* TransportConfig
    const tracing = config.tracing
    const metrics = MetricsModule.recorders(config.metrics)
    // A sampled `send` span's attributes, built once per route (a route is resolved once per
    // discovery record): for an HTTP address they take a URL parse, 2% of a traced router's CPU.
    const spanAttributes = new WeakMap<Route, Record<string, unknown>>()
    const spanAttributesOf = (route: Route) => {
      let attributes = spanAttributes.get(route)
      if (attributes === undefined) {
        attributes = Tracing.rpcAttributes(endpointPath, route.address, route.requestTransport.registration.transport_id, route.responseId)
        spanAttributes.set(route, attributes)
      }
      return attributes
    }

    // Every registered response server, by id, once: routes pick one per instance.
    const responseServers = new Map<TransportId, ResponsePlaneServer>()
    for (const r of registry.registrations()) {
      if (r.plane_type === "response" && !responseServers.has(r.transport_id)) {
        responseServers.set(r.transport_id, yield* registry.getResponseServer(r.transport_id))
      }
    }
    if (options.responseTransport !== undefined && !responseServers.has(options.responseTransport)) {
      yield* registry.getResponseServer(options.responseTransport)
    }
    const defaultResponse = options.responseTransport ??
      (yield* registry.select("response", { streaming: true, persistent_connections: false, bidirectional: false }))
    const routes = makeRoutes({
      codec: config.requestPlaneCodec,
      responseTransport: options.responseTransport,
      defaultResponse,
      requestTransport: registry.requestTransportUnsafe,
      responseServers
    })

    metrics.initEndpoint(endpoint)
    const quarantine = yield* Effect.acquireRelease(
      Effect.sync(() =>
        new Quarantine({
          quarantineMs: config.routerQuarantineMs,
          metrics: {
            quarantined: () => metrics.recordQuarantine(endpoint),
            delta: (d) => metrics.quarantineDelta(endpoint, d)
          }
        })
      ),
      (q) => Effect.sync(() => q.close())
    )
    const maxAttempts = config.routerMaxAttempts
    const callOn = makeCallOn({
      endpoint,
      graceMs: config.cancelGraceMs,
      metadata: options.metadata,
      metrics,
      runSend: yield* FiberSet.makeRuntime<never, void, AckError>(),
      onAcked: (instance) => quarantine.succeeded(instance.instance_id)
    })
    const instances = yield* InstanceSet.make(endpointPath, endpoint, {
      onRemoved: (instance) => quarantine.forget(instance.instance_id)
    })

    /**
     * The route of the next instance to call: skips `tried`, prefers instances not in
     * quarantine, and skips instances this router cannot reach while another can be reached.
     */
    const pickRoute = (routing: Routing, tried: ReadonlyArray<bigint> | undefined): RouteResult | EndpointNotFound | undefined => {
      let skipped = tried
      let unreachable: RouteResult | undefined
      for (let k = 0; k < MAX_UNREACHABLE_SKIPS; k++) {
        const instance = instances.pick(routing, quarantine.size === 0 ? undefined : quarantine.has, skipped)
        if (instance === undefined) break
        const route = routes(instance)
        if (route._tag === "Route" || typeof routing === "object") return route
        unreachable ??= route
        skipped = skipped === undefined ? [instance.instance_id] : [...skipped, instance.instance_id]
      }
      if (unreachable !== undefined) return unreachable
      if (tried !== undefined) return undefined
      const detail = typeof routing === "object" ? `no instance ${routing.instanceId}` : "no instance registered"
      return new EndpointNotFound({ endpoint, detail })
    }

    /** The warning of a quarantine: which instance, why, and for how long. */
    const logQuarantine = (instance: Instance, reason: CallError) =>
      Effect.logWarning("instance quarantined after repeated failures before the ack").pipe(
        Effect.annotateLogs({
          module: "endpoint",
          endpoint,
          instance_id: instance.instance_id.toString(16),
          instance_id_decimal: instance.instance_id.toString(),
          reason: reason.message,
          quarantine_secs: config.routerQuarantineMs / 1000
        })
      )

    /** One call, on `route` first, failing over on `PreAckFailure` (see the module comment). */
    const attempt = (
      first: Route,
      routing: Routing,
      run: (route: Route) => Effect.Effect<void, CallError | PreAckFailure>,
      failover: boolean
    ): Effect.Effect<void, CallError> => {
      const onFailure = (route: Route, tried: ReadonlyArray<bigint> | undefined, n: number) => (failure: PreAckFailure): Effect.Effect<void, CallError> =>
        Effect.suspend(() => {
          const error = failure.error
          const instance = route.instance
          const quarantined = countsTowardsQuarantine(error) && quarantine.failed(instance.instance_id)
          const log = quarantined ? logQuarantine(instance, error) : Effect.void
          const triedNow = tried === undefined ? [instance.instance_id] : [...tried, instance.instance_id]
          const next = failover && n < maxAttempts ? pickRoute(routing, triedNow) : undefined
          if (next === undefined || next._tag !== "Route") return Effect.andThen(log, Effect.fail(error))
          metrics.recordRetry(endpoint)
          return log.pipe(
            Effect.andThen(
              Effect.logDebug("retrying on another instance").pipe(
                Effect.annotateLogs({
                  module: "endpoint",
                  endpoint,
                  failed_instance_id: instance.instance_id.toString(16),
                  instance_id: next.instance.instance_id.toString(16),
                  attempt: n + 1,
                  reason: error.message
                })
              )
            ),
            Effect.andThen(go(next, triedNow, n + 1))
          )
        })
      const go = (route: Route, tried: ReadonlyArray<bigint> | undefined, n: number): Effect.Effect<void, CallError> =>
        Effect.catchIf(run(route), isPreAckFailure, onFailure(route, tried, n))
      return go(first, undefined, 1)
    }

    /**
     * `call`, and `onOpen` receives the response plane's pending stream (for flow control);
     * `requestItems` makes it a streamed request.
     */
    const callFlow = (
      request: Req,
      onItems: (items: ReadonlyArray<Res>) => void,
      callOptions: CallOptions | undefined,
      onOpen: ((pending: PendingStream) => void) | undefined,
      requestItems?: Stream.Stream<unknown, unknown>
    ): Effect.Effect<void, CallError> =>
      Effect.suspend(() => {
        const routing = callOptions?.routing ?? options.routing ?? "round-robin"
        const first = pickRoute(routing, undefined)!
        if (first._tag !== "Route") return Effect.fail(first)
        if (requestItems !== undefined && !first.bidirectional) {
          return Effect.fail(
            new NoTransportAvailable({ plane: "request", required: bidirectional, transport: first.requestTransport.registration.transport_id })
          )
        }
        // A streamed request may have sent items before failing: it is never retried.
        const failover = maxAttempts > 1 && typeof routing !== "object" && requestItems === undefined
        const plain = (headers = callOptions?.headers) => {
          const run = (route: Route) => callOn({ route, request, onItems, headers, onOpen, items: requestItems })
          return attempt(first, routing, run, failover)
        }
        if (tracing === "off") return plain()
        /** The call inside the `send` span, its trace context in the request's headers. */
        const traced = () => {
          return Effect.useSpan(
            `send ${endpoint}`,
            { kind: "client", sampled: true, attributes: spanAttributesOf(first) },
            (span) => {
              let items = 0
              const counted = (batch: ReadonlyArray<Res>) => {
                items += batch.length
                onItems(batch)
              }
              const headers = { ...callOptions?.headers, ...Tracing.injectHeaders(span) }
              let attempts = 0
              const run = (route: Route) => {
                attempts++
                return callOn({ route, request, onItems: counted, headers, onOpen, items: requestItems })
              }
              return attempt(first, routing, run, failover).pipe(
                Effect.ensuring(Effect.sync(() => {
                  span.attribute("rpc.response.items", items)
                  // A failed-over call: how many instances it was sent to (the attributes above name the first).
                  if (attempts > 1) span.attribute("transport.attempts", attempts)
                }))
              )
            }
          )
        }
        // A span only where something can observe it (`Tracing.unobserved`), and only when sampled.
        // A call not sampled gets no span (it would never be exported), only its trace context,
        // flagged not sampled, so that the worker makes none either.
        return Effect.withFiber((fiber) => {
          if (Tracing.unobserved(fiber)) return plain()
          const parent = Context.getOrUndefined(fiber.context, Tracer.ParentSpan)
          return Tracing.sampledUnder(tracing, parent)
            ? traced()
            : plain({ ...callOptions?.headers, traceparent: Tracing.unsampledTraceparent(parent) })
        })
      })

    const call = (request: Req, onItems: (items: ReadonlyArray<Res>) => void, callOptions?: CallOptions) =>
      callFlow(request, onItems, callOptions, undefined)

    const maxBuffered = options.maxBufferedItems === undefined
      ? DEFAULT_MAX_BUFFERED_ITEMS
      : Math.max(1, Math.floor(options.maxBufferedItems) || 1)
    const generateFlow = makeGenerate(callFlow, maxBuffered)
    const generate = (request: Req, callOptions?: CallOptions) => generateFlow(request, callOptions)
    const generateDuplex = <Item, E2>(request: Req, items: Stream.Stream<Item, E2>, callOptions?: CallOptions) =>
      generateFlow(request, callOptions, items)
    const callDuplex = <Item, E2>(
      request: Req,
      items: Stream.Stream<Item, E2>,
      onItems: (items: ReadonlyArray<Res>) => void,
      callOptions?: CallOptions
    ) => callFlow(request, onItems, callOptions, undefined, items)

    return {
      path: endpointPath,
      call,
      generate,
      generateDuplex,
      callDuplex,
      instances: instances.instances
    } satisfies EndpointClient<Req, Res>
  })
