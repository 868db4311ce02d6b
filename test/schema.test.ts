import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { Schema } from "effect"
import { RequestControlMessage, tcpConnectionInfo } from "../src/ConnectionInfo.ts"
import { instanceFromJson, instanceToJson, parseEndpointPath, requestTransportOf } from "../src/Instance.ts"
import { TransportRegistration } from "../src/Transport.ts"

const dynamoRecord =
  "{\"type\":\"Endpoint\",\"namespace\":\"dynamo\",\"component\":\"backend\",\"endpoint\":\"generate\",\"instance_id\":5313290120726539203,\"transport\":{\"nats_tcp\":\"dynamo_backend.generate-49bc31f2a0c3e5c3\"}}"

describe("Instance JSON", () => {
  it("round-trips Dynamo's record byte for byte, keeping the 19-digit id exact", () => {
    const instance = instanceFromJson(dynamoRecord)
    expect(instance.instance_id).toBe(5313290120726539203n)
    expect(instanceToJson(instance)).toBe(dynamoRecord)
    expect(requestTransportOf(instance.transport)).toEqual({ id: "nats", address: "dynamo_backend.generate-49bc31f2a0c3e5c3" })
  })

  it("reads and writes every transport form", () => {
    const forms = [
      { http: "http://10.0.0.5:8081/v1/rpc/dynamo_backend.generate-49bc31f2a0c3e5c3" },
      { tcp: "10.0.0.5:9001/49bc31f2a0c3e5c3/generate" },
      { nats_tcp: "dynamo_backend.generate-1" },
      {
        unified: {
          request_transport: {
            transport_id: "http",
            address: "http://h:8081/v1/rpc/x",
            capabilities: { streaming: false, persistent_connections: true, bidirectional: false },
            metadata: {}
          },
          response_transport: {
            transport_id: "tcp",
            address: "h:0",
            capabilities: { streaming: true, persistent_connections: false, bidirectional: false, max_message_size: 33554432 },
            metadata: { zone: "a" }
          }
        }
      }
    ]
    for (const transport of forms) {
      const text = `{"type":"Endpoint","namespace":"n","component":"c","endpoint":"e","instance_id":18446744073709551615,"transport":${JSON.stringify(transport)}}`
      const instance = instanceFromJson(text)
      expect(instance.instance_id).toBe(18446744073709551615n)
      expect(instanceToJson(instance)).toBe(text)
    }
  })

  it("round-trips any u64 id, digit for digit", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (id) => {
        const text = dynamoRecord.replace("5313290120726539203", id.toString())
        const instance = instanceFromJson(text)
        expect(instance.instance_id).toBe(id)
        expect(instanceToJson(instance)).toBe(text)
      })
    )
  })

  it("rejects ids that are not u64, and malformed records, with a message", () => {
    expect(() => instanceFromJson(dynamoRecord.replace("5313290120726539203", "18446744073709551616"))).toThrow(/64 bits/)
    expect(() => instanceFromJson(dynamoRecord.replace("5313290120726539203", "-1"))).toThrow(/unsigned/)
    expect(() => instanceFromJson(dynamoRecord.replace("5313290120726539203", "1.5"))).toThrow(/unsigned/)
    expect(() => instanceFromJson(dynamoRecord.replace("\"Endpoint\"", "\"Model\""))).toThrow(/Endpoint/)
    expect(() => instanceFromJson("{\"type\":")).toThrow(SyntaxError)
  })
})

describe("request-plane schemas", () => {
  it("encodes ConnectionInfo's info twice, as Dynamo does", () => {
    const info = tcpConnectionInfo({ address: "10.0.0.1:4000", subject: "s-1", context: "req-1", stream_type: "response" })
    expect(JSON.stringify(info)).toBe(
      "{\"transport\":\"tcp_server\",\"info\":\"{\\\"address\\\":\\\"10.0.0.1:4000\\\",\\\"subject\\\":\\\"s-1\\\",\\\"context\\\":\\\"req-1\\\",\\\"stream_type\\\":\\\"response\\\"}\"}"
    )
  })

  it("decodes a RequestControlMessage and rejects a bad one", () => {
    const decode = Schema.decodeUnknownSync(RequestControlMessage)
    const ok = decode({
      id: "r",
      request_type: "single_in",
      response_type: "many_out",
      connection_info: { transport: "tcp_server", info: "{}" }
    })
    expect(ok.payload_codec).toBeUndefined()
    expect(() => decode({ id: "r", request_type: "both", response_type: "many_out", connection_info: {} })).toThrow()
  })

  it("decodes a TransportRegistration", () => {
    const reg = Schema.decodeUnknownSync(TransportRegistration)({
      transport_id: "http",
      plane_type: "request",
      capabilities: { streaming: false, persistent_connections: true, bidirectional: false },
      priority: 10
    })
    expect(reg.priority).toBe(10)
    expect(() => Schema.decodeUnknownSync(TransportRegistration)({ ...reg, transport_id: "grpc" })).toThrow()
  })

  it("parses endpoint paths and names a bad one", () => {
    expect(parseEndpointPath("dynamo.backend.generate")).toEqual({ namespace: "dynamo", component: "backend", endpoint: "generate" })
    expect(() => parseEndpointPath("dynamo.backend")).toThrow(/namespace.component.endpoint/)
    expect(() => parseEndpointPath("a..b")).toThrow(/"a..b"/)
  })
})
