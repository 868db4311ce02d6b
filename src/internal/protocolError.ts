/**
 * Maps the protocol core's `ProtocolParseError` into the typed `TransportProtocolError` that
 * users see, adding what only a driver knows: the transport and the target (peer address,
 * subject or endpoint).
 */
import type { ProtocolParseError } from "../protocol/ProtocolError.ts"
import type { TransportId } from "../Transport.ts"
import { TransportProtocolError } from "../TransportError.ts"

/** `error` as a `TransportProtocolError` of `transport` about `target`, with the same reason and detail. */
export const toTransportProtocolError = (
  error: ProtocolParseError,
  transport: TransportId,
  target: string
): TransportProtocolError =>
  new TransportProtocolError({ reason: error.reason, transport, target, detail: error.detail, cause: error })
