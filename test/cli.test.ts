import { describe, expect, it } from "vitest"
import { execFile, spawn } from "node:child_process"
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"

const run = promisify(execFile)
const main = new URL("../src/cli/main.ts", import.meta.url).pathname

const envFor = (dir: string, extra: Record<string, string> = {}) => ({
  ...process.env,
  ...extra,
  DYN_REQUEST_PLANE: "http",
  DYN_RESPONSE_PLANE: "tcp",
  DYN_DISCOVERY_BACKEND: "file",
  DYN_DISCOVERY_PATH: dir,
  DYN_HTTP_RPC_HOST: "127.0.0.1",
  DYN_HTTP_RPC_PORT: "0",
  DYN_TCP_RESPONSE_HOST: "127.0.0.1",
  DYN_METRICS_PORT: "0",
  DYN_LOG: "warn"
})

const startWorker = (dir: string, endpoint: string) =>
  new Promise<{ child: ReturnType<typeof spawn>; record: Record<string, unknown> }>((resolve, reject) => {
    const child = spawn(process.execPath, [main, "worker", "--endpoint", endpoint], { env: envFor(dir), stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    const timer = setTimeout(() => reject(new Error(`worker did not start: ${out}`)), 20_000)
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString()
      const nl = out.indexOf("\n")
      if (nl >= 0) {
        clearTimeout(timer)
        resolve({ child, record: JSON.parse(out.slice(0, nl)) as Record<string, unknown> })
      }
    })
    child.on("exit", (code) => reject(new Error(`worker exited with ${code}: ${out}`)))
  })

const exitOf = (child: ReturnType<typeof spawn>) =>
  new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))

describe("CLI across processes (file discovery, http + tcp)", () => {
  it("worker prints its record, call prints each item, and SIGTERM/SIGINT deregister and exit 0", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cli-discovery-"))
    try {
      const { child, record } = await startWorker(dir, "cli.test.generate")
      expect(record.type).toBe("Endpoint")
      expect(record.namespace).toBe("cli")
      expect(String((record.transport as { http: string }).http)).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1\/rpc\/cli_test\.generate-[0-9a-f]+$/)

      const { stdout } = await run(process.execPath, [main, "call", "cli.test.generate", "--data", "{\"prompt\":\"one two three\"}"], {
        env: envFor(dir)
      })
      const lines = stdout.trim().split("\n").map((l) => JSON.parse(l) as { index: number; token: string })
      expect(lines).toEqual([
        { index: 0, token: "one" },
        { index: 1, token: "two" },
        { index: 2, token: "three" }
      ])

      const exited = exitOf(child)
      child.kill("SIGTERM")
      expect(await exited).toBe(0)
      const recordsLeft = (p: string): number =>
        !existsSync(p) ? 0 : readdirSync(p, { withFileTypes: true }).reduce((n, e) => n + (e.isDirectory() ? recordsLeft(join(p, e.name)) : e.name.endsWith(".json") ? 1 : 0), 0)
      expect(recordsLeft(dir)).toBe(0)

      const second = await startWorker(dir, "cli.test.generate")
      const exited2 = exitOf(second.child)
      second.child.kill("SIGINT")
      expect(await exited2).toBe(0)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  }, 60_000)

  for (const pool of ["false", "true"]) {
    it(`on SIGTERM a worker leaves discovery but lets an in-flight stream finish, then exits 0 (pool ${pool})`, async () => {
      const dir = mkdtempSync(join(tmpdir(), "cli-discovery-"))
      try {
        const { child } = await startWorker(dir, "cli.drain.generate")
        const caller = spawn(process.execPath, [main, "call", "cli.drain.generate", "--data", "{\"max_tokens\":8,\"delay_ms\":100}"], {
          env: envFor(dir, { DYN_TCP_POOL_ENABLED: pool }),
          stdio: ["ignore", "pipe", "pipe"]
        })
        let stdout = ""
        const firstItem = new Promise<void>((resolve) =>
          caller.stdout!.on("data", (c: Buffer) => {
            stdout += c.toString()
            resolve()
          })
        )
        const callerExit = exitOf(caller)
        // SIGTERM while the stream is in flight (its first item has arrived, seven are to come)
        await firstItem
        const exited = exitOf(child)
        child.kill("SIGTERM")
        expect(await callerExit).toBe(0)
        expect(stdout.trim().split("\n").length).toBe(8)
        expect(await exited).toBe(0)
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    }, 60_000)
  }

  it("call fails with a message and a non-zero exit when no instance serves the endpoint", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cli-discovery-"))
    try {
      const result = await run(process.execPath, [main, "call", "cli.none.generate", "--wait-ms", "100"], { env: envFor(dir) }).catch((e) => e)
      expect(result.code).not.toBe(0)
      expect(String(result.stderr)).toContain("cli.none.generate")
      // it says how long it waited and where it looked
      expect(String(result.stderr)).toContain(`no instance appeared within 100 ms (--wait-ms) in file discovery at ${dir}`)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  }, 30_000)

  it("refuses bad configuration with one message naming every bad variable", async () => {
    const result = await run(process.execPath, [main, "call", "a.b.c"], {
      env: { ...process.env, DYN_REQUEST_PLANE: "pigeon", DYN_HTTP_RPC_PORT: "70000", DYN_TCP_POOL_MAX_PER_TARGET: "abc" }
    }).catch((e) => e)
    expect(result.code).not.toBe(0)
    const stderr = String(result.stderr)
    expect(stderr).toContain("DYN_REQUEST_PLANE")
    expect(stderr).toContain("DYN_HTTP_RPC_PORT")
    expect(stderr).toContain("DYN_TCP_POOL_MAX_PER_TARGET")
  }, 30_000)
})
