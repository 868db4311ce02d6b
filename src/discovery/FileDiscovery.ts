/**
 * The `file` discovery backend: one JSON record per instance in a shared directory, so
 * processes on one host find each other without a server.
 *
 * Layout mirrors the etcd keys: `{dir}/v1/instances/{ns}/{component}/{endpoint}/{id hex}.json`
 * holds the record exactly as PROTOCOL.md section 5 writes it, and `{id hex}.pid` the owner's
 * pid. A record whose owner process is gone (killed without cleanup) is ignored, as an
 * expired etcd lease would be. Watching polls the endpoint's directory (every 250 ms by
 * default) and reports the differences. It does not lock: writers never share a file.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Effect, Layer, Queue, Stream } from "effect"
import { Discovery, DiscoveryError, endpointPrefix, instanceKey } from "../Discovery.ts"
import type { DiscoveryEvent, DiscoveryShape } from "../Discovery.ts"
import { instanceFromJson, instanceToJson } from "../Instance.ts"
import type { EndpointPath, Instance } from "../Instance.ts"
import { TransportConfig } from "../TransportConfig.ts"

/** Options of the file backend. */
export interface FileDiscoveryOptions {
  readonly directory: string
  /** How often `watch` re-reads the directory, in ms (default 250). */
  readonly pollIntervalMs?: number | undefined
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

/** A `file` discovery over `options.directory`. */
export const make = (options: FileDiscoveryOptions): DiscoveryShape => {
  const pollMs = options.pollIntervalMs ?? 250
  const dirOf = (p: EndpointPath) => path.join(options.directory, endpointPrefix(p))
  const fail = (reason: DiscoveryError["reason"], detail: string) => (cause: unknown) =>
    new DiscoveryError({ backend: "file", reason, detail: `${detail}: ${String((cause as Error)?.message ?? cause)}`, cause })

  const read = (p: EndpointPath): Effect.Effect<ReadonlyArray<Instance>, DiscoveryError> =>
    Effect.tryPromise({
      try: async () => {
        const dir = dirOf(p)
        let names: Array<string>
        try {
          names = await fs.readdir(dir)
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "ENOENT") return []
          throw e
        }
        const out: Array<Instance> = []
        for (const name of names) {
          if (!name.endsWith(".json")) continue
          const base = name.slice(0, -5)
          try {
            const pid = Number(await fs.readFile(path.join(dir, `${base}.pid`), "utf8"))
            if (!Number.isInteger(pid) || !alive(pid)) continue
            out.push(instanceFromJson(await fs.readFile(path.join(dir, name), "utf8")))
          } catch {
            // a record being written or removed right now; the next read sees it whole
          }
        }
        return out
      },
      catch: fail("Unavailable", `cannot read ${dirOf(p)}`)
    })

  return {
    backend: "file",
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
