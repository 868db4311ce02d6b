/**
 * The etcd v3 client of the `etcd` discovery backend (the `etcd3` package), set up so that the
 * backend's own loops decide about retries: every unary call has a deadline, the client neither
 * retries nor opens a circuit breaker by itself (a breaker would keep calls failing for seconds
 * after etcd came back), gRPC keepalive pings detect a dead connection under an open watch, and
 * the client's own watch reconnection backs off to at most a second.
 *
 * It also turns one etcd call into an Effect that fails with a typed `DiscoveryError`. It does
 * not know about leases, records or watches (`EtcdLease.ts`, `EtcdWatch.ts`).
 */
import { Etcd3 } from "etcd3"
import type { IOptions } from "etcd3"
import { Effect } from "effect"
import { DiscoveryError } from "../Discovery.ts"

/** How the client reaches etcd. */
export interface EtcdClientOptions {
  /** etcd client URLs (`http://host:2379`). */
  readonly endpoints: ReadonlyArray<string>
  /** Deadline of every unary call, in ms. */
  readonly callTimeoutMs: number
}

type FaultHandling = NonNullable<IOptions["faultHandling"]>
type Policy = FaultHandling["global"] & {}
type Backoff = FaultHandling["watchBackoff"] & {}

const noDisposable = () => ({ dispose: () => undefined })

/** A policy that runs the call once, as it is: the backend's loops retry. */
const direct = {
  onSuccess: noDisposable,
  onFailure: noDisposable,
  execute: (fn: (context: { signal: AbortSignal }) => unknown) =>
    Promise.resolve().then(() => fn({ signal: new AbortController().signal }))
} as unknown as Policy

/** Doubles from 100 ms to at most 1 s: how soon the client re-opens a broken watch stream. */
const watchBackoff = (ms = 100): Backoff =>
  ({ duration: ms, next: () => watchBackoff(Math.min(ms * 2, 1_000)) }) as unknown as Backoff

/** A client of `options.endpoints`; close it with `client.close()`. */
export const makeClient = (options: EtcdClientOptions): Etcd3 =>
  new Etcd3({
    hosts: [...options.endpoints],
    dialTimeout: options.callTimeoutMs,
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + options.callTimeoutMs }),
    grpcOptions: {
      // etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time) and pings
      // without an open stream; a watch stream counts as one.
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      // Reconnect soon after etcd comes back (gRPC's own default backs off to 2 minutes).
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 1_000
    },
    faultHandling: { host: () => direct, global: direct, watchBackoff: watchBackoff() }
  })

/** The text of a failure, for logs and `DiscoveryError.detail`. */
export const describe = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

/**
 * One etcd call as an Effect: fails with `DiscoveryError(reason)` when the call rejects or takes
 * longer than `timeoutMs` (a stream-based call has no deadline of its own).
 */
export const etcdCall = <A>(
  reason: DiscoveryError["reason"],
  what: string,
  timeoutMs: number,
  call: () => Promise<A>
): Effect.Effect<A, DiscoveryError> =>
  Effect.tryPromise({
    try: call,
    catch: (cause) => new DiscoveryError({ backend: "etcd", reason, detail: `${what}: ${describe(cause)}`, cause })
  }).pipe(
    Effect.timeoutOrElse({
      duration: timeoutMs,
      orElse: () =>
        Effect.fail(new DiscoveryError({ backend: "etcd", reason, detail: `${what}: no answer from etcd within ${timeoutMs} ms` }))
    })
  )
