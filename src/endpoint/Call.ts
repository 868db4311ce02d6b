/**
 * One router call on one instance: open a pending stream on the response plane, send the
 * request with its ConnectionInfo, and wait for the ack and the stream in one `Effect.callback`.
 * A `CallState` decides every transition; this module only wires it to the transports, the
 * metrics and the Effect. Interrupting the call sends `stop`, then `kill` after the grace period.
 *
 * A streamed request (`items`, request_type "many_in") hands its item Stream to the request
 * transport, which pulls it; when the call is over (complete, failed or cancelled) the send is
 * cancelled too, so a transport still pulling the items stops and interrupts the Stream.
 *
 * It does not pick the instance or open spans (`Router.ts` does), and does nothing per item but
 * hand the batch to the consumer.
 */
import { Effect } from "effect"
import type { Stream } from "effect"
import type { PayloadCodecName } from "../ConnectionInfo.ts"
import type { RequestHeaders, RequestMessage } from "../RequestPlane.ts"
import type { PendingStream, ResponsePlaneServer } from "../ResponsePlane.ts"
import type { TransportId } from "../Transport.ts"
import { errorTypeOf } from "../TransportError.ts"
import type { CallError } from "../TransportError.ts"
import type { RequestTransport } from "../TransportRegistry.ts"
import type * as MetricsModule from "../observability/Metrics.ts"
import { CallState } from "./CallState.ts"
import type { CallOutcome } from "./CallState.ts"
import { sendLean } from "./SendRequest.ts"
import type { RunSend } from "./SendRequest.ts"

/** What every call of one client shares. */
export interface CallSetup {
  readonly endpoint: string
  readonly responseId: TransportId
  readonly responseServer: ResponsePlaneServer
  readonly codec: PayloadCodecName
  readonly graceMs: number
  readonly metadata: Readonly<Record<string, unknown>> | undefined
  readonly metrics: MetricsModule.Recorders
  /** Runs a transport's `send` Effect in the client's context. */
  readonly runSend: RunSend
}

/** One call's arguments. */
export interface CallArgs<Req, Res> {
  readonly address: string
  /** The unified record's request-transport metadata, if any. */
  readonly metadata: Readonly<Record<string, string>> | undefined
  readonly requestTransport: RequestTransport
  readonly request: Req
  readonly onItems: (items: ReadonlyArray<Res>) => void
  readonly headers: RequestHeaders | undefined
  /** Receives the pending stream once opened (for flow control). */
  readonly onOpen: ((pending: PendingStream) => void) | undefined
  /** A streamed request's items; undefined for a plain request. */
  readonly items: Stream.Stream<unknown, unknown> | undefined
}

const toEffect = (outcome: CallOutcome<CallError>): Effect.Effect<void, CallError> =>
  outcome._tag === "Done" ? Effect.void : outcome._tag === "Failed" ? Effect.fail(outcome.error) : Effect.die(outcome.defect)

/** The call function of a client set up by `setup`. */
export const makeCallOn = (setup: CallSetup) => {
  const { endpoint, responseId, codec, metrics: Metrics } = setup
  return <Req, Res>(args: CallArgs<Req, Res>): Effect.Effect<void, CallError> =>
    Effect.suspend(() => {
      const requestId = crypto.randomUUID()
      const requestTransportId = args.requestTransport.registration.transport_id
      const startedAt = performance.now()
      const state = new CallState<Res, CallError>(args.onItems, {
        graceMs: setup.graceMs,
        hooks: {
          onAck: (error) => {
            if (error === undefined) {
              Metrics.recordRequest(requestTransportId, "request", (performance.now() - startedAt) / 1000)
              return
            }
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
      const sink = { onItems: state.items, onEnd: state.end, onError: state.error }
      return setup.responseServer.open({ requestId, endpoint, codec, sink }).pipe(
        Effect.tapError((error) =>
          Effect.sync(() => {
            const type = errorTypeOf(error)
            if (type !== undefined) Metrics.recordError(responseId, type)
          })
        ),
        Effect.flatMap((opened) => {
          state.opened(opened)
          args.onOpen?.(opened)
          const control: RequestMessage["control"] = {
            id: requestId,
            request_type: args.items === undefined ? "single_in" : "many_in",
            response_type: "many_out",
            payload_codec: codec,
            connection_info: opened.connectionInfo,
            ...(setup.metadata === undefined ? {} : { metadata: setup.metadata })
          }
          const headers = { ...args.headers, "x-request-id": requestId }
          const message: RequestMessage = args.items === undefined
            ? { control, payload: args.request, headers }
            : { control, payload: args.request, headers, items: args.items }
          const target = { address: args.address, endpoint, metadata: args.metadata }
          // One callback waits for both the ack and the stream: a complete stream implies the
          // ack, so the call ends with the stream even if the ack is still on its way.
          return Effect.callback<void, CallError>((resume) => {
            state.wait((outcome) => resume(toEffect(outcome)))
            cancelSend = sendLean(setup.runSend, args.requestTransport.client, target, message, state.ack)
            state.sent(cancelSend)
            return Effect.sync(() => state.cancel())
          })
        }),
        Effect.onExit(() =>
          Effect.sync(() => {
            state.finish()
            // The call is over: a streamed request's items are no longer wanted.
            if (args.items !== undefined) cancelSend?.()
          })
        )
      )
    })
}
