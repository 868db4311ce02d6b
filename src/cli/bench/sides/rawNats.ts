/**
 * The raw NATS baselines, @nats-io/transport-node and node:net only, through the nats-server the
 * run started. Variants:
 *
 * - `publishes` (the NATS anchor): the router publishes the request with a reply subject under
 *   its own inbox (one wildcard subscription for every stream), and the worker publishes each
 *   item, then an empty message as the end, to that reply subject.
 * - `callhome` / `callhome-pooled` (the nats+tcp mode's exchange): the same request, answered by an
 *   empty ack on the reply subject, and the items + end over the raw call-home of callHome.ts,
 *   a new connection per stream or one pooled connection. A call completes with both.
 *
 * Items are JSON-parsed on the router; a stream with the wrong number of items fails its call.
 */
import { connect as natsConnect, createInbox } from "@nats-io/transport-node"
import type { Msg, NatsConnection } from "@nats-io/transport-node"
import { loadPromise } from "../load.ts"
import { callHome, callHomeServer } from "./callHome.ts"
import { itemJson, pacedEach } from "./paced.ts"
import type { Driver, PendingCall, ServerInfo, Served, SideOptions } from "./side.ts"

const SUBJECT = "bench.raw.generate"
const EMPTY = new Uint8Array(0)

const open = (options: SideOptions): Promise<NatsConnection> => {
  if (options.natsUrl === undefined) throw new Error("no nats-server: the raw NATS rows need one")
  return natsConnect({ servers: options.natsUrl })
}

interface RawRequest {
  readonly n: number
  readonly size: number
  readonly port?: number
  readonly subject?: string
}

/** Serves the variant's worker: subscribes to the request subject. */
export const serve = async (options: SideOptions): Promise<Served> => {
  const nc = await open(options)
  const publishes = options.variant === "publishes"
  const pooled = options.variant === "callhome-pooled"
  nc.subscribe(SUBJECT, {
    callback: (_err, msg: Msg) => {
      const req = JSON.parse(msg.string()) as RawRequest
      const reply = msg.reply
      if (reply === undefined) return
      if (publishes) {
        const token = "x".repeat(req.size)
        pacedEach(req.n, options.delayMs, (i) => nc.publish(reply, itemJson(i, token)), () => nc.publish(reply, EMPTY))
        return
      }
      msg.respond(EMPTY)
      callHome(req.port!, req.subject!, pooled, req.n, req.size, options.delayMs)
    }
  })
  await nc.flush()
  return { info: { subject: SUBJECT }, close: () => nc.close() }
}


/** Connects the variant's router. */
export const connect = async (options: SideOptions, _server: ServerInfo): Promise<Driver> => {
  const nc = await open(options)
  const publishes = options.variant === "publishes"
  const pending = new Map<string, PendingCall>()
  const finish = (token: string, p: PendingCall) => {
    pending.delete(token)
    if (p.items === options.items) p.resolve()
    else p.reject(new Error(`stream ${token}: ${p.items} items, expected ${options.items}`))
  }
  const prefix = `${createInbox()}.`
  nc.subscribe(`${prefix}*`, {
    callback: (_err, msg: Msg) => {
      const token = msg.subject.slice(prefix.length)
      const p = pending.get(token)
      if (p === undefined) return
      if (!publishes) {
        // the ack
        p.acked = true
        if (p.ended) finish(token, p)
      } else if (msg.data.length === 0) {
        finish(token, p)
      } else {
        JSON.parse(msg.string())
        if (p.items++ === 0) p.onFirst()
      }
    }
  })
  const home = publishes
    ? undefined
    : await callHomeServer(
      options.variant === "callhome-pooled",
      (token) => {
        const p = pending.get(token)
        if (p !== undefined && p.items++ === 0) p.onFirst()
      },
      (token) => {
        const p = pending.get(token)
        if (p === undefined) return
        p.ended = true
        if (p.acked) finish(token, p)
      }
    )
  await nc.flush()
  const once = (onFirst: () => void) =>
    new Promise<void>((resolve, reject) => {
      const token = crypto.randomUUID()
      pending.set(token, { resolve, reject, onFirst, items: 0, acked: publishes, ended: false })
      const body = JSON.stringify(home === undefined ? { n: options.items, size: options.itemSize } : { n: options.items, size: options.itemSize, port: home.port, subject: token })
      nc.publish(SUBJECT, body, { reply: prefix + token })
    })
  return {
    run: (streams, concurrency, record) => loadPromise(streams, concurrency, once, record),
    close: async () => {
      home?.close()
      await nc.close()
    }
  }
}
