/**
 * The orchestrator's handle on one benchmark child process: forks it (with an IPC channel), keeps
 * the tail of its stderr to say why it died, and turns its messages into awaitable replies.
 * `ask` sends a message and waits for the reply of the given type (an `error` message, the
 * child's exit or the abort signal rejects it). Killing is by pid, SIGTERM then SIGKILL.
 */
import { fork } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import type { FromChild, ProcessStats, ToChild } from "./ipc.ts"

/** A started child. */
export interface Child {
  readonly pid: number
  /** Its first stdout line (the CLI worker's instance record), once printed. */
  readonly firstLine: Promise<string>
  /** Sends `msg` and waits for the next message of type `reply`. */
  readonly ask: <T extends FromChild["t"]>(msg: ToChild, reply: T, onProgress?: (done: number) => void) => Promise<Extract<FromChild, { t: T }>>
  readonly stats: () => Promise<ProcessStats>
  /** Why it exited (its logged errors or last stderr line), or undefined while it runs. */
  readonly exited: () => string | undefined
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it exited. */
  readonly stop: (graceMs?: number) => Promise<void>
}

/** Why a child exited: its logged errors (logfmt `level=ERROR` lines), else its last stderr line. */
const failure = (code: number | null, signal: string | null, stderr: string): string => {
  const lines = stderr.split("\n").map((l) => l.trim()).filter((l) => l.length > 0)
  const errors = lines.filter((l) => l.includes("level=ERROR")).map((line) => /message="((?:[^"\\]|\\.)*)"/.exec(line)?.[1]?.replace(/\\(.)/g, "$1") ?? line)
  const why = errors.length > 0 ? errors.join("; ") : lines.at(-1)
  return `exited with ${signal ?? code}${why === undefined ? "" : `: ${why.slice(0, 600)}`}`
}

/** Forks `script` (a module URL) with `args`, `env` and `execArgv`. */
export const startChild = (script: URL, args: ReadonlyArray<string>, env: Record<string, string>, execArgv: ReadonlyArray<string>): Child => {
  const child: ChildProcess = fork(script, [...args], { env, execArgv: [...execArgv], stdio: ["ignore", "pipe", "pipe", "ipc"], serialization: "json" })
  let stderr = ""
  let exitReason: string | undefined
  const waiters = new Set<{ readonly type: string; readonly resolve: (m: FromChild) => void; readonly reject: (e: Error) => void; readonly onProgress?: ((done: number) => void) | undefined }>()
  const rejectAll = (e: Error) => {
    for (const w of waiters) w.reject(e)
    waiters.clear()
  }
  child.stderr!.on("data", (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-8192)
  })
  let stdout = ""
  const firstLine = new Promise<string>((resolve, reject) => {
    child.stdout!.on("data", (c: Buffer) => {
      stdout += c.toString()
      const nl = stdout.indexOf("\n")
      if (nl >= 0) resolve(stdout.slice(0, nl))
    })
    child.once("exit", () => reject(new Error(exitReason)))
  })
  firstLine.catch(() => {})
  const done = new Promise<void>((resolve) =>
    child.once("exit", (code, signal) => {
      exitReason = failure(code, signal, stderr)
      rejectAll(new Error(`the child process ${exitReason}`))
      resolve()
    })
  )
  child.on("error", (e) => rejectAll(e))
  child.on("message", (msg: FromChild) => {
    if (msg.t === "error") return rejectAll(new Error(msg.message))
    for (const w of waiters) {
      if (msg.t === "progress" && w.onProgress !== undefined) w.onProgress(msg.done)
      if (w.type === msg.t) {
        waiters.delete(w)
        w.resolve(msg)
      }
    }
  })
  const next = <T extends FromChild["t"]>(type: T, onProgress?: (done: number) => void) =>
    new Promise<Extract<FromChild, { t: T }>>((resolve, reject) => {
      if (exitReason !== undefined) return reject(new Error(`the child process ${exitReason}`))
      waiters.add({ type, resolve: resolve as (m: FromChild) => void, reject, onProgress })
    })
  const ask = <T extends FromChild["t"]>(msg: ToChild, type: T, onProgress?: (done: number) => void) => {
    const reply = next(type, onProgress)
    if (child.connected) child.send(msg)
    return reply
  }
  const kill = (signal: NodeJS.Signals) => {
    try {
      if (child.pid !== undefined && exitReason === undefined) process.kill(child.pid, signal)
    } catch {
      // gone already
    }
  }
  return {
    pid: child.pid ?? -1,
    firstLine,
    ask,
    stats: () => ask({ t: "stats" }, "stats"),
    exited: () => exitReason,
    stop: async (graceMs = 3000) => {
      if (exitReason !== undefined) return
      kill("SIGTERM")
      const timer = setTimeout(() => kill("SIGKILL"), graceMs)
      await done
      clearTimeout(timer)
    }
  }
}
