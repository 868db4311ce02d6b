/**
 * Multi-host on one machine: three network namespaces joined by veth pairs to a bridge
 * (test/support/netns.ts), each with its own address on 10.213.77.0/24:
 *
 *   infra   10.213.77.1   etcd (:2379) and nats-server (:4222)
 *   worker  10.213.77.2   two `transport-registry worker` processes (the CLI): one on the NATS
 *                         request plane, one on HTTP (:8081, bound to 10.213.77.2), both
 *                         answering over TCP call-home, registered in etcd with a 3 s lease
 *   router  10.213.77.3   a router process (test/support/netnsRouter.ts) whose call-home listener
 *                         binds 10.213.77.3 (one-shot call-home, the default, with TCP keepalive 1 s), and
 *                         `transport-registry call` (plain call-home)
 *
 * It shows: the records advertise the worker namespace's address (never loopback or 0.0.0.0) and
 * every listener binds its namespace's address; the router streams from the worker over NATS and
 * over HTTP (library and CLI). With the worker's link taken down mid-stream (a pulled cable: no
 * FIN, no RST), every call fails typed within a bound: the CLI's through its --idle-timeout
 * (`CallTimeout`), the router's call-home streams through TCP keepalive (`TransportConnectionError`,
 * about keepalive + 10 probes of 1 s); and both instances leave the router's set once their lease
 * expires (TTL + 2 s at most). The timings are annotated. (A plain call-home stream with no idle
 * bound has nothing that notices the cut: it stays open, and is not tested here.)
 *
 * Needs root and `ip` (iproute2), etcd and nats-server on PATH; it fails saying how to get them.
 * Namespaces are named `trmh<pid>-*` and deleted by name afterwards (and at the start, when a
 * crashed run left some), with every process still in them.
 */
import { spawnSync } from "node:child_process"
import { rmSync } from "node:fs"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { cleanStale, listNamespaces, makeTopology, requireNetns, spawnIn, tempDir } from "./support/netns.ts"
import type { NsProcess, Topology } from "./support/netns.ts"
import { ETCD_INSTALL_HINT, NATS_INSTALL_HINT } from "./support/servers.ts"

const TTL_SECONDS = 3
const ETCD_PORT = 2379
const NATS_PORT = 4222
const HTTP_PORT = 8081
const NATS_ENDPOINT = "mh.worker.nats"
const HTTP_ENDPOINT = "mh.worker.http"

const cliScript = new URL("../src/cli/main.ts", import.meta.url).pathname
const routerScript = new URL("./support/netnsRouter.ts", import.meta.url).pathname
/** `node` (this one, Node 24) running a TypeScript file. */
const nodeArgs = (script: string, args: ReadonlyArray<string>) => ["--experimental-strip-types", "--no-warnings", script, ...args]

let topology: Topology | undefined
let etcdDir: string | undefined
const processes: Array<NsProcess> = []
let router: NsProcess
let natsWorkerId: string
let httpWorkerId: string

/** The addresses, once the topology exists. */
const addr = (host: "infra" | "worker" | "router") => topology!.hosts[host]!.address

/** What every process reads: etcd discovery with a short lease, and where nats-server is. */
const commonEnv = (): Record<string, string> => ({
  DYN_DISCOVERY_BACKEND: "etcd",
  ETCD_ENDPOINTS: `http://${addr("infra")}:${ETCD_PORT}`,
  ETCD_LEASE_TTL: String(TTL_SECONDS),
  NATS_SERVER: `nats://${addr("infra")}:${NATS_PORT}`
})

const start = (host: "infra" | "worker" | "router", env: Record<string, string>, command: string, args: ReadonlyArray<string>) => {
  const p = spawnIn(topology!.hosts[host]!.ns, env, command, args)
  processes.push(p)
  return p
}

const onPath = (binary: string, hint: string) => {
  if (spawnSync("sh", ["-c", `command -v ${binary}`]).status !== 0) throw new Error(`${binary} is not on PATH: ${hint}`)
}

// ---- the router's events -------------------------------------------------------------------------

interface RouterEvent {
  readonly event: string
  readonly at: number
  readonly endpoint?: string
  readonly ids?: ReadonlyArray<string>
  readonly records?: ReadonlyArray<{ readonly transport: Record<string, unknown> }>
  readonly call?: string
  readonly items?: ReadonlyArray<{ readonly index: number; readonly token: string }>
  readonly tag?: string
  readonly reason?: string
  readonly message?: string
}

const routerEvents = (): ReadonlyArray<RouterEvent> =>
  router.lines().flatMap((l) => (l.startsWith("{") ? [JSON.parse(l) as RouterEvent] : []))

/** The last instance set the router reported for `endpoint`. */
const lastInstances = (endpoint: string): RouterEvent | undefined =>
  routerEvents().filter((e) => e.event === "instances" && e.endpoint === endpoint).at(-1)

/** Waits for the router to report `endpoint`'s set as `ids`. */
const instancesBecome = (endpoint: string, ids: ReadonlyArray<string>, timeoutMs: number) =>
  router.waitFor(() => {
    const last = lastInstances(endpoint)
    return last !== undefined && JSON.stringify(last.ids) === JSON.stringify(ids) ? last : undefined
  }, timeoutMs)

/** The items a router call received so far. */
const callItems = (call: string) =>
  routerEvents().flatMap((e) => (e.event === "items" && e.call === call ? e.items! : []))

/** The call's end or error event, once there. */
const callOutcome = (call: string) =>
  routerEvents().find((e) => (e.event === "end" || e.event === "error" || e.event === "cancelled") && e.call === call)

/** The TCP listeners in `host`'s namespace, as `address:port`. */
const listeners = (host: "worker" | "router"): ReadonlyArray<string> =>
  topology!.exec(host, "ss", ["-ltnH"]).split("\n").filter((l) => l.trim() !== "").map((l) => l.trim().split(/\s+/)[3]!)

/** The worker CLI's instance id (hex) from the record it prints. */
const workerId = (worker: NsProcess, timeoutMs: number) =>
  worker.waitFor(() => {
    const line = worker.lines().find((l) => l.startsWith("{\"type\":\"Endpoint\""))
    const digits = line === undefined ? undefined : /"instance_id":(\d+)/.exec(line)?.[1]
    return digits === undefined ? undefined : BigInt(digits).toString(16)
  }, timeoutMs)

/** `transport-registry call` in the router namespace, on `plane`. */
const cliCall = (plane: "nats" | "http", endpoint: string, data: unknown, flags: ReadonlyArray<string> = []) =>
  start("router", {
    ...commonEnv(),
    DYN_REQUEST_PLANE: plane,
    DYN_RESPONSE_PLANE: "tcp",
    DYN_TCP_RESPONSE_HOST: addr("router")
  }, process.execPath, nodeArgs(cliScript, ["call", endpoint, "--data", JSON.stringify(data), "--wait-ms", "5000", ...flags]))

const tokenLines = (p: NsProcess) => p.lines().filter((l) => l.startsWith("{\"index\""))

/** A slow stream (100 s long), to be cut mid-way. */
const SLOW = { max_tokens: 1000, delay_ms: 100 }
const IDLE_MS = 1500
/** The CLI call that the link-down test cuts: started early, as `call` takes seconds to start. */
let slowCli: NsProcess | undefined
const startSlowCli = () => (slowCli ??= cliCall("nats", NATS_ENDPOINT, SLOW, ["--idle-timeout", String(IDLE_MS)]))

// ---- the deployment ------------------------------------------------------------------------------

beforeAll(async () => {
  requireNetns()
  onPath("etcd", ETCD_INSTALL_HINT)
  onPath("nats-server", NATS_INSTALL_HINT)
  cleanStale()
  topology = makeTopology(["infra", "worker", "router"])
  etcdDir = tempDir("etcd")

  const infra = addr("infra")
  const etcd = start("infra", {}, "etcd", [
    "--name", "mh",
    "--data-dir", join(etcdDir, "data"),
    "--listen-client-urls", `http://${infra}:${ETCD_PORT}`,
    "--advertise-client-urls", `http://${infra}:${ETCD_PORT}`,
    "--listen-peer-urls", `http://${infra}:2380`,
    "--initial-advertise-peer-urls", `http://${infra}:2380`,
    "--initial-cluster", `mh=http://${infra}:2380`
  ])
  const nats = start("infra", {}, "nats-server", ["-a", infra, "-p", String(NATS_PORT)])
  await Promise.all([
    etcd.waitFor(() => (/ready to serve client requests/.test(etcd.output()) ? true : undefined), 20_000),
    nats.waitFor(() => (/Server is ready/.test(nats.output()) ? true : undefined), 10_000)
  ])

  const worker = addr("worker")
  const natsWorker = start("worker", {
    ...commonEnv(),
    DYN_REQUEST_PLANE: "nats",
    DYN_RESPONSE_PLANE: "tcp",
    DYN_METRICS_PORT: "9091"
  }, process.execPath, nodeArgs(cliScript, ["worker", "--endpoint", NATS_ENDPOINT]))
  const httpWorker = start("worker", {
    ...commonEnv(),
    DYN_REQUEST_PLANE: "http",
    DYN_HTTP_RPC_HOST: worker,
    DYN_HTTP_RPC_PORT: String(HTTP_PORT),
    DYN_RESPONSE_PLANE: "tcp",
    DYN_METRICS_PORT: "9092"
  }, process.execPath, nodeArgs(cliScript, ["worker", "--endpoint", HTTP_ENDPOINT]))
  router = start("router", {
    ...commonEnv(),
    DYN_REQUEST_PLANE: "nats",
    DYN_RESPONSE_PLANE: "tcp",
    DYN_TCP_RESPONSE_HOST: addr("router"),
    DYN_TCP_POOL_ENABLED: "false",
    DYN_TCP_POOL_KEEPALIVE_SECS: "1"
  }, process.execPath, nodeArgs(routerScript, [NATS_ENDPOINT, HTTP_ENDPOINT]))
  ;[natsWorkerId, httpWorkerId] = await Promise.all([workerId(natsWorker, 20_000), workerId(httpWorker, 20_000)])
  await router.waitFor(() => routerEvents().some((e) => e.event === "ready") || undefined, 20_000)
}, 45_000)

afterAll(async () => {
  await Promise.all(processes.map((p) => p.kill()))
  const prefix = topology?.prefix
  topology?.destroy()
  if (etcdDir !== undefined) rmSync(etcdDir, { recursive: true, force: true })
  if (prefix !== undefined) expect(listNamespaces().filter((n) => n.startsWith(`${prefix}-`))).toEqual([])
})

// ---- the tests -----------------------------------------------------------------------------------

describe("multi-host over network namespaces (etcd + nats-server | worker | router)", () => {
  it("the worker advertises and binds its namespace's address, never loopback or 0.0.0.0", async () => {
    const nats = await instancesBecome(NATS_ENDPOINT, [natsWorkerId], 10_000)
    const http = await instancesBecome(HTTP_ENDPOINT, [httpWorkerId], 10_000)
    // The router read these records from etcd, in another namespace.
    const httpUrl = new URL(http.records![0]!.transport["http"] as string)
    expect(httpUrl.hostname).toBe(addr("worker"))
    expect(httpUrl.port).toBe(String(HTTP_PORT))
    expect(nats.records![0]!.transport).toEqual({ nats_tcp: `mh_worker.nats-${natsWorkerId}` })
    for (const record of [...nats.records!, ...http.records!]) {
      expect(JSON.stringify(record)).not.toMatch(/127\.0\.0\.1|0\.0\.0\.0|localhost/)
    }
    // The HTTP request server listens on the worker's address only.
    const rpc = listeners("worker").filter((l) => l.endsWith(`:${HTTP_PORT}`))
    expect(rpc).toEqual([`${addr("worker")}:${HTTP_PORT}`])
  })

  it("the router streams from the worker over NATS and over HTTP, called home on the router's address", async () => {
    const request = { prompt: "alpha beta gamma", max_tokens: 7 }
    router.send(JSON.stringify({ call: "nats-1", endpoint: NATS_ENDPOINT, request }))
    router.send(JSON.stringify({ call: "http-1", endpoint: HTTP_ENDPOINT, request }))
    const expected = ["alpha", "beta", "gamma", "alpha", "beta", "gamma", "alpha"].map((token, index) => ({ index, token }))
    for (const call of ["nats-1", "http-1"]) {
      const outcome = await router.waitFor(() => callOutcome(call), 10_000)
      expect(outcome.event, JSON.stringify(outcome)).toBe("end")
      expect(callItems(call)).toEqual(expected)
    }
    // Everything the router process listens on (the call-home server) is on its own address.
    const bound = listeners("router")
    expect(bound.length).toBeGreaterThan(0)
    for (const l of bound) expect(l.startsWith(`${addr("router")}:`), l).toBe(true)
  })

  it("`transport-registry call` from the router namespace streams over NATS and over HTTP", async () => {
    const data = { prompt: "one two three" }
    const calls = [cliCall("nats", NATS_ENDPOINT, data), cliCall("http", HTTP_ENDPOINT, data)]
    startSlowCli() // the next test's, meanwhile
    for (const c of calls) {
      expect(await c.exited, c.output()).toBe(0)
      expect(tokenLines(c)).toEqual(['{"index":0,"token":"one"}', '{"index":1,"token":"two"}', '{"index":2,"token":"three"}'])
    }
  }, 30_000)

  it("the worker's link down mid-stream: every call fails typed in bounded time, the worker leaves on lease expiry", async ({ annotate }) => {
    const cli = startSlowCli()
    router.send(JSON.stringify({ call: "nats-slow", endpoint: NATS_ENDPOINT, request: SLOW }))
    router.send(JSON.stringify({ call: "http-slow", endpoint: HTTP_ENDPOINT, request: SLOW }))
    // Mid-stream: every stream has items flowing.
    await cli.waitFor(() => (tokenLines(cli).length >= 3 ? true : undefined), 20_000)
    await router.waitFor(() => (callItems("nats-slow").length >= 3 && callItems("http-slow").length >= 3) || undefined, 5_000)

    const down = Date.now()
    topology!.linkDown("worker")
    const since = (at: number) => at - down

    const [cliExit, natsGone, httpGone, natsCall, httpCall] = await Promise.all([
      // The CLI call: its inactivity bound fails it, typed, and it exits 1.
      cli.exited.then((code) => ({ code, ms: since(Date.now()) })),
      // Both instances leave the router's set once their lease expires (the worker still runs, cut off).
      instancesBecome(NATS_ENDPOINT, [], (TTL_SECONDS + 3) * 1000),
      instancesBecome(HTTP_ENDPOINT, [], (TTL_SECONDS + 3) * 1000),
      // The router's call-home streams (one connection each): TCP keepalive finds the peer gone.
      router.waitFor(() => callOutcome("nats-slow"), 20_000),
      router.waitFor(() => callOutcome("http-slow"), 20_000)
    ])

    expect(cliExit.code, cli.output()).toBe(1)
    expect(cli.output()).toMatch(new RegExp(`level=ERROR .*no response item for ${IDLE_MS} ms.* error=CallTimeout`))
    expect(cliExit.ms).toBeLessThan(IDLE_MS + 1500)

    const leaveMs = Math.max(since(natsGone.at), since(httpGone.at))
    expect(leaveMs).toBeLessThanOrEqual((TTL_SECONDS + 2) * 1000)

    for (const outcome of [natsCall, httpCall]) {
      expect(outcome, JSON.stringify(outcome)).toMatchObject({ event: "error", tag: "TransportConnectionError" })
      expect(since(outcome.at)).toBeLessThan(16_000)
    }
    await annotate(
      `link down -> CLI CallTimeout after ${cliExit.ms} ms (--idle-timeout ${IDLE_MS}); ` +
        `instances removed after ${leaveMs} ms (TTL ${TTL_SECONDS} s); ` +
        `library calls failed after ${since(natsCall.at)} ms (nats, ${natsCall.reason}) and ${since(httpCall.at)} ms (http, ${httpCall.reason}) (keepalive 1 s)`
    )
  }, 30_000)
})
