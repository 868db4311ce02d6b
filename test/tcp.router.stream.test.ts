/**
 * The router's call-home stream state machine (`router/CallHomeStream.ts`) without a socket: a
 * recording `StreamLink` stands in for the one-shot socket or the mux connection, a recording
 * sink for the consumer, and fake timers for the call-home and sentinel bounds.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { STREAM_ENDED_EARLY } from "../src/protocol/CallHome.ts"
import { json } from "../src/protocol/PayloadCodec.ts"
import { ProtocolParseError } from "../src/protocol/ProtocolError.ts"
import { encodeStreamComplete, encodeStreamError, encodeStreamItem } from "../src/protocol/RequestMessage.ts"
import type { ResponseSink } from "../src/ResponsePlane.ts"
import { streamIdFromUuid, uuidFromStreamId } from "../src/protocol/StreamId.ts"
import { CallHomeStream } from "../src/transport/tcp/router/CallHomeStream.ts"
import { Phase } from "../src/transport/tcp/router/StreamLink.ts"
import type { CallHomeWaiter, StreamEnv, StreamLink } from "../src/transport/tcp/router/StreamLink.ts"
import { DeadlineList } from "../src/internal/DeadlineList.ts"
import { TransportProtocolError } from "../src/TransportError.ts"
import type { HandlerError, TransportError } from "../src/TransportError.ts"

const utf8 = (text: string) => new TextEncoder().encode(text)
const item = (data: unknown) => encodeStreamItem(json, data)
const complete = () => encodeStreamComplete(json)
const OK = utf8(`{"error":null}`)
const SUBJECT = "0b6c7a52-1b7e-4d43-9a0e-3f1f3c7a9d11"
const ADDRESS = "10.0.0.1:4000"

/** A link that records what the stream asks of it. */
const recordingLink = (awaitsSentinel: boolean) => {
  const calls: Array<string> = []
  const link: StreamLink = {
    awaitsSentinel,
    control: (message) => void calls.push(`control:${message}`),
    pause: () => void calls.push("pause"),
    resume: () => void calls.push("resume"),
    batchStarted: () => void calls.push("batch"),
    release: (reset) => void calls.push(reset === undefined ? "release" : `release:${reset}`),
    cancel: () => void calls.push("cancel")
  }
  return { link, calls }
}

/** A stream in a one-entry table, with a sink that records every callback. */
const harness = (env: Partial<StreamEnv> = {}) => {
  const table = new Map<string, CallHomeStream>()
  const logs: Array<string> = []
  const events: Array<string> = []
  const batches: Array<Array<unknown>> = []
  const errors: Array<TransportError | HandlerError> = []
  const sink: ResponseSink = {
    onStart: () => void events.push("start"),
    onItems: (items) => void batches.push([...items]),
    onEnd: () => void events.push("end"),
    onError: (error) => {
      events.push(`error:${error._tag}`)
      errors.push(error)
    }
  }
  const callHomeTimeoutMs = env.callHomeTimeoutMs ?? 5000
  const sentinelTimeoutMs = env.sentinelTimeoutMs ?? 1000
  const stream = new CallHomeStream(
    {
      callHomeTimeoutMs,
      callHomeDeadlines: new DeadlineList<CallHomeWaiter>(callHomeTimeoutMs, (s) => s.callHomeExpired()),
      sentinelTimeoutMs,
      sentinelDeadlines: new DeadlineList<CallHomeWaiter>(sentinelTimeoutMs, (s) => s.sentinelExpired(), false),
      forget: (id) => void table.delete(uuidFromStreamId(id)),
      logDebug: (message) => void logs.push(message),
      connectionInfo: () => ({ transport: "tcp_server", info: "{}" }),
      ...env
    },
    streamIdFromUuid(SUBJECT)!,
    ADDRESS,
    { requestId: "req-1", endpoint: "ns.c.e", codec: "json", sink }
  )
  table.set(SUBJECT, stream)
  /** Terminal callbacks so far. */
  const terminals = () => events.filter((e) => e === "end" || e.startsWith("error:")).length
  return { stream, table, logs, events, batches, errors, terminals, error: () => errors[0] }
}

/** A stream claimed on a link and started by its prologue. */
const streaming = (awaitsSentinel = true) => {
  const h = harness()
  const l = recordingLink(awaitsSentinel)
  h.stream.claim(l.link)
  h.stream.prologue(OK)
  return { ...h, ...l }
}

beforeEach(() => {
  vi.useFakeTimers()
})
afterEach(() => {
  vi.useRealTimers()
})

describe("CallHomeStream", () => {
  it("waiting → prologue → streaming → sentinel → closed: items batched until flush, onEnd once, the link released at the sentinel", () => {
    const h = harness()
    const { link, calls } = recordingLink(true)
    expect(h.stream.phase).toBe(Phase.Waiting)
    h.stream.claim(link)
    expect(h.stream.phase).toBe(Phase.Prologue)
    expect(h.events).toEqual([])
    h.stream.prologue(OK)
    expect(h.stream.phase).toBe(Phase.Streaming)
    expect(h.events).toEqual(["start"])

    h.stream.data(item(1))
    h.stream.data(item(2))
    expect(h.batches).toEqual([]) // batched until the driver flushes at the chunk's end
    expect(calls).toEqual(["batch"]) // the link hears once that a batch started
    h.stream.flush()
    expect(h.batches).toEqual([[1, 2]])
    h.stream.flush()
    expect(h.batches).toEqual([[1, 2]]) // nothing new: no empty onItems

    h.stream.data(item(3))
    h.stream.data(complete())
    expect(h.batches).toEqual([[1, 2], [3]]) // flushed before the end
    expect(h.events).toEqual(["start", "end"])
    expect(h.stream.phase).toBe(Phase.Sentinel)
    expect(h.stream.isDone()).toBe(true)
    expect(h.table.has(SUBJECT)).toBe(false) // the subject is used up
    expect(calls).toEqual(["batch", "batch"]) // not released before the sentinel

    h.stream.sentinel()
    expect(h.stream.phase).toBe(Phase.Closed)
    expect(calls).toEqual(["batch", "batch", "release"])
    expect(h.terminals()).toBe(1)
  })

  it("`{}` starts the stream too; a body with data and complete_final is a last item, then the end", () => {
    const h = harness()
    h.stream.claim(recordingLink(true).link)
    h.stream.prologue(utf8("{}"))
    expect(h.events).toEqual(["start"])
    h.stream.data(utf8(`{"data":"last","complete_final":true}`))
    expect(h.batches).toEqual([["last"]])
    expect(h.events).toEqual(["start", "end"])
  })

  it("an error prologue fails with HandlerError phase \"prologue\"; no onStart; the link released without a Reset", () => {
    const h = harness()
    const { link, calls } = recordingLink(false)
    h.stream.claim(link)
    h.stream.prologue(utf8(`{"error":"no GPU"}`))
    expect(h.events).toEqual(["error:HandlerError"])
    expect(h.error()).toMatchObject({ _tag: "HandlerError", phase: "prologue", detail: "no GPU", endpoint: "ns.c.e", requestId: "req-1" })
    expect(h.stream.phase).toBe(Phase.Closed)
    expect(calls).toEqual(["release"])
  })

  it("a malformed prologue is a TransportProtocolError; the link is released with a Reset reason", () => {
    const h = harness()
    const { link, calls } = recordingLink(false)
    h.stream.claim(link)
    h.stream.prologue(utf8(`"sentinel"`))
    expect(h.error()).toMatchObject({ _tag: "TransportProtocolError", reason: "MalformedFrame", target: SUBJECT })
    expect(calls).toEqual([`release:protocol error: ${(h.error() as TransportProtocolError).detail}`])
  })

  it("the in-band error fails with HandlerError phase \"stream\", after the items read before it", () => {
    const h = streaming()
    h.stream.data(item("a"))
    h.stream.data(encodeStreamError(json, "model exploded"))
    expect(h.batches).toEqual([["a"]])
    expect(h.events).toEqual(["start", "error:HandlerError"])
    expect(h.error()).toMatchObject({ _tag: "HandlerError", phase: "stream", detail: "model exploded" })
    expect(h.calls).toEqual(["batch", "release"])
  })

  it("a bad body fails with TransportProtocolError \"BadPayload\" after the items batched; the worker gets a Reset", () => {
    const h = streaming(false)
    h.stream.data(item("ok"))
    h.stream.data(utf8("not json{"))
    expect(h.batches).toEqual([["ok"]])
    expect(h.error()).toMatchObject({ _tag: "TransportProtocolError", reason: "BadPayload", transport: "tcp", target: SUBJECT })
    expect(h.calls.at(-1)).toMatch(/^release:protocol error: stream item is not valid json/)
    // Bytes the framing refused, reported by the driver: same mapping.
    const g = streaming()
    g.stream.malformed(new ProtocolParseError("MessageTooLarge", "too big"))
    expect(g.error()).toMatchObject({ _tag: "TransportProtocolError", reason: "MessageTooLarge", detail: "too big", target: SUBJECT })
  })

  it("data after complete_final is ignored; one-shot: a stray frame then releases the link, logged", () => {
    const h = streaming(true)
    h.stream.data(complete())
    h.stream.data(item("late"))
    h.stream.flush()
    expect(h.batches).toEqual([])
    expect(h.events).toEqual(["start", "end"])
    h.stream.strayAfterEnd()
    expect(h.logs).toEqual(["unexpected frame after complete_final; closing"])
    expect(h.calls).toEqual(["release"])
    expect(h.stream.phase).toBe(Phase.Closed)

    // Mux: released at the end itself; later data and End change nothing.
    const m = streaming(false)
    m.stream.data(complete())
    expect(m.calls).toEqual(["release"])
    expect(m.stream.phase).toBe(Phase.Closed)
    m.stream.data(item("late"))
    m.stream.end()
    m.stream.flush()
    expect(m.batches).toEqual([])
    expect(m.calls).toEqual(["release"])
    expect(m.terminals()).toBe(1)
  })

  it("mux End ends the stream; End before the prologue and a second prologue are \"UnexpectedMessage\"", () => {
    const m = streaming(false)
    m.stream.data(item(1))
    m.stream.end()
    expect([m.batches, m.events, m.calls]).toEqual([[[1]], ["start", "end"], ["batch", "release"]])

    const early = harness()
    early.stream.claim(recordingLink(false).link)
    early.stream.end()
    expect(early.error()).toMatchObject({ _tag: "TransportProtocolError", reason: "UnexpectedMessage", detail: "End before the stream's prologue" })

    const twice = streaming(false)
    twice.stream.prologue(OK)
    expect(twice.error()).toMatchObject({ _tag: "TransportProtocolError", reason: "UnexpectedMessage", detail: "a second prologue in a response stream" })
    expect(twice.calls).toEqual(["release:protocol error: a second prologue in a response stream"])
  })

  it("close() before the end cancels the link and silences the sink; idempotent", () => {
    const h = streaming()
    h.stream.data(item(1))
    h.stream.close()
    expect(h.calls).toEqual(["batch", "cancel"])
    expect(h.stream.isDone()).toBe(true)
    expect(h.table.has(SUBJECT)).toBe(false)
    h.stream.flush()
    h.stream.data(item(2))
    h.stream.disconnected(undefined)
    h.stream.close()
    expect(h.batches).toEqual([])
    expect(h.events).toEqual(["start"])
    expect(h.calls).toEqual(["batch", "cancel"])

    // While waiting: nothing to cancel, and a later call-home is refused.
    const w = harness()
    w.stream.close()
    expect(w.stream.phase).toBe(Phase.Closed)
    const late = recordingLink(true)
    w.stream.claim(late.link)
    expect(w.stream.link).toBeUndefined()
    vi.advanceTimersByTime(10_000)
    expect(w.events).toEqual([]) // no call-home timeout after close

    // After complete_final: the sentinel, not close(), releases the socket.
    const s = streaming(true)
    s.stream.data(complete())
    s.stream.close()
    expect(s.calls).toEqual([])
    s.stream.sentinel()
    expect(s.calls).toEqual(["release"])
  })

  it("cut short → TransportConnectionError \"StreamEndedEarly\", after the items read", () => {
    // The link closed (socket closed, or its mux connection died).
    const h = streaming()
    h.stream.data(item(1))
    const cause = new Error("ECONNRESET")
    h.stream.disconnected(cause)
    expect(h.batches).toEqual([[1]])
    expect(h.error()).toMatchObject({ _tag: "TransportConnectionError", reason: "StreamEndedEarly", detail: STREAM_ENDED_EARLY, target: SUBJECT, cause })
    expect(h.stream.link).toBeUndefined()
    expect(h.calls).toEqual(["batch"]) // nothing to release: the link is gone

    // The worker reset it (mux): released, no Reset back.
    const r = streaming(false)
    r.stream.cutShort(new Error("the worker reset the stream: stopped"))
    expect(r.error()).toMatchObject({ _tag: "TransportConnectionError", reason: "StreamEndedEarly", detail: STREAM_ENDED_EARLY })
    expect(r.calls).toEqual(["release"])

    // A sentinel before complete_final (one-shot).
    const s = streaming(true)
    s.stream.sentinel()
    expect(s.error()).toMatchObject({ _tag: "TransportConnectionError", reason: "StreamEndedEarly" })
    expect(s.calls).toEqual(["release"])

    // A connection that broke the framing: its TransportProtocolError, retargeted to the stream.
    const p = streaming(false)
    p.stream.disconnected(new TransportProtocolError({ reason: "MalformedFrame", transport: "tcp", target: "w:1", detail: "bad flags" }))
    expect(p.error()).toMatchObject({ _tag: "TransportProtocolError", reason: "MalformedFrame", target: SUBJECT, detail: "bad flags" })

    // The link closing after complete_final is no failure.
    const done = streaming(true)
    done.stream.data(complete())
    done.stream.disconnected(undefined)
    expect(done.events).toEqual(["start", "end"])
    expect(done.stream.phase).toBe(Phase.Closed)
  })

  it("exactly one terminal callback, whatever follows", () => {
    const ended = streaming(false)
    ended.stream.end()
    ended.stream.disconnected(new Error("late"))
    ended.stream.cutShort(new Error("late"))
    ended.stream.malformed(new ProtocolParseError("MalformedFrame", "late"))
    ended.stream.serverClosed()
    expect(ended.events).toEqual(["start", "end"])

    const failed = streaming(true)
    failed.stream.data(utf8("{}")) // BadPayload: no complete_final
    failed.stream.data(complete())
    failed.stream.end()
    failed.stream.disconnected(undefined)
    failed.stream.serverClosed()
    vi.advanceTimersByTime(10_000)
    expect(failed.terminals()).toBe(1)
    expect(failed.events).toEqual(["start", "error:TransportProtocolError"])
  })

  it("stop/kill are queued until the worker calls home, then sent in order; dropped once the stream is over", () => {
    const h = harness()
    h.stream.control("stop")
    h.stream.control("kill")
    const { link, calls } = recordingLink(true)
    h.stream.claim(link)
    expect(calls).toEqual(["control:stop", "control:kill"])
    h.stream.prologue(OK)
    h.stream.control("stop")
    expect(calls).toEqual(["control:stop", "control:kill", "control:stop"])
    h.stream.data(complete())
    h.stream.control("kill")
    expect(calls).toEqual(["control:stop", "control:kill", "control:stop"])
  })

  it("pause/resume reach the link; a stream paused before its call-home is paused on claim; complete_final resumes it for the sentinel", () => {
    const h = harness()
    h.stream.pause()
    h.stream.pause()
    const { link, calls } = recordingLink(true)
    h.stream.claim(link)
    expect(calls).toEqual(["pause"])
    h.stream.prologue(OK)
    h.stream.resume()
    h.stream.resume()
    h.stream.pause()
    expect(calls).toEqual(["pause", "resume", "pause"])
    h.stream.data(complete())
    expect(calls).toEqual(["pause", "resume", "pause", "resume"])
    // Closed: pause does nothing more.
    h.stream.close()
    h.stream.pause()
    expect(calls).toEqual(["pause", "resume", "pause", "resume"])
  })

  it("no call-home within the bound → TransportTimeoutError \"CallHomeTimeout\" naming the address; none once claimed", () => {
    const h = harness({ callHomeTimeoutMs: 200 })
    vi.advanceTimersByTime(199)
    expect(h.events).toEqual([])
    vi.advanceTimersByTime(1)
    expect(h.error()).toMatchObject({ _tag: "TransportTimeoutError", reason: "CallHomeTimeout", target: SUBJECT, detail: `no worker called home to ${ADDRESS} within 200 ms` })
    expect(h.table.has(SUBJECT)).toBe(false)

    const claimed = harness({ callHomeTimeoutMs: 200 })
    claimed.stream.claim(recordingLink(true).link)
    vi.advanceTimersByTime(1000)
    expect(claimed.events).toEqual([])
  })

  it("the wait for the sentinel is bounded: the link is released after sentinelTimeoutMs", () => {
    const h = harness({ sentinelTimeoutMs: 100 })
    const { link, calls } = recordingLink(true)
    h.stream.claim(link)
    h.stream.prologue(OK)
    h.stream.data(complete())
    vi.advanceTimersByTime(99)
    expect(calls).toEqual([])
    vi.advanceTimersByTime(1)
    expect(calls).toEqual(["release"])
    expect(h.stream.phase).toBe(Phase.Closed)
  })

  it("a worker's Reset before the call-home → \"ConnectionClosed\" naming its reason; ignored once claimed", () => {
    const h = harness()
    h.stream.resetBeforeClaim("connection died")
    expect(h.error()).toMatchObject({
      _tag: "TransportConnectionError",
      reason: "ConnectionClosed",
      detail: "the worker reset the stream before its prologue reached the router: connection died"
    })
    const claimed = streaming(false)
    claimed.stream.resetBeforeClaim("late")
    expect(claimed.events).toEqual(["start"])
  })

  it("the server shutting down fails an open stream with \"ConnectionClosed\"", () => {
    const h = streaming(true)
    h.stream.serverClosed()
    expect(h.error()).toMatchObject({ _tag: "TransportConnectionError", reason: "ConnectionClosed", detail: "the call-home server has shut down" })
    expect(h.stream.isDone()).toBe(true)
  })
})
