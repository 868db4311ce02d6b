/**
 * The router side of an endpoint: `client` builds an `EndpointClient` for the life of a scope.
 * Each call picks an instance from the live instance set, opens the `send <endpoint>` span
 * (unless tracing is off), and runs one call on that instance; `generate` is the buffered
 * Stream over it. The duplex forms (`generateDuplex`, `callDuplex`) also send a Stream of request
 * items, and need an instance whose request transport is bidirectional. Sends that need a fiber
 * run in a runtime captured when the client was built, so they keep its logger, tracer and
 * services, and end with its scope.
 *
 * It does not run the call's transitions (`CallState.ts`), wire the transports (`Call.ts`),
 * watch discovery (`InstanceSet.ts`) or buffer items (`BufferedStream.ts`).
 */
import { Effect, FiberSet, Stream } from "effect"
import type { Scope } from "effect"
import type { Discovery, DiscoveryError } from "../Discovery.ts"
import { formatEndpointPath, requestTransportOf } from "../Instance.ts"
import type { EndpointPath, Instance } from "../Instance.ts"
import type { RequestHeaders } from "../RequestPlane.ts"
import type { PendingStream } from "../ResponsePlane.ts"
import { noRequirements } from "../Transport.ts"
import type { TransportCapabilities, TransportId } from "../Transport.ts"
import { TransportConfig } from "../TransportConfig.ts"
import { EndpointNotFound, NoTransportAvailable } from "../TransportError.ts"
import type { CallError, InvalidEndpointPath } from "../TransportError.ts"
import { TransportRegistry } from "../TransportRegistry.ts"
import * as MetricsModule from "../observability/Metrics.ts"
import * as Tracing from "../observability/Tracing.ts"
import { makeGenerate } from "./BufferedStream.ts"
import { makeCallOn } from "./Call.ts"
import { parseEndpointPath } from "./EndpointPath.ts"
import * as InstanceSet from "./InstanceSet.ts"
import type { Routing } from "./InstanceSet.ts"
import type { AckError } from "./SendRequest.ts"

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

/** The capabilities a streamed request needs of a request transport. */
const bidirectional: TransportCapabilities = { ...noRequirements, bidirectional: true }

/** True when the instance's record advertises a bidirectional request transport (the unified form only). */
const advertisesBidirectional = (instance: Instance): boolean =>
  "unified" in instance.transport && instance.transport.unified.request_transport.capabilities.bidirectional

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
    const responseId = options.responseTransport ??
      (yield* registry.select("response", { streaming: true, persistent_connections: false, bidirectional: false }))
    const callOn = makeCallOn({
      endpoint,
      responseId,
      responseServer: yield* registry.getResponseServer(responseId),
      codec: config.requestPlaneCodec,
      graceMs: config.cancelGraceMs,
      metadata: options.metadata,
      metrics: MetricsModule.recorders(config.metrics),
      runSend: yield* FiberSet.makeRuntime<never, void, AckError>()
    })
    const instances = yield* InstanceSet.make(endpointPath, endpoint)

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
        const instance = instances.pick(routing)
        if (instance === undefined) {
          const detail = typeof routing === "object" ? `no instance ${routing.instanceId}` : "no instance registered"
          return Effect.fail(new EndpointNotFound({ endpoint, detail }))
        }
        const target = requestTransportOf(instance.transport)
        const requestTransport = registry.requestTransportUnsafe(target.id)
        if (requestTransport === undefined) {
          return Effect.fail(new NoTransportAvailable({ plane: "request", required: noRequirements, transport: target.id }))
        }
        if (requestItems !== undefined && !(requestTransport.registration.capabilities.bidirectional && advertisesBidirectional(instance))) {
          return Effect.fail(new NoTransportAvailable({ plane: "request", required: bidirectional, transport: target.id }))
        }
        const address = target.address
        const metadata = target.metadata
        if (tracing === "off") {
          return callOn({ address, metadata, requestTransport, request, onItems, headers: callOptions?.headers, onOpen, items: requestItems })
        }
        const sampled = tracing === "on" || Math.random() < Tracing.sampleRatio
        return Effect.useSpan(
          `send ${endpoint}`,
          {
            kind: "client",
            sampled,
            // An unsampled span is never exported: its attributes (a URL parse for http) are not built.
            attributes: sampled ? Tracing.rpcAttributes(endpointPath, address, requestTransport.registration.transport_id, responseId) : undefined
          },
          (span) => {
            let items = 0
            const counted = (batch: ReadonlyArray<Res>) => {
              items += batch.length
              onItems(batch)
            }
            const headers = { ...callOptions?.headers, ...Tracing.injectHeaders(span) }
            return callOn({ address, metadata, requestTransport, request, onItems: counted, headers, onOpen, items: requestItems }).pipe(
              Effect.ensuring(Effect.sync(() => span.attribute("rpc.response.items", items)))
            )
          }
        )
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
