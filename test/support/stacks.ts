/**
 * The stacks that `test/contract/transportContract.ts` runs against, one per transport
 * combination, each with the hooks its behaviours need.
 *
 * A stack is built from a `DYN_*` record only (`TransportConfig.layerFromRecord`, then
 * `TransportRegistry.layerFromConfig`, which builds whatever transports the record names), with
 * mem discovery in the test process. So a transport that `registry/layerConfig.ts` knows joins
 * the contract with one line: `transportContract(configStack({ DYN_REQUEST_PLANE: "…",
 * DYN_RESPONSE_PLANE: "…" }))`. Loopback and port 0 everywhere, `DYN_CANCEL_GRACE_MS=100`.
 *
 * Peer death (behaviour 4) differs by stack and lives here, in the stack:
 * - wire planes: the worker runs in a child process (`test/contract/peerWorker.ts`, started with
 *   `node --experimental-strip-types`, the same config plus file discovery in a temp directory),
 *   and death is a SIGKILL by pid. The router is the test process, over the stack's own registry,
 *   with a file-discovery `Discovery` on that directory.
 * - memory planes: there is no process to kill. Death is the worker's scope closed while its
 *   handler streams (what an embedded worker's shutdown does): its handlers are interrupted and
 *   the router sees the in-band "worker is shutting down" `HandlerError`.
 */
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Exit, Layer, Scope } from "effect"
import { Discovery, FileDiscovery, MemoryDiscovery } from "../../src/discovery/index.ts"
import * as Endpoint from "../../src/Endpoint.ts"
import { TransportConfig } from "../../src/TransportConfig.ts"
import type { CallError } from "../../src/TransportError.ts"
import * as TransportRegistry from "../../src/registry/index.ts"

/** What every contract behaviour has in context: the registry, discovery and the config. */
export type StackServices = TransportRegistry.TransportRegistry | Discovery | TransportConfig

/** A peer the router streams from, and how to kill it mid-stream. */
export interface DyingPeer {
  /** A client of the peer's endpoint, whose `generate` streams 0, 1, 2, … without end. */
  readonly client: Endpoint.EndpointClient<unknown, number>
  /** Kills the peer abruptly (the stack's notion of death). */
  readonly kill: Effect.Effect<void>
  /** For the report: what the peer is (pid, or "in-process"). */
  readonly label: string
}

/** Behaviour 4's hook: how this stack runs a peer that can die, and what dying looks like. */
export interface PeerDeathHook {
  /** One line for the test name: what "dies" means here. */
  readonly description: string
  /**
   * Serves `path` with `slowCounter(itemDelayMs)` on a peer and returns a client of it; runs in
   * the test's scope, with the stack's services, and cleans up with the scope.
   */
  readonly start: (path: string, itemDelayMs: number) => Effect.Effect<DyingPeer, unknown, Scope.Scope | StackServices>
  /** The tagged failures a call may see when its peer dies this way. */
  readonly expectedErrors: ReadonlyArray<CallError["_tag"]>
}

/** A stack under contract. */
export interface ContractStack {
  readonly name: string
  /** A fresh stack: registry with the transports under test, discovery, config. Built per test. */
  readonly layer: Layer.Layer<StackServices, unknown>
  readonly peerDeath: PeerDeathHook
  /**
   * Behaviour 5, second half (optional): serves nothing at the instance a discovery record points
   * to. Default: serve the endpoint, close that serving scope, and put its instance record back in
   * discovery, so the record names this stack's request server, which no longer serves it.
   * A stack that cannot express a stale instance sets it to `false` (the test is then not registered).
   */
  readonly staleInstance?: false | undefined
  /** The tagged failures a call to a stale instance may see (default `["EndpointNotFound"]`). */
  readonly staleInstanceErrors?: ReadonlyArray<CallError["_tag"]> | undefined
}

/** The handler a dying peer serves: 0, 1, 2, … one item every `delayMs`, without end. */
export const slowCounter = (delayMs: number): Endpoint.EmitHandler<unknown, number> => (_req, _ctx, emit) =>
  Effect.gen(function*() {
    for (let i = 0;; i++) {
      emit(i)
      yield* Effect.sleep(delayMs)
    }
  })

/** The base record of every stack: loopback, ephemeral ports, fast cancellation, quiet logs. */
export const baseEnv: Readonly<Record<string, string>> = {
  DYN_HTTP_RPC_HOST: "127.0.0.1",
  DYN_HTTP_RPC_PORT: "0",
  DYN_HTTP_RESPONSE_HOST: "127.0.0.1",
  DYN_HTTP_RESPONSE_PORT: "0",
  DYN_TCP_RESPONSE_HOST: "127.0.0.1",
  DYN_TCP_RESPONSE_PORT: "0",
  DYN_TCP_REQUEST_HOST: "127.0.0.1",
  DYN_TCP_REQUEST_PORT: "0",
  DYN_METRICS_PORT: "0",
  DYN_CANCEL_GRACE_MS: "100",
  DYN_LOG: "warn"
}

// ---- peer death: in-process -------------------------------------------------------------------

/** Death of an in-process worker: its scope closes while the handler streams. */
export const scopeClosePeer: PeerDeathHook = {
  description: "its scope closes mid-stream (in-process worker: no process to kill)",
  expectedErrors: ["HandlerError"],
  start: (path, itemDelayMs) =>
    Effect.gen(function*() {
      const worker = yield* Scope.fork(yield* Scope.Scope, "sequential")
      yield* Endpoint.serveEmit(path, slowCounter(itemDelayMs)).pipe(Scope.provide(worker))
      const client = yield* Endpoint.client<unknown, number>(path)
      return { client, kill: Scope.close(worker, Exit.void), label: "in-process" }
    })
}

// ---- peer death: a child process ----------------------------------------------------------------

const peerWorkerScript = new URL("../contract/peerWorker.ts", import.meta.url).pathname

/** This process's environment without its transport settings: the child gets the stack's only. */
const inheritedEnv = () =>
  Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !/^(DYN_|OTEL_)/.test(k) && k !== "NATS_SERVER" && k !== "ETCD_ENDPOINTS")
  )

/** Starts `peerWorker.ts` serving `path`; resolves once it printed its ready line. */
const startChild = (env: Record<string, string>, path: string, itemDelayMs: number) =>
  new Promise<ChildProcess>((resolve, reject) => {
    const child = spawn(process.execPath, ["--experimental-strip-types", "--no-warnings", peerWorkerScript, path, String(itemDelayMs)], {
      env: { ...inheritedEnv(), ...env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let out = ""
    let err = ""
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`peer worker did not start within 20 s: ${out}${err}`))
    }, 20_000)
    child.stderr!.on("data", (c: Buffer) => void (err += c.toString()))
    child.stdout!.on("data", (c: Buffer) => {
      out += c.toString()
      if (out.includes("\n")) {
        clearTimeout(timer)
        resolve(child)
      }
    })
    child.once("exit", (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`peer worker exited (${code ?? signal}) before it was ready: ${out}${err}`))
    })
  })

const exited = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve()
    else child.once("exit", () => resolve())
  })

const sigkill = (child: ChildProcess) => {
  try {
    if (child.pid !== undefined) process.kill(child.pid, "SIGKILL")
  } catch {
    // already gone
  }
}

/** Death of a worker in a child process (same config, file discovery): SIGKILL by pid. */
export const childProcessPeer = (env: Readonly<Record<string, string>>): PeerDeathHook => ({
  description: "its process is SIGKILLed mid-stream (worker in a child process, file discovery)",
  expectedErrors: ["TransportConnectionError"],
  start: (path, itemDelayMs) =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => mkdtempSync(join(tmpdir(), "contract-discovery-"))),
        (d) => Effect.sync(() => rmSync(d, { recursive: true, force: true }))
      )
      const childEnv = { ...env, DYN_DISCOVERY_BACKEND: "file", DYN_DISCOVERY_PATH: dir }
      const child = yield* Effect.acquireRelease(
        Effect.promise(() => startChild(childEnv, path, itemDelayMs)),
        (c) => Effect.promise(() => (sigkill(c), exited(c)))
      )
      // The router: the stack's own transports, file discovery on the child's directory.
      const client = yield* Endpoint.client<unknown, number>(path).pipe(
        Effect.provideService(Discovery, FileDiscovery.make({ directory: dir, pollIntervalMs: 50 }))
      )
      return {
        client,
        kill: Effect.promise(() => (sigkill(child), exited(child))),
        label: `pid ${child.pid}`
      }
    })
})

// ---- stacks -----------------------------------------------------------------------------------

const isWire = (plane: string | undefined) => plane !== undefined && plane !== "memory"

/**
 * The stack the record configures: `TransportRegistry.layerFromConfig` over
 * `TransportConfig.layerFromRecord({ ...baseEnv, ...env })`, with mem discovery. Its name is
 * `request+response` (plus `pooled` when `DYN_TCP_POOL_ENABLED=true`); its peer death is a child
 * process when both planes are wire transports, the scope close otherwise.
 */
export const configStack = (env: Readonly<Record<string, string>>, overrides: Partial<ContractStack> = {}): ContractStack => {
  const record = { ...baseEnv, ...env }
  const request = record.DYN_REQUEST_PLANE ?? "http"
  const response = record.DYN_RESPONSE_PLANE ?? "tcp"
  const pooled = ["true", "1", "yes", "on"].includes((record.DYN_TCP_POOL_ENABLED ?? "").toLowerCase())
  return {
    name: `${request}+${response}${pooled ? " pooled" : ""}${response === "http" && record.DYN_HTTP_RESPONSE_STREAM_FORMAT !== undefined ? ` ${record.DYN_HTTP_RESPONSE_STREAM_FORMAT}` : ""}`,
    layer: Layer.mergeAll(TransportRegistry.layerFromConfig, MemoryDiscovery.layer).pipe(
      Layer.provideMerge(TransportConfig.layerFromRecord(record))
    ),
    peerDeath: isWire(request) && isWire(response) ? childProcessPeer(record) : scopeClosePeer,
    ...overrides
  }
}

/** MemoryTransport on both planes. */
export const memory = configStack({ DYN_REQUEST_PLANE: "memory", DYN_RESPONSE_PLANE: "memory" })

/** The recommended mode: HTTP/2 request plane, TCP call-home response plane. */
export const httpTcp = configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp" })

/** P0: the same with pooled, multiplexed call-home connections. */
export const httpTcpPooled = configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_POOL_ENABLED: "true" })

/** P1, pure HTTP: the response streams in the request's own HTTP/2 response, as SSE. */
export const httpHttpSse = configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_STREAM_FORMAT: "sse" })

/** P1, pure HTTP, as NDJSON. */
export const httpHttpNdjson = configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_STREAM_FORMAT: "ndjson" })

/** P1, pure HTTP, as binary two-part frames. */
export const httpHttpBinary = configStack({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http", DYN_HTTP_RESPONSE_STREAM_FORMAT: "binary" })

/** The TCP request plane in Dynamo's framing (no full mode), TCP call-home response plane. */
export const tcpTcp = configStack(
  { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "false" },
  { name: "tcp (Dynamo framing)+tcp" }
)

/** The same with pooled, multiplexed call-home connections. */
export const tcpTcpPooled = configStack(
  { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "false", DYN_TCP_POOL_ENABLED: "true" },
  { name: "tcp (Dynamo framing)+tcp pooled" }
)

/**
 * Legacy mode: the NATS request plane on the nats-server at `natsServer` (the contract file starts
 * one: `test/support/servers.ts`), TCP call-home response plane. The peer worker's child process
 * gets the same `NATS_SERVER`.
 */
export const natsTcp = (natsServer: string) =>
  configStack({ DYN_REQUEST_PLANE: "nats", DYN_RESPONSE_PLANE: "tcp", NATS_SERVER: natsServer })

/** The same with pooled, multiplexed call-home connections. */
export const natsTcpPooled = (natsServer: string) =>
  configStack({ DYN_REQUEST_PLANE: "nats", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_POOL_ENABLED: "true", NATS_SERVER: natsServer })
