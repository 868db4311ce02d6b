/**
 * Real servers for tests, started on free loopback ports and stopped by pid: nats-server
 * (`startNatsServer`) and etcd (`startEtcd`), and a worker in a process of its own
 * (`startPeerWorker`). Each starter also kills its process when the test process exits, so a test
 * that fails (or a worker that dies) leaves nothing behind.
 *
 * A binary missing from PATH fails the start with a message that says how to install it.
 */
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"
import type { Scope } from "effect"

// ---- shared: a child process that is ready once it printed a line ------------------------------

/** Every child a starter spawned and has not seen exit: killed when the test process exits. */
const live = new Set<ChildProcess>()
let exitHook = false
const killOnExit = (child: ChildProcess) => {
  live.add(child)
  child.once("exit", () => live.delete(child))
  if (!exitHook) {
    exitHook = true
    process.once("exit", () => {
      for (const c of live) {
        try {
          if (c.pid !== undefined) process.kill(c.pid, "SIGKILL")
        } catch {
          // gone already
        }
      }
    })
  }
}

/** Resolves once the child exited (at once if it has). */
export const exited = (child: ChildProcess): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve()
    else child.once("exit", () => resolve())
  })

/** SIGKILLs `child` by pid and waits for its exit. */
export const killByPid = async (child: ChildProcess): Promise<void> => {
  try {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, "SIGKILL")
  } catch {
    // gone already
  }
  await exited(child)
}

/**
 * Spawns `command args`, and resolves once `ready` matches its output (stdout and stderr together),
 * with the match; rejects when it exits first or takes longer than `timeoutMs`. `install` is the
 * hint given when the binary is missing.
 */
export const spawnUntilReady = (
  command: string,
  args: ReadonlyArray<string>,
  ready: RegExp,
  install: string,
  timeoutMs = 10_000
): Promise<{ readonly child: ChildProcess; readonly match: RegExpMatchArray; readonly output: () => string }> =>
  new Promise((resolve, reject) => {
    const child = spawn(command, [...args], { stdio: ["ignore", "pipe", "pipe"] })
    killOnExit(child)
    let output = ""
    let done = false
    const finish = (error: Error | undefined, match?: RegExpMatchArray) => {
      if (done) return
      done = true
      clearTimeout(timer)
      if (error !== undefined) {
        void killByPid(child)
        reject(error)
      } else resolve({ child, match: match!, output: () => output })
    }
    const timer = setTimeout(() => finish(new Error(`${command} was not ready within ${timeoutMs} ms:\n${output}`)), timeoutMs)
    const onData = (chunk: Buffer) => {
      output += chunk.toString()
      if (output.length > 100_000) output = output.slice(-50_000)
      const m = ready.exec(output)
      if (m !== null) finish(undefined, m)
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    child.once("error", (e: NodeJS.ErrnoException) =>
      finish(e.code === "ENOENT" ? new Error(`${command} is not on PATH: ${install}`) : e))
    child.once("exit", (code, signal) => finish(new Error(`${command} exited (${code ?? signal}) before it was ready:\n${output}`)))
  })

// ---- nats-server -------------------------------------------------------------------------------

/** How to get nats-server when it is missing. */
export const NATS_INSTALL_HINT =
  "install it with `apt-get install nats-server` (Debian/Ubuntu), or put the binary from https://github.com/nats-io/nats-server/releases on PATH"

/** Options of `startNatsServer`. */
export interface NatsServerOptions {
  /** The port (default: a free one, picked by nats-server). */
  readonly port?: number | undefined
  /** nats-server's `max_payload` in bytes (default: its own, 1 MiB), through a config file. */
  readonly maxPayload?: number | undefined
}

/** A running nats-server on 127.0.0.1. */
export interface NatsServer {
  /** `nats://127.0.0.1:<port>`: the value of `NATS_SERVER`. */
  readonly url: string
  readonly port: number
  /** The pid of the current process (a restart changes it); undefined while killed. */
  readonly pid: () => number | undefined
  /** SIGKILLs it; it stays down until `restart`. */
  readonly kill: () => Promise<void>
  /** SIGKILLs it if it runs, then starts it again on the same port with the same options. */
  readonly restart: () => Promise<void>
  /** Kills it and removes its files; it cannot be restarted afterwards. */
  readonly stop: () => Promise<void>
}

/** Starts nats-server on 127.0.0.1; resolves once it is ready for clients. */
export const startNatsServer = async (options: NatsServerOptions = {}): Promise<NatsServer> => {
  const dir = mkdtempSync(join(tmpdir(), "nats-server-"))
  const args = ["-a", "127.0.0.1"]
  if (options.maxPayload !== undefined) {
    const config = join(dir, "nats.conf")
    writeFileSync(config, `max_payload: ${options.maxPayload}\n`)
    args.push("-c", config)
  }
  const run = (port: number) =>
    spawnUntilReady("nats-server", [...args, "-p", String(port)], /Listening for client connections on [^\s]+:(\d+)[\s\S]*Server is ready/, NATS_INSTALL_HINT)
  let current: ChildProcess | undefined
  let stopped = false
  try {
    const first = await run(options.port ?? -1)
    current = first.child
    const port = Number(first.match[1])
    const kill = async () => {
      const c = current
      current = undefined
      if (c !== undefined) await killByPid(c)
    }
    return {
      url: `nats://127.0.0.1:${port}`,
      port,
      pid: () => current?.pid,
      kill,
      restart: async () => {
        if (stopped) throw new Error("nats-server was stopped; start another")
        await kill()
        current = (await run(port)).child
      },
      stop: async () => {
        stopped = true
        await kill()
        rmSync(dir, { recursive: true, force: true })
      }
    }
  } catch (e) {
    rmSync(dir, { recursive: true, force: true })
    throw e
  }
}

/** `startNatsServer` as a scoped resource: stopped when the scope closes. */
export const natsServer = (options: NatsServerOptions = {}): Effect.Effect<NatsServer, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(() => startNatsServer(options)),
    (server) => Effect.promise(() => server.stop())
  )

// ---- etcd --------------------------------------------------------------------------------------

/** How to get etcd when it is missing. */
export const ETCD_INSTALL_HINT =
  "install it with `apt-get install etcd-server` (Debian/Ubuntu), or put the etcd binary from https://github.com/etcd-io/etcd/releases on PATH"

/** A free TCP port on 127.0.0.1 (free when asked; the caller binds it right away). */
const freeLoopbackPort = (): Promise<number> =>
  new Promise<number>((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() => (typeof address === "object" && address !== null ? resolve(address.port) : reject(new Error("no port"))))
    })
  })

/** A running single-member etcd on 127.0.0.1, with its data in a temp directory. */
export interface EtcdServer {
  /** `http://127.0.0.1:<client port>`: the value of `ETCD_ENDPOINTS`. */
  readonly endpoints: string
  /** The pid of the current process (a restart changes it); undefined while down. */
  readonly pid: () => number | undefined
  /** SIGSTOPs it: connections stay open, nothing answers. */
  readonly pause: () => void
  /** SIGCONTs it after `pause`. */
  readonly resume: () => void
  /** SIGKILLs it; it stays down (its data kept) until `restart`. */
  readonly kill: () => Promise<void>
  /** Kills it if it runs, then starts it again on the same ports and data directory. */
  readonly restart: () => Promise<void>
  /** Kills it and removes its data; it cannot be restarted afterwards. */
  readonly stop: () => Promise<void>
}

/** Starts etcd on free loopback ports with a fresh data directory; resolves once it serves clients. */
export const startEtcd = async (): Promise<EtcdServer> => {
  const dir = mkdtempSync(join(tmpdir(), "etcd-"))
  let current: ChildProcess | undefined
  let stopped = false
  try {
    const clientPort = await freeLoopbackPort()
    const peerPort = await freeLoopbackPort()
    const client = `http://127.0.0.1:${clientPort}`
    const peer = `http://127.0.0.1:${peerPort}`
    const args = [
      "--name", "test",
      "--data-dir", join(dir, "data"),
      "--listen-client-urls", client,
      "--advertise-client-urls", client,
      "--listen-peer-urls", peer,
      "--initial-advertise-peer-urls", peer,
      "--initial-cluster", `test=${peer}`
    ]
    const run = async () => (await spawnUntilReady("etcd", args, /ready to serve client requests/, ETCD_INSTALL_HINT, 20_000)).child
    current = await run()
    const signal = (name: NodeJS.Signals) => {
      if (current?.pid !== undefined) process.kill(current.pid, name)
    }
    const kill = async () => {
      const c = current
      current = undefined
      if (c === undefined) return
      try {
        if (c.pid !== undefined) process.kill(c.pid, "SIGCONT") // a paused etcd dies only once resumed
      } catch {
        // gone already
      }
      await killByPid(c)
    }
    return {
      endpoints: client,
      pid: () => current?.pid,
      pause: () => signal("SIGSTOP"),
      resume: () => signal("SIGCONT"),
      kill,
      restart: async () => {
        if (stopped) throw new Error("etcd was stopped; start another")
        await kill()
        current = await run()
      },
      stop: async () => {
        stopped = true
        await kill()
        rmSync(dir, { recursive: true, force: true })
      }
    }
  } catch (e) {
    if (current !== undefined) await killByPid(current)
    rmSync(dir, { recursive: true, force: true })
    throw e
  }
}

// ---- a worker in its own process ---------------------------------------------------------------

const peerWorkerScript = new URL("../contract/peerWorker.ts", import.meta.url).pathname

/**
 * Starts `test/contract/peerWorker.ts` serving `path` (http request plane + tcp response plane on
 * loopback, free ports) with `env` on top (the discovery settings); resolves with the child and
 * its instance id once it is registered in discovery. Only `env` and non-transport variables of
 * this process reach it. Kill it with `killByPid`; it is also killed when the test process exits.
 */
export const startPeerWorker = (
  path: string,
  env: Readonly<Record<string, string>>
): Promise<{ readonly child: ChildProcess; readonly instanceId: bigint }> =>
  new Promise((resolve, reject) => {
    const inherited = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !/^(DYN_|OTEL_|ETCD_)/.test(k) && k !== "NATS_SERVER")
    )
    const child = spawn(process.execPath, ["--experimental-strip-types", "--no-warnings", peerWorkerScript, path, "10"], {
      env: {
        ...inherited,
        DYN_REQUEST_PLANE: "http",
        DYN_HTTP_RPC_HOST: "127.0.0.1",
        DYN_HTTP_RPC_PORT: "0",
        DYN_RESPONSE_PLANE: "tcp",
        DYN_TCP_RESPONSE_HOST: "127.0.0.1",
        DYN_TCP_RESPONSE_PORT: "0",
        ...env
      },
      stdio: ["ignore", "pipe", "pipe"]
    })
    killOnExit(child)
    let out = ""
    let err = ""
    const timer = setTimeout(() => {
      void killByPid(child)
      reject(new Error(`peer worker not ready within 20 s: ${out}${err}`))
    }, 20_000)
    child.stderr!.on("data", (c: Buffer) => void (err += c.toString()))
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString()
      const m = /"instance_id":"([0-9a-f]+)"/.exec(out)
      if (m !== null) {
        clearTimeout(timer)
        resolve({ child, instanceId: BigInt(`0x${m[1]}`) })
      }
    })
    child.once("exit", (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`peer worker exited (${code ?? signal}) before it was ready: ${out}${err}`))
    })
  })
