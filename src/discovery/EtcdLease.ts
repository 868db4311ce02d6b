/**
 * The process lease of the `etcd` discovery backend, as Dynamo's primary lease: one lease per
 * process (per backend instance), granted on first use, shared by every record the process
 * registers, kept alive every TTL/3, and revoked when its last holder lets go, so that all its
 * records vanish at once. Its id is the process's instance id.
 *
 * Losing the lease. When keepalives fail for longer than the TTL (etcd unreachable), the lease
 * must be presumed expired: routers no longer see this process. That is logged as an error, and
 * keepalives go on. When etcd answers again:
 * - the lease is still alive (etcd was restarted, which extends leases, or it was out of reach
 *   for less time than etcd thought): every record is put again, in case it went;
 * - the lease expired: it is granted again WITH THE SAME ID (etcd lets a client ask for an id)
 *   and every record is put again under it. Routers see the instance removed, then added
 *   back, with the same id.
 * The id is kept on purpose: the request planes advertise it (the NATS subject and the TCP
 * path end with it, servers route on it), so a new id would mean re-registering every endpoint on
 * every request plane while requests are in flight. If etcd refuses the old id, that is logged
 * and retried; the id never changes while the lease has holders.
 *
 * It does not watch or decode records (`EtcdWatch.ts`).
 */
import type { Etcd3 } from "etcd3"
import { Effect, Fiber, Semaphore } from "effect"
import type { Scope } from "effect"
import { DiscoveryError } from "../Discovery.ts"
import { describe, etcdCall } from "./EtcdClient.ts"

/** The process lease, and the records attached to it. */
export interface ProcessLease {
  /**
   * The lease id (granting the lease if it has no holder yet), held until the scope closes;
   * the last holder to go revokes it.
   */
  readonly hold: Effect.Effect<bigint, DiscoveryError, Scope.Scope>
  /**
   * Puts `key` = `value` under the lease until the scope closes, then deletes it (at once,
   * whether or not the lease goes on). The record is put again after a lost lease comes back.
   */
  readonly attach: (key: string, value: string) => Effect.Effect<bigint, DiscoveryError, Scope.Scope>
}

/** Lease settings. */
export interface ProcessLeaseOptions {
  /** The lease TTL in whole seconds. */
  readonly ttlSeconds: number
  /** Deadline of each etcd call, in ms. */
  readonly callTimeoutMs: number
}

interface Held {
  readonly id: bigint
  holders: number
  keeper: Fiber.Fiber<never> | undefined
}

const log = <A, E, R>(effect: Effect.Effect<A, E, R>, id: bigint) =>
  Effect.annotateLogs(effect, { module: "discovery.etcd", lease: id.toString(16) })

/** One keepalive on a fresh stream: the TTL etcd answers (0 when the lease is gone). */
const keepAliveOnce = (client: Etcd3, id: bigint, timeoutMs: number): Promise<number> =>
  client.leaseClient.leaseKeepAlive().then((stream) =>
    new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        stream.cancel()
        reject(new Error(`no keepalive answer within ${timeoutMs} ms`))
      }, timeoutMs)
      stream.on("data", (res) => {
        clearTimeout(timer)
        stream.end()
        resolve(Number(res.TTL))
      })
      stream.on("error", (err) => {
        clearTimeout(timer)
        reject(err)
      })
      stream.write({ ID: id.toString() })
    })
  )

/** The process lease over `client`; its keepalive fiber lives in `scope` (the backend's). */
export const make = (client: Etcd3, options: ProcessLeaseOptions, scope: Scope.Scope): ProcessLease => {
  const ttlMs = options.ttlSeconds * 1000
  const intervalMs = Math.max(1, Math.floor(ttlMs / 3))
  const retryMs = Math.min(intervalMs, 500)
  const timeoutMs = Math.min(options.callTimeoutMs, Math.max(500, intervalMs))
  const records = new Map<string, string>()
  const lock = Semaphore.makeUnsafe(1)
  let held: Held | undefined

  const grant = (id?: bigint) =>
    etcdCall(id === undefined ? "Unavailable" : "LeaseLost", `granting a lease of ${options.ttlSeconds} s`, options.callTimeoutMs, () =>
      client.leaseClient.leaseGrant(id === undefined ? { TTL: options.ttlSeconds } : { TTL: options.ttlSeconds, ID: id.toString() }))

  const put = (id: bigint, key: string, value: string) =>
    etcdCall("WriteFailed", `writing ${key}`, options.callTimeoutMs, () => client.put(key).value(value).lease(id.toString()).exec())

  const putAll = (id: bigint) =>
    Effect.forEach([...records], ([key, value]) => put(id, key, value), { discard: true })

  /** Grants `id` again after it expired; an id etcd still has counts as granted. */
  const regrant = (id: bigint) =>
    grant(id).pipe(
      Effect.asVoid,
      Effect.catchIf((e) => /already exists/i.test(describe(e.cause)), () => Effect.void)
    )

  /** Keeps `id` alive until interrupted; see the module comment for a lost lease. */
  const keepAlive = (id: bigint): Effect.Effect<never> =>
    Effect.gen(function*() {
      let lastOk = Date.now()
      let failing = false
      let lost = false
      while (true) {
        yield* Effect.sleep(failing ? retryMs : intervalMs)
        const answer = yield* Effect.result(
          etcdCall("Unavailable", "lease keepalive", timeoutMs + 100, () => keepAliveOnce(client, id, timeoutMs))
        )
        if (answer._tag === "Failure") {
          if (!failing) yield* log(Effect.logWarning(`etcd lease keepalive failed, retrying: ${answer.failure.detail}`), id)
          failing = true
          if (!lost && Date.now() - lastOk >= ttlMs) {
            lost = true
            yield* log(
              Effect.logError(
                `etcd LEASE LOST: no keepalive for ${Math.round((Date.now() - lastOk) / 1000)} s (TTL ${options.ttlSeconds} s); ` +
                  `the lease has presumably expired and routers that reach etcd no longer see this process's ${records.size} instance(s); ` +
                  `re-registering them under the same id once etcd answers`
              ),
              id
            )
          }
          continue
        }
        if (answer.success <= 0) {
          yield* log(
            Effect.logError(`etcd lease expired in etcd; granting the same id again and re-putting ${records.size} record(s)`),
            id
          )
          lost = true
        }
        if (lost) {
          const restored = yield* Effect.result(Effect.andThen(answer.success <= 0 ? regrant(id) : Effect.void, putAll(id)))
          if (restored._tag === "Failure") {
            yield* log(Effect.logError(`etcd lease not restored yet, retrying: ${restored.failure.detail}`), id)
            failing = true
            continue
          }
          yield* log(Effect.logWarning(`etcd lease restored with the same id; ${records.size} record(s) registered again`), id)
        } else if (failing) {
          yield* log(Effect.logInfo("etcd lease keepalive recovered"), id)
        }
        lastOk = Date.now()
        failing = false
        lost = false
      }
    })

  const acquire = lock.withPermit(
    Effect.gen(function*() {
      if (held === undefined) {
        const granted = yield* grant()
        const id = BigInt(granted.ID)
        const keeper = yield* Effect.forkIn(keepAlive(id), scope)
        held = { id, holders: 0, keeper }
        yield* log(Effect.logDebug(`etcd lease granted (TTL ${granted.TTL} s)`), id)
      }
      held.holders++
      return held
    })
  )

  const release = (lease: Held) =>
    lock.withPermit(
      Effect.gen(function*() {
        lease.holders--
        if (lease.holders > 0 || held !== lease) return
        held = undefined
        if (lease.keeper !== undefined) yield* Fiber.interrupt(lease.keeper)
        const revoked = yield* Effect.result(
          etcdCall("Unavailable", "revoking the lease", options.callTimeoutMs, () => client.leaseClient.leaseRevoke({ ID: lease.id.toString() }))
        )
        if (revoked._tag === "Failure" && !/not found/i.test(revoked.failure.detail)) {
          yield* log(
            Effect.logWarning(
              `etcd lease not revoked (${revoked.failure.detail}); its records expire within ${options.ttlSeconds} s`
            ),
            lease.id
          )
        }
      })
    )

  const holdLease = Effect.acquireRelease(acquire, release)

  return {
    hold: Effect.map(holdLease, (lease) => lease.id),
    attach: (key, value) =>
      Effect.gen(function*() {
        const lease = yield* holdLease
        yield* Effect.acquireRelease(
          put(lease.id, key, value).pipe(Effect.tap(() => Effect.sync(() => records.set(key, value)))),
          () =>
            Effect.sync(() => records.delete(key)).pipe(
              Effect.andThen(etcdCall("WriteFailed", `deleting ${key}`, options.callTimeoutMs, () => client.delete().key(key).exec())),
              Effect.catch((e) =>
                log(Effect.logWarning(`etcd record not deleted (${e.detail}); it goes with the lease`), lease.id)
              )
            )
        )
        return lease.id
      })
  }
}
