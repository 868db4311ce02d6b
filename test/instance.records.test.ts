/**
 * The unified discovery records (PROTOCOL.md section 5): every reader accepts every form (the
 * legacy nats_tcp / http / tcp, and the seed's unified form with its TransportEndpoints), keeps
 * the fields it does not use (Dynamo's `device_type`, whatever later writers add, at the top
 * level and inside the unified form) and writes them back meaning the same, integers beyond 2^53
 * included. `request_plane_codec` is read. Property-based round trips with fast-check, and the
 * file discovery backend carrying such a record.
 */
import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"
import * as FileDiscovery from "../src/discovery/FileDiscovery.ts"
import { instanceFromJson, instanceToJson, parseJsonWithU64, requestTransportOf, responseTransportOf, stringifyWithU64 } from "../src/Instance.ts"
import type { Instance, TransportType } from "../src/Instance.ts"

/** JSON text read losslessly (every integer beyond 2^53 as a bigint), for comparing meanings. */
const meaning = (text: string): unknown => parseJsonWithU64(text, new Set(["instance_id"]))

const U64_MAX = (1n << 64n) - 1n

const capabilities = fc.record(
  {
    streaming: fc.boolean(),
    persistent_connections: fc.boolean(),
    bidirectional: fc.boolean(),
    max_message_size: fc.integer({ min: 1, max: 2 ** 40 })
  },
  { requiredKeys: ["streaming", "persistent_connections", "bidirectional"] }
)

/** Keys a reader does not know (never a known one, never __proto__). */
const unknownKey = fc.string({ minLength: 1, maxLength: 12 }).filter((k) =>
  !["type", "namespace", "component", "endpoint", "instance_id", "transport", "request_plane_codec", "__proto__"].includes(k) &&
  !/^\d+$/.test(k)
)

/** Values of unknown fields: JSON values, with integers beyond 2^53 (as bigints) among them. */
const { value: unknownValue } = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.string({ maxLength: 10 }),
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }).filter((d) => !Object.is(d, -0)),
    fc.bigInt({ min: -U64_MAX, max: U64_MAX }).filter((n) => n > BigInt(Number.MAX_SAFE_INTEGER) || n < BigInt(Number.MIN_SAFE_INTEGER)),
    fc.array(tie("value"), { maxLength: 3 }),
    fc.dictionary(unknownKey, tie("value"), { maxKeys: 3 })
  )
}))

const extras = fc.dictionary(unknownKey, unknownValue, { maxKeys: 4 })

const transportEndpoint = fc.tuple(
  fc.constantFrom("http" as const, "tcp" as const, "nats" as const, "memory" as const),
  fc.string({ maxLength: 20 }),
  capabilities,
  fc.dictionary(fc.string({ maxLength: 8 }).filter((k) => k !== "__proto__"), fc.string({ maxLength: 8 }), { maxKeys: 3 }),
  extras,
  extras
).map(([transport_id, address, caps, metadata, extra, capExtra]) => ({
  transport_id,
  address,
  capabilities: { ...caps, ...capExtra },
  metadata,
  ...extra
}))

const transport: fc.Arbitrary<TransportType> = fc.oneof(
  fc.string().map((nats_tcp) => ({ nats_tcp })),
  fc.webUrl().map((http) => ({ http })),
  fc.string().map((tcp) => ({ tcp })),
  fc.tuple(transportEndpoint, transportEndpoint).map(([request_transport, response_transport]) => ({
    unified: { request_transport, response_transport }
  }))
) as fc.Arbitrary<TransportType>

const name = fc.stringMatching(/^[A-Za-z0-9_-]{1,12}$/)

const instance: fc.Arbitrary<Instance> = fc.tuple(
  name,
  name,
  name,
  fc.bigInt({ min: 0n, max: U64_MAX }),
  transport,
  fc.option(fc.constantFrom("json", "msgpack", "bincode"), { nil: undefined }),
  extras
).map(([namespace, component, endpoint, instance_id, t, codec, extra]) => ({
  type: "Endpoint" as const,
  namespace,
  component,
  endpoint,
  instance_id,
  transport: t,
  ...(codec === undefined ? {} : { request_plane_codec: codec }),
  ...extra
}))

const dynamoTcp =
  "{\"type\":\"Endpoint\",\"namespace\":\"dynamo\",\"component\":\"backend\",\"endpoint\":\"generate\",\"instance_id\":7587888160958627853,\"transport\":{\"tcp\":\"10.0.0.5:9001/694d98a9fd9a3c0d/dynamo/backend/generate\"},\"request_plane_codec\":\"msgpack\",\"device_type\":\"cuda\",\"lease\":{\"id\":18446744073709551615,\"ttl\":10.5,\"tags\":[\"a\",null,true]}}"

describe("unified discovery records", () => {
  it("keeps Dynamo's extra fields, byte for byte, with every integer exact", () => {
    const record = instanceFromJson(dynamoTcp)
    expect(record.instance_id).toBe(7587888160958627853n)
    expect(record.request_plane_codec).toBe("msgpack")
    expect(record.device_type).toBe("cuda")
    expect((record.lease as { id: unknown }).id).toBe(18446744073709551615n)
    expect(instanceToJson(record)).toBe(dynamoTcp)
    expect(requestTransportOf(record.transport)).toEqual({ id: "tcp", address: "10.0.0.5:9001/694d98a9fd9a3c0d/dynamo/backend/generate" })
    expect(responseTransportOf(record.transport)).toBeUndefined()
  })

  it("reads a record written in another key order, and writes the same meaning (Dynamo's known fields first)", () => {
    const text =
      "{\"device_type\":\"cpu\",\"component\":\"backend\",\"transport\":{\"nats_tcp\":\"dynamo_backend.generate-1\"},\"endpoint\":\"generate\",\"namespace\":\"dynamo\",\"instance_id\":1,\"type\":\"Endpoint\"}"
    const out = instanceToJson(instanceFromJson(text))
    expect(meaning(out)).toEqual(meaning(text))
    expect(out.startsWith("{\"type\":\"Endpoint\",\"namespace\":\"dynamo\",\"component\":\"backend\",\"endpoint\":\"generate\",\"instance_id\":1,")).toBe(true)
  })

  it("reads the unified form, keeping unknown fields of its TransportEndpoints and capabilities", () => {
    const text = JSON.stringify({
      type: "Endpoint",
      namespace: "n",
      component: "c",
      endpoint: "e",
      instance_id: 5,
      transport: {
        unified: {
          request_transport: {
            transport_id: "tcp",
            address: "10.0.0.1:9001/5/n/c/e",
            capabilities: { streaming: true, persistent_connections: true, bidirectional: true, max_message_size: 1024, zero_copy: true },
            metadata: { tcp_mux: "1" },
            tls: { sni: "w1" }
          },
          response_transport: {
            transport_id: "http",
            address: "http://10.0.0.1:8081/v1/rpc/n_c.e-5",
            capabilities: { streaming: true, persistent_connections: true, bidirectional: false },
            metadata: { connection_transport: "http_inline", format: "sse" }
          },
          epoch: 3
        }
      }
    })
    const record = instanceFromJson(text)
    expect(instanceToJson(record)).toBe(text)
    expect(requestTransportOf(record.transport)).toEqual({ id: "tcp", address: "10.0.0.1:9001/5/n/c/e", metadata: { tcp_mux: "1" } })
    expect(responseTransportOf(record.transport)).toEqual({ id: "http", address: "http://10.0.0.1:8081/v1/rpc/n_c.e-5", metadata: { connection_transport: "http_inline", format: "sse" } })
  })

  it("rejects a record whose known fields are wrong, naming the problem", () => {
    expect(() => instanceFromJson(dynamoTcp.replace("\"msgpack\"", "7"))).toThrow(/request_plane_codec/)
    expect(() => instanceFromJson(dynamoTcp.replace("{\"tcp\":", "{\"grpc\":"))).toThrow()
    expect(() => instanceFromJson(dynamoTcp.replace("\"namespace\":\"dynamo\",", ""))).toThrow(/namespace/)
  })

  it("property: any record of any form, with unknown fields anywhere, survives write → read → write byte for byte, and read gives it back", () => {
    fc.assert(
      fc.property(instance, (record) => {
        const text = instanceToJson(record)
        const read = instanceFromJson(text)
        expect(instanceToJson(read)).toBe(text)
        expect(meaning(instanceToJson(read))).toEqual(meaning(text))
        expect(read.instance_id).toBe(record.instance_id)
        expect(read.transport).toEqual(meaning(stringifyWithU64(record.transport)))
        expect(read.request_plane_codec).toBe(record.request_plane_codec)
      }),
      { numRuns: 300 }
    )
  })

  it("property: a record's text in any key order reads to the same meaning", () => {
    fc.assert(
      fc.property(instance, fc.integer({ min: 0, max: 1000 }), (record, seed) => {
        const text = instanceToJson(record)
        // Shuffle the top-level keys of the text (keeping each value's own text).
        const parsed = meaning(text) as Record<string, unknown>
        const keys = Object.keys(parsed)
        const order = keys.map((k, i) => [k, (i * 7919 + seed) % keys.length] as const).sort((a, b) => a[1] - b[1]).map(([k]) => k)
        const shuffled: Record<string, unknown> = {}
        for (const k of order) shuffled[k] = parsed[k]
        const shuffledText = stringifyWithU64(shuffled)
        expect(meaning(instanceToJson(instanceFromJson(shuffledText)))).toEqual(meaning(text))
      }),
      { numRuns: 200 }
    )
  })

  it.live("file discovery stores and lists a record with unknown fields unchanged", () =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => mkdtempSync(join(tmpdir(), "records-"))),
        (d) => Effect.sync(() => rmSync(d, { recursive: true, force: true }))
      )
      const discovery = FileDiscovery.make({ directory: dir })
      const record = instanceFromJson(dynamoTcp)
      yield* discovery.register(record)
      const listed = yield* discovery.list({ namespace: "dynamo", component: "backend", endpoint: "generate" })
      expect(listed.map(instanceToJson)).toEqual([dynamoTcp])
    }).pipe(Effect.scoped))
})
