// Regenerates the variable table of docs/configuration.md from src/TransportConfig.ts.
// Usage: node scripts/gen-config-doc.ts  (rewrites the block between the markers)
import { readFileSync, writeFileSync } from "node:fs"
import { variables } from "../src/TransportConfig.ts"

const path = new URL("../docs/configuration.md", import.meta.url)
const doc = readFileSync(path, "utf8")
const start = "<!-- variables:start -->"
const end = "<!-- variables:end -->"
const rows = variables.map((v) => `| \`${v.name}\` | \`${v.default}\` | ${v.accepts} | ${v.description} |`)
const block = [start, "| Variable | Default | Accepts | Description |", "|---|---|---|---|", ...rows, end].join("\n")
writeFileSync(path, doc.slice(0, doc.indexOf(start)) + block + doc.slice(doc.indexOf(end) + end.length))
