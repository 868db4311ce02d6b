/**
 * `transport-registry list <endpoint>` across processes: workers of two modes (http+tcp and the
 * pure HTTP mode) started with the CLI, plus a Dynamo-style NATS record written straight into
 * the file discovery directory, all listed with their ids (hex and decimal), request transport
 * and address, response plane and other fields; `--json` gives the records back exactly; an
 * endpoint nobody serves lists nothing; `--help` documents it.
 */
import { describe, expect, it } from "vitest"
import { execFile, spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

const main = new URL("../src/cli/main.ts", import.meta.url).pathname

/** The test runner's environment without DYN_* / OTEL_*, with file discovery in `dir` on loopback, plus `extra`. */
const envFor = (dir: string, extra: Record<string, string> = {}): Record<string, string> => ({
  ...Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined && !/^(DYN_|OTEL_)/.test(e[0]))),
  DYN_DISCOVERY_BACKEND: "file",
  DYN_DISCOVERY_PATH: dir,
  DYN_HTTP_RPC_HOST: "127.0.0.1",
  DYN_HTTP_RPC_PORT: "0",
  DYN_TCP_RESPONSE_HOST: "127.0.0.1",
  DYN_METRICS_PORT: "0",
  DYN_LOG: "warn",
  NO_COLOR: "1",
  ...extra
})

const runCli = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [main, ...args], { env, timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : (error as { code?: number }).code ?? 1, stdout, stderr }))
  })

/** Starts `worker --endpoint <endpoint>`; resolves with its printed record (first stdout line). */
const startWorker = (env: Record<string, string>, endpoint: string) =>
  new Promise<{ child: ChildProcess; line: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [main, "worker", "--endpoint", endpoint], { env, stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    const timer = setTimeout(() => reject(new Error(`worker did not start: ${out}${err}`)), 30_000)
    child.stderr!.on("data", (c: Buffer) => void (err += c.toString()))
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString()
      const nl = out.indexOf("\n")
      if (nl >= 0) {
        clearTimeout(timer)
        resolve({ child, line: out.slice(0, nl) })
      }
    })
    child.once("exit", (code) => reject(new Error(`worker exited with ${code}: ${out}${err}`)))
  })

const stop = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once("exit", () => resolve())
    child.kill("SIGKILL")
  })

/** The instance id of a record line, exactly (it is often above 2^53). */
const idOf = (line: string): bigint => BigInt(/"instance_id":(\d+)/.exec(line)![1]!)

describe("transport-registry list", () => {
  it("lists workers of two modes and a Dynamo NATS record: ids in hex and decimal, transports, addresses, other fields; --json gives the records back", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cli-list-"))
    const children: Array<ChildProcess> = []
    try {
      const [a, b] = await Promise.all([
        startWorker(envFor(dir, { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp" }), "cli.list.gen"),
        startWorker(envFor(dir, { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http" }), "cli.list.gen")
      ])
      children.push(a!.child, b!.child)
      // A Dynamo worker's record, as its discovery would hold it (owned by this live process).
      const natsRecord =
        "{\"type\":\"Endpoint\",\"namespace\":\"cli\",\"component\":\"list\",\"endpoint\":\"gen\",\"instance_id\":18446744073709551557,\"transport\":{\"nats_tcp\":\"cli_list.gen-ffffffffffffffc5\"},\"request_plane_codec\":\"msgpack\",\"device_type\":\"cuda\"}"
      const recordDir = join(dir, "v1", "instances", "cli", "list", "gen")
      mkdirSync(recordDir, { recursive: true })
      writeFileSync(join(recordDir, "ffffffffffffffc5.pid"), String(process.pid))
      writeFileSync(join(recordDir, "ffffffffffffffc5.json"), natsRecord)

      const { code, stdout, stderr } = await runCli(["list", "cli.list.gen"], envFor(dir))
      expect(code, stderr).toBe(0)
      const lines = stdout.trimEnd().split("\n")
      expect(lines[0]).toBe(`cli.list.gen: 3 instances in file discovery at ${dir}`)
      expect(lines[1]).toMatch(/^instance_id\s+instance_id \(decimal\)\s+request\s+response\s+other fields$/)
      const rowOf = (id: bigint) => lines.find((l) => l.startsWith(`${id.toString(16)} `))
      const ida = idOf(a!.line)
      const idb = idOf(b!.line)
      const rowA = rowOf(ida)!
      expect(rowA).toContain(` ${ida.toString()} `)
      expect(rowA).toMatch(new RegExp(`http http://127\\.0\\.0\\.1:\\d+/v1/rpc/cli_list\\.gen-${ida.toString(16)}\\s+tcp call-home`))
      const rowB = rowOf(idb)!
      expect(rowB).toContain(` ${idb.toString()} `)
      expect(rowB).toMatch(/http http:\/\/127\.0\.0\.1:\d+\/v1\/rpc\/cli_list\.gen-[0-9a-f]+\s+http http:\/\/\S+ \(connection_transport=http_inline, format=sse\)/)
      const rowN = rowOf(18446744073709551557n)!
      expect(rowN).toMatch(/^ffffffffffffffc5\s+18446744073709551557\s+nats cli_list\.gen-ffffffffffffffc5\s+tcp call-home\s+request_plane_codec=msgpack device_type=cuda$/)

      const json = await runCli(["list", "cli.list.gen", "--json"], envFor(dir))
      expect(json.code, json.stderr).toBe(0)
      const records = json.stdout.trimEnd().split("\n")
      expect(records).toHaveLength(3)
      expect(records).toContain(a!.line)
      expect(records).toContain(b!.line)
      expect(records).toContain(natsRecord)
    } finally {
      await Promise.all(children.map(stop))
      rmSync(dir, { recursive: true, force: true })
    }
  }, 90_000)

  it("says so when no instance serves the endpoint (exit 0), refuses a bad endpoint path (exit 1), and documents itself in --help", async () => {
    const dir = mkdtempSync(join(tmpdir(), "cli-list-"))
    try {
      const [none, bad, help] = await Promise.all([
        runCli(["list", "cli.list.nobody"], envFor(dir)),
        runCli(["list", "not-a-path"], envFor(dir)),
        runCli(["list", "--help"], envFor(dir))
      ])
      expect(none.code, none.stderr).toBe(0)
      expect(none.stdout.trim()).toBe(`cli.list.nobody: 0 instances in file discovery at ${dir}`)
      expect(bad.code).toBe(1)
      expect(bad.stderr).toMatch(/level=ERROR .*invalid endpoint path \\"not-a-path\\"/)
      expect(help.code).toBe(0)
      expect(help.stdout).toContain("List the instances of an endpoint in discovery")
      expect(help.stdout).toMatch(/--json .*\(default: false\)/)
      expect(help.stdout).toMatch(/DYN_DISCOVERY_BACKEND\s+file \(library: mem\)/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  }, 60_000)
})
