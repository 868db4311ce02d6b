#!/bin/sh
# The package as a user gets it (run by scripts/test.sh after vitest; alone: npm run test:consumer):
#  1. npm pack (prepack builds dist/) into a temporary directory;
#  2. a fresh project (scripts/consumer-project.ts) that declares only our peers, typescript and
#     @types/node, with every ```ts block of README.md and a check of every package subpath;
#  3. npm install of the tarball (from the npm cache when it can);
#  4. tsc under the consumer's strict tsconfig (module nodenext, no allowImportingTsExtensions),
#     with skipLibCheck off so that our .d.ts are checked too (errors in other packages' .d.ts
#     do not count: the consumer does not own them);
#  5. every README example runs and exits 0, in one process, with no external service (DYN_*
#     below); the subpath check runs; `npx transport-registry --help` exits 0;
#  6. when the machine's own Node is older than `engines`, the bin says so and exits 1.
# Any failing step fails the script. KEEP_CONSUMER=1 keeps the temporary directory.
set -eu
cd "$(dirname "$0")/.."
root=$PWD
system_node=$(command -v node || true)
export PATH="$root/node_modules/.bin:$PATH"
started=$(date +%s)

work=$(mktemp -d "${TMPDIR:-/tmp}/transport-registry-consumer.XXXXXX")
if [ "${KEEP_CONSUMER:-}" = "1" ]; then
  trap 'echo "consumer: kept $work"' EXIT
else
  trap 'rm -rf "$work"' EXIT
fi
app="$work/app"
say() {
  echo "consumer [$(($(date +%s) - started)) s]: $*"
}
fail() {
  echo "consumer: FAILED: $*" >&2
  exit 1
}
# Runs a command with its output indented; on failure prints it and fails.
run() {
  label=$1
  shift
  if ! "$@" >"$work/out.log" 2>&1; then
    sed 's/^/    /' "$work/out.log" >&2
    fail "$label"
  fi
}

say "npm pack (prepack builds dist/)"
run "npm pack" npm pack --pack-destination "$work"
tarball=$(ls "$work"/*.tgz)
grep -E "package size|unpacked size|total files" "$work/out.log" | sed 's/^npm notice /    /'

run "consumer project" node scripts/consumer-project.ts "$app" "$tarball"
sed 's/^/    /' "$work/out.log"

say "npm install (the tarball, our peers, typescript, @types/node)"
cd "$app"
run "npm install" npm install --no-audit --no-fund --prefer-offline

say "tsc (strict, module nodenext, no allowImportingTsExtensions; our .d.ts checked too)"
# One pass with skipLibCheck off, so that our .d.ts are checked as well as the examples. Errors in
# other packages' .d.ts do not count (Effect's, under lib esnext without DOM, have some, and a
# consumer with the default skipLibCheck never sees them); any other error fails the step.
npx tsc -p . --skipLibCheck false --noEmitOnError false --pretty false >"$work/tsc.log" 2>&1 || true
if awk '/error TS[0-9]+/ && ($0 !~ /^node_modules\// || $0 ~ /^node_modules\/transport-registry\//) { bad = 1 } END { exit !bad }' "$work/tsc.log"; then
  grep -v "^node_modules/" "$work/tsc.log" | grep -v "^ " | head -40 | sed 's/^/    /' >&2
  grep -A3 "^node_modules/transport-registry/" "$work/tsc.log" | head -40 | sed 's/^/    /' >&2
  fail "tsc in the consumer"
fi
[ -f out/subpaths.js ] || { cat "$work/tsc.log" >&2; fail "tsc emitted nothing"; }

# One process, no external service: the recommended transports on loopback, free ports, mem discovery.
export DYN_DISCOVERY_BACKEND=mem DYN_REQUEST_PLANE=http DYN_RESPONSE_PLANE=tcp
export DYN_HTTP_RPC_HOST=127.0.0.1 DYN_HTTP_RPC_PORT=0 DYN_TCP_RESPONSE_HOST=127.0.0.1 DYN_TCP_RESPONSE_PORT=0
for example in out/readme-*.js; do
  n=${example#out/readme-}
  say "node $example (README.md's \`\`\`ts block ${n%.js})"
  run "$example" timeout 60 node "$example"
  [ -s "$work/out.log" ] || fail "$example printed nothing"
  sed 's/^/    /' "$work/out.log"
done

say "node out/subpaths.js"
run "package subpaths" timeout 60 node out/subpaths.js
sed 's/^/    /' "$work/out.log"

say "npx transport-registry --help"
run "npx transport-registry --help" timeout 60 npx --no-install transport-registry --help
[ -s "$work/out.log" ] || fail "transport-registry --help printed nothing"
head -3 "$work/out.log" | sed 's/^/    /'

say "npx transport-registry bench (two modes, small; the tool ignores the DYN_* above)"
run "npx transport-registry bench" timeout 180 npx --no-install transport-registry bench --modes tcp-full,memory --streams 50 --warmup-secs 0.2 --warmup-streams 200 --measure-secs 0.2 --concurrency 1,8
grep -E "tcp-full|memory" "$work/out.log" | head -4 | sed 's/^/    /'

if [ -n "$system_node" ] && ! "$system_node" -e '
  const [a, b, c] = process.versions.node.split(".").map(Number)
  const [x, y, z] = /(\d+)\.(\d+)\.(\d+)/.exec(process.argv[1]).slice(1).map(Number)
  process.exit(a !== x ? (a > x ? 0 : 1) : b !== y ? (b > y ? 0 : 1) : c >= z ? 0 : 1)' "$(node -p 'require("./node_modules/transport-registry/package.json").engines.node')"; then
  say "transport-registry on this machine's Node $("$system_node" --version), older than engines"
  if "$system_node" node_modules/.bin/transport-registry --help >"$work/out.log" 2>&1; then
    fail "the bin ran on Node $("$system_node" --version), below engines"
  fi
  grep -q "needs Node.js >=" "$work/out.log" || { cat "$work/out.log" >&2; fail "no clear message on an old Node"; }
  sed 's/^/    /' "$work/out.log"
fi

echo "consumer: OK in $(($(date +%s) - started)) s"
