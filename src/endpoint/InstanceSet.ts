/**
 * The router's view of an endpoint's instances: a discovery watch keeps the set current for the
 * life of the scope, and `pick` chooses one per call (round-robin, random, or by instance id).
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
  /** The instance to call, or undefined when none matches. */
  readonly pick: (routing: Routing) => Instance | undefined
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
  endpoint: string
): Effect.Effect<InstanceSet, DiscoveryError, Scope.Scope | Discovery> =>
  Effect.gen(function*() {
    const discovery = yield* Discovery
    let instances: ReadonlyArray<Instance> = []
    const first = yield* Deferred.make<void, DiscoveryError>()
    yield* discovery.watch(path).pipe(
      Stream.runForEach((event) =>
        Effect.sync(() => {
          instances = applyEvent(instances, event)
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
    const pick = (routing: Routing): Instance | undefined => {
      if (instances.length === 0) return undefined
      if (routing === "round-robin") return instances[next++ % instances.length]
      if (routing === "random") return instances[Math.floor(Math.random() * instances.length)]
      return instances.find((i) => i.instance_id === routing.instanceId)
    }
    return { instances: () => instances, pick }
  })
