/**
 * The nats-server a benchmark run starts for its NATS rows: `nats-server -a 127.0.0.1 -p -1` (a
 * free loopback port), ready once it says so; stopped by pid. When the binary is missing or does
 * not start, the start fails with the reason, and the NATS rows are unavailable.
 */
import { spawn } from "node:child_process"

/** A running nats-server. */
export interface NatsServer {
  readonly url: string
  readonly stop: () => void
}

/** Starts nats-server on a free loopback port; rejects after `timeoutMs` or when it exits first. */
export const startNatsServer = (timeoutMs = 10_000): Promise<NatsServer> =>
  new Promise((resolve, reject) => {
    const child = spawn("nats-server", ["-a", "127.0.0.1", "-p", "-1"], { stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    let settled = false
    const stop = () => {
      try {
        if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, "SIGKILL")
      } catch {
        // gone already
      }
    }
    const onExit = () => stop()
    process.once("exit", onExit)
    const fail = (why: string) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      stop()
      process.removeListener("exit", onExit)
      reject(new Error(why))
    }
    const timer = setTimeout(() => fail(`nats-server was not ready within ${timeoutMs} ms: ${output.slice(-300)}`), timeoutMs)
    const onData = (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-20_000)
      const m = /Listening for client connections on [^\s]*:(\d+)[\s\S]*Server is ready/.exec(output)
      if (m !== null && !settled) {
        settled = true
        clearTimeout(timer)
        resolve({
          url: `nats://127.0.0.1:${m[1]}`,
          stop: () => {
            stop()
            process.removeListener("exit", onExit)
          }
        })
      }
    }
    child.stdout.on("data", onData)
    child.stderr.on("data", onData)
    child.once("error", (e: NodeJS.ErrnoException) =>
      fail(e.code === "ENOENT" ? "nats-server is not on PATH (Debian: apt-get install nats-server)" : e.message))
    child.once("exit", (code, signal) => fail(`nats-server exited (${code ?? signal}) before it was ready: ${output.slice(-300)}`))
  })
