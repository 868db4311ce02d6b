/**
 * transport-registry: pluggable request and response transports for a distributed
 * inference runtime, on Effect 4. One namespace per module.
 */
export * as ConnectionInfo from "./ConnectionInfo.ts"
export * as Discovery from "./discovery/index.ts"
export * as Endpoint from "./Endpoint.ts"
export * as Instance from "./Instance.ts"
export * as MemoryTransport from "./transport/memory/MemoryTransport.ts"
export * as RequestPlane from "./RequestPlane.ts"
export * as ResponsePlane from "./ResponsePlane.ts"
export * as Transport from "./Transport.ts"
export * as TransportConfig from "./TransportConfig.ts"
export * as TransportError from "./TransportError.ts"
export * as TransportRegistry from "./registry/index.ts"
