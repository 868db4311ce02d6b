/**
 * The worker's NATS request-plane server (PROTOCOL.md sections 2 and 4), as Dynamo serves it.
 *
 * `register` subscribes (a core subscription, no queue group) to the instance's subject
 * `{namespace}_{component}.{endpoint}-{instance_id hex}`: the endpoint `{endpoint}-{id hex}` of
 * the NATS service group `{namespace}_{component}`. It flushes, so nats-server knows the
 * subscription before the instance is advertised, and returns `{"nats_tcp": subject}`, the form
 * Dynamo's shipped readers know. For each message, synchronously in nats.js's callback:
 * 1. decodes the payload as a section 2 request message; a bad one is answered with a non-empty
 *    rejection naming the problem (`Server unavailable: bad request message: ...`);
 * 2. asks the endpoint's `admit`; a refusal is answered `Server overloaded: ...` or
 *    `Server unavailable: ...` (Dynamo's texts: its routers read any other non-empty reply as
 *    an acceptance);
 * 3. replies on the message's inbox with an EMPTY payload, the ack, at once;
 * 4. then calls the handler, with `traceparent`, `tracestate` and `x-request-id` from the NATS
 *    message's headers (Dynamo's `request-id` is also given as `x-request-id` when that is absent).
 * A message without a reply subject cannot be acked: it is dropped, with a warning.
 *
 * What it does not do: run handlers or write streams (the endpoint layer and the response plane
 * do), answer the NATS service framework's `$SRV.PING/INFO/STATS` discovery subjects, or own the
 * connection (NatsConnection.ts; subscriptions come back by themselves after a reconnect).
 */
import type { Msg, NatsConnection } from "@nats-io/transport-node"
import { Effect } from "effect"
import type { Scope } from "effect"
import { ProtocolParseError } from "../../protocol/ProtocolError.ts"
import { decodeRequestMessage } from "../../protocol/RequestMessage.ts"
import { overloadedAck, unavailableAck } from "../../protocol/TcpAck.ts"
import { instanceSubject } from "../../RequestPlane.ts"
import type { Admission, RequestHandler, RequestHeaders, RequestPlaneServer } from "../../RequestPlane.ts"
import { TransportConnectionError } from "../../TransportError.ts"
import { recordError } from "../../observability/Metrics.ts"
import type { NatsConnectionHandle } from "./NatsConnection.ts"

/** Options of the server. */
export interface NatsRequestServerOptions {
  /** The process's NATS connection. */
  readonly connection: NatsConnectionHandle
  /** Larger request messages are refused (`DYN_TCP_MAX_MESSAGE_SIZE`). */
  readonly maxMessageSize: number
  /** Bound on the flush after subscribing, in ms: past it, `register` returns anyway. */
  readonly flushTimeoutMs: number
}

/** The service group of an endpoint path: `{namespace}_{component}`. */
export const serviceGroup = (path: { readonly namespace: string; readonly component: string }): string =>
  `${path.namespace}_${path.component}`

/** The ack: an empty payload. */
const ACK = new Uint8Array(0)

const encoder = new TextEncoder()

/** The rejection text of a message that is not a section 2 request message. */
export const badMessageText = (detail: string): string => unavailableAck(`bad request message: ${detail}`)

const TRACE_HEADERS = new Set(["traceparent", "tracestate", "x-request-id"])

/** The transport headers of a NATS message that a handler sees (names matched case-insensitively). */
export const headersOf = (msg: Msg): RequestHeaders => {
  const out: Record<string, string> = {}
  const h = msg.headers
  if (h === undefined) return out
  let requestId: string | undefined
  for (const [key, values] of h) {
    const name = key.toLowerCase()
    const value = values[0]
    if (value === undefined) continue
    if (TRACE_HEADERS.has(name)) out[name] = value
    else if (name === "request-id") requestId = value
  }
  if (requestId !== undefined && out["x-request-id"] === undefined) out["x-request-id"] = requestId
  return out
}

/** The answer to one message: undefined after an ack (the handler was called), else the rejection sent. */
export const serveMessage = (
  msg: Msg,
  handler: RequestHandler,
  admit: Admission | undefined,
  maxMessageSize: number
): string | undefined => {
  const decoded = decodeRequestMessage(msg.data, { maxMessageSize })
  if (decoded instanceof ProtocolParseError) {
    const text = badMessageText(decoded.detail)
    recordError("nats", "protocol", "server")
    msg.respond(encoder.encode(text))
    return text
  }
  const refused = admit?.()
  if (refused !== undefined) {
    const text = refused.refuse === "overloaded" ? overloadedAck(refused.detail) : unavailableAck(refused.detail)
    recordError("nats", "connection", "server")
    msg.respond(encoder.encode(text))
    return text
  }
  msg.respond(ACK)
  // The ack is out; the handler runs after it.
  handler({ control: decoded.control, payload: decoded.payload, headers: headersOf(msg) })
  return undefined
}

/** Builds the server. Subscriptions live as long as the scope of their `register`. */
export const make = (options: NatsRequestServerOptions): Effect.Effect<RequestPlaneServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const runSync = Effect.runSyncWith(yield* Effect.context<never>())
    const warn = (message: string, annotations: Record<string, unknown>) => {
      try {
        runSync(Effect.logWarning(message).pipe(Effect.annotateLogs({ module: "transport.nats.server", ...annotations })))
      } catch {
        // logging never breaks the subscription
      }
    }
    const served = new Set<string>()

    const subscribe = (nc: NatsConnection, subject: string, handler: RequestHandler, admit: Admission | undefined) =>
      nc.subscribe(subject, {
        callback: (error, msg) => {
          if (error !== null) {
            recordError("nats", "connection", "server")
            return warn("NATS subscription error", { subject, error: error.message })
          }
          if (msg.reply === undefined || msg.reply === "") {
            recordError("nats", "protocol", "server")
            return warn("dropped a NATS message without a reply subject: it cannot be acked", { subject })
          }
          try {
            serveMessage(msg, handler, admit, options.maxMessageSize)
          } catch (cause) {
            // respond() throws only when the connection is closed or the reply is too large.
            recordError("nats", "connection", "server")
            warn("could not answer a NATS request", { subject, error: cause instanceof Error ? cause.message : String(cause) })
          }
        }
      })

    const server: RequestPlaneServer = {
      transport: "nats",
      register: (key, handler, registerOptions) =>
        Effect.gen(function*() {
          const subject = instanceSubject(key)
          const nc = yield* options.connection.connect
          yield* Effect.acquireRelease(
            Effect.suspend(() => {
              if (served.has(subject)) {
                return Effect.fail(
                  new TransportConnectionError({
                    reason: "ListenFailed",
                    transport: "nats",
                    target: subject,
                    detail: "this process already serves that subject (the same endpoint and instance id twice)"
                  })
                )
              }
              served.add(subject)
              try {
                return Effect.succeed(subscribe(nc, subject, handler, registerOptions?.admit))
              } catch (cause) {
                served.delete(subject)
                return Effect.fail(
                  new TransportConnectionError({
                    reason: "ListenFailed",
                    transport: "nats",
                    target: subject,
                    detail: `cannot subscribe: ${cause instanceof Error ? cause.message : String(cause)}`,
                    cause
                  })
                )
              }
            }),
            (sub) =>
              Effect.sync(() => {
                served.delete(subject)
                try {
                  sub.unsubscribe()
                } catch {
                  // the connection is already closed: so is the subscription
                }
              })
          )
          // nats-server knows the subscription once the flush returns: only then is it advertised.
          const flushed = yield* Effect.tryPromise(() => nc.flush()).pipe(
            Effect.timeoutOption(options.flushTimeoutMs),
            Effect.orElseSucceed(() => undefined)
          )
          if (flushed === undefined || flushed._tag === "None") {
            warn("nats-server did not confirm the subscription in time; it is sent when the connection is back", { subject })
          }
          return { nats_tcp: subject }
        })
    }
    return server
  })
