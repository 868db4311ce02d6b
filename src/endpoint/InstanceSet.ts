/**
 * The router's view of an endpoint's instances: a discovery watch keeps the set current for the
 * life of the scope, and `pick` chooses one per call (round-robin, random, or by instance id),
 * skipping the instances a call already tried and, while others are left, the ones to avoid
 * (quarantined). Picking allocates nothing.
 *
 * The first snapshot must arrive (its failure is the caller's); after that a failed watch is
 * logged and restarted, so the set never freezes silently. It does not send anything or know
 * about transports.
 */
import { Deferred, Effect, Schedule, Stream } from "effect"
import type { Scope } from "effect"
import { Discovery } from "../Discovery.ts"
import type { DiscoveryError, DiscoveryEvent } from "../Discovery.ts"
import type { EndpointPath, Instance } from "../Instance.ts"

/** How a client picks an instance. */
export type Routing = "round-robin" | "random" | { readonly instanceId: bigint }

/** The live instance set of one endpoint. */
export interface InstanceSet {
  /** The instances currently known. */
  readonly instances: () => ReadonlyArray<Instance>
  /**
   * The instance to call, or undefined when none matches. Round-robin and random skip the ids in
   * `tried` always, and the ones `avoid` says while another is left; by instance id, neither
   * applies (that instance or nothing).
   */
  readonly pick: (
    routing: Routing,
    avoid?: ((instanceId: bigint) => boolean) | undefined,
    tried?: ReadonlyArray<bigint> | undefined
  ) => Instance | undefined
}

/** Options of `make`. */
export interface InstanceSetOptions {
  /** Called for each instance that left the set (removed, or absent from a new snapshot). */
  readonly onRemoved?: ((instance: Instance) => void) | undefined
}

/** The instance list after one discovery event. */
export const applyEvent = (instances: ReadonlyArray<Instance>, event: DiscoveryEvent): ReadonlyArray<Instance> => {
  if (event._tag === "Snapshot") return event.instances
  const rest = instances.filter((i) => i.instance_id !== event.instance.instance_id)
  return event._tag === "Added" ? [...rest, event.instance] : rest
}

/** Watches `path` in discovery until the scope closes; succeeds once the first snapshot arrived. */
export const make = (
  path: EndpointPath,
  endpoint: string,
  options: InstanceSetOptions = {}
): Effect.Effect<InstanceSet, DiscoveryError, Scope.Scope | Discovery> =>
  Effect.gen(function*() {
    const discovery = yield* Discovery
    let instances: ReadonlyArray<Instance> = []
    const onRemoved = options.onRemoved
    const first = yield* Deferred.make<void, DiscoveryError>()
    yield* discovery.watch(path).pipe(
      Stream.runForEach((event) =>
        Effect.sync(() => {
          const before = instances
          instances = applyEvent(instances, event)
          if (onRemoved !== undefined && event._tag !== "Added") {
            for (const old of before) {
              if (!instances.some((i) => i.instance_id === old.instance_id)) onRemoved(old)
            }
          }
        }).pipe(Effect.andThen(Deferred.succeed(first, undefined)))
      ),
      Effect.tapCause((cause) =>
        Effect.flatMap(Deferred.isDone(first), (started) =>
          started
            ? Effect.logWarning("discovery watch failed; restarting it", cause).pipe(
              Effect.annotateLogs({ module: "endpoint", endpoint })
            )
            : Deferred.failCause(first, cause))
      ),
      Effect.retry({ while: () => Deferred.isDoneUnsafe(first), schedule: Schedule.spaced("1 second") }),
      Effect.ignore,
      Effect.forkScoped
    )
    yield* Deferred.await(first)

    let next = 0
    const pick = (
      routing: Routing,
      avoid?: ((instanceId: bigint) => boolean) | undefined,
      tried?: ReadonlyArray<bigint> | undefined
    ): Instance | undefined => {
      const list = instances
      const n = list.length
      if (n === 0) return undefined
      if (typeof routing === "object") return list.find((i) => i.instance_id === routing.instanceId)
      const start = routing === "round-robin" ? next++ : Math.floor(Math.random() * n)
      if (avoid === undefined && tried === undefined) return list[start % n]
      let fallback: Instance | undefined
      for (let k = 0; k < n; k++) {
        const candidate = list[(start + k) % n]!
        const id = candidate.instance_id
        if (tried !== undefined && tried.includes(id)) continue
        if (avoid !== undefined && avoid(id)) {
          fallback ??= candidate
          continue
        }
        return candidate
      }
      return fallback
    }
    return { instances: () => instances, pick }
  })
