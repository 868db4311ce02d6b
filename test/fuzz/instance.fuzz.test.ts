/**
 * Fuzzing the discovery record readers (src/Instance.ts: `instanceFromJson`, `parseJsonWithU64`,
 * `decodeEndpointPath`; discovery/EtcdWatch.ts: `decodeRecord`, which a watch uses on every value
 * etcd holds under a prefix, so on whatever any client wrote there).
 *
 * `instanceFromJson` reports a bad record by throwing (its documented channel); its callers catch.
 * Properties: it throws only `Error`s with a message (never a non-Error, never a crash such as a
 * stack overflow escaping as something else), `decodeRecord` and `decodeEndpointPath` never throw,
 * an `instance_id` that is not a u64 is refused, and what `instanceToJson` writes reads back.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { decodeRecord } from "../../src/discovery/EtcdWatch.ts"
import { decodeEndpointPath, instanceFromJson, instanceToJson, parseJsonWithU64 } from "../../src/Instance.ts"
import { noThrow, RUNS } from "./fuzzSupport.ts"

const U64_MAX = 2n ** 64n - 1n

/** Records around the right shape: each field right, wrong or missing. */
const recordishArb = fc
  .record({
    type: fc.constantFrom("Endpoint", "endpoint", 1),
    namespace: fc.oneof(fc.string({ maxLength: 8 }), fc.integer()),
    component: fc.string({ maxLength: 8 }),
    endpoint: fc.oneof(fc.string({ maxLength: 8 }), fc.constant(null)),
    instance_id: fc.oneof(
      fc.bigInt({ min: 0n, max: U64_MAX }).map(String),
      fc.constantFrom("-1", "18446744073709551616", "1.5", "1e3", "\"12\"", "0"),
      fc.bigInt({ min: U64_MAX, max: U64_MAX * 4n }).map(String)
    ),
    transport: fc.oneof(
      fc.record({ tcp: fc.string({ maxLength: 10 }) }).map((v) => JSON.stringify(v)),
      fc.record({ http: fc.oneof(fc.string(), fc.integer()) }).map((v) => JSON.stringify(v)),
      fc.constantFrom(`{"unified":{}}`, `{"nats_tcp":"s","http":"h"}`, `[]`, `null`),
      fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v))
    ),
    extra: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v))
  }, { requiredKeys: [] })
  .map((r) => {
    const fields: Array<string> = []
    for (const [k, v] of Object.entries(r)) {
      const text = k === "instance_id" || k === "transport" || k === "extra" ? String(v) : JSON.stringify(v)
      fields.push(`${JSON.stringify(k)}:${text}`)
    }
    return `{${fields.join(",")}}`
  })

const textArb = fc.oneof(fc.string({ maxLength: 200, unit: "binary" }), fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)), recordishArb)

describe("discovery records (fuzz)", () => {
  it("instanceFromJson throws only Errors with a message; decodeRecord never throws", () => {
    fc.assert(
      fc.property(textArb, (text) => {
        let decoded: unknown
        try {
          decoded = instanceFromJson(text)
        } catch (e) {
          expect(e).toBeInstanceOf(Error)
          expect((e as Error).message.length).toBeGreaterThan(0)
        }
        const r = noThrow("decodeRecord", () => decodeRecord(text))
        if (typeof r === "string") expect(decoded).toBeUndefined()
        else {
          expect(typeof r.instance.instance_id).toBe("bigint")
          expect(r.instance.instance_id >= 0n && r.instance.instance_id <= U64_MAX).toBe(true)
          // What was read writes back to text that reads as the same record.
          expect(instanceFromJson(instanceToJson(r.instance))).toEqual(r.instance)
        }
      }),
      { numRuns: RUNS * 3 }
    )
  })

  it("a record nested 100,000 deep is refused as an Error, not a crash", () => {
    const deep = `{"type":"Endpoint","namespace":"n","component":"c","endpoint":"e","instance_id":1,"transport":{"tcp":"a"},"x":${"[".repeat(100_000)}${"]".repeat(100_000)}}`
    const r = noThrow("decodeRecord", () => decodeRecord(deep))
    // Either read (the nesting is kept as an unknown field) or refused with a reason: never a throw.
    expect(typeof r === "string" || typeof r.instance.instance_id === "bigint").toBe(true)
  })

  it("parseJsonWithU64 keeps every u64 digit and refuses the rest", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -U64_MAX, max: U64_MAX * 2n }), (n) => {
        const text = `{"instance_id":${n}}`
        const ok = n >= 0n && n <= U64_MAX
        try {
          const v = parseJsonWithU64(text, new Set(["instance_id"])) as { instance_id: bigint }
          expect(ok).toBe(true)
          expect(v.instance_id).toBe(n)
        } catch (e) {
          expect(ok).toBe(false)
          expect(e).toBeInstanceOf(RangeError)
        }
      }),
      { numRuns: RUNS }
    )
  })

  it("decodeEndpointPath never throws; it accepts exactly three non-empty [A-Za-z0-9_-] parts", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: "binary" }), fc.array(fc.string({ maxLength: 5 }), { maxLength: 5 }).map((a) => a.join("."))), (path) => {
        const r = noThrow("decodeEndpointPath", () => decodeEndpointPath(path))
        const expected = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(path)
        expect(typeof r !== "string").toBe(expected)
      }),
      { numRuns: RUNS * 2 }
    )
  })
})
