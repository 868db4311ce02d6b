/**
 * One router call on one instance: open a pending stream on the response plane, send the
 * request with its ConnectionInfo, and wait for the ack and the stream in one `Effect.callback`.
 * A `CallState` decides every transition; this module only wires it to the transports, the
 * metrics and the Effect. Interrupting the call sends `stop`, then `kill` after the grace period.
 *
 * It does not pick the instance or open spans (`Router.ts` does), and does nothing per item but
 * hand the batch to the consumer.
 */
import { Effect } from "effect"
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
  readonly requestTransport: RequestTransport
  readonly request: Req
  readonly onItems: (items: ReadonlyArray<Res>) => void
  readonly headers: RequestHeaders | undefined
  /** Receives the pending stream once opened (for flow control). */
  readonly onOpen: ((pending: PendingStream) => void) | undefined
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
          const message: RequestMessage = {
            control: {
              id: requestId,
              request_type: "single_in",
              response_type: "many_out",
              payload_codec: codec,
              connection_info: opened.connectionInfo,
              ...(setup.metadata === undefined ? {} : { metadata: setup.metadata })
            },
            payload: args.request,
            headers: { ...args.headers, "x-request-id": requestId }
          }
          // One callback waits for both the ack and the stream: a complete stream implies the
          // ack, so the call ends with the stream even if the ack is still on its way.
          return Effect.callback<void, CallError>((resume) => {
            state.wait((outcome) => resume(toEffect(outcome)))
            state.sent(sendLean(setup.runSend, args.requestTransport.client, { address: args.address, endpoint }, message, state.ack))
            return Effect.sync(() => state.cancel())
          })
        }),
        Effect.onExit(() => Effect.sync(() => state.finish()))
      )
    })
}
