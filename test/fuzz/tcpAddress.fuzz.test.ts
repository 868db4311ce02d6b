/**
 * Fuzzing the TCP request plane's address forms (protocol/TcpAddress.ts): `parseTcpAddress`,
 * `unescapeAddressPart`, `tcpWirePath`.
 *
 * Properties: no throw on any text; a parsed address has a valid port and a 1-16 digit hex id;
 * what `formatTcpAddress` writes, for any names (with `/` and `%` in them), parses back to the same
 * parts and the same wire path; escaping round-trips.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { ProtocolParseError } from "../../src/protocol/ProtocolError.ts"
import {
  escapeAddressPart,
  formatTcpAddress,
  parseTcpAddress,
  tcpWirePath,
  unescapeAddressPart,
  wirePathOf
} from "../../src/protocol/TcpAddress.ts"
import { noThrow, RUNS } from "./fuzzSupport.ts"

const partArb = fc.string({ minLength: 1, maxLength: 12 }).filter((s) => s.length > 0)
const pieces = fc.constantFrom("/", ":", "[", "]", "%", "%2F", "%25", "tcp://", "127.0.0.1", "::1", "9001", "ff", "0", "a")
const addressish = fc.oneof(
  fc.string({ maxLength: 60, unit: "binary" }),
  fc.array(fc.oneof(pieces, fc.string({ maxLength: 4 })), { maxLength: 12 }).map((a) => a.join(""))
)

describe("TCP addresses (fuzz)", () => {
  it("parseTcpAddress never throws; what it accepts has a port and a hex id", () => {
    fc.assert(
      fc.property(addressish, (text) => {
        const r = noThrow("parseTcpAddress", () => parseTcpAddress(text))
        if (r instanceof ProtocolParseError) {
          expect(r.reason).toBe("BadPayload")
          return
        }
        const port = Number(r.hostPort.slice(r.hostPort.lastIndexOf(":") + 1))
        expect(port).toBeGreaterThanOrEqual(0)
        expect(port).toBeLessThanOrEqual(65535)
        expect(r.instanceIdHex).toMatch(/^[0-9a-f]{1,16}$/)
        expect(noThrow("tcpWirePath", () => tcpWirePath(r))).toBe(r.wirePath)
      }),
      { numRuns: RUNS * 3 }
    )
  })

  it("formatted addresses parse back, for any names", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("127.0.0.1:9001", "[::1]:1", "host.example:65535"),
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        partArb,
        partArb,
        partArb,
        (hostPort, id, namespace, component, endpoint) => {
          const address = formatTcpAddress(hostPort, id, { namespace, component, endpoint })
          const r = parseTcpAddress(address)
          if (r instanceof ProtocolParseError) throw r
          expect({ ...r, wirePath: undefined }).toEqual({
            hostPort,
            instanceIdHex: id.toString(16),
            namespace,
            component,
            endpoint,
            wirePath: undefined
          })
          expect(r.wirePath).toBe(wirePathOf({ instanceIdHex: id.toString(16), namespace, component, endpoint }))
        }
      ),
      { numRuns: RUNS }
    )
  })

  it("escaping round-trips and never throws", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary" }), (s) => {
        expect(unescapeAddressPart(escapeAddressPart(s))).toBe(s)
        expect(escapeAddressPart(s)).not.toContain("/")
        noThrow("unescapeAddressPart", () => unescapeAddressPart(s))
      }),
      { numRuns: RUNS * 2 }
    )
  })
})
