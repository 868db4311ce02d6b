/**
 * Fuzzing what the shared frame assembler (protocol/FrameAssembler.ts) adds to both formats built
 * on it (TwoPartCodec, MuxCodec) and what the TCP request decoder shares with it: `stop()` from a
 * frame handler, and `stopOffset()`, which is how a connection switches framing mid-chunk (the
 * call-home listener stops after the handshake frame and hands the rest of the chunk to the route).
 *
 * Properties: stopping after frame i, in any chunking, delivers frames 0..i exactly, and the bytes
 * from `stopOffset()` in the chunk that held the end of frame i, followed by every later chunk, are
 * exactly the bytes after frame i; a stopped decoder takes no more bytes and reports no error.
 */
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { encodeMuxFrame, makeMuxDecoder, MuxKind } from "../../src/protocol/MuxCodec.ts"
import { encodeTcpRequestFrame, makeTcpRequestDecoder } from "../../src/protocol/TcpRequestFrame.ts"
import { DEFAULT_MAX_MESSAGE_SIZE, encodeFrame, makeDecoder } from "../../src/protocol/TwoPartCodec.ts"
import { ProtocolParseError } from "../../src/protocol/ProtocolError.ts"
import { concat, cutsArb, noThrow, RUNS, splitAt } from "./fuzzSupport.ts"

interface Stoppable {
  decode(chunk: Uint8Array, handler: never): ProtocolParseError | undefined
  stop(): void
  stopOffset(): number
  isIdle(): boolean
}

interface Format {
  readonly name: string
  readonly encode: (payload: Uint8Array) => Uint8Array
  readonly make: () => Stoppable
}

const ID = Uint8Array.from({ length: 16 }, (_, i) => i + 1)

const FORMATS: ReadonlyArray<Format> = [
  { name: "TwoPartCodec", encode: (p) => encodeFrame(p.subarray(0, 3), p), make: () => makeDecoder({ maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE }) as Stoppable },
  { name: "MuxCodec", encode: (p) => encodeMuxFrame(MuxKind.Data, ID, p), make: () => makeMuxDecoder({ maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE }) as Stoppable },
  {
    name: "TcpRequestFrame",
    encode: (p) => encodeTcpRequestFrame("ns/c/e", {}, p) as Uint8Array,
    make: () => makeTcpRequestDecoder({ maxMessageSize: DEFAULT_MAX_MESSAGE_SIZE }) as Stoppable
  }
]

for (const format of FORMATS) {
  describe(`${format.name}: stop() and stopOffset() (fuzz)`, () => {
    it("stopping after any frame hands back exactly the bytes after it, in any chunking", () => {
      fc.assert(
        fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { minLength: 1, maxLength: 6 }), fc.nat(), fc.uint8Array({ maxLength: 30 }), cutsArb, (payloads, pick, tail, cuts) => {
          const frames = payloads.map((p) => format.encode(p).slice())
          const stopAt = pick % frames.length
          const wire = concat(...frames, tail)
          const expectedRest = wire.subarray(frames.slice(0, stopAt + 1).reduce((n, f) => n + f.length, 0))
          const d = format.make()
          let seen = 0
          const handler = (() => {
            if (seen++ === stopAt) d.stop()
          }) as never
          const rest: Array<Uint8Array> = []
          let stopped = false
          for (const chunk of splitAt(wire, cuts)) {
            if (stopped) {
              rest.push(chunk)
              // A stopped decoder takes nothing more and reports nothing.
              expect(noThrow("decode", () => d.decode(chunk, handler))).toBeUndefined()
              continue
            }
            expect(noThrow("decode", () => d.decode(chunk, handler))).toBeUndefined()
            if (seen > stopAt) {
              stopped = true
              rest.push(chunk.subarray(d.stopOffset()))
            }
          }
          expect(seen).toBe(stopAt + 1)
          expect([...concat(...rest)]).toEqual([...expectedRest])
          expect(d.isIdle()).toBe(true)
        }),
        { numRuns: RUNS }
      )
    })
  })
}
