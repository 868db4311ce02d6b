/**
 * The discovery backend that `DYN_DISCOVERY_BACKEND` names, as a layer.
 * `mem` and `file` are built; `etcd` fails start-up with a message saying so until they exist.
 */
import { Data, Effect, Layer } from "effect"
import type { Discovery } from "../Discovery.ts"
import { TransportConfig } from "../TransportConfig.ts"
import * as FileDiscovery from "./FileDiscovery.ts"
import * as MemoryDiscovery from "./MemoryDiscovery.ts"

/** The configured backend is not available in this build. */
export class DiscoveryBackendUnavailable extends Data.TaggedError("DiscoveryBackendUnavailable")<{
  readonly backend: string
}> {
  override get message(): string {
    return `discovery backend ${this.backend} is not available in this build (DYN_DISCOVERY_BACKEND); use mem or file`
  }
}

/** The configured discovery backend. */
export const layerConfig: Layer.Layer<Discovery, DiscoveryBackendUnavailable, TransportConfig> = Layer.unwrap(
  Effect.gen(function*() {
    const config = yield* TransportConfig
    switch (config.discoveryBackend) {
      case "mem":
        return MemoryDiscovery.layer
      case "file":
        return FileDiscovery.layer
      default:
        return yield* Effect.fail(new DiscoveryBackendUnavailable({ backend: config.discoveryBackend }))
    }
  })
)
