/**
 * Runs one request on the worker, start to end: call home to the router, decode the request,
 * send the prologue, run the handler with an `emit` (and, for a streamed request, the item
 * Stream its transport delivered), and end the stream according to how the handler ended
 * (complete, failed, a failed write, interrupted, or stopped by the router).
 *
 * Each request's work runs with the log annotations `{ endpoint, requestId }` and, unless
 * tracing is off, inside the `handle <endpoint>` span (parent: the router's span, from the
 * `traceparent` header), with a call-home that connects (or waits for a pooled connection) in a
 * child span `call-home`; a writer at hand gets none. Tracing off adds no
 * span, and neither does a request without `traceparent` on a worker with no tracing backend
 * installed (`Tracing.unobserved`: nothing would see the spans). Nothing here runs per item.
 *
 * It does not accept requests, count them or manage fibers: `Worker.ts` does.
 */
import { Cause, Effect, Exit, Tracer } from "effect"
import type { Stream } from "effect"
import type { EndpointPath } from "../Instance.ts"
import type { RequestMessage } from "../RequestPlane.ts"
import type { ResponseWriter } from "../ResponsePlane.ts"
import type { TransportId } from "../Transport.ts"
import type { TracingMode } from "../TransportConfig.ts"
import type { ResponseWriteError, TransportError } from "../TransportError.ts"
import type { TransportRegistryShape } from "../TransportRegistry.ts"
import * as Tracing from "../observability/Tracing.ts"
import { recordFailure } from "../observability/Metrics.ts"
import { makeEmitter } from "./Emit.ts"
import { describeFailure, describeWriteFailure } from "./FailureText.ts"
import type { HandlerContext, RunnableHandler } from "./Handler.ts"

/** What every request of one served endpoint shares. */
export interface RequestSetup<Req, Res, E, R> {
  readonly endpoint: string
  readonly endpointPath: EndpointPath
  readonly instanceId: bigint
  readonly transportId: TransportId
  readonly tracing: TracingMode
  /** Debug logs are on (the call-home line is built only then). */
  readonly debug: boolean
  readonly registry: TransportRegistryShape
  /** Decodes the payload; undefined takes it as it is. */
  readonly decode: ((payload: unknown) => Exit.Exit<Req, unknown>) | undefined
  readonly handler: RunnableHandler<Req, Res, E, R>
}

/** Why the router's side ended the stream early. */
type Ended = "stop" | "kill" | "disconnect" | undefined

/** The function that runs one request of the endpoint described by `setup`. */
export const makeHandleRequest = <Req, Res, E, R>(setup: RequestSetup<Req, Res, E, R>) => {
  const { endpoint, registry, tracing } = setup
  // The same for every request of the endpoint.
  const handleAttributes = Tracing.rpcAttributes(setup.endpointPath, undefined, setup.transportId, undefined)

  /**
   * The writer of the call-home connection, or undefined (logged) when there is none; a
   * `call-home` span under `span` when a connection is made or waited for.
   */
  const callHome = (message: RequestMessage, span: Tracer.Span | undefined): Effect.Effect<ResponseWriter | undefined> => {
    const connectionTransport = message.control.connection_info.transport
    const client = registry.responseClientFor(connectionTransport)
    if (client === undefined) {
      return Effect.logWarning("no response transport for request").pipe(
        Effect.annotateLogs("connectionTransport", connectionTransport),
        Effect.as(undefined)
      )
    }
    const connectOptions = {
      connectionInfo: message.control.connection_info,
      requestId: message.control.id,
      codec: message.control.payload_codec ?? "json",
      requestTransport: setup.transportId
    }
    // A writer that needs no waiting (a spare pooled connection) comes from `connectNow`, as an
    // Exit: no Effect run for the call-home below.
    const now = client.connectNow?.(connectOptions)
    const connectOnly = now === undefined
      ? client.connect(connectOptions)
      : now instanceof Error // a TransportError (a writer is a plain object)
      ? Exit.fail(now)
      : Exit.succeed(now)
    // A writer at hand (the full mode's connection, a spare pooled one) made no connection and
    // took no time: no `call-home` span, which would say nothing and cost as much as `handle`
    // to export. With debug off, the Exit goes back as it is, so `serveRequest` takes the writer
    // synchronously (no Effect run for the call-home).
    const atHand = Exit.isExit(connectOnly) && Exit.isSuccess(connectOnly)
    if (!setup.debug && atHand) return connectOnly as Exit.Exit<ResponseWriter, never>
    const connect = setup.debug
      ? Effect.logDebug("calling home").pipe(Effect.annotateLogs("connectionTransport", connectionTransport), Effect.andThen(connectOnly))
      : connectOnly
    const traced = span === undefined || atHand
      ? connect
      : Effect.withSpan(connect, "call-home", {
        kind: "client",
        attributes: { "transport.response": client.transport, "transport.connection": connectionTransport },
        captureStackTrace: false
      })
    return Effect.flatMap(Effect.exit(traced), (connected) =>
      Exit.isSuccess(connected)
        ? Effect.succeed(connected.value)
        : Effect.as(Effect.logWarning("call-home failed", connected.cause).pipe(Effect.ensuring(Effect.sync(() => recordFailure(connected.cause, "server")))), undefined))
  }

  /** Runs the handler on a connected writer, then ends the stream. */
  const runHandler = (
    request: Req,
    context: HandlerContext,
    items: RequestMessage["items"],
    writer: ResponseWriter,
    span: Tracer.Span | undefined
  ) => {
    const emitter = makeEmitter<Res>(writer)
    let ended: Ended
    let lost: TransportError | undefined
    return Effect.withFiber<Exit.Exit<void, E>, never, R>((fiber) => {
      writer.onControl((m) => {
        ended ??= m
        if (m === "kill") writer.close()
        fiber.interruptUnsafe()
      })
      writer.onDisconnect((error) => {
        lost ??= error
        ended ??= "disconnect"
        fiber.interruptUnsafe()
      })
      // The transport's item Stream fails with a TransportError only (RequestPlane.ts).
      return Effect.exit(setup.handler(request, context, emitter.emit, items as Stream.Stream<unknown, TransportError> | undefined))
    }).pipe(
      Effect.onExit((exit) =>
        Effect.sync(() => {
          span?.attribute("rpc.response.items", emitter.items())
          if (ended === "disconnect") recordFailure(lost, "server")
          endStream(writer, Exit.isSuccess(exit) ? exit.value : exit, ended, emitter.failure())
        })
      )
    )
  }

  /** Call home, decode, prologue, handler. */
  const serveRequest = (message: RequestMessage, span: Tracer.Span | undefined): Effect.Effect<void, never, R> => {
    const home = callHome(message, span)
    return Exit.isExit(home) && Exit.isSuccess(home)
      ? serveConnected(message, (home as Exit.Success<ResponseWriter | undefined>).value, span)
      : Effect.flatMap(home, (writer) => serveConnected(message, writer, span))
  }

  /** Decode, prologue, handler, on the call-home writer (none: the call-home failed, logged). */
  const serveConnected = (
    message: RequestMessage,
    writer: ResponseWriter | undefined,
    span: Tracer.Span | undefined
  ): Effect.Effect<void, never, R> => {
    if (writer === undefined) return Effect.void
    let request = message.payload as Req
    if (setup.decode !== undefined) {
      const decoded = setup.decode(message.payload)
      if (Exit.isFailure(decoded)) {
        writer.prologue(`invalid request: ${describeFailure(decoded.cause)}`)
        return Effect.void
      }
      request = decoded.value
    }
    writer.prologue()
    const context: HandlerContext = { requestId: message.control.id, endpoint, instanceId: setup.instanceId, headers: message.headers }
    return runHandler(request, context, message.items, writer, span)
  }

  /**
   * The request in its `handle` span, child of the router's span named by `traceparent`. A trace
   * the router did not sample gets no span here either: the handler runs under the remote parent,
   * so spans of its own stay in that trace, unsampled.
   */
  const traced = (message: RequestMessage): Effect.Effect<void, never, R> => {
    const parent = Tracing.extractParent(message.headers)
    if (parent !== undefined && !parent.sampled) return Effect.provideService(serveRequest(message, undefined), Tracer.ParentSpan, parent)
    return Effect.useSpan(
      `handle ${endpoint}`,
      { kind: "server", parent, attributes: handleAttributes },
      (span) => Effect.provideService(serveRequest(message, span), Tracer.ParentSpan, span)
    )
  }

  return (message: RequestMessage): Effect.Effect<void, never, R> => {
    const work = tracing === "off"
      ? serveRequest(message, undefined)
      : message.headers.traceparent !== undefined
      ? traced(message)
      // No trace to carry on: a span only if something would observe it (`Tracing.unobserved`).
      : Effect.withFiber((fiber) => Tracing.unobserved(fiber) ? serveRequest(message, undefined) : traced(message))
    return Effect.annotateLogs(work, { endpoint, requestId: message.control.id })
  }
}

/**
 * Ends the stream after the handler: a failed write fails it (naming the ResponseWriteError)
 * even if the handler ignored it; success completes it; an early end by the router closes it; a
 * handler failure fails it in-band; an interruption by shutdown fails it too, so the router
 * never sees a silent end.
 */
const endStream = <E>(writer: ResponseWriter, exit: Exit.Exit<void, E>, ended: Ended, writeFailure: ResponseWriteError | undefined) => {
  if (writeFailure !== undefined) {
    if (ended === undefined) writer.fail(describeWriteFailure(writeFailure))
    else writer.close()
  } else if (Exit.isSuccess(exit)) writer.complete()
  else if (ended !== undefined) writer.close()
  else if (!Cause.hasInterruptsOnly(exit.cause)) writer.fail(describeFailure(exit.cause))
  else writer.fail("handler interrupted: the worker is shutting down")
}
