/**
 * The import rules of src/ (docs/architecture.md, "Which module may import which"). Run by
 * `npm run check:imports`, which the test command runs first: a violation fails CI.
 */
const domain = "^src/(Transport|TransportError|Instance|ConnectionInfo|TransportConfig|TransportConfigParsers|TransportConfigTls|TransportSettings)\\.ts$"
const tags = "^src/(RequestPlane|ResponsePlane|TransportRegistry|Discovery)\\.ts$"
module.exports = {
  forbidden: [
    { name: "no-circular", severity: "error", comment: "an import cycle", from: { path: "^src/" }, to: { circular: true } },
    {
      name: "protocol-is-pure",
      severity: "error",
      comment: "protocol/ is bytes in, data out: no sockets, timers, Effect, or modules above it",
      from: { path: "^src/protocol/" },
      to: { path: "^(node:)?(net|http|http2|tls|dgram|timers)$|^(node_modules/)?(effect|@effect/[^/]+)(/|$)|^src/(TransportError|ConnectionInfo)\\.ts$|^src/(transport|registry|discovery|observability|endpoint|cli|internal)/|^src/(Endpoint|RequestPlane|ResponsePlane|TransportRegistry|Discovery)\\.ts$", dependencyTypesNot: ["type-only"] }
    },
    {
      name: "domain-imports-domain-only",
      severity: "error",
      from: { path: domain },
      to: { path: "^src/", pathNot: domain }
    },
    {
      name: "tags-never-import-implementations",
      severity: "error",
      comment: "service tag modules hold shapes only; implementations import them, not the reverse",
      from: { path: tags },
      to: { path: "^src/(transport|registry|discovery|endpoint|cli|protocol)/|^src/Endpoint\\.ts$" }
    },
    {
      name: "transports-are-independent",
      severity: "error",
      comment: "a transport folder never imports another transport",
      from: { path: "^src/transport/([^/]+)/" },
      to: { path: "^src/transport/", pathNot: "^src/transport/$1/" }
    },
    {
      name: "only-composition-imports-transports",
      severity: "error",
      comment: "transports are composed in registry/layerConfig.ts (and exported by index.ts); nothing else below the CLI imports them",
      from: { path: "^src/", pathNot: "^src/(transport/|registry/layerConfig\\.ts$|index\\.ts$|cli/)" },
      to: { path: "^src/transport/" }
    },
    {
      name: "internal-and-observability-stay-low",
      severity: "error",
      from: { path: "^src/(internal|observability)/" },
      to: { path: "^src/(transport|registry|discovery|endpoint|cli)/|^src/(Endpoint|TransportRegistry|Discovery)\\.ts$" }
    },
    {
      name: "nothing-imports-the-cli",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/cli/" },
      to: { path: "^src/cli/" }
    }
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "node_modules/.+/node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { extensions: [".ts", ".js"] }
  }
}
