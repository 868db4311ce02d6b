/**
 * Transport identity and capabilities: which transports exist, which plane they serve,
 * what they can do, and how they are registered.
 *
 * Pure data (Schema) only. Selection logic lives in `TransportRegistry`.
 */
import { Schema } from "effect"

/** The transports this project implements. */
export const TransportId = Schema.Literals(["http", "tcp", "nats", "memory"])
/** The transports this project implements. */
export type TransportId = typeof TransportId.Type

/** The two planes: how a request reaches a worker, and how its response stream comes back. */
export const PlaneType = Schema.Literals(["request", "response"])
/** The two planes: how a request reaches a worker, and how its response stream comes back. */
export type PlaneType = typeof PlaneType.Type

/** What a transport can do. `max_message_size` absent means "no limit of its own". */
export const TransportCapabilities = Schema.Struct({
  streaming: Schema.Boolean,
  persistent_connections: Schema.Boolean,
  bidirectional: Schema.Boolean,
  max_message_size: Schema.optionalKey(Schema.Number)
})
/** What a transport can do. `max_message_size` absent means "no limit of its own". */
export type TransportCapabilities = typeof TransportCapabilities.Type

/** A registration: which transport, on which plane, with what capabilities and priority (higher wins). */
export const TransportRegistration = Schema.Struct({
  transport_id: TransportId,
  plane_type: PlaneType,
  capabilities: TransportCapabilities,
  priority: Schema.Number
})
/** A registration: which transport, on which plane, with what capabilities and priority (higher wins). */
export type TransportRegistration = typeof TransportRegistration.Type

/** Capabilities that require nothing: every transport meets them. */
export const noRequirements: TransportCapabilities = {
  streaming: false,
  persistent_connections: false,
  bidirectional: false
}

/**
 * True when `offered` meets every capability in `required`. A required `max_message_size`
 * is met by a transport without a limit, or by one whose limit is at least as large.
 */
export const meets = (offered: TransportCapabilities, required: TransportCapabilities): boolean =>
  (!required.streaming || offered.streaming) &&
  (!required.persistent_connections || offered.persistent_connections) &&
  (!required.bidirectional || offered.bidirectional) &&
  (required.max_message_size === undefined || offered.max_message_size === undefined ||
    offered.max_message_size >= required.max_message_size)
