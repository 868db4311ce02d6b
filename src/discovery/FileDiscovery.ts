/**
 * The `file` discovery backend: one JSON record per instance in a shared directory, so
 * processes on one host find each other without a server.
 *
 * Layout mirrors the etcd keys: `{dir}/v1/instances/{ns}/{component}/{endpoint}/{id hex}.json`
 * holds the record exactly as PROTOCOL.md section 5 writes it, and `{id hex}.pid` the owner's
 * pid. A record whose owner process is gone (killed without cleanup: `kill(pid, 0)` says ESRCH)
 * is pruned by the next `list` or `watch` poll that sees it: its files are removed from disk and
 * it is not returned, as an expired etcd lease would be. A record that does not decode is logged
 * once and skipped. Watching polls the endpoint's directory (every 250 ms by default) and
 * reports the differences. It does not lock: writers never share a file, and two readers pruning
 * the same record both succeed. It cannot tell a dead owner whose pid was reused by another
 * process (that record stays until the new process ends).
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Effect, Layer, Queue, Stream } from "effect"
import { Discovery, DiscoveryError, endpointPrefix, instanceKey } from "../Discovery.ts"
import type { DiscoveryEvent, DiscoveryShape } from "../Discovery.ts"
import { instanceFromJson, instanceToJson, randomInstanceId } from "../Instance.ts"
import type { EndpointPath, Instance } from "../Instance.ts"
import { TransportConfig } from "../TransportConfig.ts"

/** Options of the file backend. */
export interface FileDiscoveryOptions {
  readonly directory: string
  /** How often `watch` re-reads the directory, in ms (default 250). */
  readonly pollIntervalMs?: number | undefined
}

/** False only when no process has `pid` (ESRCH); a process we may not signal (EPERM) is alive. */
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== "ESRCH"
  }
}

const errorCode = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | undefined)?.code

/** A `file` discovery over `options.directory`. */
export const make = (options: FileDiscoveryOptions): DiscoveryShape => {
  const pollMs = options.pollIntervalMs ?? 250
  const dirOf = (p: EndpointPath) => path.join(options.directory, endpointPrefix(p))
  const fail = (reason: DiscoveryError["reason"], detail: string) => (cause: unknown) =>
    new DiscoveryError({ backend: "file", reason, detail: `${detail}: ${String((cause as Error)?.message ?? cause)}`, cause })

  /** Bad record files already logged (each is logged once). */
  const reported = new Set<string>()

  /** The live records of an endpoint, pruning those of dead owners; the problems to log. */
  const scan = async (p: EndpointPath): Promise<{ readonly instances: Array<Instance>; readonly problems: Array<string> }> => {
    const dir = dirOf(p)
    const instances: Array<Instance> = []
    const problems: Array<string> = []
    let names: Array<string>
    try {
      names = await fs.readdir(dir)
    } catch (e) {
      if (errorCode(e) === "ENOENT") return { instances, problems }
      throw e
    }
    for (const name of names) {
      if (!name.endsWith(".json")) continue
      const base = path.join(dir, name.slice(0, -5))
      let pidText: string
      let text: string
      try {
        pidText = await fs.readFile(`${base}.pid`, "utf8")
        text = await fs.readFile(`${base}.json`, "utf8")
      } catch {
        continue // a record being written or removed right now; the next read sees it whole
      }
      const pid = Number(pidText)
      if (!Number.isInteger(pid) || pid <= 0) continue // a pid file being written right now
      if (!alive(pid)) {
        await Promise.allSettled([fs.rm(`${base}.json`, { force: true }), fs.rm(`${base}.pid`, { force: true })])
        problems.push(`pruned the record ${name}: its owner process ${pid} is gone`)
        continue
      }
      try {
        instances.push(instanceFromJson(text))
        reported.delete(base)
      } catch (e) {
        if (!reported.has(base)) problems.push(`skipping the bad record ${path.join(dir, name)}: ${(e as Error).message}`)
        reported.add(base)
      }
    }
    return { instances, problems }
  }

  const read = (p: EndpointPath): Effect.Effect<ReadonlyArray<Instance>, DiscoveryError> =>
    Effect.tryPromise({ try: () => scan(p), catch: fail("Unavailable", `cannot read ${dirOf(p)}`) }).pipe(
      Effect.tap(({ problems }) =>
        Effect.forEach(problems, (problem) => Effect.logWarning(problem), { discard: true }).pipe(
          Effect.annotateLogs({ module: "discovery.file" })
        )
      ),
      Effect.map(({ instances }) => instances)
    )

  return {
    backend: "file",
    instanceId: Effect.sync(randomInstanceId),
    register: (instance) =>
      Effect.acquireRelease(
        Effect.tryPromise({
          try: async () => {
            const file = path.join(options.directory, instanceKey(instance))
            await fs.mkdir(path.dirname(file), { recursive: true })
            await fs.writeFile(`${file}.pid`, String(process.pid))
            await fs.writeFile(`${file}.json.tmp`, instanceToJson(instance))
            await fs.rename(`${file}.json.tmp`, `${file}.json`)
            return file
          },
          catch: fail("WriteFailed", `cannot write the record of ${instance.instance_id.toString(16)}`)
        }),
        (file) => Effect.promise(() => Promise.allSettled([fs.rm(`${file}.json`, { force: true }), fs.rm(`${file}.pid`, { force: true })]))
      ).pipe(Effect.asVoid),
    list: read,
    watch: (p) =>
      Stream.callback<DiscoveryEvent, DiscoveryError>((queue) =>
        Effect.gen(function*() {
          let known = new Map<bigint, Instance>()
          const first = yield* read(p)
          for (const i of first) known.set(i.instance_id, i)
          Queue.offerUnsafe(queue, { _tag: "Snapshot", instances: first })
          while (true) {
            yield* Effect.sleep(pollMs)
            const now = yield* read(p)
            const next = new Map(now.map((i) => [i.instance_id, i] as const))
            for (const [id, i] of next) if (!known.has(id)) Queue.offerUnsafe(queue, { _tag: "Added", instance: i })
            for (const [id, i] of known) if (!next.has(id)) Queue.offerUnsafe(queue, { _tag: "Removed", instance: i })
            known = next
          }
        })
      )
  }
}

/** The `file` backend on `DYN_DISCOVERY_PATH`. */
export const layer: Layer.Layer<Discovery, never, TransportConfig> = Layer.effect(
  Discovery,
  Effect.map(TransportConfig, (config) => make({ directory: config.discoveryPath }))
)
