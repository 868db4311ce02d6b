/**
 * The `TransportRegistry` namespace users import: the service and its empty layer
 * (`TransportRegistry.ts`), and the registry composed from `DYN_*` (`layerConfig.ts`).
 */
export * from "../TransportRegistry.ts"
export { layerConfig, layerFromConfig } from "./layerConfig.ts"
