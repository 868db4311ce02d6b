/**
 * How a router reaches one instance, from what its discovery record advertises: the request
 * transport and address, the response plane its stream comes back on, and the payload codec.
 * Resolved once per record and cached (keyed by the record object, so a changed record, which
 * discovery hands over as a new object, is resolved again): a call does no registry lookup.
 *
 * - Request side: the record's request transport (`nats_tcp` → nats, `http` → http, `tcp` → tcp,
 *   unified → its `request_transport.transport_id`), whose client must be registered here.
 * - Response side, per instance: the client's `responseTransport` option when given; else the
 *   unified record's `response_transport.transport_id` when this router has it ("http" streams
 *   inline in the request's own HTTP response, so it needs the http request plane for that
 *   instance; "tcp" is call-home; "memory" the in-process plane); else the router's own response
 *   plane (its highest-priority one: `DYN_RESPONSE_PLANE`). The legacy forms (`nats_tcp`, `http`,
 *   `tcp`) take the router's own plane too, except that when that is "http" they take "tcp"
 *   call-home: a worker that streams inline advertises the unified form, so a legacy record is a
 *   worker that calls home (Dynamo's, or ours in the default modes).
 * - Codec: the record's `request_plane_codec` ("json" or "msgpack") when it has one, else the
 *   router's `DYN_REQUEST_PLANE_CODEC`. It encodes the request body and names the codec of the
 *   response items (the worker answers in the codec of the request).
 *
 * An instance that cannot be reached from here resolves to the typed reason instead:
 * `NoTransportAvailable` (no client for its request transport, or no server for its response
 * plane) or a `TransportProtocolError` (a codec this router does not speak).
 *
 * It does not pick instances or send anything.
 */
import type { PayloadCodecName } from "../ConnectionInfo.ts"
import { requestTransportOf, responseTransportOf } from "../Instance.ts"
import type { Instance } from "../Instance.ts"
import type { ResponsePlaneServer } from "../ResponsePlane.ts"
import { noRequirements } from "../Transport.ts"
import type { TransportCapabilities, TransportId } from "../Transport.ts"
import { NoTransportAvailable, TransportProtocolError } from "../TransportError.ts"
import type { RequestTransport } from "../TransportRegistry.ts"

/** How to call one instance. */
export interface Route {
  readonly _tag: "Route"
  readonly instance: Instance
  readonly requestTransport: RequestTransport
  /** The request transport's address from the record (URL, subject, host:port/...). */
  readonly address: string
  /** The unified record's request-transport metadata, if any. */
  readonly metadata: Readonly<Record<string, string>> | undefined
  readonly responseId: TransportId
  readonly responseServer: ResponsePlaneServer
  readonly codec: PayloadCodecName
  /** True when streamed requests can go there: its request transport is bidirectional, here and in the record. */
  readonly bidirectional: boolean
  /** True when the request transport carries the response stream on its own connection (`RequestPlaneClient.carriesResponses`). */
  readonly carriesResponses: boolean
}

/** A route, or why the instance cannot be reached from this router. */
export type RouteResult = Route | NoTransportAvailable | TransportProtocolError

/** What routes are resolved against. */
export interface RouteContext {
  /** The router's own codec (`DYN_REQUEST_PLANE_CODEC`), for records without `request_plane_codec`. */
  readonly codec: PayloadCodecName
  /** The client's `responseTransport` option: one response plane for every instance. */
  readonly responseTransport?: TransportId | undefined
  /** The router's own response plane: the registry's highest-priority streaming one. */
  readonly defaultResponse: TransportId
  /** The registered request transport with this id. */
  readonly requestTransport: (id: TransportId) => RequestTransport | undefined
  /** The registered response servers, by id. */
  readonly responseServers: ReadonlyMap<TransportId, ResponsePlaneServer>
}

/** The capabilities a streamed request needs of a request transport. */
export const bidirectional: TransportCapabilities = { ...noRequirements, bidirectional: true }

/** The response transport to receive the stream of `instance` on (see the module comment). */
export const responseIdOf = (context: RouteContext, instance: Instance): TransportId => {
  if (context.responseTransport !== undefined) return context.responseTransport
  const advertised = responseTransportOf(instance.transport)?.id
  if (advertised !== undefined) return context.responseServers.has(advertised) ? advertised : context.defaultResponse
  return context.defaultResponse === "http" && context.responseServers.has("tcp") ? "tcp" : context.defaultResponse
}

/** Resolves the route of `instance` (uncached). */
export const resolve = (context: RouteContext, instance: Instance): RouteResult => {
  const target = requestTransportOf(instance.transport)
  const requestTransport = context.requestTransport(target.id)
  if (requestTransport === undefined) {
    return new NoTransportAvailable({ plane: "request", required: noRequirements, transport: target.id })
  }
  const responseId = responseIdOf(context, instance)
  const responseServer = context.responseServers.get(responseId)
  // The http response plane streams in the HTTP response of the request itself.
  if (responseServer === undefined || (responseId === "http" && target.id !== "http")) {
    return new NoTransportAvailable({ plane: "response", required: { ...noRequirements, streaming: true }, transport: responseId })
  }
  const wanted = instance.request_plane_codec
  if (wanted !== undefined && wanted !== "json" && wanted !== "msgpack") {
    return new TransportProtocolError({
      reason: "BadPayload",
      transport: target.id,
      target: target.address,
      detail: `instance ${instance.instance_id.toString(16)} asks for request_plane_codec ${JSON.stringify(wanted)}; this router speaks json and msgpack`
    })
  }
  const advertisesBidirectional = "unified" in instance.transport &&
    instance.transport.unified.request_transport.capabilities.bidirectional
  return {
    _tag: "Route",
    instance,
    requestTransport,
    address: target.address,
    metadata: target.metadata,
    responseId,
    responseServer,
    codec: wanted ?? context.codec,
    bidirectional: requestTransport.registration.capabilities.bidirectional && advertisesBidirectional,
    carriesResponses: requestTransport.client.carriesResponses?.({ address: target.address, metadata: target.metadata }, responseId) === true
  }
}

/** A resolver that caches each record's route (see the module comment). */
export const makeRoutes = (context: RouteContext): (instance: Instance) => RouteResult => {
  const cache = new WeakMap<Instance, RouteResult>()
  return (instance) => {
    let route = cache.get(instance)
    if (route === undefined) {
      route = resolve(context, instance)
      cache.set(instance, route)
    }
    return route
  }
}
