/**
 * A Node child process for the fault-injection tests: a script of `test/support/faults/` run with
 * `--experimental-strip-types`, configured by `DYN_*` in its environment (this process's own
 * transport variables are not passed on) and JSON arguments, that reports what happens to it as
 * one JSON object per stdout line (`{"event": ...}`). The test waits for events, signals the
 * child by pid (SIGKILL, SIGSTOP), and the child is SIGKILLed when the test process exits.
 *
 * `ulimit` starts it through `sh -c 'ulimit -n N; exec node ...'`, so the limit applies to the
 * node process itself (same pid).
 *
 * It does not know what the script does.
 */
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { readFileSync } from "node:fs"
import { exited, killByPid } from "../servers.ts"

/** One line a child printed on stdout. */
export type ChildEvent = { readonly event: string } & Record<string, unknown>

/** A running child. */
export interface FaultChild {
  readonly child: ChildProcess
  readonly pid: number
  /** Every event so far, in order. */
  readonly events: ReadonlyArray<ChildEvent>
  /** Resolves with the first event (past or future) that `match` accepts; rejects after `timeoutMs` or when the child exits first. */
  readonly waitFor: (match: (e: ChildEvent) => boolean, timeoutMs?: number) => Promise<ChildEvent>
  /** stdout and stderr so far (for failure messages). */
  readonly output: () => string
  /** Sends `signal` by pid (no-op once exited). */
  readonly signal: (signal: NodeJS.Signals) => void
  /** SIGKILLs it and waits for the exit. */
  readonly kill: () => Promise<void>
  /** Resolves once it exited. */
  readonly exited: Promise<void>
  /** Writes one JSON line to its stdin. */
  readonly send: (message: unknown) => void
}

/** This process's environment without its transport settings. */
const inheritedEnv = () =>
  Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !/^(DYN_|OTEL_|ETCD_)/.test(k) && k !== "NATS_SERVER")
  ) as Record<string, string>

/** Options of `startChild`. */
export interface ChildOptions {
  /** The script's file name in `test/support/faults/`. */
  readonly script: string
  readonly args?: ReadonlyArray<string> | undefined
  readonly env: Readonly<Record<string, string>>
  /** `ulimit -n` for the child. */
  readonly ulimit?: number | undefined
  /** How long it may take to print its ready line (default 90 s). */
  readonly readyTimeoutMs?: number | undefined
}

/** Starts a child; resolves once it printed `{"event":"ready"}` (within `readyTimeoutMs`, default 90 s: a start takes seconds of CPU, and more on a loaded machine). */
export const startChild = async (options: ChildOptions): Promise<FaultChild> => {
  const script = new URL(`./${options.script}`, import.meta.url).pathname
  const nodeArgs = ["--experimental-strip-types", "--no-warnings", script, ...(options.args ?? [])]
  const env = { ...inheritedEnv(), ...options.env }
  const child = options.ulimit === undefined
    ? spawn(process.execPath, nodeArgs, { env, stdio: ["pipe", "pipe", "pipe"] })
    : spawn("sh", ["-c", `ulimit -n ${options.ulimit} && exec "$0" "$@"`, process.execPath, ...nodeArgs], {
      env,
      stdio: ["pipe", "pipe", "pipe"]
    })
  const onExit = () => {
    try {
      if (child.pid !== undefined) process.kill(child.pid, "SIGKILL")
    } catch {
      // gone
    }
  }
  process.once("exit", onExit)
  child.once("exit", () => process.off("exit", onExit))
  const events: Array<ChildEvent> = []
  const waiters = new Set<() => void>()
  let out = ""
  let partial = ""
  child.stdout!.on("data", (chunk: Buffer) => {
    out += chunk.toString()
    partial += chunk.toString()
    const lines = partial.split("\n")
    partial = lines.pop()!
    for (const line of lines) {
      if (!line.startsWith("{")) continue
      try {
        events.push(JSON.parse(line) as ChildEvent)
      } catch {
        // not ours
      }
    }
    for (const w of [...waiters]) w()
  })
  child.stderr!.on("data", (chunk: Buffer) => {
    out += chunk.toString()
    if (out.length > 200_000) out = out.slice(-100_000)
  })
  child.stdin!.on("error", () => {})
  const done = exited(child)
  const waitFor = (match: (e: ChildEvent) => boolean, timeoutMs = 10_000) =>
    new Promise<ChildEvent>((resolve, reject) => {
      const check = () => {
        const found = events.find(match)
        if (found === undefined) return false
        finish()
        resolve(found)
        return true
      }
      const timer = setTimeout(() => {
        finish()
        reject(new Error(`child ${options.script} (pid ${child.pid}): no such event within ${timeoutMs} ms; output:\n${out.slice(-4000)}`))
      }, timeoutMs)
      const finish = () => {
        clearTimeout(timer)
        waiters.delete(check)
      }
      if (check()) return
      waiters.add(check)
      void done.then(() => {
        if (!check()) {
          finish()
          reject(new Error(`child ${options.script} exited (${child.exitCode ?? child.signalCode}); output:\n${out.slice(-4000)}`))
        }
      })
    })
  const handle: FaultChild = {
    child,
    pid: child.pid!,
    events,
    waitFor,
    output: () => out,
    signal: (signal) => {
      try {
        if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, signal)
      } catch {
        // gone
      }
    },
    kill: () => killByPid(child),
    exited: done,
    send: (message) => void child.stdin!.write(`${JSON.stringify(message)}\n`)
  }
  try {
    await waitFor((e) => e.event === "ready", options.readyTimeoutMs ?? 90_000)
  } catch (e) {
    await killByPid(child)
    throw e
  }
  return handle
}

/** CPU time (user + system) of process `pid` so far, in ms, from /proc/<pid>/stat. */
export const cpuTimeMs = (pid: number): number => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  // Fields 14 and 15 of the file (utime, stime) are 11 and 12 after the command name and state.
  const ticks = Number(fields[11]) + Number(fields[12])
  return (ticks * 1000) / 100 // USER_HZ is 100 on Linux
}
