/**
 * The defaults the command-line program applies beneath the environment, where they differ from
 * the library's (`TransportConfig`'s stay as they are): `worker` and `call` use file discovery
 * in the OS temp directory, so two terminals find each other; `demo` runs embedded, on loopback
 * with free ports and mem discovery. A variable that is set always wins over these.
 */
import { tmpdir } from "node:os"
import { join } from "node:path"
import { ConfigProvider } from "effect"

/** The CLI's default `DYN_DISCOVERY_PATH`: `transport-registry-discovery` in the OS temp directory. */
export const defaultDiscoveryPath = join(tmpdir(), "transport-registry-discovery")

/** Defaults of `worker` and `call`. */
export const cliDefaults: Readonly<Record<string, string>> = {
  DYN_DISCOVERY_BACKEND: "file",
  DYN_DISCOVERY_PATH: defaultDiscoveryPath
}

/** Every transport's listener on loopback with a free port: where one-machine setups start from. */
export const loopbackListeners: Readonly<Record<string, string>> = {
  DYN_HTTP_RPC_HOST: "127.0.0.1",
  DYN_HTTP_RPC_PORT: "0",
  DYN_HTTP_RESPONSE_HOST: "127.0.0.1",
  DYN_HTTP_RESPONSE_PORT: "0",
  DYN_TCP_RESPONSE_HOST: "127.0.0.1",
  DYN_TCP_RESPONSE_PORT: "0",
  DYN_TCP_REQUEST_HOST: "127.0.0.1",
  DYN_TCP_REQUEST_PORT: "0"
}

/**
 * Processes of one machine that find each other through file discovery in `dir`: loopback
 * listeners, metrics on a free port, warnings and up (the benchmark's, the soak's and the
 * profiling script's base).
 */
export const loopbackFileEnv = (dir: string): Record<string, string> => ({
  DYN_DISCOVERY_BACKEND: "file",
  DYN_DISCOVERY_PATH: dir,
  ...loopbackListeners,
  DYN_METRICS_PORT: "0",
  DYN_LOG: "warn"
})

/** Defaults of `demo`: one process on loopback, free ports, mem discovery. */
export const demoDefaults: Readonly<Record<string, string>> = { ...loopbackListeners, DYN_DISCOVERY_BACKEND: "mem" }

/** `defaults` beneath the current ConfigProvider (the environment): used only for unset variables. */
export const layerDefaults = (defaults: Readonly<Record<string, string>>) =>
  ConfigProvider.layerAdd(ConfigProvider.fromUnknown(defaults))

/** `values` above the current ConfigProvider: they win over the environment. */
export const layerOverrides = (values: Readonly<Record<string, string>>) =>
  ConfigProvider.layerAdd(ConfigProvider.fromUnknown(values), { asPrimary: true })
