/**
 * Small socket helpers shared by the wire transports: the host to advertise for a bind
 * address, listening with a typed error, and "host:port" formatting.
 */
import { networkInterfaces } from "node:os"
import type { Server } from "node:net"
import { Effect, Semaphore } from "effect"
import type { Context } from "effect"
import type { TransportId } from "../Transport.ts"
import { TransportConnectionError } from "../TransportError.ts"

/**
 * The host that peers should connect to: `advertise` when given, the bind host when it is a
 * specific address, else (0.0.0.0 / ::) the first non-internal IPv4, falling back to 127.0.0.1.
 */
export const advertisedHost = (bindHost: string, advertise?: string | undefined): string => {
  if (advertise !== undefined && advertise !== "") return advertise
  if (bindHost !== "0.0.0.0" && bindHost !== "::" && bindHost !== "") return bindHost
  for (const list of Object.values(networkInterfaces())) {
    for (const nic of list ?? []) if (nic.family === "IPv4" && !nic.internal) return nic.address
  }
  return "127.0.0.1"
}

/** "host:port", with IPv6 hosts in brackets. */
export const hostPort = (host: string, port: number): string => (host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`)

/**
 * The accept backlog every listener asks for. Node's default (511) overflowed when ~10,000
 * workers' call-homes (or requests) arrived at once: the kernel dropped their handshakes and
 * they waited out SYN retransmits. The kernel caps it at `net.core.somaxconn`.
 */
export const LISTEN_BACKLOG = 65_535

/** Starts `server` listening; resolves with the bound port, or fails with ListenFailed naming the address. */
export const listen = (server: Server, host: string, port: number, transport: TransportId): Effect.Effect<number, TransportConnectionError> =>
  Effect.flatMap(Effect.context<never>(), (context) => listenIn(context, server, host, port, transport))

/**
 * `listen`, logging in `context` an error the listening server reports later (an accept error:
 * EMFILE, ENFILE): without a listener such an error would crash the process.
 */
const listenIn = (
  context: Context.Context<never>,
  server: Server,
  host: string,
  port: number,
  transport: TransportId
): Effect.Effect<number, TransportConnectionError> =>
  Effect.callback<number, TransportConnectionError>((resume) => {
    const onError = (cause: Error) => {
      server.off("listening", onListening)
      resume(
        Effect.fail(
          new TransportConnectionError({ reason: "ListenFailed", transport, target: hostPort(host, port), detail: cause.message, cause })
        )
      )
    }
    const onListening = () => {
      server.off("error", onError)
      server.on("error", (cause: Error) => {
        Effect.runForkWith(context)(
          Effect.logWarning("listener error; still listening").pipe(
            Effect.annotateLogs({ transport, address: hostPort(host, port), error: cause.message })
          )
        )
      })
      const address = server.address()
      resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : port))
    }
    server.once("error", onError)
    server.once("listening", onListening)
    server.listen({ port, host, backlog: LISTEN_BACKLOG })
  })

/**
 * An Effect that starts `server` listening the first time it runs and succeeds with the bound
 * port; later runs return that port. Concurrent first runs wait for the same listen (one permit),
 * and a failed listen is tried again by the next run.
 */
export const listenOnce = (
  server: Server,
  host: string,
  port: number,
  transport: TransportId
): Effect.Effect<Effect.Effect<number, TransportConnectionError>> =>
  Effect.map(Semaphore.make(1), (lock) => {
    let bound: number | undefined
    return lock.withPermits(1)(
      Effect.suspend(() =>
        bound !== undefined
          ? Effect.succeed(bound)
          : Effect.map(listen(server, host, port, transport), (p) => (bound = p))
      )
    )
  })
