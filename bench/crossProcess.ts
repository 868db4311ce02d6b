// Shared by the soak benchmark (bench/soak) and scripts/profile-mode.ts: a worker in a child
// process, the env that puts the recommended mode on loopback with file discovery, and the
// router's layer for that env. (`transport-registry bench`, src/cli/bench, has its own.)
import { fork } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { join } from "node:path"
import { Layer } from "effect"
import { loopbackFileEnv } from "../src/cli/defaults.ts"
import * as FileDiscovery from "../src/discovery/FileDiscovery.ts"
import { TransportConfig } from "../src/TransportConfig.ts"
import * as TransportRegistry from "../src/registry/index.ts"

const root = new URL("..", import.meta.url).pathname

/**
 * Forks `script` (relative to the project) and resolves with its first stdout line. The child's
 * stderr goes to this process's stderr unless `quiet`; if the child exits before its first line,
 * the rejection's message says why, from its logged errors (see `childFailure`). `exited()` says
 * the same after a child that had started exits (undefined while it runs).
 */
export const startChild = (
  script: string,
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  options: { readonly quiet?: boolean } = {}
) =>
  new Promise<{ child: ChildProcess; firstLine: string; exited: () => string | undefined }>((resolve, reject) => {
    const child = fork(join(root, script), args, {
      env: { ...process.env, ...env },
      execArgv: ["--no-warnings"],
      stdio: ["ignore", "pipe", "pipe", "ipc"]
    })
    let buf = ""
    let stderr = ""
    let exitReason: string | undefined
    const exited = () => exitReason
    child.stdout!.on("data", (c: Buffer) => {
      buf += c.toString()
      const nl = buf.indexOf("\n")
      if (nl >= 0) resolve({ child, firstLine: buf.slice(0, nl), exited })
    })
    child.stderr!.on("data", (c: Buffer) => {
      if (options.quiet !== true) process.stderr.write(c)
      stderr = (stderr + c.toString()).slice(-8192)
    })
    child.on("close", (code, signal) => {
      exitReason = `exited with ${signal ?? code}: ${childFailure(script, code, stderr)}`
      reject(new Error(childFailure(script, code, stderr)))
    })
  })

/**
 * Why a child exited: its logged errors (the CLI's logfmt lines), each as `<error tag>: <message>`
 * or its fields, joined by "; "; else its last stderr line; else its exit code.
 */
export const childFailure = (script: string, code: number | null, stderr: string): string => {
  const lines = stderr.split("\n").map((l) => l.trim()).filter((l) => l.length > 0)
  const errors = lines.filter((l) => l.includes("level=ERROR")).map((line) => {
    const message = /message="((?:[^"\\]|\\.)*)"/.exec(line)?.[1]?.replace(/\\(.)/g, "$1")
    const tag = /\berror=(\S+)/.exec(line)?.[1]
    if (message !== undefined && tag !== undefined) return `${tag}: ${message}`
    return line.replace(/^timestamp=\S+ level=ERROR fiber=\S+ /, "")
  })
  const why = errors.length > 0 ? errors.join("; ") : lines.at(-1)
  return why === undefined ? `${script} exited with ${code}` : why.slice(0, 600)
}

/** HTTP request plane + TCP call-home on loopback, ephemeral ports, file discovery in `dir`. */
export const recommendedEnv = (dir: string, extra: Record<string, string> = {}): Record<string, string> => ({
  DYN_REQUEST_PLANE: "http",
  DYN_RESPONSE_PLANE: "tcp",
  ...loopbackFileEnv(dir),
  ...extra
})

/** The router's side for `env`: its transports and file discovery. */
export const routerLayer = (env: Record<string, string>) =>
  Layer.mergeAll(TransportRegistry.layerFromConfig, FileDiscovery.layer).pipe(
    Layer.provideMerge(TransportConfig.layerFromRecord(env))
  )
