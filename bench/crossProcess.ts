// Shared by the benchmarks: a worker (or baseline) in a child process, the env that puts the
// recommended mode on loopback with file discovery, and the router's layer for that env.
import { fork } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { join } from "node:path"
import { Layer } from "effect"
import * as FileDiscovery from "../src/discovery/FileDiscovery.ts"
import { TransportConfig } from "../src/TransportConfig.ts"
import * as TransportRegistry from "../src/registry/index.ts"

const root = new URL("..", import.meta.url).pathname

/** Forks `script` (relative to the project) and resolves with its first stdout line. */
export const startChild = (script: string, args: ReadonlyArray<string>, env: Record<string, string>) =>
  new Promise<{ child: ChildProcess; firstLine: string }>((resolve, reject) => {
    const child = fork(join(root, script), args, {
      env: { ...process.env, ...env },
      execArgv: ["--no-warnings"],
      stdio: ["ignore", "pipe", "inherit", "ipc"]
    })
    let buf = ""
    child.stdout!.on("data", (c: Buffer) => {
      buf += c.toString()
      const nl = buf.indexOf("\n")
      if (nl >= 0) resolve({ child, firstLine: buf.slice(0, nl) })
    })
    child.on("exit", (code) => reject(new Error(`${script} exited with ${code}`)))
  })

/** HTTP request plane + TCP call-home on loopback, ephemeral ports, file discovery in `dir`. */
export const recommendedEnv = (dir: string, extra: Record<string, string> = {}): Record<string, string> => ({
  DYN_REQUEST_PLANE: "http",
  DYN_RESPONSE_PLANE: "tcp",
  DYN_DISCOVERY_BACKEND: "file",
  DYN_DISCOVERY_PATH: dir,
  DYN_HTTP_RPC_HOST: "127.0.0.1",
  DYN_HTTP_RPC_PORT: "0",
  DYN_TCP_RESPONSE_HOST: "127.0.0.1",
  DYN_TCP_RESPONSE_PORT: "0",
  DYN_METRICS_PORT: "0",
  DYN_LOG: "warn",
  ...extra
})

/** The router's side for `env`: its transports and file discovery. */
export const routerLayer = (env: Record<string, string>) =>
  Layer.mergeAll(TransportRegistry.layerFromConfig, FileDiscovery.layer).pipe(
    Layer.provideMerge(TransportConfig.layerFromRecord(env))
  )
