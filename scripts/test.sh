#!/bin/sh
# The whole test suite, with its own setup on a fresh machine:
#  - npm ci when node_modules is missing or older than package-lock.json;
#  - the Debian packages the tests need (nats-server, etcd-server, prometheus for promtool,
#    curl, python3, iproute2, openssl, chromium),
#    installed when missing;
#  - then the import rules (dependency-cruiser), typecheck and vitest, on the Node 24 that the `node` devDependency provides;
#  - then the package as a user installs it (scripts/consumer-test.sh: npm pack, install into a
#    fresh project, type-check and run README.md's examples, `npx transport-registry --help`).
set -eu
cd "$(dirname "$0")/.."

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

need=""
command -v nats-server >/dev/null 2>&1 || need="$need nats-server"
command -v etcd >/dev/null 2>&1 || need="$need etcd-server"
command -v promtool >/dev/null 2>&1 || need="$need prometheus"
command -v curl >/dev/null 2>&1 || need="$need curl"
# python3: test/support/blackhole.ts (a listener that never accepts, for connect timeouts)
command -v python3 >/dev/null 2>&1 || need="$need python3-minimal"
# ip and ss: test/multihost.netns.test.ts (network namespaces joined by veth pairs)
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v ss >/dev/null 2>&1 || need="$need iproute2"
# openssl: test/tls.test.ts makes a self-signed CA and certificates
command -v openssl >/dev/null 2>&1 || need="$need openssl"
# chromium: test/bench.report.test.ts renders the benchmark's HTML report headless
command -v chromium >/dev/null 2>&1 || need="$need chromium"
if [ -n "$need" ]; then
  echo "installing Debian packages:$need"
  SUDO=""
  [ "$(id -u)" = "0" ] || SUDO="sudo"
  $SUDO apt-get update -qq || true
  if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need; then
    echo "the tests need these Debian packages, and they could not be installed here:$need" >&2
    echo "install them (as root: apt-get install$need), or put nats-server, etcd, promtool, curl, python3, ip, ss, openssl and chromium on PATH, then run npm test again" >&2
    exit 1
  fi
  # the prometheus package starts a server through its init scripts on some systems; tests do not need it
  $SUDO service prometheus stop >/dev/null 2>&1 || true
fi

export PATH="$PWD/node_modules/.bin:$PATH"
echo "node $(node --version)"
# the import rules (.dependency-cruiser.cjs): no cycles, service tags never import their implementations
npx depcruise src --output-type err
npx tsc --noEmit
npx vitest run "$@"
# only for the whole suite: `npm test -- test/some.test.ts` runs just that file
if [ "$#" -eq 0 ]; then
  sh scripts/consumer-test.sh
fi
