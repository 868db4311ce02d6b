/**
 * Discovery: the service, its backends, and the configured layer.
 */
export * from "../Discovery.ts"
export { layerConfig } from "./layerConfig.ts"
export * as MemoryDiscovery from "./MemoryDiscovery.ts"
export * as FileDiscovery from "./FileDiscovery.ts"
export * as EtcdDiscovery from "./EtcdDiscovery.ts"
