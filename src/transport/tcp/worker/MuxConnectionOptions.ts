/**
 * The options of the worker's mux connection (MuxConnection.ts) once connected: what MuxConnect.ts
 * dials with and the pool or the full mode sets.
 */

/** Options of one mux connection once connected. */
export interface MuxConnectionOptions {
  /** "host:port" of the router, named in errors. */
  readonly address: string
  /** The router's frontend_server_id, sent in the handshake. */
  readonly frontendServerId: string
  /** Largest frame sent or accepted, header included. */
  readonly maxMessageSize: number
  /** After a graceful close, how long to wait for the router's close before destroying. */
  readonly lingerMs: number
  /** Initial credit of each stream, in Data payload bytes. */
  readonly streamWindow: number
  /** Frame bytes that may be sent before a ConnectionAck covers them. */
  readonly connectionWindow: number
  /** When queued frames are flushed: "tick" (the end of the tick, `onNextTick`) or "immediate" (`setImmediate`). */
  readonly flush: "tick" | "immediate"
  /**
   * Send the response mux handshake and wait for the router's ConnectionAck(0) (default true).
   * False: the connection is open at once (the full mode, whose hello came before).
   */
  readonly handshake?: boolean | undefined
  /** Decode the full mode's kinds 9-14 too (handed to `otherFrame`); default false. */
  readonly fullMode?: boolean | undefined
}
