#!/bin/sh
# Instructions per call of one side of the full TCP mode (or of raw Node's corked baseline) at
# one call in flight (MODE=http or MODE=http-pooled: the HTTP/2 request plane with TCP call-home,
# against the benchmark's raw-http+tcp or raw-http+tcp-pooled; MODE=http-sse: http+http-sse
# against raw-http-sse; MODE=dynamo or dynamo-pooled: Dynamo's TCP request plane with TCP
# call-home, against raw-dynamo or raw-dynamo-pooled), counted by valgrind's callgrind: user-space instructions of the main thread
# over the measured calls, after a warm-up. Unlike times, the counts without garbage collection
# repeat within about 2% from run to run on a noisy machine, so a change's effect on one side's
# work shows in one run. API=generate: the router calls through the Stream API (client.generate,
# drained), as the benchmark's http+tcp-generate row; OBSERVED=1: metrics and tracing on (the
# library's defaults), as its -observed rows; TRACED=1: the same with a tracing backend, as its
# -traced rows (the SDK's batch processor; each batch serialized as OTLP/HTTP JSON, not sent).
# None applies to the raw sides.
#
#   [MODE=full|http|http-pooled|http-sse|dynamo|dynamo-pooled] [API=call|generate] [OBSERVED=1|TRACED=1] sh scripts/instruction-count.sh worker|router [ours|raw] [calls=2000] [warm-up=15000] [top=30]
#
# Prints the instructions per call (also without garbage collection, which varies with the heap's
# history: compare that figure between runs) and the functions that executed the most (JIT-compiled
# JavaScript named from V8's --perf-basic-prof map; garbage collection summed as [GC]). Needs
# valgrind (Debian: apt-get install valgrind) and python3. Takes about a minute.
# docs/performance.md ("Ninth session") has what it showed.
set -eu
cd "$(dirname "$0")/.."
SIDE=${1:?worker or router}
WHO=${2:-ours}
CALLS=${3:-2000}
WARM=${4:-15000}
TOP=${5:-30}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
# Ours runs tuned from its start, as the program's processes are (src/cli/main.ts); raw on defaults.
P=""
TUNE="--no-allocation-site-pretenuring"
[ "$WHO" = raw ] && P=raw && TUNE=""
export PATH="$PWD/node_modules/.bin:$PATH"
D=$(mktemp -d)
OUT="$D/callgrind.out"
NODE="node $TUNE --experimental-strip-types --no-warnings"
VG="valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no --callgrind-out-file=$OUT -q node $TUNE --perf-basic-prof --experimental-strip-types --no-warnings"
waitReady() { until grep -q ready "$D/worker.err" 2>/dev/null; do sleep 0.5; done; }
if [ "$SIDE" = worker ]; then
  $VG scripts/instruction-count.ts ${P}worker "$D" 2>"$D/worker.err" &
  VPID=$!
  waitReady
  $NODE scripts/instruction-count.ts ${P}router "$D" "$WARM" "$CALLS" "$VPID"
  kill -TERM "$VPID"
  wait "$VPID" || true
else
  $NODE scripts/instruction-count.ts ${P}worker "$D" 2>"$D/worker.err" &
  WPID=$!
  waitReady
  $VG scripts/instruction-count.ts ${P}router "$D" "$WARM" "$CALLS" self 2>"$D/router.err" || true
  kill -TERM "$WPID"
  wait "$WPID" || true
fi
# the dump of the measured calls, main thread: <out>.1-01
PID=$(awk '/^pid:/ {print $2; exit}' "$OUT.1-01")
echo "$SIDE, $WHO, ${MODE:-full}${API:+, $API}${OBSERVED:+, observed}${TRACED:+, traced}: $CALLS calls after $WARM"
python3 scripts/callgrind-names.py "$OUT.1-01" "$CALLS" "/tmp/perf-$PID.map" "$TOP"
rm -f "/tmp/perf-$PID.map"
rm -rf "$D"
