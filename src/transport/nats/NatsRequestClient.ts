/**
 * The router's NATS request-plane client (PROTOCOL.md sections 2 and 4): publishes the section 2
 * request message to the instance's subject (the address of its `{"nats_tcp": subject}` record)
 * with a reply inbox and the transport headers (`traceparent`, `tracestate`, `x-request-id`), and
 * resolves at the reply, which is the worker's ack.
 *
 * What it does, synchronously and without an Effect per request:
 * - refuses before sending, typed: a message that does not encode (`BadPayload`), one above
 *   nats-server's `max_payload` (read from the connection's server info, headers included) or
 *   above `DYN_TCP_MAX_MESSAGE_SIZE` (`MessageTooLarge`), and any send while the connection is
 *   down, reconnecting or closed (`TransportConnectionError` "ConnectFailed": requests never wait
 *   in nats.js's buffer for a link that may not come back);
 * - takes the replies of all its requests on one wildcard inbox subscription, matched by token
 *   (no promise or subscription per request), with one ack timer per request
 *   (`DYN_NATS_REQUEST_TIMEOUT`: `AckTimeout`);
 * - reads the reply: an empty payload is the ack; nats-server's "503 no responders" status
 *   (nobody subscribes to the subject: the instance is gone) fails at once with
 *   `EndpointNotFound`, whose detail names the subject; a non-empty payload is a rejection,
 *   mapped like the TCP request plane's acks (`rejectionError`);
 * - when the link drops, fails every request still awaiting its ack at once
 *   (`TransportConnectionError` "ConnectionClosed"): the worker may have got it, so this is a
 *   failure before the ack, not a retry.
 *
 * What it does not do: carry streamed requests (not bidirectional), carry the response (the
 * response plane), or own the connection (NatsConnection.ts).
 */
import { createInbox, headers as natsHeaders } from "@nats-io/transport-node"
import type { Msg, MsgHdrs, NatsConnection, Subscription } from "@nats-io/transport-node"
import { Effect } from "effect"
import type { Scope } from "effect"
import { ackRejectionError } from "../../internal/ackRejection.ts"
import { encodeRequestMessage } from "../../protocol/RequestMessage.ts"
import type { RequestMessage, RequestPlaneClient, RequestTarget } from "../../RequestPlane.ts"
import { EndpointNotFound, TransportConnectionError, TransportProtocolError, TransportTimeoutError } from "../../TransportError.ts"
import type { TransportError } from "../../TransportError.ts"
import type { NatsConnectionHandle } from "./NatsConnection.ts"
import { sendFromCallback } from "../../internal/sendFromCallback.ts"
import { EntryTable } from "../../internal/EntryTable.ts"

/** Options of the client. */
export interface NatsRequestClientOptions {
  /** The process's NATS connection. */
  readonly connection: NatsConnectionHandle
  /** The ack timeout, in ms (`DYN_NATS_REQUEST_TIMEOUT`). */
  readonly timeoutMs: number
  /** Requests larger than this are refused before they are sent, whatever nats-server allows. */
  readonly maxMessageSize: number
}

type AckError = TransportError | EndpointNotFound

/** A request awaiting its reply. */
interface Pending {
  readonly onAck: (error: AckError | undefined) => void
  readonly target: RequestTarget
  timer: ReturnType<typeof setTimeout> | undefined
}

/** The inbox of one connection: `{prefix}{token}` subjects, one wildcard subscription. */
interface Inbox {
  readonly nc: NatsConnection
  readonly prefix: string
  readonly sub: Subscription
}

/** The typed failure of a non-empty reply, a rejection (see `internal/ackRejection.ts`). */
export const rejectionError = (text: string, subject: string, endpoint: string): AckError => ackRejectionError("nats", text, subject, endpoint)

/** The failure of a request nobody subscribes to (nats-server's 503 "no responders"). */
export const noResponders = (subject: string, endpoint: string): EndpointNotFound =>
  new EndpointNotFound({
    endpoint,
    target: subject,
    detail: `no responders: nobody serves the NATS subject ${subject} (the instance is gone, or not subscribed yet)`
  })

const noop = () => {}

const textDecoder = new TextDecoder()

/** Headers with only the transport headers that travel (PROTOCOL.md section 2); undefined when none. */
const transportHeaders = (headers: Readonly<Record<string, string>>): MsgHdrs | undefined => {
  let out: MsgHdrs | undefined
  for (const name of ["traceparent", "tracestate", "x-request-id"]) {
    const value = headers[name]
    if (value === undefined || value === "" || /[\r\n\0]/.test(value)) continue
    out ??= natsHeaders()
    out.set(name, value)
  }
  return out
}

/** The client: a `RequestPlaneClient` with the lean `sendCallback`, plus what tests read. */
export interface NatsRequestClient extends RequestPlaneClient {
  readonly sendCallback: NonNullable<RequestPlaneClient["sendCallback"]>
  /** Requests awaiting their ack now. */
  readonly pendingCount: () => number
}

/** Builds the client; closing the scope fails the requests still waiting, typed. */
export const make = (options: NatsRequestClientOptions): Effect.Effect<NatsRequestClient, never, Scope.Scope> =>
  Effect.gen(function*() {
    const connection = options.connection
    const pending = new EntryTable<Pending>()
    let inbox: Inbox | undefined
    let seq = 0
    let closed = false

    const settle = (token: string, error: AckError | undefined) => {
      const p = pending.get(token)
      if (p === undefined) return
      pending.delete(token)
      if (p.timer !== undefined) clearTimeout(p.timer)
      try {
        p.onAck(error)
      } catch {
        // a caller's callback must not break the inbox
      }
    }

    const failAll = (make: (p: Pending) => AckError) => {
      for (const [token, p] of pending.entries()) settle(token, make(p))
    }

    const onReply = (prefix: string) => (error: Error | null, msg: Msg) => {
      if (error !== null) return
      const token = msg.subject.slice(prefix.length)
      const p = pending.get(token)
      if (p === undefined) return // late (timed out or cancelled): dropped
      const subject = p.target.address
      const h = msg.headers
      if (msg.data.length === 0 && h !== undefined && h.hasError) {
        return settle(
          token,
          h.code === 503
            ? noResponders(subject, p.target.endpoint)
            : new TransportConnectionError({
              reason: "ServerUnavailable",
              transport: "nats",
              target: subject,
              detail: `nats-server answered status ${h.code} ${h.description}`
            })
        )
      }
      if (msg.data.length === 0) return settle(token, undefined)
      settle(token, rejectionError(textDecoder.decode(msg.data), subject, p.target.endpoint))
    }

    const inboxOf = (nc: NatsConnection): Inbox => {
      if (inbox !== undefined && inbox.nc === nc) return inbox
      const prefix = `${createInbox()}.`
      const sub = nc.subscribe(`${prefix}*`, { callback: onReply(prefix) })
      inbox = { nc, prefix, sub }
      return inbox
    }

    const stopListening = connection.onDisconnect(() =>
      failAll((p) =>
        new TransportConnectionError({
          reason: "ConnectionClosed",
          transport: "nats",
          target: p.target.address,
          detail: `the connection to nats-server (${connection.servers}) dropped before the ack`
        })
      )
    )

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        stopListening()
        failAll((p) =>
          new TransportConnectionError({ reason: "ConnectionClosed", transport: "nats", target: p.target.address, detail: "client closed" })
        )
        try {
          inbox?.sub.unsubscribe()
        } catch {
          // the connection is closed already
        }
        inbox = undefined
      })
    )

    const notConnected = (address: string) =>
      new TransportConnectionError({
        reason: "ConnectFailed",
        transport: "nats",
        target: address,
        detail: `not connected to nats-server (${connection.servers}, ${connection.state()}): the request was not sent`
      })

    /** Sends on a connected `nc`; calls `onAck` once unless cancelled. */
    const sendOn = (
      nc: NatsConnection,
      target: RequestTarget,
      body: Uint8Array,
      message: RequestMessage,
      onAck: (error: AckError | undefined) => void
    ): (() => void) => {
      const address = target.address
      const max = nc.info?.max_payload
      if (max !== undefined && body.length > max) {
        onAck(
          new TransportProtocolError({
            reason: "MessageTooLarge",
            transport: "nats",
            target: address,
            detail: `request of ${body.length} bytes exceeds nats-server's max_payload of ${max} bytes`
          })
        )
        return noop
      }
      let box: Inbox
      try {
        box = inboxOf(nc)
      } catch (cause) {
        onAck(
          new TransportConnectionError({
            reason: "SendFailed",
            transport: "nats",
            target: address,
            detail: `cannot subscribe to the reply inbox: ${(cause as Error).message}`,
            cause
          })
        )
        return noop
      }
      const token = (++seq).toString(36)
      const entry: Pending = { onAck, target, timer: undefined }
      pending.set(token, entry)
      try {
        const h = transportHeaders(message.headers)
        nc.publish(address, body, h === undefined ? { reply: box.prefix + token } : { reply: box.prefix + token, headers: h })
      } catch (cause) {
        const text = cause instanceof Error ? cause.message : String(cause)
        settle(
          token,
          /max_payload/i.test(text)
            ? new TransportProtocolError({
              reason: "MessageTooLarge",
              transport: "nats",
              target: address,
              detail: `request of ${body.length} bytes plus its headers exceeds nats-server's max_payload${max === undefined ? "" : ` of ${max} bytes`}`,
              cause
            })
            : /subject/i.test(text)
            ? new TransportProtocolError({ reason: "BadPayload", transport: "nats", target: address, detail: `bad subject: ${text}`, cause })
            : new TransportConnectionError({ reason: "SendFailed", transport: "nats", target: address, detail: text, cause })
        )
        return noop
      }
      entry.timer = setTimeout(() => {
        entry.timer = undefined
        settle(
          token,
          new TransportTimeoutError({ reason: "AckTimeout", transport: "nats", target: address, detail: `no ack within ${options.timeoutMs} ms` })
        )
      }, options.timeoutMs)
      return () => {
        const p = pending.get(token)
        if (p !== entry) return
        pending.delete(token)
        if (entry.timer !== undefined) clearTimeout(entry.timer)
      }
    }

    const sendCallback = (
      target: RequestTarget,
      message: RequestMessage,
      onAck: (error: AckError | undefined) => void
    ): (() => void) => {
      const address = target.address
      let body: Uint8Array
      try {
        body = encodeRequestMessage(message.control, message.payload)
      } catch (cause) {
        onAck(
          new TransportProtocolError({
            reason: "BadPayload",
            transport: "nats",
            target: address,
            detail: cause instanceof Error ? cause.message : String(cause),
            cause
          })
        )
        return noop
      }
      if (body.length > options.maxMessageSize) {
        onAck(
          new TransportProtocolError({
            reason: "MessageTooLarge",
            transport: "nats",
            target: address,
            detail: `request of ${body.length} bytes exceeds the maximum of ${options.maxMessageSize}`
          })
        )
        return noop
      }
      if (closed) {
        onAck(new TransportConnectionError({ reason: "ConnectionClosed", transport: "nats", target: address, detail: "client closed" }))
        return noop
      }
      const now = connection.current()
      if (now !== undefined) return sendOn(now, target, body, message, onAck)
      if (connection.state() !== "idle" && connection.state() !== "connecting") {
        onAck(notConnected(address))
        return noop
      }
      // The first request of the process: connect, then send (unless cancelled meanwhile).
      let cancelled = false
      let cancelSend: () => void = noop
      connection.whenConnected((result) => {
        if (cancelled) return
        if (result instanceof TransportConnectionError) return onAck(result)
        if (closed) return onAck(new TransportConnectionError({ reason: "ConnectionClosed", transport: "nats", target: address, detail: "client closed" }))
        const up = connection.current()
        if (up === undefined) return onAck(notConnected(address))
        cancelSend = sendOn(up, target, body, message, onAck)
      })
      return () => {
        cancelled = true
        cancelSend()
      }
    }

    return {
      transport: "nats",
      sendCallback,
      send: sendFromCallback(sendCallback),
      pendingCount: () => pending.size
    }
  })
