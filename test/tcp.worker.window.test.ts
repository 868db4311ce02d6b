/**
 * The worker's mux flow control without a socket (transport/tcp/worker/SendWindow.ts and
 * AckLedger.ts), against docs/protocol.md "Flow control" and "When a connection dies": credit is
 * consumed by Data payloads and granted back by WindowUpdate; the connection window counts whole
 * frames until a ConnectionAck covers them; held frames leave in order, behind the stream's
 * earlier held frames; an oversized frame goes out alone once nothing is outstanding; a Reset
 * goes out ahead of held frames, which it drops. The ledger forgets streams a ConnectionAck
 * covers, sorts the rest at a connection's death, and remembers at most its cap.
 */
import { describe, expect, it } from "vitest"
import { MUX_HEADER_SIZE, MuxKind } from "../src/protocol/MuxCodec.ts"
import { AckLedger } from "../src/transport/tcp/worker/AckLedger.ts"
import { SendWindow } from "../src/transport/tcp/worker/SendWindow.ts"
import type { FrameOutput, HeldFrame, WindowedStream } from "../src/transport/tcp/worker/SendWindow.ts"

interface TestStream extends WindowedStream {
  readonly name: string
}

const KIND = ["", "prologue", "data", "end", "stop", "kill", "window", "reset", "ack"]

/** A window whose output records `name:kind:payloadLength` per frame and each release. */
const setup = (streamWindow: number, connectionWindow: number) => {
  const log: Array<string> = []
  const out: FrameOutput<TestStream> = {
    writeFrame: (s, kind, payload) => void log.push(`${s.name}:${KIND[kind]}:${payload?.length ?? 0}`),
    framesReleased: (s) => void log.push(`${s.name}:released`)
  }
  const window = new SendWindow<TestStream>(streamWindow, connectionWindow, out)
  const stream = (name: string): TestStream => ({ name, credit: streamWindow, held: undefined as Array<HeldFrame> | undefined })
  const take = () => log.splice(0, log.length)
  return { window, stream, take }
}

const bytes = (n: number) => new Uint8Array(n)

describe("SendWindow: per-stream credit", () => {
  it("a Data frame spends its payload length; one beyond the credit is held until a WindowUpdate grants enough", () => {
    const { stream, take, window } = setup(100, 1 << 20)
    const s = stream("a")
    window.offer(s, MuxKind.Prologue, bytes(14))
    window.offer(s, MuxKind.Data, bytes(60))
    expect(take()).toEqual(["a:prologue:14", "a:data:60"])
    expect(s.credit).toBe(40)
    window.offer(s, MuxKind.Data, bytes(60))
    expect(take()).toEqual([])
    expect(s.held).toHaveLength(1)
    window.grant(s, 10) // 50: still short
    expect(take()).toEqual([])
    window.grant(s, 10) // 60: enough
    expect(take()).toEqual(["a:data:60", "a:released"])
    expect(s.credit).toBe(0)
    expect(s.held).toBeUndefined()
  })

  it("frames queued behind a held Data frame wait with it and leave in order, even those that need no credit", () => {
    const { stream, take, window } = setup(100, 1 << 20)
    const s = stream("a")
    window.offer(s, MuxKind.Data, bytes(90))
    window.offer(s, MuxKind.Data, bytes(50)) // held: 10 left
    window.offer(s, MuxKind.Data, bytes(5)) // fits the credit, but behind the held frame
    window.offer(s, MuxKind.End, undefined) // no credit needed, still behind
    expect(take()).toEqual(["a:data:90"])
    expect(s.held?.map((f) => KIND[f.kind])).toEqual(["data", "data", "end"])
    window.grant(s, 45) // 55: the 50 and the 5 fit, then End
    expect(take()).toEqual(["a:data:50", "a:data:5", "a:end:0", "a:released"])
  })

  it("a partial grant releases the held frames that fit and keeps the rest in order", () => {
    const { stream, take, window } = setup(100, 1 << 20)
    const s = stream("a")
    window.offer(s, MuxKind.Data, bytes(100))
    window.offer(s, MuxKind.Data, bytes(30))
    window.offer(s, MuxKind.Data, bytes(30))
    take()
    window.grant(s, 40)
    expect(take()).toEqual(["a:data:30"])
    expect(s.held).toHaveLength(1)
    window.grant(s, 20)
    expect(take()).toEqual(["a:data:30", "a:released"])
  })

  it("a blocked stream does not hold back another stream", () => {
    const { stream, take, window } = setup(100, 1 << 20)
    const a = stream("a")
    const b = stream("b")
    window.offer(a, MuxKind.Data, bytes(100))
    window.offer(a, MuxKind.Data, bytes(1))
    window.offer(b, MuxKind.Data, bytes(70))
    expect(take()).toEqual(["a:data:100", "b:data:70"])
  })

  it("a Data frame larger than the stream window goes out alone once the stream's credit is whole", () => {
    const { stream, take, window } = setup(100, 1 << 20)
    const s = stream("a")
    window.offer(s, MuxKind.Data, bytes(10))
    window.offer(s, MuxKind.Data, bytes(250)) // larger than the window: waits for a whole credit
    expect(take()).toEqual(["a:data:10"])
    window.grant(s, 10)
    expect(take()).toEqual(["a:data:250", "a:released"])
    expect(s.credit).toBe(-150)
    window.offer(s, MuxKind.Data, bytes(1))
    expect(take()).toEqual([])
  })
})

describe("SendWindow: the connection window", () => {
  it("counts whole frames, holds what does not fit, and releases it on a ConnectionAck, in the order streams blocked", () => {
    const frame = (n: number) => MUX_HEADER_SIZE + n
    const { stream, take, window } = setup(1 << 20, 2 * frame(50))
    const a = stream("a")
    const b = stream("b")
    const c = stream("c")
    window.offer(a, MuxKind.Data, bytes(50))
    window.offer(b, MuxKind.Data, bytes(50))
    expect(window.sent).toBe(2 * frame(50))
    window.offer(c, MuxKind.Data, bytes(50)) // the window is full
    window.offer(a, MuxKind.Data, bytes(50))
    expect(take()).toEqual(["a:data:50", "b:data:50"])
    window.acknowledge(frame(50)) // room for one frame: c blocked first
    expect(take()).toEqual(["c:data:50", "c:released"])
    window.acknowledge(3 * frame(50))
    expect(take()).toEqual(["a:data:50", "a:released"])
    expect(window.sent).toBe(4 * frame(50))
  })

  it("a frame larger than the connection window goes out once everything is acknowledged; a stale ack changes nothing", () => {
    const { stream, take, window } = setup(1 << 20, 100)
    const s = stream("a")
    window.offer(s, MuxKind.Data, bytes(10))
    window.offer(s, MuxKind.Data, bytes(500))
    expect(take()).toEqual(["a:data:10"])
    window.acknowledge(MUX_HEADER_SIZE) // not all of it
    expect(take()).toEqual([])
    window.acknowledge(MUX_HEADER_SIZE + 10)
    expect(take()).toEqual(["a:data:500", "a:released"])
    window.acknowledge(5) // older than the latest: ignored
    expect(window.acked).toBe(MUX_HEADER_SIZE + 10)
  })

  it("only Data frames wait for credit; frames of no stream here count but never wait", () => {
    const { stream, take, window } = setup(1 << 20, 100)
    const s = stream("a")
    window.offer(s, MuxKind.Data, bytes(70))
    window.offer(s, MuxKind.End, undefined) // past the connection window, but not Data
    expect(take()).toEqual(["a:data:70", "a:end:0"])
    window.countForeign(MUX_HEADER_SIZE + 9)
    expect(window.sent).toBe(3 * MUX_HEADER_SIZE + 79)
  })
})

describe("SendWindow: aborting a stream", () => {
  it("sendNow drops the held frames and sends the Reset at once, never behind them", () => {
    const { stream, take, window } = setup(100, 1 << 20)
    const s = stream("a")
    window.offer(s, MuxKind.Data, bytes(100))
    window.offer(s, MuxKind.Data, bytes(100))
    window.offer(s, MuxKind.End, undefined)
    take()
    window.sendNow(s, MuxKind.Reset, bytes(6))
    expect(take()).toEqual(["a:reset:6"])
    expect(s.held).toBeUndefined()
    window.grant(s, 1000) // nothing was left to release
    expect(take()).toEqual([])
  })

  it("drop forgets a stream's held frames; clear forgets every blocked stream", () => {
    const { stream, take, window } = setup(100, 1 << 20)
    const a = stream("a")
    const b = stream("b")
    for (const s of [a, b]) {
      window.offer(s, MuxKind.Data, bytes(100))
      window.offer(s, MuxKind.Data, bytes(10))
    }
    take()
    window.drop(a)
    window.grant(a, 100)
    expect(take()).toEqual([])
    window.clear()
    window.grant(b, 100)
    expect(take()).toEqual([])
  })
})

describe("AckLedger", () => {
  const id = (n: number) => Uint8Array.of(n)
  const names = (ids: ReadonlyArray<Uint8Array>) => ids.map((i) => i[0])

  it("a ConnectionAck covering an offset forgets the streams that ended within it", () => {
    const ledger = new AckLedger()
    ledger.ended(id(1), 100)
    ledger.ended(id(2), 200)
    ledger.ended(id(3), 300)
    ledger.acknowledge(99)
    expect(ledger.size).toBe(3)
    ledger.acknowledge(200) // covers 1 and 2 exactly
    expect(ledger.size).toBe(1)
    ledger.acknowledge(150) // stale: changes nothing
    expect(ledger.size).toBe(1)
    const unwritten: Array<Uint8Array> = []
    const unconfirmed: Array<Uint8Array> = []
    ledger.takeAll(1000, unwritten, unconfirmed)
    expect(names(unconfirmed)).toEqual([3])
    expect(unwritten).toEqual([])
  })

  it("at a connection's death, sorts what it remembers by whether the last frame reached the socket, then is empty", () => {
    const ledger = new AckLedger()
    ledger.ended(id(1), 100)
    ledger.ended(id(2), 200)
    ledger.ended(id(3), 300)
    const unwritten: Array<Uint8Array> = []
    const unconfirmed: Array<Uint8Array> = []
    ledger.takeAll(200, unwritten, unconfirmed)
    expect(names(unconfirmed)).toEqual([1, 2])
    expect(names(unwritten)).toEqual([3])
    expect(ledger.size).toBe(0)
  })

  it("remembers at most its cap: the oldest are forgotten, and an ack still trims the rest", () => {
    const ledger = new AckLedger(3)
    for (let n = 1; n <= 5; n++) ledger.ended(id(n), n * 100)
    expect(ledger.size).toBe(3)
    const unwritten: Array<Uint8Array> = []
    const unconfirmed: Array<Uint8Array> = []
    ledger.takeAll(0, unwritten, unconfirmed)
    expect(names(unwritten)).toEqual([3, 4, 5])

    for (let n = 1; n <= 3; n++) ledger.ended(id(n), n * 100)
    ledger.acknowledge(250) // forgets 1 and 2
    ledger.ended(id(4), 400)
    ledger.ended(id(5), 500)
    expect(ledger.size).toBe(3)
  })

  it("stays bounded over many streams a router never acknowledges", () => {
    const ledger = new AckLedger(1000)
    for (let n = 0; n < 50_000; n++) ledger.ended(id(n & 0xff), n)
    expect(ledger.size).toBe(1000)
    ledger.acknowledge(49_999)
    expect(ledger.size).toBe(0)
  })
})
