/**
 * The one failure of the protocol core: bytes that do not parse as the wire format says.
 *
 * Plain data (no Effect, no transport, no target): the decoders in `protocol/` return it as a
 * value and never throw on any input bytes. The socket drivers map it into the typed
 * `TransportProtocolError` (same `reason`, the detail kept, plus the transport and the target
 * they know) with `internal/protocolError.ts`.
 */

/** Why bytes did not parse; the same literals as `TransportProtocolError.reason`. */
export type ParseReason =
  | "MalformedFrame"
  | "MessageTooLarge"
  | "ChecksumMismatch"
  | "BadHandshake"
  | "BadPayload"
  | "UnexpectedMessage"

/** Bytes that break the wire format: what was wrong (`reason`) and a detail naming it. */
export class ProtocolParseError extends Error {
  readonly _tag = "ProtocolParseError"
  readonly reason: ParseReason
  readonly detail: string
  constructor(reason: ParseReason, detail: string, cause?: unknown) {
    super(`${reason}: ${detail}`, cause === undefined ? undefined : { cause })
    this.name = "ProtocolParseError"
    this.reason = reason
    this.detail = detail
  }
}

/** True for a `ProtocolParseError` (an `instanceof` check, named for readability at call sites). */
export const isParseError = (u: unknown): u is ProtocolParseError => u instanceof ProtocolParseError
