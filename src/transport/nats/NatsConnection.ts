/**
 * The process's connection to nats-server (`NATS_SERVER`), shared by the NATS request plane's
 * client (router) and server (worker): one connection per `make`, that is one per registry built
 * from the config, closed when its scope closes.
 *
 * What it does:
 * - connects on first use, not at start-up (a process that never sends or serves on NATS never
 *   needs the broker); concurrent first uses share one attempt, bounded by `connectTimeoutMs`;
 *   a failed attempt fails typed (`TransportConnectionError` "ConnectFailed" naming the servers)
 *   and the next use tries again;
 * - once connected, reconnects by itself when nats-server goes away: forever by default
 *   (`maxReconnectAttempts` -1), every `reconnectWaitMs` (250 ms, plus nats.js's jitter). nats.js
 *   resubscribes every subscription after a reconnect, so a worker is served again without help;
 * - tracks whether it is up (`current()` is undefined while it reconnects) and tells listeners
 *   (`onDisconnect`) the moment the link drops, so routers fail requests typed at once rather than
 *   wait for a timeout;
 * - logs the link's life under the module `transport.nats`: disconnect and errors at warn,
 *   reconnect at info, each reconnect attempt at debug.
 *
 * What it does not do: send requests or serve subjects (NatsRequestClient.ts, NatsRequestServer.ts),
 * buffer requests while disconnected, or drain on close (the scope's close closes at once; the
 * worker's subscriptions are gone with their own scopes first).
 */
import { connect } from "@nats-io/transport-node"
import type { NatsConnection } from "@nats-io/transport-node"
import { Effect } from "effect"
import type { Scope } from "effect"
import { TransportConnectionError } from "../../TransportError.ts"

/** Options of `make`. */
export interface NatsConnectionOptions {
  /** The servers: one nats:// (or tls://) URL, or a comma-separated list (`NATS_SERVER`). */
  readonly servers: string
  /** Bound on the first connect, in ms. */
  readonly connectTimeoutMs: number
  /** Wait between reconnect attempts, in ms (default 250). */
  readonly reconnectWaitMs?: number | undefined
  /** Reconnect attempts per server before giving up; -1 (the default) is forever. */
  readonly maxReconnectAttempts?: number | undefined
  /** The client name nats-server shows in its monitoring (default "transport-registry"). */
  readonly name?: string | undefined
}

/** The state of the link, as `state()` reports it. */
export type NatsLinkState = "idle" | "connecting" | "connected" | "reconnecting" | "closed"

/** The shared connection; see the module comment. */
export interface NatsConnectionHandle {
  /** The servers, as configured: the target named in connection errors. */
  readonly servers: string
  /**
   * The connection, connecting on first use. Succeeds while reconnecting too (the connection
   * object survives reconnects: subscriptions made then are sent once it is back).
   */
  readonly connect: Effect.Effect<NatsConnection, TransportConnectionError>
  /** The same for callback code: `onReady` gets the connection or the typed failure (possibly synchronously). */
  readonly whenConnected: (onReady: (result: NatsConnection | TransportConnectionError) => void) => void
  /** The connection if it is up now; undefined before the first connect, while reconnecting, and once closed. */
  readonly current: () => NatsConnection | undefined
  /** Where the link is now. */
  readonly state: () => NatsLinkState
  /** Calls `listener` each time the link drops; returns a function that removes it. */
  readonly onDisconnect: (listener: () => void) => () => void
}

/** The default wait between reconnect attempts, in ms. */
export const DEFAULT_RECONNECT_WAIT_MS = 250

const splitServers = (servers: string): Array<string> =>
  servers.split(",").map((s) => s.trim()).filter((s) => s !== "")

const messageOf = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

/** Builds the handle; closing the scope closes the connection (and fails later uses typed). */
export const make = (options: NatsConnectionOptions): Effect.Effect<NatsConnectionHandle, never, Scope.Scope> =>
  Effect.gen(function*() {
    const runSync = Effect.runSyncWith(yield* Effect.context<never>())
    const log = (level: "debug" | "info" | "warn", message: string, annotations: Record<string, unknown>) => {
      try {
        runSync(
          (level === "warn" ? Effect.logWarning(message) : level === "info" ? Effect.logInfo(message) : Effect.logDebug(message)).pipe(
            Effect.annotateLogs({ module: "transport.nats", servers: options.servers, ...annotations })
          )
        )
      } catch {
        // logging never breaks the connection
      }
    }

    const servers = options.servers
    let nc: NatsConnection | undefined
    let pending: Promise<NatsConnection> | undefined
    let up = false
    let closed = false
    const listeners = new Set<() => void>()

    const failure = (detail: string, cause?: unknown) =>
      new TransportConnectionError({ reason: "ConnectFailed", transport: "nats", target: servers, detail, cause })

    const watch = (c: NatsConnection) => {
      void (async () => {
        for await (const s of c.status()) {
          switch (s.type) {
            case "disconnect":
              up = false
              log("warn", "disconnected from nats-server; reconnecting", { server: s.server })
              for (const l of listeners) {
                try {
                  l()
                } catch {
                  // a listener must not stop the others
                }
              }
              break
            case "reconnecting":
              log("debug", "reconnecting to nats-server", {})
              break
            case "reconnect":
              up = true
              log("info", "reconnected to nats-server", { server: s.server })
              break
            case "error":
              log("warn", "nats-server reported an error", { error: messageOf(s.error) })
              break
            case "staleConnection":
              log("warn", "nats-server stopped answering pings; reconnecting", {})
              break
            case "slowConsumer":
              log("warn", "a NATS subscription is a slow consumer", { subject: s.sub.getSubject(), pending: s.pending })
              break
            case "ldm":
              log("info", "nats-server entered lame duck mode", { server: s.server })
              break
          }
        }
      })().catch(() => {})
      void c.closed().then((error) => {
        up = false
        if (nc === c) {
          nc = undefined
          pending = undefined
        }
        if (!closed) {
          // Not ours: reconnects gave up, or the server refused us for good. The next use connects afresh.
          log("warn", "the NATS connection closed", { error: error === undefined ? "none" : messageOf(error) })
          for (const l of listeners) {
            try {
              l()
            } catch {
              // as above
            }
          }
        }
      })
    }

    const open = (): Promise<NatsConnection> => {
      if (closed) return Promise.reject(failure("the NATS connection is closed (its scope ended)"))
      if (nc !== undefined) return Promise.resolve(nc)
      if (pending !== undefined) return pending
      const attempt = connect({
        servers: splitServers(servers),
        name: options.name ?? "transport-registry",
        timeout: options.connectTimeoutMs,
        reconnect: true,
        maxReconnectAttempts: options.maxReconnectAttempts ?? -1,
        reconnectTimeWait: options.reconnectWaitMs ?? DEFAULT_RECONNECT_WAIT_MS,
        // An Error per request for async stack traces costs its stack capture: off.
        noAsyncTraces: true
      }).then(
        (c) => {
          if (closed) {
            void c.close().catch(() => {})
            throw failure("the NATS connection is closed (its scope ended)")
          }
          nc = c
          up = true
          watch(c)
          log("debug", "connected to nats-server", { server: c.getServer(), max_payload: c.info?.max_payload })
          return c
        },
        (cause: unknown) => {
          pending = undefined
          if (cause instanceof TransportConnectionError) throw cause
          throw failure(`cannot connect to nats-server at ${servers}: ${messageOf(cause)}`, cause)
        }
      )
      pending = attempt
      return attempt
    }

    yield* Effect.addFinalizer(() =>
      Effect.promise(async () => {
        closed = true
        up = false
        listeners.clear()
        const c = nc ?? (await pending?.catch(() => undefined))
        nc = undefined
        pending = undefined
        if (c !== undefined && !c.isClosed()) await c.close().catch(() => {})
      })
    )

    const handle: NatsConnectionHandle = {
      servers,
      connect: Effect.tryPromise({
        try: open,
        catch: (cause) => cause instanceof TransportConnectionError ? cause : failure(messageOf(cause), cause)
      }),
      whenConnected: (onReady) => {
        if (nc !== undefined) return onReady(nc)
        open().then(onReady, (cause: unknown) =>
          onReady(cause instanceof TransportConnectionError ? cause : failure(messageOf(cause), cause)))
      },
      current: () => (up ? nc : undefined),
      state: () => (closed ? "closed" : nc === undefined ? (pending === undefined ? "idle" : "connecting") : up ? "connected" : "reconnecting"),
      onDisconnect: (listener) => {
        listeners.add(listener)
        return () => void listeners.delete(listener)
      }
    }
    return handle
  })
