/**
 * The TLS variables of the TCP planes (`DYN_TCP_TLS_*`, Dynamo's names and roles; docs/security.md,
 * "TLS"), and their start-up checks: the paths set in pairs, readable, PEM of the right kind, and a
 * key that matches its certificate. The settings' shape is `TcpTlsSettings` (TransportSettings.ts);
 * `TransportConfig.ts` reads the variables with the others. What TLS does with them:
 * `internal/Tls.ts`.
 */
import { readFileSync } from "node:fs"
import { createSecureContext } from "node:tls"
import { host, seconds, text, v } from "./TransportConfigParsers.ts"
import type { ConfigProblem, Parser } from "./TransportConfigParsers.ts"
/** A file path, checked at start-up by `tcpTlsProblems` (readable, PEM of the right kind). */
const pemPath: Parser<string> = { expected: "a path to a readable PEM file", parse: text.parse }

/** The `DYN_TCP_TLS_*` variables. */
export const tcpTlsVars = {
  tcpTlsCertPath: v(
    "DYN_TCP_TLS_CERT_PATH",
    "(unset)",
    pemPath,
    "PEM certificate (chain), TLS server role: with DYN_TCP_TLS_KEY_PATH, every TCP listener (call-home server, TCP request server) speaks TLS only. Checked at start-up"
  ),
  tcpTlsKeyPath: v("DYN_TCP_TLS_KEY_PATH", "(unset)", pemPath, "PEM private key of DYN_TCP_TLS_CERT_PATH; one set without the other is a start-up error"),
  tcpTlsCaCertPath: v(
    "DYN_TCP_TLS_CA_CERT_PATH",
    "(unset)",
    pemPath,
    "PEM CA certificate(s), TLS client role: when set, every TCP dialer (router to a worker's request port, worker calling home) speaks TLS and verifies the server's certificate against these CAs (not the system roots) and its name"
  ),
  tcpTlsServerName: v(
    "DYN_TCP_TLS_SERVER_NAME",
    "(unset)",
    host,
    "Name the TCP dialers verify in the server's certificate (and send as SNI) instead of the host they dial: for a certificate with a DNS name reached by IP"
  ),
  tcpTlsHandshakeTimeout: v(
    "DYN_TCP_TLS_HANDSHAKE_TIMEOUT_SECS",
    "10",
    seconds,
    "A TLS listener closes a connection whose handshake is not done within this (a dialer's handshake counts in its own connect timeout)"
  )
} as const

/** The problems of the TLS paths: set in pairs, readable, PEM, and a key that matches its certificate. */
export const tcpTlsProblems = (p: {
  readonly tcpTlsCertPath: string | undefined
  readonly tcpTlsKeyPath: string | undefined
  readonly tcpTlsCaCertPath: string | undefined
}): ReadonlyArray<ConfigProblem> => {
  const problems: Array<ConfigProblem> = []
  const { tcpTlsCaCertPath: caVar, tcpTlsCertPath: certVar, tcpTlsKeyPath: keyVar } = tcpTlsVars
  const read = (variable: string, path: string | undefined, marker: RegExp, what: string): Buffer | undefined => {
    if (path === undefined) return undefined
    let bytes: Buffer
    try {
      bytes = readFileSync(path)
    } catch (cause) {
      problems.push({ variable, got: path, expected: `a readable ${what} file (${(cause as Error).message})` })
      return undefined
    }
    if (!marker.test(bytes.toString("latin1"))) {
      problems.push({ variable, got: path, expected: `a ${what} file (no PEM block of that kind in it)` })
      return undefined
    }
    return bytes
  }
  const cert = read(certVar.name, p.tcpTlsCertPath, /-----BEGIN CERTIFICATE-----/, "PEM certificate")
  const key = read(keyVar.name, p.tcpTlsKeyPath, /-----BEGIN [A-Z ]*PRIVATE KEY-----/, "PEM private key")
  const ca = read(caVar.name, p.tcpTlsCaCertPath, /-----BEGIN CERTIFICATE-----/, "PEM CA certificate")
  if (p.tcpTlsCertPath !== undefined && p.tcpTlsKeyPath === undefined) {
    problems.push({ variable: keyVar.name, got: "", expected: `the private key of ${certVar.name} (${p.tcpTlsCertPath}): a certificate without its key cannot serve TLS` })
  }
  if (p.tcpTlsKeyPath !== undefined && p.tcpTlsCertPath === undefined) {
    problems.push({ variable: certVar.name, got: "", expected: `the certificate of ${keyVar.name} (${p.tcpTlsKeyPath}): a key without its certificate cannot serve TLS` })
  }
  if (cert !== undefined && key !== undefined) {
    try {
      createSecureContext({ cert, key })
    } catch (cause) {
      problems.push({
        variable: keyVar.name,
        got: p.tcpTlsKeyPath!,
        expected: `the private key of the certificate in ${certVar.name} (${p.tcpTlsCertPath}): ${(cause as Error).message}`
      })
    }
  }
  if (ca !== undefined) {
    try {
      createSecureContext({ ca })
    } catch (cause) {
      problems.push({ variable: caVar.name, got: p.tcpTlsCaCertPath!, expected: `PEM CA certificates (${(cause as Error).message})` })
    }
  }
  return problems
}
