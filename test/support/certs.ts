/**
 * Certificates for the TLS tests, made by the test itself with the `openssl` command (scripts/test.sh
 * installs it) in a fresh temp directory: a self-signed CA, a server certificate it signs for
 * `localhost` and 127.0.0.1 (the names the tests dial), and a second, unrelated CA that trusts
 * none of them (the "wrong CA" client). EC P-256 keys, so making them takes milliseconds.
 *
 * It does not install anything, touch the machine's trust store, or keep the files: `remove`
 * deletes the directory.
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

/** Paths of the PEM files a test hands to `DYN_TCP_TLS_*`. */
export interface TestCerts {
  readonly dir: string
  /** The CA that signed `serverCert`. */
  readonly caCert: string
  /** Server certificate for DNS:localhost and IP:127.0.0.1, signed by `caCert`. */
  readonly serverCert: string
  readonly serverKey: string
  /** A self-signed CA that signed nothing here. */
  readonly otherCaCert: string
  /** A server certificate for DNS:elsewhere.invalid only (a name mismatch on loopback), signed by `caCert`. */
  readonly otherNameCert: string
  readonly otherNameKey: string
  /** Deletes the directory. */
  readonly remove: () => void
}

const openssl = (args: ReadonlyArray<string>, cwd: string): void => {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] })
}

const newKey = (cwd: string, file: string) => openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", file], cwd)

const selfSignedCa = (cwd: string, name: string) => {
  newKey(cwd, `${name}-key.pem`)
  openssl(["req", "-x509", "-new", "-key", `${name}-key.pem`, "-out", `${name}-cert.pem`, "-days", "2", "-subj", `/CN=${name}`,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], cwd)
}

const leaf = (cwd: string, name: string, san: string) => {
  newKey(cwd, `${name}-key.pem`)
  openssl(["req", "-new", "-key", `${name}-key.pem`, "-out", `${name}.csr`, "-subj", `/CN=${name}`], cwd)
  writeFileSync(join(cwd, `${name}.ext`), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n`)
  openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-out", `${name}-cert.pem`,
    "-days", "2", "-extfile", `${name}.ext`], cwd)
}

/** Makes the CA, the certificates and the other CA in a new temp directory. Throws when `openssl` is missing. */
export const makeTestCerts = (): TestCerts => {
  const dir = mkdtempSync(join(tmpdir(), "tls-test-"))
  selfSignedCa(dir, "ca")
  selfSignedCa(dir, "other-ca")
  leaf(dir, "server", "DNS:localhost,IP:127.0.0.1")
  leaf(dir, "elsewhere", "DNS:elsewhere.invalid")
  return {
    dir,
    caCert: join(dir, "ca-cert.pem"),
    serverCert: join(dir, "server-cert.pem"),
    serverKey: join(dir, "server-key.pem"),
    otherCaCert: join(dir, "other-ca-cert.pem"),
    otherNameCert: join(dir, "elsewhere-cert.pem"),
    otherNameKey: join(dir, "elsewhere-key.pem"),
    remove: () => rmSync(dir, { recursive: true, force: true })
  }
}
