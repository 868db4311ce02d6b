/**
 * The two tables the full TCP mode shares with the TCP response plane, one instance per process:
 * - on the router, the call-home server's open streams by subject (= stream id): the server
 *   (`router/CallHomeServer.ts`) fills it, and the full mode's sender finds there the stream a
 *   request's ConnectionInfo names, which the worker's frames then feed on the full-mode
 *   connection (one stream state machine for both response paths);
 * - on the worker, the response writers the full mode opened on its connections, by request id:
 *   the TCP response-plane client hands one out when the handler calls home
 *   (`TcpResponseTransport.ts`), instead of dialling the router.
 *
 * Both `TcpResponseTransport.layer` and `FullMode.layer` provide `layer` to themselves, and a layer
 * is built once per build (memoized by reference), so one build gives both the same tables.
 *
 * It holds data only: nothing here reads, writes or times anything.
 */
import { Context, Layer } from "effect"
import type { ResponseWriter } from "../../../ResponsePlane.ts"
import type { CallHomeStream } from "../router/CallHomeStream.ts"
import { EntryTable } from "../../../internal/EntryTable.ts"
import { StreamIdTable } from "../../../internal/StreamIdTable.ts"

/** The tables; see the module comment. */
export interface FullModeHubShape {
  /** Router: the call-home server's open streams, by stream id (the subject's bytes). */
  readonly streams: StreamIdTable<CallHomeStream>
  /** Worker: full-mode response writers not yet taken by the response-plane client, by request id. */
  readonly writers: EntryTable<ResponseWriter>
}

/** The process's full-mode tables. */
export class FullModeHub extends Context.Service<FullModeHub, FullModeHubShape>()("transport-registry/TcpFullModeHub") {}

/** Fresh, empty tables (for `make` functions and tests that build both sides by hand). */
export const makeHub = (): FullModeHubShape => ({ streams: new StreamIdTable(), writers: new EntryTable() })

/** Fresh tables; built once per layer build and shared by every layer that provides it. */
export const layer: Layer.Layer<FullModeHub> = Layer.sync(FullModeHub, makeHub)
