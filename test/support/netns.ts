/**
 * Several "hosts" on one machine, for multi-host tests: Linux network namespaces joined by veth
 * pairs to a bridge, each with its own address on a private /24, and processes started inside
 * them (`ip netns exec`). Needs `ip` (Debian `iproute2`) and root (CAP_NET_ADMIN).
 *
 * Layout, for `makeTopology(["infra", "worker"])` in this process (pid P):
 *
 *   namespace trmhP-br      bridge br0, with veth ends v-infra, v-worker (all up)
 *   namespace trmhP-infra   eth0 = 10.213.77.1/24, lo up
 *   namespace trmhP-worker  eth0 = 10.213.77.2/24, lo up
 *
 * Nothing is created in the root namespace: each veth pair is created with its ends already in
 * their namespaces, so every link goes away with its namespace, and the host's own addresses
 * and routes are never involved (the subnet cannot clash with them). `linkDown` cuts a host off
 * like a pulled cable (its bridge-side veth end down).
 *
 * Clean-up is by name: `destroy` SIGKILLs every process left in the namespaces (`ip netns pids`)
 * and deletes them; the same runs when this process exits; `cleanStale` removes what a crashed
 * run left behind (namespaces with the prefix whose owner pid is gone, with their processes, any
 * root link with the prefix, and `tempDir`s of dead pids). It does not start servers: callers
 * spawn them with `spawnIn`.
 */
import { execFileSync, spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

/** The prefix of every namespace (and link) these helpers create: `trmh<pid>-<host>`. */
export const NETNS_PREFIX = "trmh"

/** The first three octets of the hosts' addresses (host i gets `.i+1`). */
export const SUBNET = "10.213.77"

const ipCommand = (args: ReadonlyArray<string>): string =>
  execFileSync("ip", [...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })

/**
 * Throws a message that says what to do when this machine cannot run namespace tests: `ip`
 * missing (install Debian `iproute2`), or not root.
 */
export const requireNetns = (): void => {
  try {
    ipCommand(["-V"])
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      throw new Error(
        "the multi-host test needs `ip` from iproute2 on PATH: install it with `apt-get install iproute2` (Debian/Ubuntu); scripts/test.sh installs it when missing"
      )
    }
    throw e
  }
  if (process.getuid?.() !== 0) {
    throw new Error("the multi-host test creates network namespaces and veth pairs: run it as root (or with CAP_NET_ADMIN and CAP_SYS_ADMIN)")
  }
}

/** The namespaces that exist, by name. */
export const listNamespaces = (): ReadonlyArray<string> =>
  ipCommand(["netns", "list"]).split("\n").map((l) => l.split(" ")[0]!).filter((n) => n !== "")

/** Whether `pid` is a running process (a zombie, killed but not yet reaped, is not). */
const alive = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z"
  } catch {
    return false
  }
}

/** SIGKILLs every process in namespace `name`, waits (up to 3 s) for them to go, and deletes it. */
export const deleteNamespace = (name: string): void => {
  let pids: Array<number> = []
  try {
    pids = ipCommand(["netns", "pids", name]).split("\n").filter((l) => l !== "").map(Number)
  } catch {
    // gone already
  }
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      // gone already
    }
  }
  const deadline = Date.now() + 3_000
  while (pids.some(alive) && Date.now() < deadline) execFileSync("sleep", ["0.05"])
  try {
    ipCommand(["netns", "del", name])
  } catch {
    // gone already
  }
}

/** Whether `name` is `trmh<pid>-...` with a pid that is not a live process. */
const stale = (name: string): boolean => {
  const m = new RegExp(`^${NETNS_PREFIX}(\\d+)-`).exec(name)
  return m !== null && !alive(Number(m[1]))
}

/**
 * Removes what a crashed run left: every namespace named `trmh<pid>-*` whose pid is not a live
 * process (with the processes still in it), every root-namespace link whose name starts with
 * the prefix, and `tempDir`s of dead pids. A run still going (another test process) is left alone.
 */
export const cleanStale = (): ReadonlyArray<string> => {
  const removed: Array<string> = []
  for (const name of listNamespaces()) {
    if (!stale(name)) continue
    deleteNamespace(name)
    removed.push(name)
  }
  for (const name of readdirSync(tmpdir())) {
    if (!stale(name)) continue
    rmSync(join(tmpdir(), name), { recursive: true, force: true })
    removed.push(name)
  }
  for (const line of ipCommand(["-o", "link", "show"]).split("\n")) {
    const link = /^\d+:\s+([^:@\s]+)/.exec(line)?.[1]
    if (link !== undefined && link.startsWith(NETNS_PREFIX)) {
      try {
        ipCommand(["link", "del", link])
        removed.push(link)
      } catch {
        // gone already
      }
    }
  }
  return removed
}

/** A fresh temp directory named for this process (`trmh<pid>-<label>-XXXXXX`), so `cleanStale` finds it after a crash. */
export const tempDir = (label: string): string => mkdtempSync(join(tmpdir(), `${NETNS_PREFIX}${process.pid}-${label}-`))

/** One emulated host: its namespace, its address, and the bridge-side end of its veth pair. */
export interface Host {
  readonly name: string
  readonly ns: string
  readonly address: string
  /** The veth end in the bridge namespace: down = this host is cut off. */
  readonly link: string
}

/** Hosts on one bridge. */
export interface Topology {
  readonly prefix: string
  readonly bridgeNs: string
  readonly hosts: Readonly<Record<string, Host>>
  /** Cuts `host` off (its link down on the bridge side, so its own eth0 loses carrier). */
  readonly linkDown: (host: string) => void
  readonly linkUp: (host: string) => void
  /** Runs `command args` in `host`'s namespace and returns its stdout. */
  readonly exec: (host: string, command: string, args: ReadonlyArray<string>) => string
  /** Kills every process left in the namespaces and deletes them (idempotent). */
  readonly destroy: () => void
}

const live = new Set<Topology>()
const children = new Set<ChildProcess>()
let exitHook = false
const onExit = () => {
  if (exitHook) return
  exitHook = true
  process.once("exit", () => {
    for (const c of children) {
      try {
        if (c.pid !== undefined) process.kill(c.pid, "SIGKILL")
      } catch {
        // gone already
      }
    }
    for (const t of live) t.destroy()
  })
}

/**
 * Creates one namespace per host name, plus the bridge's, named `trmh<pid>-<name>` (names of at
 * most 6 characters: interface names are limited to 15), and joins them; host i (from 0) gets
 * `SUBNET.(i+1)`. On a failure half-way, what was created is deleted before the error is thrown.
 */
export const makeTopology = (names: ReadonlyArray<string>): Topology => {
  const prefix = `${NETNS_PREFIX}${process.pid}`
  const bridgeNs = `${prefix}-br`
  const hosts: Record<string, Host> = {}
  names.forEach((name, i) => {
    hosts[name] = { name, ns: `${prefix}-${name}`, address: `${SUBNET}.${i + 1}`, link: `v-${name}` }
  })
  const all = [bridgeNs, ...Object.values(hosts).map((h) => h.ns)]
  let destroyed = false
  const topology: Topology = {
    prefix,
    bridgeNs,
    hosts,
    linkDown: (host) => void ipCommand(["-n", bridgeNs, "link", "set", hosts[host]!.link, "down"]),
    linkUp: (host) => void ipCommand(["-n", bridgeNs, "link", "set", hosts[host]!.link, "up"]),
    exec: (host, command, args) =>
      execFileSync("ip", ["netns", "exec", hosts[host]!.ns, command, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }),
    destroy: () => {
      if (destroyed) return
      destroyed = true
      live.delete(topology)
      for (const ns of all) deleteNamespace(ns)
    }
  }
  onExit()
  live.add(topology)
  try {
    for (const ns of all) {
      ipCommand(["netns", "add", ns])
      ipCommand(["-n", ns, "link", "set", "lo", "up"])
    }
    ipCommand(["-n", bridgeNs, "link", "add", "br0", "type", "bridge"])
    ipCommand(["-n", bridgeNs, "link", "set", "br0", "up"])
    for (const h of Object.values(hosts)) {
      ipCommand(["link", "add", h.link, "netns", bridgeNs, "type", "veth", "peer", "name", "eth0", "netns", h.ns])
      ipCommand(["-n", bridgeNs, "link", "set", h.link, "master", "br0"])
      ipCommand(["-n", bridgeNs, "link", "set", h.link, "up"])
      ipCommand(["-n", h.ns, "addr", "add", `${h.address}/24`, "dev", "eth0"])
      ipCommand(["-n", h.ns, "link", "set", "eth0", "up"])
    }
  } catch (e) {
    topology.destroy()
    throw e
  }
  return topology
}

/** A process started in a namespace, its stdout read line by line. */
export interface NsProcess {
  readonly child: ChildProcess
  /** Every stdout line so far. */
  readonly lines: () => ReadonlyArray<string>
  /** stdout and stderr so far (the last 100 kB), for failure messages. */
  readonly output: () => string
  /**
   * Resolves with the first value `check` returns that is not undefined; `check` runs now and
   * after each chunk of output. Rejects after `timeoutMs`, or when the process exits first, with
   * its output.
   */
  readonly waitFor: <A>(check: () => A | undefined, timeoutMs: number) => Promise<A>
  /** Resolves once it exited, with its exit code (or signal). */
  readonly exited: Promise<number | string>
  /** Writes one line to its stdin. */
  readonly send: (line: string) => void
  /** SIGKILLs it by pid and waits for its exit. */
  readonly kill: () => Promise<void>
}

/**
 * Starts `command args` in namespace `ns` with exactly `env` (plus this process's PATH and HOME):
 * `ip netns exec <ns> env -i ... command args`. `ip` and `env` exec, so the child's pid is the
 * command's. It is SIGKILLed when this process exits.
 */
export const spawnIn = (
  ns: string,
  env: Readonly<Record<string, string>>,
  command: string,
  args: ReadonlyArray<string>
): NsProcess => {
  const base: Record<string, string> = { PATH: process.env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin" }
  if (process.env["HOME"] !== undefined) base["HOME"] = process.env["HOME"]
  const assignments = Object.entries({ ...base, ...env }).map(([k, v]) => `${k}=${v}`)
  const child = spawn("ip", ["netns", "exec", ns, "env", "-i", ...assignments, command, ...args], {
    stdio: ["pipe", "pipe", "pipe"]
  })
  onExit()
  children.add(child)
  child.once("exit", () => children.delete(child))
  child.stdin!.on("error", () => {}) // writes after its exit
  const lines: Array<string> = []
  let output = ""
  let partial = ""
  const waiters = new Set<() => void>()
  const append = (text: string) => {
    output += text
    if (output.length > 100_000) output = output.slice(-50_000)
  }
  child.stdout!.on("data", (chunk: Buffer) => {
    const text = chunk.toString()
    append(text)
    const parts = (partial + text).split("\n")
    partial = parts.pop()!
    lines.push(...parts)
    for (const w of [...waiters]) w()
  })
  child.stderr!.on("data", (chunk: Buffer) => {
    append(chunk.toString())
    for (const w of [...waiters]) w()
  })
  const exited = new Promise<number | string>((resolve) =>
    child.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown"))
  )
  return {
    child,
    lines: () => lines,
    output: () => output,
    exited,
    waitFor: <A>(check: () => A | undefined, timeoutMs: number) =>
      new Promise<A>((resolve, reject) => {
        const now = check()
        if (now !== undefined) return resolve(now)
        const done = () => {
          clearTimeout(timer)
          waiters.delete(waiter)
        }
        const waiter = () => {
          const a = check()
          if (a !== undefined) {
            done()
            resolve(a)
          }
        }
        const timer = setTimeout(() => {
          done()
          reject(new Error(`${command} in ${ns}: not there within ${timeoutMs} ms; output:\n${output}`))
        }, timeoutMs)
        waiters.add(waiter)
        void exited.then((how) => {
          if (!waiters.has(waiter)) return
          done()
          reject(new Error(`${command} in ${ns} exited (${how}) first; output:\n${output}`))
        })
      }),
    send: (line) => void child.stdin!.write(`${line}\n`),
    kill: async () => {
      try {
        if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, "SIGKILL")
      } catch {
        // gone already
      }
      await exited
    }
  }
}
