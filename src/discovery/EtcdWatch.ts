/**
 * Watching an endpoint's prefix in etcd as a `DiscoveryEvent` Stream: a Snapshot from a range
 * read, then Added / Removed from an etcd watch that starts right after the snapshot's revision.
 *
 * etcd's delete events carry only the key, so the watch keeps a map key -> record to say which
 * instance a deletion removed. A record that does not decode is logged and skipped (a put of a bad
 * record over a good one removes the good one); it never fails the Stream.
 *
 * When etcd is out of reach, the last known set stays as it is (no event) and the watch tries
 * again, backing off to `retryMaxMs`: it reads the prefix again, emits the difference from what
 * it knew as Added / Removed, and watches from that read's revision. The Stream fails only when
 * the very first read fails (the caller has nothing to keep then); it never ends by itself.
 *
 * It does not register records (`EtcdLease.ts`).
 */
import type { Etcd3, IKeyValue } from "etcd3"
import { Deferred, Effect, Queue, Stream } from "effect"
import type { DiscoveryError, DiscoveryEvent } from "../Discovery.ts"
import { instanceFromJson } from "../Instance.ts"
import type { Instance } from "../Instance.ts"
import { describe, etcdCall } from "./EtcdClient.ts"

/** A record as the watch knows it: the instance, and its text to tell a changed record. */
export interface KnownRecord {
  readonly instance: Instance
  readonly text: string
}

/** The events that turn the set `before` into `after` (both keyed by etcd key). */
export const diffRecords = (
  before: ReadonlyMap<string, KnownRecord>,
  after: ReadonlyMap<string, KnownRecord>
): Array<DiscoveryEvent> => {
  const events: Array<DiscoveryEvent> = []
  for (const [key, old] of before) if (!after.has(key)) events.push({ _tag: "Removed", instance: old.instance })
  for (const [key, now] of after) {
    const old = before.get(key)
    if (old !== undefined && old.text === now.text) continue
    if (old !== undefined && old.instance.instance_id !== now.instance.instance_id) events.push({ _tag: "Removed", instance: old.instance })
    events.push({ _tag: "Added", instance: now.instance })
  }
  return events
}

/** Decodes one stored record: the record, or the reason it is bad. */
export const decodeRecord = (text: string): KnownRecord | string => {
  try {
    return { instance: instanceFromJson(text), text }
  } catch (e) {
    return describe(e)
  }
}

/** Options of `watchPrefix`. */
export interface WatchOptions {
  /** Deadline of each range read, in ms. */
  readonly callTimeoutMs: number
  /** First wait before trying again after etcd went out of reach, in ms (doubles each failure). */
  readonly retryMinMs: number
  /** Longest wait between tries, in ms. */
  readonly retryMaxMs: number
}

const logged = <A, E, R>(effect: Effect.Effect<A, E, R>, prefix: string) =>
  Effect.annotateLogs(effect, { module: "discovery.etcd", prefix })

/** Reads every record under `prefix`: the good ones by key, and the revision of the read. */
export const readPrefix = (client: Etcd3, prefix: string, callTimeoutMs: number) =>
  Effect.gen(function*() {
    const res = yield* etcdCall("Unavailable", `reading ${prefix}`, callTimeoutMs, () => client.getAll().prefix(prefix).exec())
    const records = new Map<string, KnownRecord>()
    for (const kv of res.kvs) {
      const key = kv.key.toString()
      const record = decodeRecord(kv.value.toString())
      if (typeof record === "string") yield* logged(Effect.logWarning(`skipping the bad record at ${key}: ${record}`), prefix)
      else records.set(key, record)
    }
    return { records, revision: BigInt(res.header.revision) }
  })

/** The records under `prefix`, then every change, until the Stream is interrupted. */
export const watchPrefix = (client: Etcd3, prefix: string, options: WatchOptions): Stream.Stream<DiscoveryEvent, DiscoveryError> =>
  Stream.callback<DiscoveryEvent, DiscoveryError>((queue) =>
    Effect.gen(function*() {
      const runFork = Effect.runForkWith(yield* Effect.context<never>())
      const offer = (event: DiscoveryEvent) => {
        Queue.offerUnsafe(queue, event)
      }
      let known = new Map<string, KnownRecord>()
      let started = false
      let delay = options.retryMinMs
      let outage: string | undefined

      const onPut = (kv: IKeyValue) => {
        const key = kv.key.toString()
        const old = known.get(key)
        const record = decodeRecord(kv.value.toString())
        if (typeof record === "string") {
          runFork(logged(Effect.logWarning(`skipping the bad record at ${key}: ${record}`), prefix))
          if (old !== undefined) {
            known.delete(key)
            offer({ _tag: "Removed", instance: old.instance })
          }
          return
        }
        known.set(key, record)
        for (const event of diffRecords(old === undefined ? new Map() : new Map([[key, old]]), new Map([[key, record]]))) offer(event)
      }
      const onDelete = (kv: IKeyValue) => {
        const key = kv.key.toString()
        const old = known.get(key)
        if (old === undefined) return
        known.delete(key)
        offer({ _tag: "Removed", instance: old.instance })
      }

      /** Follows the watch from `revision` until it disconnects or fails: the reason. */
      const follow = (revision: bigint) =>
        Effect.acquireUseRelease(
          Effect.sync(() => {
            const ended = Deferred.makeUnsafe<string>()
            const watcher = client.watch().prefix(prefix).startRevision(revision.toString()).watcher()
            watcher.on("connected", () => {
              delay = options.retryMinMs
            })
            watcher.on("put", onPut)
            watcher.on("delete", onDelete)
            watcher.on("disconnected", (err) => Deferred.doneUnsafe(ended, Effect.succeed(`disconnected: ${describe(err)}`)))
            watcher.on("error", (err) => Deferred.doneUnsafe(ended, Effect.succeed(`failed: ${describe(err)}`)))
            return { watcher, ended }
          }),
          ({ ended }) => Deferred.await(ended),
          ({ watcher }) =>
            Effect.promise(() => watcher.cancel().catch(() => undefined)).pipe(
              Effect.timeoutOrElse({ duration: options.callTimeoutMs, orElse: () => Effect.void })
            )
        )

      while (true) {
        const read = yield* Effect.result(readPrefix(client, prefix, options.callTimeoutMs))
        if (read._tag === "Failure") {
          if (!started) return yield* Effect.fail(read.failure)
          if (outage === undefined) {
            outage = read.failure.detail
            yield* logged(
              Effect.logWarning(`etcd out of reach (${outage}); keeping the last ${known.size} known instance(s), retrying`),
              prefix
            )
          }
          yield* Effect.sleep(delay)
          delay = Math.min(delay * 2, options.retryMaxMs)
          continue
        }
        if (!started) {
          started = true
          known = read.success.records
          offer({ _tag: "Snapshot", instances: [...known.values()].map((r) => r.instance) })
        } else {
          const events = diffRecords(known, read.success.records)
          known = read.success.records
          for (const event of events) offer(event)
          yield* logged(
            Effect.logInfo(`etcd watch resumed: ${known.size} instance(s), ${events.length} change(s) while it was away`),
            prefix
          )
          outage = undefined
        }
        const reason = yield* follow(read.success.revision + 1n)
        outage = reason
        yield* logged(
          Effect.logWarning(`etcd watch ${reason}; keeping the last ${known.size} known instance(s), resuming`),
          prefix
        )
        yield* Effect.sleep(delay)
        delay = Math.min(delay * 2, options.retryMaxMs)
      }
    })
  )
