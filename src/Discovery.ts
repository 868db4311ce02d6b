/**
 * Discovery: which worker instances serve an endpoint.
 *
 * A service with four operations: the instance id a worker process advertises, register an
 * instance for the life of a scope, list the instances of an endpoint, and watch them change as
 * a Stream (a snapshot first, then additions and removals). Backends live in `discovery/`:
 * `mem` (this process), `file` (one host) and `etcd` (leases, any number of hosts).
 */
import { Context, Data } from "effect"
import type { Effect, Scope, Stream } from "effect"
import type { EndpointPath, Instance } from "./Instance.ts"

/** A change seen by `watch`: the full snapshot first, then one event per change. */
export type DiscoveryEvent =
  | { readonly _tag: "Snapshot"; readonly instances: ReadonlyArray<Instance> }
  | { readonly _tag: "Added"; readonly instance: Instance }
  | { readonly _tag: "Removed"; readonly instance: Instance }

/** A discovery backend failed (unreachable store, bad record, lost lease). */
export class DiscoveryError extends Data.TaggedError("DiscoveryError")<{
  readonly backend: string
  readonly reason: "Unavailable" | "BadRecord" | "LeaseLost" | "WriteFailed"
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return `discovery (${this.backend}) ${this.reason}: ${this.detail}`
  }
}

/** The discovery operations. */
export interface DiscoveryShape {
  /** The backend's name: mem, file, etcd. */
  readonly backend: string
  /**
   * The instance id this process advertises, held until the scope closes. etcd: the id of the
   * process lease (one per process, shared by every endpoint it serves, as Dynamo's primary
   * lease), granted on first use and revoked when its last holder's scope closes. mem and file:
   * a fresh random 63-bit id on each call.
   */
  readonly instanceId: Effect.Effect<bigint, DiscoveryError, Scope.Scope>
  /** Registers `instance` until the scope closes. */
  readonly register: (instance: Instance) => Effect.Effect<void, DiscoveryError, Scope.Scope>
  /** The current instances of an endpoint. */
  readonly list: (path: EndpointPath) => Effect.Effect<ReadonlyArray<Instance>, DiscoveryError>
  /** A snapshot of an endpoint's instances, then every change. */
  readonly watch: (path: EndpointPath) => Stream.Stream<DiscoveryEvent, DiscoveryError>
}

/** The discovery service. */
export class Discovery extends Context.Service<Discovery, DiscoveryShape>()("transport-registry/Discovery") {}

/** The key of an endpoint, as etcd stores it: `v1/instances/{ns}/{component}/{endpoint}/`. */
export const endpointPrefix = (path: EndpointPath): string =>
  `v1/instances/${path.namespace}/${path.component}/${path.endpoint}/`

/** The key of an instance: the endpoint prefix then the instance id in hex. */
export const instanceKey = (instance: Instance): string =>
  `${endpointPrefix(instance)}${instance.instance_id.toString(16)}`
