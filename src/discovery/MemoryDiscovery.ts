/**
 * The `mem` discovery backend: instances in a Map of this process, watchers as callbacks.
 * Router and worker must share the layer (or a `MemoryDiscoveryStore`) to see each other.
 */
import { Effect, Layer, Queue, Stream } from "effect"
import { Discovery, endpointPrefix, instanceKey } from "../Discovery.ts"
import type { DiscoveryEvent, DiscoveryShape } from "../Discovery.ts"
import { randomInstanceId } from "../Instance.ts"
import type { Instance } from "../Instance.ts"

/** The shared state: instances by key, and watchers by endpoint prefix. */
export interface MemoryDiscoveryStore {
  readonly instances: Map<string, Instance>
  readonly watchers: Map<string, Set<(event: DiscoveryEvent) => void>>
}

/** A fresh, empty store. */
export const makeStore = (): MemoryDiscoveryStore => ({ instances: new Map(), watchers: new Map() })

/** A `mem` discovery over `store`. */
export const make = (store: MemoryDiscoveryStore = makeStore()): DiscoveryShape => {
  const notify = (instance: Instance, event: DiscoveryEvent) => {
    const set = store.watchers.get(endpointPrefix(instance))
    if (set !== undefined) for (const f of set) f(event)
  }
  const snapshot = (prefix: string) => [...store.instances.entries()].filter(([k]) => k.startsWith(prefix)).map(([, v]) => v)
  return {
    backend: "mem",
    instanceId: Effect.sync(randomInstanceId),
    register: (instance) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          const key = instanceKey(instance)
          store.instances.set(key, instance)
          notify(instance, { _tag: "Added", instance })
          return key
        }),
        (key) =>
          Effect.sync(() => {
            if (store.instances.delete(key)) notify(instance, { _tag: "Removed", instance })
          })
      ).pipe(Effect.asVoid),
    list: (path) => Effect.sync(() => snapshot(endpointPrefix(path))),
    watch: (path) =>
      Stream.callback<DiscoveryEvent>((queue) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            const prefix = endpointPrefix(path)
            const f = (event: DiscoveryEvent) => {
              Queue.offerUnsafe(queue, event)
            }
            Queue.offerUnsafe(queue, { _tag: "Snapshot", instances: snapshot(prefix) })
            let set = store.watchers.get(prefix)
            if (set === undefined) store.watchers.set(prefix, (set = new Set()))
            set.add(f)
            return { prefix, f }
          }),
          ({ f, prefix }) => Effect.sync(() => store.watchers.get(prefix)?.delete(f))
        )
      )
  }
}

/** The `mem` backend on a fresh store. */
export const layer: Layer.Layer<Discovery> = Layer.sync(Discovery, () => make())

/** The `mem` backend on a given store, so separate layer stacks can share it. */
export const layerStore = (store: MemoryDiscoveryStore): Layer.Layer<Discovery> => Layer.sync(Discovery, () => make(store))
