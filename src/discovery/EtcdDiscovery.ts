/**
 * The `etcd` discovery backend, as Dynamo keeps its instances in etcd: the record of an instance
 * (PROTOCOL.md section 5, `instanceToJson`) at `v1/instances/{ns}/{component}/{endpoint}/{id hex}`,
 * attached to the process lease (`EtcdLease.ts`), whose id is the instance id that
 * `instanceId` hands to the worker. A worker that dies leaves when its lease expires (TTL
 * `ETCD_LEASE_TTL`, 10 s by default); a worker that stops deletes its records and revokes the
 * lease at once. `list` reads the endpoint's prefix; `watch` follows it (`EtcdWatch.ts`), keeping
 * the last known set while etcd is out of reach.
 *
 * It does not decide retries of requests or pick instances (the router does).
 */
import { Effect, Layer } from "effect"
import type { Scope } from "effect"
import { Discovery, endpointPrefix, instanceKey } from "../Discovery.ts"
import type { DiscoveryShape } from "../Discovery.ts"
import { instanceToJson } from "../Instance.ts"
import { TransportConfig } from "../TransportConfig.ts"
import { makeClient } from "./EtcdClient.ts"
import * as EtcdLease from "./EtcdLease.ts"
import { readPrefix, watchPrefix } from "./EtcdWatch.ts"

/** Options of the etcd backend. */
export interface EtcdDiscoveryOptions {
  /** etcd client URLs (`ETCD_ENDPOINTS`). */
  readonly endpoints: ReadonlyArray<string>
  /** The lease TTL in whole seconds (`ETCD_LEASE_TTL`, default 10). */
  readonly leaseTtlSeconds?: number | undefined
  /** Deadline of each etcd call, in ms (default 5000). */
  readonly callTimeoutMs?: number | undefined
  /** A watch that lost etcd tries again after this many ms, doubling (default 250). */
  readonly retryMinMs?: number | undefined
  /** ... up to this many ms between tries (default 5000). */
  readonly retryMaxMs?: number | undefined
}

/** An `etcd` discovery; the client closes, and the lease is revoked, when the scope closes. */
export const make = (options: EtcdDiscoveryOptions): Effect.Effect<DiscoveryShape, never, Scope.Scope> =>
  Effect.gen(function*() {
    const callTimeoutMs = options.callTimeoutMs ?? 5_000
    const watchOptions = {
      callTimeoutMs,
      retryMinMs: options.retryMinMs ?? 250,
      retryMaxMs: options.retryMaxMs ?? 5_000
    }
    const client = yield* Effect.acquireRelease(
      Effect.sync(() => makeClient({ endpoints: options.endpoints, callTimeoutMs })),
      (client) => Effect.sync(() => client.close())
    )
    const lease = EtcdLease.make(client, { ttlSeconds: options.leaseTtlSeconds ?? 10, callTimeoutMs }, yield* Effect.scope)
    return {
      backend: "etcd",
      instanceId: lease.hold,
      register: (instance) => Effect.asVoid(lease.attach(instanceKey(instance), instanceToJson(instance))),
      list: (path) =>
        Effect.map(readPrefix(client, endpointPrefix(path), callTimeoutMs), ({ records }) => [...records.values()].map((r) => r.instance)),
      watch: (path) => watchPrefix(client, endpointPrefix(path), watchOptions)
    } satisfies DiscoveryShape
  })

/** The etcd backend with explicit options. */
export const layerWith = (options: EtcdDiscoveryOptions): Layer.Layer<Discovery> => Layer.effect(Discovery, make(options))

/** The etcd backend on `ETCD_ENDPOINTS` with a lease of `ETCD_LEASE_TTL` seconds. */
export const layer: Layer.Layer<Discovery, never, TransportConfig> = Layer.effect(
  Discovery,
  Effect.flatMap(TransportConfig, (config) =>
    make({ endpoints: config.etcdEndpoints, leaseTtlSeconds: config.etcdLeaseTtlSeconds }))
)
