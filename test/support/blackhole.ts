/**
 * A TCP listener whose accept queue is full, so a new connect to it hangs in SYN-SENT: the one
 * reliable way to make a loopback connect time out. A python3 process listens with backlog 0
 * and never accepts; one filler connection takes the only queue slot. Stopped by its pid.
 */
import { spawn } from "node:child_process"
import * as net from "node:net"
import { Effect } from "effect"

const LISTENER = [
  "import socket, sys, time",
  "s = socket.socket()",
  "s.bind(('127.0.0.1', 0))",
  "s.listen(0)",
  "print(s.getsockname()[1], flush=True)",
  "time.sleep(600)"
].join("\n")

/** The address of a listener that never completes a new connection, for the life of the scope. */
export const blackhole = Effect.acquireRelease(
  Effect.promise(async () => {
    const child = spawn("python3", ["-c", LISTENER], { stdio: ["ignore", "pipe", "inherit"] })
    const port = await new Promise<number>((resolve, reject) => {
      child.once("error", reject)
      child.stdout!.once("data", (d: Buffer) => resolve(Number(String(d).trim())))
    })
    // The filler takes the accept queue's only slot; it connects at once.
    const filler = net.connect({ host: "127.0.0.1", port })
    await new Promise<void>((resolve, reject) => {
      filler.once("connect", () => resolve())
      filler.once("error", reject)
    })
    return { address: `127.0.0.1:${port}`, host: "127.0.0.1", port, child, filler }
  }),
  ({ child, filler }) =>
    Effect.sync(() => {
      filler.destroy()
      if (child.pid !== undefined) {
        try {
          process.kill(child.pid, "SIGKILL")
        } catch {
          // already gone
        }
      }
    })
)
