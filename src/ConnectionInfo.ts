/**
 * What travels alongside a request: the call-home address of its response stream
 * (`ConnectionInfo`, PROTOCOL.md section 2), the request's control header
 * (`RequestControlMessage`), and the control messages of section 6.
 *
 * Also the seed's transport-neutral `ResponseConnectionInfo` / `TransportAddress`.
 * Pure data and pure (de)serialization; no I/O.
 */
import { Schema } from "effect"

/** Control messages: stop and kill flow router to worker, sentinel worker to router. */
export const ControlMessage = Schema.Literals(["stop", "kill", "sentinel"])
/** Control messages: stop and kill flow router to worker, sentinel worker to router. */
export type ControlMessage = typeof ControlMessage.Type

/** The wire call-home address: `info` is JSON text (encoded twice, as Dynamo does). */
export const ConnectionInfo = Schema.Struct({
  transport: Schema.String,
  info: Schema.String
})
/** The wire call-home address: `info` is JSON text (encoded twice, as Dynamo does). */
export type ConnectionInfo = typeof ConnectionInfo.Type

/** The decoded `info` of a `tcp_server` ConnectionInfo. */
export const TcpStreamConnectionInfo = Schema.Struct({
  address: Schema.String,
  subject: Schema.String,
  context: Schema.String,
  stream_type: Schema.Literal("response")
})
/** The decoded `info` of a `tcp_server` ConnectionInfo. */
export type TcpStreamConnectionInfo = typeof TcpStreamConnectionInfo.Type

/** The payload codecs a request may use. Absent on the wire means json. */
export const PayloadCodecName = Schema.Literals(["json", "msgpack"])
/** The payload codecs a request may use. Absent on the wire means json. */
export type PayloadCodecName = typeof PayloadCodecName.Type

/** The header of a request-plane message (PROTOCOL.md section 2). */
export const RequestControlMessage = Schema.Struct({
  id: Schema.String,
  request_type: Schema.Literals(["single_in", "many_in"]),
  response_type: Schema.Literals(["single_out", "many_out"]),
  payload_codec: Schema.optionalKey(PayloadCodecName),
  connection_info: ConnectionInfo,
  metadata: Schema.optionalKey(Schema.Record(Schema.String, Schema.Unknown))
})
/** The header of a request-plane message (PROTOCOL.md section 2). */
export type RequestControlMessage = typeof RequestControlMessage.Type

/** Where a response stream is delivered, in the seed's transport-neutral form. */
export const TransportAddress = Schema.Union([
  Schema.TaggedStruct("Tcp", { host: Schema.String, port: Schema.Number }),
  Schema.TaggedStruct("Http", { url: Schema.String }),
  Schema.TaggedStruct("Nats", { subject: Schema.String }),
  Schema.TaggedStruct("Memory", { id: Schema.String })
])
/** Where a response stream is delivered, in the seed's transport-neutral form. */
export type TransportAddress = typeof TransportAddress.Type

/** The seed's ResponseConnectionInfo: address, the request context id, subject and metadata. */
export const ResponseConnectionInfo = Schema.Struct({
  address: TransportAddress,
  context_id: Schema.String,
  subject: Schema.optionalKey(Schema.String),
  metadata: Schema.Record(Schema.String, Schema.String)
})
/** The seed's ResponseConnectionInfo: address, the request context id, subject and metadata. */
export type ResponseConnectionInfo = typeof ResponseConnectionInfo.Type

/** Builds the wire ConnectionInfo of a `tcp_server` call-home, encoding `info` twice as Dynamo does. */
export const tcpConnectionInfo = (info: TcpStreamConnectionInfo): ConnectionInfo => ({
  transport: "tcp_server",
  info: JSON.stringify({
    address: info.address,
    subject: info.subject,
    context: info.context,
    stream_type: info.stream_type
  })
})
