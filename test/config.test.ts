import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { ConfigProvider, Effect } from "effect"
import { defaults, fromRecord, load, TransportConfigError, variables } from "../src/TransportConfig.ts"

describe("TransportConfig", () => {
  it("has the seed's defaults", () => {
    expect(defaults.requestPlane).toBe("http")
    expect(defaults.responsePlane).toBe("tcp")
    expect(defaults.httpRpc).toEqual({ host: "0.0.0.0", port: 8081, rootPath: "/v1/rpc", requestTimeoutMs: 5000, bodyTimeoutMs: 30_000 })
    expect(defaults.httpResponse).toEqual({
      host: "0.0.0.0",
      port: 8082,
      rootPath: "/v1/rpc/response",
      streamFormat: "sse",
      timeoutMs: 3_600_000
    })
    expect(defaults.tcpPool).toEqual({
      enabled: false,
      maxPerTarget: 50,
      minIdle: 5,
      idleTimeoutMs: 300_000,
      maxLifetimeMs: 3_600_000,
      keepaliveMs: 60_000
    })
    expect(defaults.tcpRequest).toEqual({
      host: "0.0.0.0",
      port: 9001,
      advertiseHost: undefined,
      maxConnections: 1000,
      heartbeatIntervalMs: 30_000,
      connectionTimeoutMs: 60_000,
      ackTimeoutMs: 5000,
      connectTimeoutMs: 5000,
      poolSize: 100,
      channelBuffer: 1024,
      fullMode: true
    })
    expect(defaults.tcpMaxMessageSize).toBe(32 * 1024 * 1024)
    expect(defaults.metricsPort).toBe(9090)
    expect(defaults.discoveryBackend).toBe("mem")
    expect(defaults.requestPlaneCodec).toBe("json")
  })

  it.effect("reads values through the ConfigProvider", () =>
    Effect.gen(function*() {
      const settings = yield* load.pipe(
        Effect.provide(
          ConfigProvider.layer(
            ConfigProvider.fromEnvRecord({
              DYN_REQUEST_PLANE: "nats",
              DYN_TCP_POOL_ENABLED: "true",
              DYN_TCP_POOL_MAX_PER_TARGET: "100",
              DYN_HTTP_REQUEST_TIMEOUT: "0.5",
              ETCD_ENDPOINTS: "http://10.0.0.1:2379, http://10.0.0.2:2379"
            })
          )
        )
      )
      expect(settings.requestPlane).toBe("nats")
      expect(settings.tcpPool.enabled).toBe(true)
      expect(settings.tcpPool.maxPerTarget).toBe(100)
      expect(settings.httpRpc.requestTimeoutMs).toBe(500)
      expect(settings.etcdEndpoints).toEqual(["http://10.0.0.1:2379", "http://10.0.0.2:2379"])
    }))

  it.effect("fails once, naming every bad variable, its value and what it accepts", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        load.pipe(
          Effect.provide(
            ConfigProvider.layer(
              ConfigProvider.fromEnvRecord({
                DYN_TCP_POOL_MAX_PER_TARGET: "abc",
                DYN_REQUEST_PLANE: "pigeon",
                DYN_HTTP_RPC_PORT: "70000",
                DYN_RESPONSE_PLANE: "http"
              })
            )
          )
        )
      )
      expect(error).toBeInstanceOf(TransportConfigError)
      const e = error as TransportConfigError
      expect(e.problems.map((p) => p.variable).sort()).toEqual([
        "DYN_HTTP_RPC_PORT",
        "DYN_REQUEST_PLANE",
        "DYN_TCP_POOL_MAX_PER_TARGET"
      ])
      expect(e.message).toContain("3 bad variables")
      expect(e.message).toContain("DYN_TCP_POOL_MAX_PER_TARGET=\"abc\": expected a positive integer")
      expect(e.message).toContain("DYN_REQUEST_PLANE=\"pigeon\": expected one of http, nats, tcp, memory")
      expect(e.message).toContain("DYN_HTTP_RPC_PORT=\"70000\": expected a port number from 0 to 65535")
    }))

  it("does not fall back to a default for a bad value", () => {
    for (const [name, bad] of [
      ["DYN_TCP_POOL_ENABLED", "maybe"],
      ["DYN_HTTP_REQUEST_TIMEOUT", "-1"],
      ["DYN_HTTP_RPC_ROOT_PATH", "v1/rpc"],
      ["DYN_TCP_MAX_MESSAGE_SIZE", "12MB"],
      ["NATS_SERVER", "localhost:4222"],
      ["DYN_TCP_POOL_MIN_IDLE", "-2"],
      ["DYN_TCP_CALL_HOME_TIMEOUT_SECS", "3000000"],
      ["DYN_HTTP_REQUEST_TIMEOUT", "0.0001"]
    ] as const) {
      const result = fromRecord({ [name]: bad })
      expect(result._tag, `${name}=${bad}`).toBe("error")
      if (result._tag === "error") expect(result.error.problems[0]!.variable).toBe(name)
    }
  })

  it("checks that min idle fits under the per-target maximum", () => {
    const result = fromRecord({ DYN_TCP_POOL_MIN_IDLE: "10", DYN_TCP_POOL_MAX_PER_TARGET: "4" })
    expect(result._tag).toBe("error")
    if (result._tag === "error") expect(result.error.message).toContain("DYN_TCP_POOL_MIN_IDLE")
  })

  it("refuses the http response plane under another request plane, naming both variables", () => {
    for (const requestPlane of ["memory", "nats", "tcp"]) {
      const result = fromRecord({ DYN_REQUEST_PLANE: requestPlane, DYN_RESPONSE_PLANE: "http" })
      expect(result._tag).toBe("error")
      if (result._tag === "error") {
        expect(result.error.message).toContain("DYN_RESPONSE_PLANE")
        expect(result.error.message).toContain(`DYN_REQUEST_PLANE=${requestPlane}`)
      }
    }
    expect(fromRecord({ DYN_REQUEST_PLANE: "http", DYN_RESPONSE_PLANE: "http" })._tag).toBe("ok")
  })

  describe("the TCP request plane's Dynamo aliases (DYN_TCP_RPC_*)", () => {
    const ok = (record: Record<string, string>) => {
      const result = fromRecord(record)
      if (result._tag === "error") throw result.error
      return result.settings.tcpRequest
    }
    const problems = (record: Record<string, string>) => {
      const result = fromRecord(record)
      expect(result._tag).toBe("error")
      return result._tag === "error" ? result.error : undefined
    }

    it("reads Dynamo's names when ours are unset", () => {
      const t = ok({ DYN_TCP_RPC_HOST: "10.0.0.5", DYN_TCP_RPC_PORT: "7001", DYN_TCP_RPC_ADVERTISE_HOST: "worker-1.internal" })
      expect([t.host, t.port, t.advertiseHost]).toEqual(["10.0.0.5", 7001, "worker-1.internal"])
    })

    it("takes both names when they agree (compared as values)", () => {
      const t = ok({ DYN_TCP_REQUEST_PORT: "7001", DYN_TCP_RPC_PORT: " 7001", DYN_TCP_REQUEST_HOST: "0.0.0.0", DYN_TCP_RPC_HOST: "0.0.0.0" })
      expect([t.host, t.port]).toEqual(["0.0.0.0", 7001])
    })

    it("fails with a clear error when both names are set and disagree, naming both and both values", () => {
      const error = problems({ DYN_TCP_REQUEST_PORT: "9001", DYN_TCP_RPC_PORT: "7001", DYN_TCP_REQUEST_ADVERTISE_HOST: "a", DYN_TCP_RPC_ADVERTISE_HOST: "b" })!
      expect(error.problems.map((p) => p.variable)).toEqual(["DYN_TCP_REQUEST_PORT", "DYN_TCP_REQUEST_ADVERTISE_HOST"])
      expect(error.message).toContain(`DYN_TCP_REQUEST_PORT="9001": expected the same value as its alias DYN_TCP_RPC_PORT (set to "7001"), or only one of the two set`)
      expect(error.message).toContain("DYN_TCP_RPC_ADVERTISE_HOST")
    })

    it("names the alias when its own value is bad", () => {
      expect(problems({ DYN_TCP_RPC_PORT: "70000" })!.problems).toEqual([
        { variable: "DYN_TCP_RPC_PORT", got: "70000", expected: "a port number from 0 to 65535 (0 picks a free port)" }
      ])
      expect(problems({ DYN_TCP_REQUEST_PORT: "9001", DYN_TCP_RPC_PORT: "x" })!.problems[0]!.variable).toBe("DYN_TCP_RPC_PORT")
    })

    it.effect("reads the aliases through the ConfigProvider too", () =>
      Effect.gen(function*() {
        const settings = yield* load.pipe(
          Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnvRecord({ DYN_TCP_RPC_PORT: "7002", DYN_TCP_REQUEST_TIMEOUT: "0.5", DYN_TCP_FULL_MODE: "false" })))
        )
        expect(settings.tcpRequest.port).toBe(7002)
        expect(settings.tcpRequest.ackTimeoutMs).toBe(500)
        expect(settings.tcpRequest.fullMode).toBe(false)
      }))

    it("validates the router's TCP variables", () => {
      for (const [name, bad] of [
        ["DYN_TCP_POOL_SIZE", "0"],
        ["DYN_TCP_CHANNEL_BUFFER", "-1"],
        ["DYN_TCP_CONNECT_TIMEOUT", "soon"],
        ["DYN_TCP_REQUEST_TIMEOUT", "0"],
        ["DYN_TCP_FULL_MODE", "maybe"]
      ] as const) {
        expect(problems({ [name]: bad })!.problems[0]!.variable, `${name}=${bad}`).toBe(name)
      }
    })

    it("documents each alias beside its variable", () => {
      const doc = readFileSync(new URL("../docs/configuration.md", import.meta.url), "utf8")
      for (const v of variables.filter((v) => v.alias !== undefined)) {
        const row = doc.split("\n").find((l) => l.startsWith(`| \`${v.name}\``))
        expect(row, v.name).toContain(`\`${v.alias}\``)
      }
    })
  })

  it("documents every variable in docs/configuration.md", () => {
    const doc = readFileSync(new URL("../docs/configuration.md", import.meta.url), "utf8")
    for (const v of variables) expect(doc, v.name).toContain(`\`${v.name}\``)
  })
})
