/**
 * The transport registry: which request and response transports this process has, and which
 * one to use for a plane and a set of required capabilities.
 *
 * Transports register themselves (registration + client + server) for the life of a scope,
 * so providing a different transport layer is how tests swap one. Lookups are synchronous reads
 * of an in-memory table, cheap enough for the request path.
 *
 * This module defines the service and an empty registry only; it imports no transport. The
 * composition from `DYN_*` (`layerFromConfig`, `layerConfig`) is in `registry/layerConfig.ts`,
 * and the public `TransportRegistry` namespace (`registry/index.ts`) holds both.
 */
import { Context, Effect, Layer } from "effect"
import type { Scope } from "effect"
import * as Metrics from "./observability/Metrics.ts"
import type { RequestPlaneClient, RequestPlaneServer } from "./RequestPlane.ts"
import type { ResponsePlaneClient, ResponsePlaneServer } from "./ResponsePlane.ts"
import { meets, noRequirements } from "./Transport.ts"
import type { PlaneType, TransportCapabilities, TransportId, TransportRegistration } from "./Transport.ts"
import { NoTransportAvailable } from "./TransportError.ts"

/** A registered request transport. */
export interface RequestTransport {
  readonly registration: TransportRegistration
  readonly client: RequestPlaneClient
  readonly server: RequestPlaneServer
}

/** A registered response transport. */
export interface ResponseTransport {
  readonly registration: TransportRegistration
  readonly client: ResponsePlaneClient
  readonly server: ResponsePlaneServer
}

/** The registry's operations. */
export interface TransportRegistryShape {
  /** Registers a request transport until the scope closes. */
  readonly registerRequest: (transport: RequestTransport) => Effect.Effect<void, never, Scope.Scope>
  /** Registers a response transport until the scope closes. */
  readonly registerResponse: (transport: ResponseTransport) => Effect.Effect<void, never, Scope.Scope>
  /**
   * The highest-priority transport on `plane` that meets every `required` capability
   * (including max message size), or NoTransportAvailable.
   */
  readonly select: (plane: PlaneType, required?: TransportCapabilities) => Effect.Effect<TransportId, NoTransportAvailable>
  /** The same as `select`, synchronously: undefined when nothing matches. */
  readonly selectUnsafe: (plane: PlaneType, required?: TransportCapabilities) => TransportId | undefined
  readonly getRequestClient: (id: TransportId) => Effect.Effect<RequestPlaneClient, NoTransportAvailable>
  readonly getRequestServer: (id: TransportId) => Effect.Effect<RequestPlaneServer, NoTransportAvailable>
  readonly getResponseClient: (id: TransportId) => Effect.Effect<ResponsePlaneClient, NoTransportAvailable>
  readonly getResponseServer: (id: TransportId) => Effect.Effect<ResponsePlaneServer, NoTransportAvailable>
  /** The response client that calls home to a `ConnectionInfo.transport` such as "tcp_server". */
  readonly responseClientFor: (connectionTransport: string) => ResponsePlaneClient | undefined
  /** The request transport with this id, synchronously. */
  readonly requestTransportUnsafe: (id: TransportId) => RequestTransport | undefined
  /** Every current registration, highest priority first per plane. */
  readonly registrations: () => ReadonlyArray<TransportRegistration>
}

const byPriority = <T extends { readonly registration: TransportRegistration }>(a: T, b: T) =>
  b.registration.priority - a.registration.priority

/** Builds an empty registry. */
export const make = (): TransportRegistryShape => {
  const requests: Array<RequestTransport> = []
  const responses: Array<ResponseTransport> = []
  // `responseClientFor` by connection transport: asked for every request a worker serves, so
  // remembered (only the ones found: the name comes from the wire), and forgotten whenever a
  // registration comes or goes.
  const clientFor = new Map<string, ResponsePlaneClient>()

  const add = <T extends { readonly registration: TransportRegistration }>(list: Array<T>, entry: T) =>
    Effect.acquireRelease(
      Effect.sync(() => {
        Metrics.initTransport(entry.registration.transport_id, entry.registration.plane_type)
        list.push(entry)
        list.sort(byPriority)
        clientFor.clear()
      }),
      () =>
        Effect.sync(() => {
          const i = list.indexOf(entry)
          if (i >= 0) list.splice(i, 1)
          clientFor.clear()
        })
    )

  const selectUnsafe = (plane: PlaneType, required: TransportCapabilities = noRequirements) => {
    const list: ReadonlyArray<{ readonly registration: TransportRegistration }> = plane === "request" ? requests : responses
    return list.find((t) => meets(t.registration.capabilities, required))?.registration.transport_id
  }

  const find = <T extends { readonly registration: TransportRegistration }>(
    list: ReadonlyArray<T>,
    plane: PlaneType,
    id: TransportId
  ): Effect.Effect<T, NoTransportAvailable> => {
    const found = list.find((t) => t.registration.transport_id === id)
    return found === undefined
      ? Effect.fail(new NoTransportAvailable({ plane, required: noRequirements, transport: id }))
      : Effect.succeed(found)
  }

  return {
    registerRequest: (t) => add(requests, t),
    registerResponse: (t) => add(responses, t),
    selectUnsafe,
    select: (plane, required = noRequirements) => {
      const id = selectUnsafe(plane, required)
      return id === undefined ? Effect.fail(new NoTransportAvailable({ plane, required })) : Effect.succeed(id)
    },
    getRequestClient: (id) => Effect.map(find(requests, "request", id), (t) => t.client),
    getRequestServer: (id) => Effect.map(find(requests, "request", id), (t) => t.server),
    getResponseClient: (id) => Effect.map(find(responses, "response", id), (t) => t.client),
    getResponseServer: (id) => Effect.map(find(responses, "response", id), (t) => t.server),
    responseClientFor: (connectionTransport) => {
      const known = clientFor.get(connectionTransport)
      if (known !== undefined) return known
      const client = responses.find((t) => t.client.connectionTransports.includes(connectionTransport))?.client
      if (client !== undefined) clientFor.set(connectionTransport, client)
      return client
    },
    requestTransportUnsafe: (id) => requests.find((t) => t.registration.transport_id === id),
    registrations: () => [...requests, ...responses].map((t) => t.registration)
  }
}

/** The registry service. */
export class TransportRegistry extends Context.Service<TransportRegistry, TransportRegistryShape>()(
  "transport-registry/TransportRegistry"
) {}

/** An empty registry; transport layers provided on top of it register into it. */
export const layer: Layer.Layer<TransportRegistry> = Layer.sync(TransportRegistry, make)
