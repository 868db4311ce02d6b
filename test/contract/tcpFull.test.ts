/**
 * The transport contract on the full TCP mode: requests and responses multiplexed on one
 * persistent connection (`DYN_REQUEST_PLANE=tcp`, `DYN_RESPONSE_PLANE=tcp`, `DYN_TCP_FULL_MODE`
 * on, which is its default). It passes once `TcpFullMode.layer` is wired into the TCP request
 * plane's layer (`registry/layerConfig.ts` / `TcpRequestTransport.layer`) and the router passes
 * the instance record's metadata to the request plane (so `speaksFullMode` sees `tcp_mux`).
 */
import { configStack } from "../support/stacks.ts"
import { transportContract } from "./transportContract.ts"

transportContract(
  configStack(
    { DYN_REQUEST_PLANE: "tcp", DYN_RESPONSE_PLANE: "tcp", DYN_TCP_FULL_MODE: "true", DYN_TCP_REQUEST_HEARTBEAT_INTERVAL_SECS: "1" },
    { name: "tcp full mode" }
  )
)
