#!/usr/bin/env bash
# Size and cold-start init time of every Lambda function, next to a
# hello-world `lambda_runtime` binary (bench/lambda-hello) built the same way
# (the release profile, which `sam build` uses; see the workspace Cargo.toml).
#
# Init time: from spawning the binary to its first request for an invocation
# on a local Lambda Runtime API (bench/lambda_init.py), the span Lambda bills
# as the init phase; median and p90 of N runs after a warm-up. Each binary then
# answers one event from events/ (API functions: an unknown route, which their
# router answers 404 without touching a port).
#
# Targets (issue 5): init <= 1.5x the hello world's; stripped size <= 10 MB.
# Measured on this machine's architecture (x86_64 here; Lambda runs arm64).
# Usage: bench/lambda-coldstart.sh [runs=15] [profile=release]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-15}
PROFILE=${2:-release}
FUNCTIONS=(identity projects previews backups jobs webhooks openapi worker worker-aurora webhook-delivery sweeper)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
pkgs=(-p lambda-hello)
for f in "${FUNCTIONS[@]}"; do pkgs+=(-p "$f"); done
started=$(date +%s)
cargo build -q --locked --profile "$PROFILE" "${pkgs[@]}"
echo "build (--profile $PROFILE): $(( $(date +%s) - started )) s" >&2
BIN="$CARGO_TARGET_DIR/$PROFILE"

# Config the functions read at start-up; nothing is contacted during init.
# The rate limit is off so the API functions answer the unknown route without
# a DynamoDB call (the limiter is made on first use either way).
export CAPYDB_RATE_LIMIT_PER_MINUTE=0 CAPYDB_TABLE=bench CAPYDB_EVENT_BUS=bench CAPYDB_KMS_KEY_ID=alias/bench \
  CAPYDB_JOBS_QUEUE_URL=http://127.0.0.1:9/000000000000/jobs \
  CAPYDB_WEBHOOK_QUEUE_URL=http://127.0.0.1:9/000000000000/webhooks \
  CAPYDB_PG_ADMIN_URL=postgres://capydb_admin@127.0.0.1:9/postgres \
  CAPYDB_ARTIFACT_DIR=/tmp/capydb-bench-artifacts
args=("hello=$BIN/lambda-hello=events/openapi.get.json")
for f in "${FUNCTIONS[@]}"; do
  case $f in
    worker | worker-aurora) ev=events/worker.one-job.json ;;
    webhook-delivery) ev=events/webhook-delivery.retry.json ;;
    sweeper) ev=events/sweeper.scheduled.json ;;
    *) ev=events/openapi.unknown-route.json ;;
  esac
  args+=("$f=$BIN/$f=$ev")
done
# The Aurora worker starts only on an aurora deployment's settings.
aurora=()
for v in CAPYDB_DATABASE_PROVIDER=aurora CAPYDB_AURORA_ENGINE_VERSION=16.4 CAPYDB_AURORA_SUBNET_GROUP=bench \
  CAPYDB_AURORA_SECURITY_GROUP_IDS=sg-bench; do
  aurora+=(--env "worker-aurora:$v")
done
python3 bench/lambda_init.py --runs "$RUNS" --event events/openapi.unknown-route.json "${aurora[@]}" "${args[@]}"
