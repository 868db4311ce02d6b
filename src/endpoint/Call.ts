/**
 * One router call on one instance: open a pending stream on the response plane the instance's
 * route names, send the request with its ConnectionInfo (the body in the route's codec), and wait
 * for the ack and the stream in one `Effect.callback`. A `CallState` decides every transition;
 * this module only wires it to the transports, the metrics and the Effect. Interrupting the call
 * sends `stop`, then `kill` after the grace period.
 *
 * A failure before the ack that may go to another instance (`Failover.isRetryableBeforeAck`, and
 * no item reached the consumer) fails as a `PreAckFailure` carrying the error; the router decides
 * whether to retry. Each attempt is a call of its own here: a fresh request id and pending stream.
 *
 * A streamed request (`items`, request_type "many_in") hands its item Stream to the request
 * transport, which pulls it; when the call is over (complete, failed or cancelled) the send is
 * cancelled too, so a transport still pulling the items stops and interrupts the Stream.
 *
 * It does not pick the instance, retry or open spans (`Router.ts` does), and does nothing per item
 * but hand the batch to the consumer.
 */
import { Effect } from "effect"
import type { Stream } from "effect"
import type { ConnectionInfo } from "../ConnectionInfo.ts"
import type { Instance } from "../Instance.ts"
import type { RequestHeaders, RequestMessage } from "../RequestPlane.ts"
import type { PendingStream } from "../ResponsePlane.ts"
import { errorTypeOf } from "../TransportError.ts"
import type { CallError } from "../TransportError.ts"
import type * as MetricsModule from "../observability/Metrics.ts"
import { CallState } from "./CallState.ts"
import type { CallOutcome } from "./CallState.ts"
import { isRetryableBeforeAck, PreAckFailure } from "./Failover.ts"
import type { Route } from "./Route.ts"
import { randomUuid } from "../protocol/StreamId.ts"
import { sendLean } from "./SendRequest.ts"
import type { RunSend } from "./SendRequest.ts"

/** What every call of one client shares. */
export interface CallSetup {
  readonly endpoint: string
  readonly graceMs: number
  readonly metadata: Readonly<Record<string, unknown>> | undefined
  readonly metrics: MetricsModule.Recorders
  /** Runs a transport's `send` Effect in the client's context. */
  readonly runSend: RunSend
  /** Called when an instance acked a request (the quarantine clears its run of failures). */
  readonly onAcked?: ((instance: Instance) => void) | undefined
}

/** One call's arguments. */
export interface CallArgs<Req, Res> {
  /** The instance and how to reach it. */
  readonly route: Route
  readonly request: Req
  readonly onItems: (items: ReadonlyArray<Res>) => void
  readonly headers: RequestHeaders | undefined
  /** Receives the pending stream once opened (for flow control). */
  readonly onOpen: ((pending: PendingStream) => void) | undefined
  /** A streamed request's items; undefined for a plain request. */
  readonly items: Stream.Stream<unknown, unknown> | undefined
}

/** The `connection_info` of a request whose request plane carries the response stream itself (`Route.carriesResponses`). */
const NO_CONNECTION_INFO: ConnectionInfo = { transport: "none", info: "" }

const toEffect = (outcome: CallOutcome<CallError>): Effect.Effect<void, CallError> =>
  outcome._tag === "Done" ? Effect.void : outcome._tag === "Failed" ? Effect.fail(outcome.error) : Effect.die(outcome.defect)

/** The call function of a client set up by `setup`. */
export const makeCallOn = (setup: CallSetup) => {
  const { endpoint, metrics: Metrics } = setup
  return <Req, Res>(args: CallArgs<Req, Res>): Effect.Effect<void, CallError | PreAckFailure> =>
    Effect.suspend(() => {
      const route = args.route
      const { responseId, codec } = route
      const requestId = randomUuid()
      const requestTransportId = route.requestTransport.registration.transport_id
      const startedAt = performance.now()
      // Set when the ack failed while nothing had arrived: that failure is how the call ends.
      let failedBeforeAck = false
      const state: CallState<Res, CallError> = new CallState<Res, CallError>(args.onItems, {
        graceMs: setup.graceMs,
        hooks: {
          onAck: (error) => {
            if (error === undefined) {
              Metrics.recordRequest(requestTransportId, "request", (performance.now() - startedAt) / 1000)
              setup.onAcked?.(route.instance)
              return
            }
            if (state.phase === "pending") failedBeforeAck = true
            const type = errorTypeOf(error)
            if (type !== undefined) Metrics.recordError(requestTransportId, type)
          },
          onStreamError: (error) => {
            const type = errorTypeOf(error)
            if (type !== undefined) Metrics.recordError(responseId, type)
          },
          onRelease: () => {
            Metrics.streamDelta(responseId, "response", -1)
            Metrics.recordRequest(responseId, "response", (performance.now() - startedAt) / 1000)
          }
        }
      })
      Metrics.streamDelta(responseId, "response", 1)
      let cancelSend: (() => void) | undefined
      /** The call is over: release its stream; a streamed request's items are no longer wanted. */
      const finish = () => {
        state.finish()
        if (args.items !== undefined) cancelSend?.()
      }
      /**
       * Sends the request on `opened` and waits for the ack and the stream. With `finishes`, the
       * call's end also finishes it (see below); interrupting it cancels the call either way.
       */
      const sendAndWait = (opened: PendingStream, finishes: boolean): Effect.Effect<void, CallError | PreAckFailure> => {
        state.opened(opened)
        args.onOpen?.(opened)
        const control: RequestMessage["control"] = {
          id: requestId,
          request_type: args.items === undefined ? "single_in" : "many_in",
          response_type: "many_out",
          payload_codec: codec,
          // A request plane that carries the stream itself takes `responseStream` instead: the
          // call-home address is not built for it.
          connection_info: route.carriesResponses ? NO_CONNECTION_INFO : opened.connectionInfo,
          ...(setup.metadata === undefined ? {} : { metadata: setup.metadata })
        }
        const headers = args.headers === undefined ? { "x-request-id": requestId } : { ...args.headers, "x-request-id": requestId }
        const sent: RequestMessage = args.items === undefined
          ? { control, payload: args.request, headers }
          : { control, payload: args.request, headers, items: args.items }
        // Only a request plane that carries the stream takes it (the others never see it).
        const message: RequestMessage = route.carriesResponses ? { ...sent, responseStream: opened } : sent
        const target = { address: route.address, endpoint, metadata: route.metadata }
        // One callback waits for both the ack and the stream: a complete stream implies the
        // ack, so the call ends with the stream even if the ack is still on its way.
        return Effect.callback<void, CallError | PreAckFailure>((resume) => {
          state.wait((outcome) => {
            if (finishes) finish()
            resume(
              outcome._tag === "Failed" && failedBeforeAck && isRetryableBeforeAck(outcome.error)
                ? Effect.fail(new PreAckFailure(outcome.error))
                : toEffect(outcome)
            )
          })
          try {
            cancelSend = sendLean(setup.runSend, route.requestTransport.client, target, message, state.ack)
          } catch (defect) {
            if (finishes) finish()
            throw defect
          }
          state.sent(cancelSend)
          return Effect.sync(() => state.cancel())
        })
      }
      const openOptions = { requestId, endpoint, codec, sink: { onItems: state.items, onEnd: state.end, onError: state.error }, carried: route.carriesResponses }
      // A stream opened at once (the TCP call-home server, listening): one callback is the whole
      // call, which finishes it as it ends (a cancelled call is not finished: `cancel` releases
      // it). Fewer Effect steps per call than the general path below (measured with callgrind).
      const now = route.responseServer.openNow?.(openOptions)
      if (now !== undefined) return sendAndWait(now, true)
      return route.responseServer.open(openOptions).pipe(
        Effect.tapError((error) =>
          Effect.sync(() => {
            const type = errorTypeOf(error)
            if (type !== undefined) Metrics.recordError(responseId, type)
          })
        ),
        Effect.flatMap((opened) => sendAndWait(opened, false)),
        Effect.onExit(() => Effect.sync(finish))
      )
    })
}
