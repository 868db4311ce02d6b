/**
 * The discovery backend that `DYN_DISCOVERY_BACKEND` names, as a layer: `mem` (this process),
 * `file` (`DYN_DISCOVERY_PATH`, one host) or `etcd` (`ETCD_ENDPOINTS`, leases of
 * `ETCD_LEASE_TTL` seconds). Building it does not reach etcd: the first `list`, `watch`,
 * `instanceId` or `register` does, and fails typed (`DiscoveryError`) when etcd is out of reach.
 */
import { Effect, Layer } from "effect"
import type { Discovery } from "../Discovery.ts"
import { TransportConfig } from "../TransportConfig.ts"
import * as EtcdDiscovery from "./EtcdDiscovery.ts"
import * as FileDiscovery from "./FileDiscovery.ts"
import * as MemoryDiscovery from "./MemoryDiscovery.ts"

/** The configured discovery backend. */
export const layerConfig: Layer.Layer<Discovery, never, TransportConfig> = Layer.unwrap(
  Effect.map(TransportConfig, (config): Layer.Layer<Discovery, never, TransportConfig> => {
    switch (config.discoveryBackend) {
      case "mem":
        return MemoryDiscovery.layer
      case "file":
        return FileDiscovery.layer
      case "etcd":
        return EtcdDiscovery.layer
    }
  })
)
