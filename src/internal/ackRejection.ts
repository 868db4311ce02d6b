/**
 * The typed failure of a rejection ack, shared by the request planes that speak Dynamo's ack texts
 * (the TCP request plane in both framings, and NATS): `Server overloaded:` is "Overloaded", a text
 * naming an unknown endpoint is `EndpointNotFound`, a bad request message is a
 * `TransportProtocolError` "BadPayload", other `Server unavailable:` texts are "ServerUnavailable",
 * any other text "Refused". It does not read acks (`protocol/TcpAck.ts` classifies their text).
 */
import type { TransportId } from "../Transport.ts"
import { EndpointNotFound, TransportConnectionError, TransportProtocolError } from "../TransportError.ts"
import type { TransportError } from "../TransportError.ts"
import { classifyAck } from "../protocol/TcpAck.ts"

const UNKNOWN_ENDPOINT = /unknown endpoint/i
const BAD_REQUEST = /bad request message/i

/** The failure of the rejection `text` from `target` (a worker's address, or its NATS subject) for `endpoint`. */
export const ackRejectionError = (
  transport: TransportId,
  text: string,
  target: string,
  endpoint: string
): TransportError | EndpointNotFound => {
  const kind = classifyAck(text)
  if (kind === "overloaded") return new TransportConnectionError({ reason: "Overloaded", transport, target, detail: text })
  if (UNKNOWN_ENDPOINT.test(text)) return new EndpointNotFound({ endpoint, target, detail: text })
  if (BAD_REQUEST.test(text)) return new TransportProtocolError({ reason: "BadPayload", transport, target, detail: text })
  return new TransportConnectionError({ reason: kind === "unavailable" ? "ServerUnavailable" : "Refused", transport, target, detail: text })
}
