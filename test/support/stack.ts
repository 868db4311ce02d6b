/** Test stacks: config from a record, a registry with chosen transports, and mem discovery. */
import { Layer } from "effect"
import * as MemoryDiscovery from "../../src/discovery/MemoryDiscovery.ts"
import * as MemoryTransport from "../../src/transport/memory/MemoryTransport.ts"
import { TransportConfig } from "../../src/TransportConfig.ts"
import * as TransportRegistry from "../../src/registry/index.ts"

/** A one-process stack over the in-memory transport. */
export const memoryStack = (env: Record<string, string> = {}, transport = MemoryTransport.layer) =>
  Layer.mergeAll(transport.pipe(Layer.provideMerge(TransportRegistry.layer)), MemoryDiscovery.layer).pipe(
    Layer.provideMerge(TransportConfig.layerFromRecord({ DYN_CANCEL_GRACE_MS: "100", ...env }))
  )
