/**
 * A full-mode worker in its own process, for peer-death tests: serves "ns/comp/ep" with a handler
 * that sends one item every 10 ms without end, and prints its port on stdout once listening.
 * Run with `node --experimental-strip-types test/support/tcpFullWorker.ts`.
 */
import { startWorker } from "./tcpFull.ts"

const worker = await startWorker({ heartbeatIntervalMs: 1000 })
worker.serve("ns/comp/ep", (_message, writer) => {
  writer.prologue()
  let i = 0
  const timer = setInterval(() => writer.send(i++), 10)
  writer.onDisconnect(() => clearInterval(timer))
  writer.onControl(() => {
    clearInterval(timer)
    writer.close()
  })
})
process.stdout.write(`${worker.port}\n`)
