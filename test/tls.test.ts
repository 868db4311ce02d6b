/**
 * TLS on the TCP planes (`DYN_TCP_TLS_*`, Dynamo's names and roles): start-up validation, a
 * stream of items over TLS in every mode that has a TCP plane (http+tcp one-shot and pooled
 * call-home, tcp+tcp in Dynamo's framing, the full TCP mode), typed failures for a client that
 * does not trust the server (wrong CA, name mismatch, a plaintext server) while the server keeps
 * serving others, and a plaintext client to a TLS port refused and closed.
 *
 * The CA and certificates are made by the test with `openssl` (test/support/certs.ts). Router and
 * worker run in this process, each with its own registry and config, over one mem discovery.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as net from "node:net"
import type * as tls from "node:tls"
import { Deferred, Effect, Exit, Layer, Stream } from "effect"
import type { Context, Scope } from "effect"
import { Discovery } from "../src/Discovery.ts"
import type { DiscoveryShape } from "../src/Discovery.ts"
import * as MemoryDiscovery from "../src/discovery/MemoryDiscovery.ts"
import * as Endpoint from "../src/Endpoint.ts"
import { requestTransportOf } from "../src/Instance.ts"
import { connect, createServer, PLAINTEXT, readyEvent, tcpTlsOf } from "../src/internal/Tls.ts"
import * as TransportRegistry from "../src/registry/index.ts"
import * as TcpResponseTransport from "../src/transport/tcp/TcpResponseTransport.ts"
import { dial } from "../src/transport/tcp/worker/Dialer.ts"
import { defaults, fromRecord, TransportConfig } from "../src/TransportConfig.ts"
import type { TransportSettings } from "../src/TransportConfig.ts"
import { TransportConnectionError } from "../src/TransportError.ts"
import { makeTestCerts } from "./support/certs.ts"
import type { TestCerts } from "./support/certs.ts"
import { baseEnv } from "./support/stacks.ts"

let certs: TestCerts
beforeAll(() => {
  certs = makeTestCerts()
})
afterAll(() => certs?.remove())

/** All three variables, as Dynamo's docs set them on every process (each one listens and dials). */
const tlsEnv = (): Record<string, string> => ({
  DYN_TCP_TLS_CERT_PATH: certs.serverCert,
  DYN_TCP_TLS_KEY_PATH: certs.serverKey,
  DYN_TCP_TLS_CA_CERT_PATH: certs.caCert
})

const settingsOf = (env: Record<string, string>): TransportSettings => {
  const result = fromRecord({ ...baseEnv, ...env })
  if (result._tag === "error") throw result.error
  return result.settings
}

type Services = TransportRegistry.TransportRegistry | TransportConfig | Discovery

const buildStack = (env: Readonly<Record<string, string>>, discovery: DiscoveryShape): Effect.Effect<Context.Context<Services>, unknown, Scope.Scope> =>
  Layer.build(
    Layer.mergeAll(TransportRegistry.layerFromConfig, Layer.succeed(Discovery, discovery)).pipe(
      Layer.provideMerge(TransportConfig.layerFromRecord({ ...baseEnv, DYN_LOG: "error", ...env }))
    )
  )

/** Streams `n` items {i, pad} with a payload of `pad` bytes each. */
const counter: Endpoint.EmitHandler<{ readonly n: number; readonly pad?: number }, { readonly i: number; readonly pad: string }> = (req, _ctx, emit) =>
  Effect.sync(() => {
    const pad = "x".repeat(req.pad ?? 0)
    for (let i = 0; i < req.n; i++) emit({ i, pad })
  })

const indices = (n: number) => Array.from({ length: n }, (_, i) => i)

/** The failure of a call's exit, as an object with `_tag` and `reason`. */
const failureOf = (exit: Exit.Exit<unknown, unknown>): { readonly _tag?: string; readonly reason?: string; readonly target?: string; readonly message?: string } | undefined => {
  if (exit._tag !== "Failure") return undefined
  const reason = exit.cause.reasons[0]
  return reason?._tag === "Fail" ? (reason.error as { _tag?: string; reason?: string; target?: string }) : { _tag: reason?._tag }
}

/** Connects in plaintext to `port`, writes `bytes`, and resolves with what came back once the server closed it. */
const plaintextProbe = (port: number, bytes: Uint8Array): Effect.Effect<{ readonly received: Buffer; readonly closedMs: number }> =>
  Effect.callback((resume) => {
    const started = performance.now()
    const chunks: Array<Buffer> = []
    const socket = net.connect({ host: "127.0.0.1", port }, () => socket.write(bytes))
    socket.on("data", (chunk) => chunks.push(chunk))
    socket.on("error", () => {})
    socket.on("close", () => resume(Effect.succeed({ received: Buffer.concat(chunks), closedMs: performance.now() - started })))
    return Effect.sync(() => socket.destroy())
  })

/** A Dynamo TCP request frame's first bytes (u16 path length, then the path): plaintext the worker would answer with an ack. */
const dynamoFrameHead = new Uint8Array([0, 5, ...new TextEncoder().encode("a/b/c"), 0, 0, 0, 0, 0, 0, 0, 2, 123, 125])
/** The full mode's hello starts with two zero bytes. */
const fullModeHello = new Uint8Array([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0])

/** A TLS alert record (content type 21) or nothing: never a plaintext answer. */
const expectNoPlaintextAnswer = (received: Buffer) => {
  if (received.length > 0) expect(received[0]).toBe(21)
}

describe("DYN_TCP_TLS_* at start-up", () => {
  it("off when unset: no paths, and no TLS in either role", () => {
    expect(defaults.tcpTls).toMatchObject({ certPath: undefined, keyPath: undefined, caCertPath: undefined, serverName: undefined })
    expect(tcpTlsOf(defaults.tcpTls)).toBe(PLAINTEXT)
  })

  it("all three set: both roles on, contexts built once per settings", () => {
    const settings = settingsOf(tlsEnv())
    const tls = tcpTlsOf(settings.tcpTls)
    expect(tls.server).toBeDefined()
    expect(tls.client).toBeDefined()
    expect(tcpTlsOf(settings.tcpTls)).toBe(tls)
    // Dynamo's roles are independent: a CA alone makes a TLS dialer and a plaintext listener.
    const clientOnly = tcpTlsOf(settingsOf({ DYN_TCP_TLS_CA_CERT_PATH: certs.caCert }).tcpTls)
    expect(clientOnly.server).toBeUndefined()
    expect(clientOnly.client).toBeDefined()
  })

  it("a missing or unreadable file fails start-up naming the variable and the path", () => {
    const missing = `${certs.dir}/nope.pem`
    const result = fromRecord({ DYN_TCP_TLS_CA_CERT_PATH: missing, DYN_TCP_TLS_CERT_PATH: certs.dir, DYN_TCP_TLS_KEY_PATH: certs.serverKey })
    expect(result._tag).toBe("error")
    if (result._tag !== "error") return
    expect(result.error.message).toContain(`DYN_TCP_TLS_CA_CERT_PATH=${JSON.stringify(missing)}`)
    expect(result.error.message).toContain("ENOENT")
    // A directory cannot be read as a file.
    expect(result.error.message).toContain(`DYN_TCP_TLS_CERT_PATH=${JSON.stringify(certs.dir)}`)
    expect(result.error.message).toContain("EISDIR")
  })

  it("a certificate without its key, or a key without its certificate, is an error", () => {
    const certOnly = fromRecord({ DYN_TCP_TLS_CERT_PATH: certs.serverCert })
    expect(certOnly._tag === "error" && certOnly.error.problems.map((p) => p.variable)).toEqual(["DYN_TCP_TLS_KEY_PATH"])
    if (certOnly._tag === "error") expect(certOnly.error.message).toContain(certs.serverCert)
    const keyOnly = fromRecord({ DYN_TCP_TLS_KEY_PATH: certs.serverKey })
    expect(keyOnly._tag === "error" && keyOnly.error.problems.map((p) => p.variable)).toEqual(["DYN_TCP_TLS_CERT_PATH"])
  })

  it("files that are not what they say (no PEM block, a key of another certificate) are errors", () => {
    const result = fromRecord({
      DYN_TCP_TLS_CERT_PATH: certs.serverCert,
      DYN_TCP_TLS_KEY_PATH: certs.otherNameKey,
      DYN_TCP_TLS_CA_CERT_PATH: certs.serverKey
    })
    expect(result._tag).toBe("error")
    if (result._tag !== "error") return
    const byVariable = new Map(result.error.problems.map((p) => [p.variable, p]))
    expect(byVariable.get("DYN_TCP_TLS_KEY_PATH")?.expected).toMatch(/key values mismatch/)
    expect(byVariable.get("DYN_TCP_TLS_CA_CERT_PATH")?.got).toBe(certs.serverKey)
  })
})

const modes: ReadonlyArray<{ readonly name: string; readonly env: Readonly<Record<string, string>>; readonly requestPort: boolean }> = [
  { name: "http+tcp, one-shot call-home", env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp" }, requestPort: false },
  { name: "http+tcp, pooled call-home", env: { DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_POOL_ENABLED: "true" }, requestPort: false },
  { name: "tcp+tcp, Dynamo framing", env: { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "false" }, requestPort: true },
  { name: "tcp full mode", env: { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "true" }, requestPort: true }
]

/** The worker's TCP request port, from its instance record. */
const requestPortOf = (endpoint: Endpoint.ServedEndpoint): number => {
  const address = requestTransportOf(endpoint.instance.transport).address
  return Number(/^[^/]*:(\d+)/.exec(address)![1])
}

describe("a stream of items over TLS", () => {
  for (const mode of modes) {
    it.live(`${mode.name}: one call and 24 concurrent, every item in order`, () =>
      Effect.gen(function*() {
        const discovery = MemoryDiscovery.make()
        const worker = yield* buildStack({ ...mode.env, ...tlsEnv() }, discovery)
        yield* Endpoint.serveEmit("tls.round.trip", counter).pipe(Effect.provide(worker))
        const router = yield* buildStack({ ...mode.env, ...tlsEnv() }, discovery)
        const client = yield* Endpoint.client<{ readonly n: number; readonly pad?: number }, { readonly i: number; readonly pad: string }>("tls.round.trip").pipe(
          Effect.provide(router)
        )
        const one = yield* Stream.runCollect(client.generate({ n: 50, pad: 3000 }))
        expect(one.map((r) => r.i)).toEqual(indices(50))
        expect(one.every((r) => r.pad.length === 3000)).toBe(true)
        const many = yield* Effect.forEach(indices(24), () => Stream.runCollect(client.generate({ n: 20 })), { concurrency: "unbounded" })
        for (const items of many) expect(items.map((r) => r.i)).toEqual(indices(20))
      }).pipe(Effect.scoped))
  }

  for (const mode of modes.filter((m) => m.requestPort)) {
    it.live(`${mode.name}: a router that trusts another CA fails typed (TlsHandshakeFailed, naming the worker), a plaintext client is closed, and the worker keeps serving`, () =>
      Effect.gen(function*() {
        const discovery = MemoryDiscovery.make()
        const worker = yield* buildStack({ ...mode.env, ...tlsEnv() }, discovery)
        const served = yield* Endpoint.serveEmit("tls.wrong.ca", counter).pipe(Effect.provide(worker))
        const port = requestPortOf(served)

        const wrongRouter = yield* buildStack({ ...mode.env, ...tlsEnv(), DYN_TCP_TLS_CA_CERT_PATH: certs.otherCaCert, DYN_ROUTER_MAX_ATTEMPTS: "1" }, discovery)
        const wrong = yield* Endpoint.client<{ readonly n: number }, { readonly i: number }>("tls.wrong.ca").pipe(Effect.provide(wrongRouter))
        const failed = yield* Effect.exit(Stream.runCollect(wrong.generate({ n: 3 })))
        const error = failureOf(failed)
        expect(error?._tag).toBe("TransportConnectionError")
        expect(error?.reason).toBe("TlsHandshakeFailed")
        expect(error?.target).toBe(`127.0.0.1:${port}`)
        expect(error?.message).toMatch(/TLS handshake with 127\.0\.0\.1:\d+ failed: .*certificate/i)

        // Plaintext in either framing: no answer in plaintext, and the connection is closed.
        for (const bytes of [dynamoFrameHead, fullModeHello]) {
          const probe = yield* plaintextProbe(port, bytes)
          expectNoPlaintextAnswer(probe.received)
        }

        const goodRouter = yield* buildStack({ ...mode.env, ...tlsEnv() }, discovery)
        const good = yield* Endpoint.client<{ readonly n: number }, { readonly i: number }>("tls.wrong.ca").pipe(Effect.provide(goodRouter))
        const items = yield* Stream.runCollect(good.generate({ n: 5 }))
        expect(items.map((r) => r.i)).toEqual(indices(5))
      }).pipe(Effect.scoped))
  }
})

/** Opens a call-home stream on `server` and collects what arrives until it ends or fails. */
const openStream = (transport: TcpResponseTransport.TcpResponseTransport, requestId: string) =>
  Effect.gen(function*() {
    const done = yield* Deferred.make<ReadonlyArray<unknown>, unknown>()
    const items: Array<unknown> = []
    const pending = yield* transport.server.open({
      requestId,
      endpoint: "tls.callhome",
      codec: "json",
      sink: {
        onItems: (batch) => items.push(...batch),
        onEnd: () => Deferred.doneUnsafe(done, Exit.succeed(items)),
        onError: (error) => Deferred.doneUnsafe(done, Exit.fail(error))
      }
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => pending.close()))
    return { pending, done }
  })

/** The worker side: calls home with `transport`'s client and writes `n` items. */
const callHome = (transport: TcpResponseTransport.TcpResponseTransport, connectionInfo: Parameters<TcpResponseTransport.TcpResponseTransport["client"]["connect"]>[0]["connectionInfo"], requestId: string, n: number) =>
  Effect.gen(function*() {
    const writer = yield* transport.client.connect({ connectionInfo, requestId, codec: "json" })
    writer.prologue()
    for (let i = 0; i < n; i++) writer.send(i)
    writer.complete()
  })

describe("call-home over TLS: the worker's dialer", () => {
  for (const pooled of [false, true]) {
    const label = pooled ? "pooled" : "one-shot"
    it.live(`${label}: a worker that trusts another CA, or dials a name the certificate does not hold, fails typed; a plaintext worker is closed; the stream is then served`, () =>
      Effect.gen(function*() {
        const env = { ...tlsEnv(), DYN_TCP_POOL_ENABLED: String(pooled) }
        const router = yield* TcpResponseTransport.make(settingsOf(env))
        const { done, pending } = yield* openStream(router, "req-1")
        const address = JSON.parse(pending.connectionInfo.info).address as string

        const wrongCa = yield* TcpResponseTransport.make(settingsOf({ ...env, DYN_TCP_TLS_CA_CERT_PATH: certs.otherCaCert }))
        const failed = failureOf(yield* Effect.exit(callHome(wrongCa, pending.connectionInfo, "req-1", 3)))
        expect(failed).toMatchObject({ _tag: "TransportConnectionError", reason: "TlsHandshakeFailed", target: address })

        // The certificate says 127.0.0.1; a worker told to expect another name refuses it.
        const wrongName = yield* TcpResponseTransport.make(settingsOf({ ...env, DYN_TCP_TLS_SERVER_NAME: "elsewhere.invalid" }))
        const mismatch = failureOf(yield* Effect.exit(callHome(wrongName, pending.connectionInfo, "req-1", 3)))
        expect(mismatch).toMatchObject({ _tag: "TransportConnectionError", reason: "TlsHandshakeFailed" })
        expect(mismatch?.message).toMatch(/elsewhere\.invalid/)

        // A plaintext call-home handshake frame is not read: the socket is closed.
        const port = Number(address.split(":")[1])
        const probe = yield* plaintextProbe(port, new TextEncoder().encode("\x00\x00\x00\x00\x00\x00\x00\x00"))
        expectNoPlaintextAnswer(probe.received)

        // None of that claimed the stream: the right worker serves it.
        const worker = yield* TcpResponseTransport.make(settingsOf(env))
        yield* callHome(worker, pending.connectionInfo, "req-1", 30)
        expect(yield* Deferred.await(done)).toEqual(indices(30))

        // And a second stream on the same server.
        const second = yield* openStream(router, "req-2")
        yield* callHome(worker, second.pending.connectionInfo, "req-2", 10)
        expect(yield* Deferred.await(second.done)).toEqual(indices(10))
      }).pipe(Effect.scoped))
  }

  it.live("a TLS worker calling home to a plaintext router fails typed, naming the router; the certificate's DNS name is accepted with DYN_TCP_TLS_SERVER_NAME", () =>
    Effect.gen(function*() {
      const plainRouter = yield* TcpResponseTransport.make(settingsOf({}))
      const { pending } = yield* openStream(plainRouter, "req-plain")
      const address = JSON.parse(pending.connectionInfo.info).address as string
      const tlsWorker = yield* TcpResponseTransport.make(settingsOf(tlsEnv()))
      const failed = failureOf(yield* Effect.exit(callHome(tlsWorker, pending.connectionInfo, "req-plain", 1)))
      expect(failed).toMatchObject({ _tag: "TransportConnectionError", reason: "TlsHandshakeFailed", target: address })

      // A router whose certificate names only elsewhere.invalid, dialled by IP: refused by name,
      // accepted when the worker is told that name.
      const named = { DYN_TCP_TLS_CERT_PATH: certs.otherNameCert, DYN_TCP_TLS_KEY_PATH: certs.otherNameKey, DYN_TCP_TLS_CA_CERT_PATH: certs.caCert }
      const namedRouter = yield* TcpResponseTransport.make(settingsOf(named))
      const stream = yield* openStream(namedRouter, "req-named")
      const byIp = failureOf(yield* Effect.exit(callHome(tlsWorker, stream.pending.connectionInfo, "req-named", 1)))
      expect(byIp).toMatchObject({ _tag: "TransportConnectionError", reason: "TlsHandshakeFailed" })
      expect(byIp?.message).toMatch(/127\.0\.0\.1/)
      const byName = yield* TcpResponseTransport.make(settingsOf({ ...named, DYN_TCP_TLS_SERVER_NAME: "elsewhere.invalid" }))
      yield* callHome(byName, stream.pending.connectionInfo, "req-named", 4)
      expect(yield* Deferred.await(stream.done)).toEqual(indices(4))
    }).pipe(Effect.scoped))
})

describe("TLS handshake bounds", () => {
  it.live("a TLS dialer to a peer that never answers the handshake fails with ConnectTimeout, saying the handshake did not complete", () =>
    Effect.gen(function*() {
      const sockets: Array<net.Socket> = []
      const silent = net.createServer((socket) => void sockets.push(socket))
      yield* Effect.acquireRelease(
        Effect.callback<void>((resume) => void silent.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () => Effect.sync(() => {
          for (const socket of sockets) socket.destroy()
          silent.close()
        })
      )
      const port = (silent.address() as net.AddressInfo).port
      const clientTls = tcpTlsOf(settingsOf(tlsEnv()).tcpTls).client
      const exit = yield* Effect.exit(dial({ host: "127.0.0.1", port, address: `127.0.0.1:${port}`, timeoutMs: 300, tls: clientTls }, () => "connected"))
      expect(failureOf(exit)).toMatchObject({ _tag: "TransportTimeoutError", reason: "ConnectTimeout", target: `127.0.0.1:${port}` })
      expect(failureOf(exit)?.message).toMatch(/TLS handshake did not complete/)
    }).pipe(Effect.scoped))

  it.live("a TLS listener closes a connection that does not complete its handshake within DYN_TCP_TLS_HANDSHAKE_TIMEOUT_SECS", () =>
    Effect.gen(function*() {
      const router = yield* TcpResponseTransport.make(settingsOf({ ...tlsEnv(), DYN_TCP_TLS_HANDSHAKE_TIMEOUT_SECS: "0.3" }))
      const { pending } = yield* openStream(router, "req-slow")
      const port = Number((JSON.parse(pending.connectionInfo.info).address as string).split(":")[1])
      // Connects and sends nothing: closed by the handshake bound, not the 10 s call-home handshake one.
      const probe = yield* plaintextProbe(port, new Uint8Array(0))
      expect(probe.received.length).toBe(0)
      expect(probe.closedMs).toBeLessThan(8000)
    }).pipe(Effect.scoped))
})

describe("session resumption", () => {
  it.live("a TLS dialer offers the last session of a server: the second dial to it is resumed", () =>
    Effect.gen(function*() {
      const both = tcpTlsOf(settingsOf(tlsEnv()).tcpTls)
      const server = createServer(both.server, (socket) => {
        socket.on("error", () => {})
        socket.end("hello")
      })
      yield* Effect.acquireRelease(
        Effect.callback<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () => Effect.sync(() => server.close())
      )
      const port = (server.address() as net.AddressInfo).port
      const dialOnce = Effect.callback<boolean>((resume) => {
        const socket = connect({ host: "127.0.0.1", port, tls: both.client }) as tls.TLSSocket
        let reused = false
        socket.once(readyEvent(socket), () => {
          reused = socket.isSessionReused()
        })
        socket.on("data", () => {})
        socket.on("error", () => {})
        socket.on("close", () => resume(Effect.succeed(reused)))
      })
      expect(yield* dialOnce).toBe(false)
      expect(both.client?.sessions?.size).toBe(1)
      expect(yield* dialOnce).toBe(true)
    }).pipe(Effect.scoped))
})

it("TlsHandshakeFailed is a connection error", () => {
  const error = new TransportConnectionError({ reason: "TlsHandshakeFailed", transport: "tcp", target: "h:1", detail: "TLS handshake with h:1 failed: x" })
  expect(error.errorType).toBe("connection")
  expect(error.message).toContain("TlsHandshakeFailed (target h:1)")
})
