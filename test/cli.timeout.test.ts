/**
 * `worker` and `call` in two processes as the README's two terminals run them: no DYN_DISCOVERY_*
 * set (the CLI's default file discovery in the OS temp dir), a call that never waits forever
 * (`--timeout`, and the inactivity bound against a worker frozen with SIGSTOP), a request over
 * the handler's bounds, and one log format per process (json on the worker, logfmt on call).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { execFile, spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { tokenLimits } from "../src/cli/tokenHandler.ts"

const main = new URL("../src/cli/main.ts", import.meta.url).pathname
const endpoint = "cli.timeout.generate"

/** The runner's environment without DYN_* / OTEL_*, on loopback, with the OS temp dir in `dir`. */
const envIn = (dir: string): Record<string, string> => ({
  ...Object.fromEntries(
    Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined && !/^(DYN_|OTEL_)/.test(e[0]))
  ),
  TMPDIR: dir,
  DYN_HTTP_RPC_HOST: "127.0.0.1",
  DYN_HTTP_RPC_PORT: "0",
  DYN_TCP_RESPONSE_HOST: "127.0.0.1",
  DYN_METRICS_PORT: "0",
  DYN_LOG: "info"
})

const runCli = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [main, ...args], { env, timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : (error as { code?: number }).code ?? 1, stdout, stderr }))
  })

const exitOf = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode)
    else child.on("exit", (code) => resolve(code))
  })

const logfmtLine = /^timestamp=\S+ level=(TRACE|DEBUG|INFO|WARN|ERROR|FATAL) fiber=#\d+ message=/

const countRecords = (p: string): number =>
  !existsSync(p)
    ? 0
    : readdirSync(p, { withFileTypes: true }).reduce(
      (n, e) => n + (e.isDirectory() ? countRecords(join(p, e.name)) : e.name.endsWith(".json") ? 1 : 0),
      0
    )

describe("worker and call in two processes, with the CLI's defaults", () => {
  let dir = ""
  let env: Record<string, string> = {}
  let worker: ChildProcess | undefined
  let workerStderr = ""

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "cli-timeout-"))
    env = envIn(dir)
    const child = spawn(process.execPath, [main, "worker", "--endpoint", endpoint, "--drain-timeout-ms", "2000", "--log-format", "json"], {
      env,
      stdio: ["ignore", "pipe", "pipe"]
    })
    worker = child
    child.stderr!.on("data", (c: Buffer) => {
      workerStderr += c.toString()
    })
    await new Promise<void>((resolve, reject) => {
      let out = ""
      const timer = setTimeout(() => reject(new Error(`worker did not start: ${workerStderr}`)), 20_000)
      child.stdout!.on("data", (c: Buffer) => {
        out += c.toString()
        if (out.includes("\n")) {
          clearTimeout(timer)
          resolve()
        }
      })
      child.on("exit", (code) => reject(new Error(`worker exited with ${code}: ${workerStderr}`)))
    })
  }, 30_000)

  afterAll(() => {
    if (worker !== undefined && worker.exitCode === null) {
      worker.kill("SIGCONT")
      worker.kill("SIGKILL")
    }
    rmSync(dir, { recursive: true, force: true })
  })

  it("find each other through file discovery in <os temp dir>/transport-registry-discovery", async () => {
    expect(countRecords(join(dir, "transport-registry-discovery"))).toBe(1)
    const { code, stdout, stderr } = await runCli(["call", endpoint, "--data", "{\"prompt\":\"one two\"}"], env)
    expect(code, stderr).toBe(0)
    expect(stdout.trim().split("\n").map((l) => JSON.parse(l))).toEqual([{ index: 0, token: "one" }, { index: 1, token: "two" }])
  }, 30_000)

  it("call --timeout bounds the whole call; a request over a bound fails with a HandlerError naming it", async () => {
    const [timedOut, tooMany] = await Promise.all([
      runCli(["call", endpoint, "--timeout", "800", "--data", "{\"max_tokens\":100,\"delay_ms\":50}"], env),
      runCli(["call", endpoint, "--data", "{\"max_tokens\":2000000}"], env)
    ])
    expect(timedOut.code).not.toBe(0)
    expect(timedOut.stderr).toContain(`call ${endpoint}: not complete within 800 ms (--timeout)`)
    const printed = timedOut.stdout.trim().split("\n").filter((l) => l !== "").length
    expect(printed).toBeGreaterThan(0)
    expect(printed).toBeLessThan(100)
    expect(tooMany.code).not.toBe(0)
    expect(tooMany.stderr).toContain("error=HandlerError")
    expect(tooMany.stderr).toContain(`max_tokens must be an integer from 1 to ${tokenLimits.maxTokens}`)
    for (const line of [...timedOut.stderr.trim().split("\n"), ...tooMany.stderr.trim().split("\n")]) expect(line).toMatch(logfmtLine)
  }, 30_000)

  it("a call to a worker frozen mid-stream (SIGSTOP) fails after the inactivity bound, naming the endpoint and the wait", async () => {
    const caller = spawn(process.execPath, [main, "call", endpoint, "--idle-timeout", "1000", "--data", "{\"max_tokens\":100,\"delay_ms\":100}"], {
      env,
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    caller.stderr!.on("data", (c: Buffer) => {
      stderr += c.toString()
    })
    const firstItem = new Promise<void>((resolve) =>
      caller.stdout!.on("data", (c: Buffer) => {
        stdout += c.toString()
        resolve()
      })
    )
    const exited = exitOf(caller)
    try {
      await firstItem
      worker!.kill("SIGSTOP")
      const stoppedAt = Date.now()
      const code = await Promise.race([exited, new Promise<"hung">((r) => setTimeout(() => r("hung"), 15_000))])
      expect(code).not.toBe("hung")
      expect(code).not.toBe(0)
      expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual(900)
      expect(stderr).toContain(`call ${endpoint}: no response item for 1000 ms (--idle-timeout)`)
      expect(stdout.trim().split("\n").length).toBeLessThan(100)
    } finally {
      worker!.kill("SIGCONT")
      caller.kill("SIGKILL")
    }
  }, 30_000)

  it("the worker logs one JSON object per stderr line (--log-format json) and exits 0 on SIGTERM", async () => {
    const exited = exitOf(worker!)
    worker!.kill("SIGTERM")
    expect(await exited).toBe(0)
    const lines = workerStderr.trim().split("\n")
    const entries = lines.map((l) => JSON.parse(l) as Record<string, unknown>)
    for (const entry of entries) {
      expect(typeof entry.timestamp).toBe("string")
      expect(typeof entry.level).toBe("string")
      expect(entry).toHaveProperty("message")
    }
    expect(entries.find((e) => e.message === "serving")).toMatchObject({ endpoint, level: "INFO" })
    expect(countRecords(join(dir, "transport-registry-discovery"))).toBe(0)
  }, 30_000)
})
