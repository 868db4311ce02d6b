/**
 * /metrics tells the truth on every process (issue 15, item 3):
 * - a CLI worker lists every seed family from start-up (HELP, TYPE, zeros where there are labels
 *   to zero, the pool's families when the pool is enabled), and counts the requests it served for a
 *   router in another process as `role="server"`, with latency, response streams and pool series;
 *   promtool accepts both scrapes;
 * - typed failures on either side are counted: a worker's call-home refused (ECONNREFUSED), a
 *   router's call-home server refusing an unknown subject, a request server refusing a bad body;
 * - an evicted pool target's series are removed, and come back at zero when the target does;
 * - every PromQL example of docs/metrics.md parses (promtool check rules).
 */
import { describe, expect, it } from "@effect/vitest"
import { execFile, spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import type { AddressInfo } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { Effect, Stream } from "effect"
import { tcpConnectionInfo } from "../src/ConnectionInfo.ts"
import * as Endpoint from "../src/Endpoint.ts"
import { exposition } from "../src/observability/MetricsServer.ts"
import type { RequestMessage } from "../src/RequestPlane.ts"
import * as TransportRegistry from "../src/registry/index.ts"
import { configuredStack } from "./support/stack.ts"

const run = promisify(execFile)
const main = new URL("../src/cli/main.ts", import.meta.url).pathname
const router = new URL("./support/metricsRouter.ts", import.meta.url).pathname

/** The seed's families (its Metrics section) and their Prometheus types. */
const seedFamilies: ReadonlyArray<readonly [string, string]> = [
  ["transport_requests_total", "counter"],
  ["transport_request_latency_seconds", "histogram"],
  ["transport_errors_total", "counter"],
  ["transport_active_streams", "gauge"],
  ["tcp_pool_connections_created_total", "counter"],
  ["tcp_pool_connections_reused_total", "counter"],
  ["tcp_pool_active_connections", "gauge"],
  ["tcp_pool_idle_connections", "gauge"],
  ["tcp_pool_acquisition_latency_seconds", "histogram"],
  ["tcp_pool_validation_failures_total", "counter"]
]

/** The value of one series in exposition text, or undefined when absent. */
const seriesValue = (text: string, series: string): number | undefined => {
  const line = text.split("\n").find((l) => l.startsWith(series + " "))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}
const valueOf = (text: string, series: string): number => seriesValue(text, series) ?? 0
/** The sum of every series of `name` whose labels contain `labels`. */
const sumOf = (text: string, name: string, labels = ""): number =>
  text.split("\n").filter((l) => l.startsWith(`${name}{`) && l.includes(labels)).reduce((n, l) => n + Number(l.slice(l.lastIndexOf(" ") + 1)), 0)

const promtool = async (text: string) => {
  const dir = mkdtempSync(join(tmpdir(), "promtool-"))
  try {
    const file = join(dir, "metrics.txt")
    writeFileSync(file, text)
    const { stdout, stderr } = await run("sh", ["-c", `promtool check metrics < ${file}; echo "rc=$?"`])
    return stdout + stderr
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = net.createServer()
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as AddressInfo).port
      s.close(() => resolve(port))
    })
  })

const eventually = async (check: () => Promise<boolean>, ms = 5000) => {
  const deadline = Date.now() + ms
  while (!(await check()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  return check()
}

describe("a CLI worker's /metrics, from start-up and after serving a router in another process", () => {
  it("lists every seed family at start-up, then counts what it served as role=\"server\"", async () => {
    const dir = mkdtempSync(join(tmpdir(), "metrics-truth-"))
    const port = await freePort()
    const env = {
      ...process.env,
      DYN_REQUEST_PLANE: "http",
      DYN_RESPONSE_PLANE: "tcp",
      DYN_TCP_POOL_ENABLED: "true",
      DYN_DISCOVERY_BACKEND: "file",
      DYN_DISCOVERY_PATH: dir,
      DYN_HTTP_RPC_HOST: "127.0.0.1",
      DYN_HTTP_RPC_PORT: "0",
      DYN_TCP_RESPONSE_HOST: "127.0.0.1",
      DYN_METRICS_PORT: String(port),
      DYN_LOG: "warn"
    }
    const worker = spawn(process.execPath, [main, "worker", "--endpoint", "truth.cli.generate"], { env, stdio: ["ignore", "pipe", "pipe"] })
    const exited = new Promise<number | null>((resolve) => worker.on("exit", (code) => resolve(code)))
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("worker did not start")), 20_000)
        worker.stdout!.once("data", () => {
          clearTimeout(timer)
          resolve()
        })
      })
      const scrape = () => fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text())
      const before = await scrape()
      for (const [name, type] of seedFamilies) {
        expect(before, name).toContain(`# HELP ${name} `)
        expect(before, name).toContain(`# TYPE ${name} ${type}\n`)
      }
      // zero-valued series for the configured transports, both planes, role server
      const served = { req: `{transport="http",plane="request",role="server"}`, resp: `{transport="tcp",plane="response",role="server"}` }
      expect(seriesValue(before, `transport_requests_total${served.req}`)).toBe(0)
      expect(seriesValue(before, `transport_requests_total${served.resp}`)).toBe(0)
      expect(seriesValue(before, `transport_request_latency_seconds_count${served.req}`)).toBe(0)
      expect(seriesValue(before, `transport_active_streams${served.req}`)).toBe(0)
      for (const type of ["timeout", "connection", "protocol"]) {
        expect(seriesValue(before, `transport_errors_total{transport="tcp",error_type="${type}",role="server"}`)).toBe(0)
      }
      expect(before).not.toMatch(/^tcp_pool_\w+\{/m)
      expect(await promtool(before)).toContain("rc=0")

      // a router in another process: three calls, one client, pooled call-home; it stays up
      const routerProcess = spawn(process.execPath, [router, "truth.cli.generate", "3", "{\"prompt\":\"one two\"}", "hold"], {
        env,
        stdio: ["pipe", "pipe", "inherit"]
      })
      const routerExited = new Promise<number | null>((resolve) => routerProcess.on("exit", (code) => resolve(code)))
      const line = await new Promise<string>((resolve) => routerProcess.stdout!.once("data", (c: Buffer) => resolve(c.toString())))
      expect(JSON.parse(line)).toEqual({ items: [2, 2, 2] })

      // the worker counts a request when its handling has ended: poll until the third is in
      expect(await eventually(async () => valueOf(await scrape(), `transport_requests_total${served.req}`) === 3)).toBe(true)
      const after = await scrape()
      expect(valueOf(after, `transport_requests_total${served.resp}`)).toBe(3)
      expect(valueOf(after, `transport_request_latency_seconds_count${served.req}`)).toBe(3)
      expect(valueOf(after, `transport_request_latency_seconds_count${served.resp}`)).toBe(3)
      expect(valueOf(after, `transport_request_latency_seconds_sum${served.req}`)).toBeGreaterThan(0)
      expect(valueOf(after, `transport_server_requests_total{transport="http",role="server"}`)).toBe(3)
      expect(valueOf(after, `transport_active_streams${served.req}`)).toBe(0)
      expect(valueOf(after, `transport_active_streams${served.resp}`)).toBe(0)
      expect(sumOf(after, "transport_errors_total", `role="server"`)).toBe(0)
      // the worker sent nothing as a client
      expect(sumOf(after, "transport_requests_total", `role="client"`)).toBe(0)
      // the pool: one target (the router's call-home address), its series labelled role="server"
      expect(sumOf(after, "tcp_pool_connections_created_total", `role="server"`)).toBeGreaterThanOrEqual(1)
      expect(sumOf(after, "tcp_pool_connections_reused_total")).toBeGreaterThanOrEqual(1)
      expect(sumOf(after, "tcp_pool_acquisition_latency_seconds_count")).toBe(3)
      // the router is still up: the worker's pooled connections to it are open (idle now)
      expect(sumOf(after, "tcp_pool_active_connections") + sumOf(after, "tcp_pool_idle_connections")).toBeGreaterThanOrEqual(1)
      routerProcess.stdin!.end()
      expect(await routerExited).toBe(0)
      expect(new Set(after.split("\n").filter((l) => l.startsWith("tcp_pool_connections_created_total{")).map((l) => /target="([^"]+)"/.exec(l)?.[1])).size).toBe(1)
      const out = await promtool(after)
      expect(out, out).not.toMatch(/error while linting|text format parsing error/)
      expect(out).toContain("rc=0")
    } finally {
      worker.kill("SIGTERM")
      await exited
      rmSync(dir, { recursive: true, force: true })
    }
  }, 60_000)
})

const httpTcp = { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", DYN_LOG: "error" }

/** A request message whose call-home goes to `address` with `subject`. */
const messageTo = (address: string, subject: string): RequestMessage => {
  const id = crypto.randomUUID()
  return {
    control: {
      id,
      request_type: "single_in",
      response_type: "many_out",
      payload_codec: "json",
      connection_info: tcpConnectionInfo({ address, subject, context: id, stream_type: "response" })
    },
    payload: 3,
    headers: { "x-request-id": id }
  }
}

const deadPort = () => freePort()

describe("typed failures on either side count in transport_errors_total", () => {
  it.live("a worker's refused call-home, a router refusing an unknown subject, a request server refusing bad bodies", () =>
    Effect.gen(function*() {
      const served = yield* Endpoint.serve("truth.fail.gen", (n: number) => Stream.range(1, n))
      const url = (served.instance.transport as { http: string }).http
      const registry = yield* TransportRegistry.TransportRegistry
      const http = registry.requestTransportUnsafe("http")!.client
      const target = { address: url, endpoint: "truth.fail.gen" }
      const count = (labels: string) => valueOf(exposition(), `transport_errors_total{${labels}}`)
      const refused = `transport="tcp",error_type="connection",role="server"`
      const unknownSubject = `transport="tcp",error_type="protocol",role="client"`
      const badBody = `transport="http",error_type="protocol",role="server"`
      const notFound = `transport="http",error_type="connection",role="server"`
      const start = { refused: count(refused), unknownSubject: count(unknownSubject), badBody: count(badBody), notFound: count(notFound) }

      // 1. the worker acks, then its call-home to a closed port fails: ECONNREFUSED, counted by the worker
      const port = yield* Effect.promise(deadPort)
      yield* http.send(target, messageTo(`127.0.0.1:${port}`, crypto.randomUUID()))
      const waitFor = (check: () => boolean) =>
        Effect.promise(() => eventually(() => Promise.resolve(check())))
      expect(yield* waitFor(() => count(refused) === start.refused + 1)).toBe(true)

      // 2. a call-home to this router's server naming a subject it never opened: the router refuses it
      const tcp = yield* registry.getResponseServer("tcp")
      const pending = yield* tcp.open({
        requestId: crypto.randomUUID(),
        endpoint: "truth.fail.gen",
        codec: "json",
        sink: { onItems: () => {}, onEnd: () => {}, onError: () => {} }
      })
      const address = (JSON.parse(pending.connectionInfo.info) as { address: string }).address
      yield* http.send(target, messageTo(address, crypto.randomUUID()))
      expect(yield* waitFor(() => count(unknownSubject) === start.unknownSubject + 1)).toBe(true)
      pending.close()

      // 3. the request server refuses a body that is not a request message (400), and an unknown endpoint (404)
      const post = (to: string) =>
        Effect.promise(() => fetch(to, { method: "POST", headers: { "content-type": "application/octet-stream" }, body: "garbage" }).then((r) => r.status))
      expect(yield* post(url)).toBe(400)
      expect(yield* post(url.replace(/[^/]+$/, "no_such_endpoint"))).toBe(404)
      expect(count(badBody)).toBe(start.badBody + 1)
      expect(count(notFound)).toBe(start.notFound + 1)
    }).pipe(Effect.provide(configuredStack(httpTcp))))
})

describe("the TCP request server's refusals", () => {
  it.live("bytes that break Dynamo's framing count as a protocol error of role server", () =>
    Effect.gen(function*() {
      const served = yield* Endpoint.serve("truth.tcp.gen", (n: number) => Stream.range(1, n))
      const address = /(\d+\.\d+\.\d+\.\d+):(\d+)/.exec(JSON.stringify(served.instance.transport))!
      const series = `transport_errors_total{transport="tcp",error_type="protocol",role="server"}`
      const before = valueOf(exposition(), series)
      // a frame whose payload length (u32 0xffffffff) is past the maximum message size
      const tooLarge = Buffer.from([0, 4, 0x61, 0x62, 0x63, 0x64, 0, 0, 0xff, 0xff, 0xff, 0xff])
      yield* Effect.promise(() =>
        new Promise<void>((resolve) => {
          const socket = net.connect(Number(address[2]), address[1]!, () => socket.write(tooLarge))
          socket.on("error", () => {})
          // the server answers with its last rejection ack and ends its side
          socket.on("end", () => {
            socket.destroy()
            resolve()
          })
          socket.resume()
        })
      )
      expect(valueOf(exposition(), series)).toBe(before + 1)
    }).pipe(Effect.provide(configuredStack({
      DYN_REQUEST_PLANE: "tcp",
      DYN_RESPONSE_PLANE: "tcp",
      DYN_TCP_REQUEST_HOST: "127.0.0.1",
      DYN_TCP_REQUEST_PORT: "0",
      DYN_LOG: "error"
    }))))
})

describe("pool series follow the live targets", () => {
  it.live("removes every tcp_pool_* series of an evicted target; it comes back at zero", () =>
    Effect.gen(function*() {
      yield* Endpoint.serve("truth.pool.gen", (n: number) => Stream.range(1, n))
      const client = yield* Endpoint.client<number, number>("truth.pool.gen")
      expect(yield* Stream.runCollect(client.generate(2))).toEqual([1, 2])
      const text = exposition()
      const target = /tcp_pool_connections_created_total\{target="([^"]+)"/.exec(text)?.[1]
      expect(target, text).toBeDefined()
      const ofTarget = (t: string) => t.split("\n").filter((l) => l.startsWith("tcp_pool_") && l.includes(`target="${target}"`))
      expect(ofTarget(text).length).toBeGreaterThanOrEqual(6)
      expect(valueOf(text, `tcp_pool_connections_created_total{target="${target}",role="server"}`)).toBe(1)

      // no stream for DYN_TCP_POOL_IDLE_TIMEOUT_SECS (0.2 s): the target is evicted, and its series go
      expect(yield* Effect.promise(() => eventually(() => Promise.resolve(ofTarget(exposition()).length === 0)))).toBe(true)
      const gone = exposition()
      for (const [name] of seedFamilies) expect(gone, name).toContain(`# TYPE ${name} `)

      // the router calls again: the same target, new series from zero
      expect(yield* Stream.runCollect(client.generate(1))).toEqual([1])
      expect(valueOf(exposition(), `tcp_pool_connections_created_total{target="${target}",role="server"}`)).toBe(1)
      expect(valueOf(exposition(), `tcp_pool_acquisition_latency_seconds_count{target="${target}",role="server"}`)).toBe(1)
    }).pipe(Effect.provide(configuredStack({
      DYN_REQUEST_PLANE: "memory",
      DYN_RESPONSE_PLANE: "tcp",
      DYN_TCP_POOL_ENABLED: "true",
      DYN_TCP_POOL_MIN_IDLE: "0",
      DYN_TCP_POOL_IDLE_TIMEOUT_SECS: "0.2",
      DYN_LOG: "error"
    }))))
})

describe("docs/metrics.md", () => {
  it("every PromQL example parses (promtool check rules)", async () => {
    const doc = readFileSync(new URL("../docs/metrics.md", import.meta.url), "utf8")
    // One expression per comment line; an expression may go on over several lines.
    const expressions: Array<string> = []
    for (const block of doc.matchAll(/```promql\n([\s\S]*?)```/g)) {
      let current: Array<string> = []
      for (const line of block[1]!.split("\n")) {
        if (line.startsWith("#") || line.trim() === "") {
          if (current.length > 0) expressions.push(current.join(" "))
          current = []
        } else current.push(line.trim())
      }
      if (current.length > 0) expressions.push(current.join(" "))
    }
    expect(expressions.length).toBeGreaterThanOrEqual(10)
    const rules = "groups:\n- name: docs\n  rules:\n" +
      expressions.map((e, i) => `  - record: docs:example${i}\n    expr: ${JSON.stringify(e)}\n`).join("")
    const dir = mkdtempSync(join(tmpdir(), "promql-"))
    try {
      writeFileSync(join(dir, "rules.yml"), rules)
      const { stdout, stderr } = await run("sh", ["-c", `promtool check rules ${join(dir, "rules.yml")} 2>&1; echo "rc=$?"`])
      expect(stdout + stderr, rules).toContain("rc=0")
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
