/**
 * The command-line program as a new user meets it: `--help` (each flag's default and variable,
 * the built-in handler's request fields, the environment), and the demo (it reads DYN_*: bad
 * values fail it naming each one; it streams over the configured mode and marks it in its table).
 */
import { describe, expect, it } from "vitest"
import { execFile } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { tokenLimits } from "../src/cli/tokenHandler.ts"

const main = new URL("../src/cli/main.ts", import.meta.url).pathname

/** The test runner's environment without any DYN_* / OTEL_* variable, plus `extra`. */
const cleanEnv = (extra: Record<string, string> = {}): Record<string, string> => ({
  ...Object.fromEntries(
    Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined && !/^(DYN_|OTEL_)/.test(e[0]))
  ),
  ...extra
})

const runCli = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [main, ...args], { env, timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : (error as { code?: number }).code ?? 1, stdout, stderr }))
  })

/** The rows of one help section (the lines after its title, up to the next blank line). */
const section = (help: string, title: string): Array<string> => {
  const lines = help.split("\n")
  const start = lines.findIndex((l) => l.startsWith(title))
  if (start < 0) return []
  const end = lines.findIndex((l, i) => i > start && l.trim() === "")
  return lines.slice(start + 1, end < 0 ? undefined : end)
}

const logfmtLine = /^timestamp=\S+ level=(TRACE|DEBUG|INFO|WARN|ERROR|FATAL) fiber=#\d+ message=/

describe("--help", () => {
  it("shows every flag's default (or that it is required), the variables behind flags, and the CLI's environment", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cli-help-"))
    try {
      const env = cleanEnv({ TMPDIR: dir, NO_COLOR: "1" })
      const [demo, worker, call] = await Promise.all(["demo", "worker", "call"].map((c) => runCli([c, "--help"], env)))
      for (const { code, stdout } of [demo!, worker!, call!]) {
        expect(code).toBe(0)
        const flags = section(stdout, "FLAGS")
        expect(flags.length).toBeGreaterThan(0)
        for (const row of flags) expect(row, row).toMatch(/\((default: [^)]+|required)\)$/)
        const globals = section(stdout, "GLOBAL FLAGS")
        expect(globals.find((r) => r.includes("--log-format"))).toMatch(/default: logfmt; env: DYN_LOG_FORMAT/)
        expect(globals.find((r) => r.includes("--log-level"))).toMatch(/env: DYN_LOG\)/)
      }
      const workerHelp = worker!.stdout
      const request = section(workerHelp, "REQUEST").join("\n")
      expect(request).toMatch(new RegExp(`prompt .*at most ${tokenLimits.promptChars} characters`))
      expect(request).toMatch(new RegExp(`max_tokens .*1\\.\\.${tokenLimits.maxTokens}`))
      expect(request).toMatch(new RegExp(`delay_ms .*0\\.\\.${tokenLimits.delayMs}`))
      expect(request).toMatch(new RegExp(`token_size .*1\\.\\.${tokenLimits.tokenSize}`))
      // the CLI's discovery defaults, in the OS temp dir the child sees
      for (const help of [workerHelp, call!.stdout]) {
        const environment = section(help, "ENVIRONMENT").join("\n")
        expect(environment).toMatch(/DYN_DISCOVERY_BACKEND\s+file \(library: mem\)/)
        const path = environment.split("\n").find((l) => l.trimStart().startsWith("DYN_DISCOVERY_PATH"))
        expect(path).toContain(`${join(dir, "transport-registry-discovery")} (library: .dynamo-discovery)`)
      }
      const callFlags = section(call!.stdout, "FLAGS").join("\n")
      expect(callFlags).toMatch(/--timeout ms .*\(default: 0, none\)/)
      expect(callFlags).toMatch(/--idle-timeout ms .*\(default: 30000\)/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  }, 60_000)
})

describe("demo (npm start)", () => {
  it("fails on bad DYN_* values, naming every bad variable in logfmt lines on stderr", async () => {
    const { code, stdout, stderr } = await runCli(["demo"], cleanEnv({ DYN_REQUEST_PLANE: "pigeon", DYN_HTTP_RPC_PORT: "70000" }))
    expect(code).not.toBe(0)
    expect(stdout).toBe("")
    expect(stderr).toContain("variable=DYN_REQUEST_PLANE got=pigeon")
    expect(stderr).toContain("variable=DYN_HTTP_RPC_PORT got=70000")
    for (const line of stderr.trim().split("\n")) expect(line).toMatch(logfmtLine)
  }, 60_000)

  it("refuses a --data that is not JSON with a logfmt line naming the flag, and exit 1", async () => {
    const { code, stdout, stderr } = await runCli(["call", "a.b.c", "--data", "{nope"], cleanEnv())
    expect(code).toBe(1)
    expect(stdout).toBe("")
    expect(stderr).toMatch(logfmtLine)
    expect(stderr).toContain("error=InvalidFlag")
    expect(stderr).toContain("--data: not valid JSON")
  })

  it("streams over the configured mode and marks it in a table of every built mode", async () => {
    const { code, stdout, stderr } = await runCli(
      ["demo", "--requests", "20", "--in-flight", "4", "--prompt", "alpha beta gamma"],
      cleanEnv({ DYN_REQUEST_PLANE: "memory", DYN_RESPONSE_PLANE: "memory" })
    )
    expect(code, stderr).toBe(0)
    expect(stdout).toMatch(/Streaming one request over memory, the configured mode/)
    expect(stdout).toContain("alpha beta gamma")
    const rows = stdout.split("\n").map((l) => l.split(/\s{2,}/)[0]!)
    expect(rows).toContain("memory (configured)")
    expect(rows).toContain("http+tcp")
    expect(rows).toContain("http+tcp pooled")
    expect(rows.filter((r) => r.endsWith("(configured)")).length).toBe(1)
    for (const line of stderr.split("\n").filter((l) => l !== "")) expect(line).toMatch(logfmtLine)
  }, 60_000)
})
