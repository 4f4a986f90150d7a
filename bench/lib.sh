# Shared by the bench scripts (sourced).

# wait_for_capydb BASE PID STDERR_FILE: waits up to 60 s for capydb-local at
# BASE to answer; if its process PID dies first, prints its stderr and exits 1.
wait_for_capydb() {
  local base=$1 pid=$2 stderr=$3
  for _ in $(seq 1 600); do
    curl -fs "$base/v1/openapi.json" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$stderr"; exit 1; }
    sleep 0.1
  done
  echo "capydb-local did not answer at $base within 60 s" >&2
  exit 1
}
