#!/usr/bin/env bash
# Authenticated GET /v1/projects/{id} on capydb-local (`server` profile build) next to
# a bare axum hello-world, in the same run on the same machine:
#   1. closed-loop maximum throughput of each, and the ratio;
#   2. open-loop latency at a fixed rate (default 1,000 requests/s): p50/p99.
# Targets (issue 2): ratio >= 0.5, p99 <= 5 ms at 1,000 requests/s.
# capydb-local runs with its rate limiter on, at a limit this load cannot reach
# (the limiter's cost is part of every request). Every request must succeed:
# the load generator exits non-zero naming the statuses and errors it saw when
# one does not, and so does this script.
# Usage: bench/api-throughput.sh [seconds=10] [rate=1000]
#   CAPYDB_LOCAL_BIN / LOADGEN_BIN: time these binaries instead of building
#   (e.g. an older commit's build next to this one's).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECONDS_PER_RUN=${1:-10}
RATE=${2:-1000}
CONNS=${CONNS:-16}
# capydb-local logs as it does by default (info: one line per request) to a file.

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
if [ -z "${CAPYDB_LOCAL_BIN:-}" ] || [ -z "${LOADGEN_BIN:-}" ]; then
  cargo build --profile server -q -p capydb-local -p capydb-loadgen
fi
LOCAL=${CAPYDB_LOCAL_BIN:-$CARGO_TARGET_DIR/server/capydb-local}
LOADGEN=${LOADGEN_BIN:-$CARGO_TARGET_DIR/server/capydb-loadgen}
WORK=$(mktemp -d /tmp/capydb-bench-XXXXXX)
API_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HELLO_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

cleanup() {
  [ -n "${API_PID:-}" ] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null || true
  [ -n "${HELLO_PID:-}" ] && kill "$HELLO_PID" 2>/dev/null || true
  # As root the private cluster lives outside the data dir: reset deletes both.
  "$LOCAL" reset --data-dir "$WORK/data" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# 1e9 a minute: on, counting every request, never reached.
RUST_LOG=${BENCH_RUST_LOG:-info} CAPYDB_RATE_LIMIT_PER_MINUTE=${RATE_LIMIT:-1000000000} \
  "$LOCAL" --listen 127.0.0.1:$API_PORT --data-dir "$WORK/data" >"$WORK/stdout" 2>"$WORK/stderr" &
API_PID=$!
"$LOADGEN" hello --listen 127.0.0.1:$HELLO_PORT &
HELLO_PID=$!
wait_for_capydb "http://127.0.0.1:$API_PORT" "$API_PID" "$WORK/stderr"
KEY=$(sed -n 's/^CAPYDB_API_KEY=//p' "$WORK/stdout")
BASE="http://127.0.0.1:$API_PORT"
PROJECT=$(curl -fs -X POST -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d '{"name":"bench"}' "$BASE/v1/projects" | jq -r .project.id)
for _ in $(seq 1 300); do
  STATE=$(curl -fs -H "Authorization: Bearer $KEY" "$BASE/v1/projects/$PROJECT" | jq -r .project.state)
  [ "$STATE" = ready ] && break
  sleep 0.1
done
[ "$STATE" = ready ] || { echo "project did not become ready"; exit 1; }

URL="$BASE/v1/projects/$PROJECT"
H="authorization: Bearer $KEY"
# One run of the load generator; its JSON on stdout. Any failed request
# fails the bench (set -e alone would not see it inside an array assignment).
load() {
  local out
  if ! out=$("$LOADGEN" "$@"); then
    echo "bench failed: capydb-loadgen $1 (its message above): $out" >&2
    exit 1
  fi
  echo "$out"
}
echo "warming up..." >&2
load max --url "$URL" -H "$H" --connections "$CONNS" --seconds 2 >/dev/null
load max --url "http://127.0.0.1:$HELLO_PORT/" --connections "$CONNS" --seconds 2 >/dev/null

# Throughput: ROUNDS alternating rounds of each, median taken, so a burst of
# noise on this shared machine cannot favour one side.
ROUNDS=${ROUNDS:-3}
API_RUNS=(); HELLO_RUNS=()
for _ in $(seq 1 "$ROUNDS"); do
  API_RUNS+=("$(load max --url "$URL" -H "$H" --connections "$CONNS" --seconds "$SECONDS_PER_RUN")") || exit 1
  HELLO_RUNS+=("$(load max --url "http://127.0.0.1:$HELLO_PORT/" --connections "$CONNS" --seconds "$SECONDS_PER_RUN")") || exit 1
done
median() { python3 -c 'import json,sys; r=sorted((json.loads(a) for a in sys.argv[1:]), key=lambda x: x["rps"]); print(json.dumps(r[len(r)//2]))' "$@"; }
API_MAX=$(median "${API_RUNS[@]}")
HELLO_MAX=$(median "${HELLO_RUNS[@]}")
echo "capydb-local rounds: ${API_RUNS[*]}" >&2
echo "hello-world rounds:  ${HELLO_RUNS[*]}" >&2
API_RATE=$(load rate --url "$URL" -H "$H" --rps "$RATE" --seconds "$SECONDS_PER_RUN")
HELLO_RATE=$(load rate --url "http://127.0.0.1:$HELLO_PORT/" --rps "$RATE" --seconds "$SECONDS_PER_RUN")

python3 - "$API_MAX" "$HELLO_MAX" "$API_RATE" "$HELLO_RATE" "$RATE" "$SECONDS_PER_RUN" <<'PY'
import json, sys
api_max, hello_max, api_rate, hello_rate = (json.loads(a) for a in sys.argv[1:5])
rate = sys.argv[5]
ratio = api_max["rps"] / hello_max["rps"]
print(f"machine: {__import__('os').cpu_count()} cores, load {open('/proc/loadavg').read().split()[0]}")
print(f"throughput  (median of alternating rounds, {sys.argv[6]} s each, 16 keep-alive connections)")
print(f"throughput  capydb-local GET /v1/projects/{{id}} (authenticated): {api_max['rps']:.0f} req/s ({api_max['failed']} failed)")
print(f"throughput  axum hello-world:                                 {hello_max['rps']:.0f} req/s")
print(f"ratio       {ratio:.2f}x   (target >= 0.50)  {'PASS' if ratio >= 0.5 else 'FAIL'}")
print(f"latency at {rate} req/s  capydb-local: p50 {api_rate['p50_ms']:.2f} ms  p99 {api_rate['p99_ms']:.2f} ms  max {api_rate['max_ms']:.2f} ms ({api_rate['failed']} failed)")
print(f"latency at {rate} req/s  hello-world:  p50 {hello_rate['p50_ms']:.2f} ms  p99 {hello_rate['p99_ms']:.2f} ms  max {hello_rate['max_ms']:.2f} ms")
print(f"p99 target  <= 5 ms  {'PASS' if api_rate['p99_ms'] <= 5 else 'FAIL'}")
PY
