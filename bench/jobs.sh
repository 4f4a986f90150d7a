#!/usr/bin/env bash
# What a job costs, timed from outside: POST -> job `completed` on capydb-local
# (`server` profile build) against the same SQL run directly on the same
# PostgreSQL server, for
#   1. a project          (POST /v1/projects)
#        direct: CREATE ROLE ... LOGIN PASSWORD; CREATE DATABASE ... OWNER; a login as the role
#   2. an empty preview   (POST /v1/projects/{id}/preview-databases, mode empty)
#        direct: the same as 1
#   3. an idle clone preview of a project holding a small database (pgbench -i -s SCALE)
#        direct: CREATE ROLE ...; CREATE DATABASE ... TEMPLATE src OWNER ... STRATEGY FILE_COPY; a login
#
# The script starts its own cluster (initdb, scram-sha-256 like capydb-local's
# private one) on a free 127.0.0.1 port and capydb-local on it with
# --postgres-url, a fresh data dir and another free port; both are stopped
# and their data deleted at the end.
#
# Ours is timed two ways: wall clock, from just before the POST to the poll
# (GET /v1/jobs/{id} on one keep-alive connection, every POLL_MS ms) that
# sees `completed`, and server side, the job's finished_at - created_at.
# Direct is wall clock: one psql session for the admin statements, one psql
# login as the new role (`SELECT 1`). Runs of ours and direct alternate, each
# after a CHECKPOINT (untimed), and every copy is deleted (and that waited
# for) before the next run.
#
# Targets: provision and empty preview <= 50 ms over direct, clone <= 150 ms
# over direct (medians of wall clock). Exits non-zero on any failed request
# or job, and on a missed target unless --no-targets.
#
# Usage: bench/jobs.sh [--runs N=15] [--scale S=2] [--no-targets]
#   POLL_MS=5                     poll interval
#   BENCH_RUST_LOG=...            capydb-local's RUST_LOG (default info); with
#                                 capydb_domain=info the job steps' timestamps
#                                 in its log are summarised per phase.
#   KEEP_LOG=path                 copy capydb-local's log there at the end
#   CAPYDB_LOCAL_BIN=path         time this binary instead of building one
#   PG_OPTS="-c log_min_duration_statement=0"  more server options
#   KEEP_PG_LOG=path              copy the cluster's log there at the end
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=15
SCALE=2
TARGETS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --scale) SCALE=$2; shift 2 ;;
    --no-targets) TARGETS=0; shift ;;
    *) echo "usage: $0 [--runs N] [--scale S] [--no-targets]" >&2; exit 2 ;;
  esac
done
POLL_MS=${POLL_MS:-5}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
[ -n "${CAPYDB_LOCAL_BIN:-}" ] || cargo build --profile server -q -p capydb-local
LOCAL=${CAPYDB_LOCAL_BIN:-$CARGO_TARGET_DIR/server/capydb-local}

WORK=$(mktemp -d /tmp/capydb-jobs-bench-XXXXXX)
chmod 755 "$WORK"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT=$(free_port)
API_PORT=$(free_port)
# initdb and the server refuse to run as root.
AS=()
if [ "$(id -u)" = 0 ]; then AS=(runuser -u postgres --); fi
mkdir -p "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres "$WORK/pg"
cleanup() {
  [ -n "${API_PID:-}" ] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null || true
  [ -n "${KEEP_LOG:-}" ] && [ -f "$WORK/stderr" ] && cp "$WORK/stderr" "$KEEP_LOG" || true
  [ -n "${KEEP_PG_LOG:-}" ] && [ -f "$WORK/pg/log" ] && cp "$WORK/pg/log" "$KEEP_PG_LOG" || true
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ADMIN_PW=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
echo "$ADMIN_PW" >"$WORK/pg/pw"
[ "$(id -u)" = 0 ] && chown postgres "$WORK/pg/pw"
"${AS[@]}" "$PGBIN/initdb" -D "$WORK/pg/data" -U capydb_admin --pwfile="$WORK/pg/pw" --auth=scram-sha-256 \
  -E UTF8 --locale=C.UTF-8 >/dev/null
rm -f "$WORK/pg/pw"
"${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
  -o "-p $PGPORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='' ${PG_OPTS:-}" start >/dev/null
export PGHOST=127.0.0.1 PGPORT PGUSER=capydb_admin PGDATABASE=postgres PGPASSWORD=$ADMIN_PW
ADMIN_URL="postgres://capydb_admin:$ADMIN_PW@127.0.0.1:$PGPORT/postgres"

# Polling every few ms is far above the default rate limit (6,000/min).
RUST_LOG=${BENCH_RUST_LOG:-info} CAPYDB_RATE_LIMIT_PER_MINUTE=1000000000 \
  CAPYDB_MAX_PROJECTS=1000 CAPYDB_MAX_PREVIEWS_PER_PROJECT=1000 \
  "$LOCAL" --listen "127.0.0.1:$API_PORT" --data-dir "$WORK/capydb" --postgres-url "$ADMIN_URL" \
  >"$WORK/stdout" 2>"$WORK/stderr" &
API_PID=$!
BASE="http://127.0.0.1:$API_PORT"
wait_for_capydb "$BASE" "$API_PID" "$WORK/stderr"
KEY=$(sed -n 's/^CAPYDB_API_KEY=//p' "$WORK/stdout")
[ -n "$KEY" ] || { echo "capydb-local printed no API key" >&2; cat "$WORK/stderr" >&2; exit 1; }

echo "machine: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); $RUNS runs each, polling every $POLL_MS ms" >&2
PGBIN=$PGBIN BASE=$BASE KEY=$KEY RUNS=$RUNS SCALE=$SCALE TARGETS=$TARGETS POLL_MS=$POLL_MS \
  LOG="$WORK/stderr" python3 - <<'PY'
import datetime, http.client, json, os, re, statistics, subprocess, sys, time, urllib.parse

PGBIN, KEY = os.environ["PGBIN"], os.environ["KEY"]
RUNS, SCALE = int(os.environ["RUNS"]), int(os.environ["SCALE"])
TARGETS, POLL = os.environ["TARGETS"] == "1", int(os.environ["POLL_MS"]) / 1000
base = urllib.parse.urlparse(os.environ["BASE"])
conn = http.client.HTTPConnection(base.hostname, base.port)

def die(msg):
    print(f"FAILED: {msg}", file=sys.stderr)
    sys.exit(1)

def api(method, path, body=None):
    headers = {"Authorization": f"Bearer {KEY}"}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body), "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        res = conn.getresponse()
        text = res.read()
    except Exception as e:
        die(f"{method} {path}: {e!r}")
    if not 200 <= res.status < 300:
        die(f"{method} {path}: HTTP {res.status}: {text[:300]!r}")
    return json.loads(text) if text else None

def ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

def wait_job(job_id):
    while True:
        job = api("GET", f"/v1/jobs/{job_id}")["job"]
        if job["state"] == "completed":
            return job
        if job["state"] == "failed":
            die(f"job {job_id} ({job['kind']}) failed: {job.get('error')}")
        time.sleep(POLL)

def ours(method, path, body):
    """Wall seconds from the POST to the poll seeing `completed`, and the job's own."""
    t0 = time.perf_counter()
    r = api(method, path, body)
    job = wait_job(r["job"]["id"])
    wall = time.perf_counter() - t0
    return r, wall, ts(job["finished_at"]) - ts(job["created_at"]), job

def psql(*args, db="postgres", url=None):
    cmd = [f"{PGBIN}/psql", "-qAtX", "-v", "ON_ERROR_STOP=1"]
    cmd += [url] if url else ["-d", db]
    for a in args:
        cmd += ["-c", a]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        die(f"psql {args}: {p.stderr.strip()}")
    return p.stdout.strip()

def direct(i, template=None):
    role, db, pw = f"direct_r{i}", f"direct_d{i}", "Pw" + os.urandom(12).hex()
    create = f"CREATE DATABASE {db} OWNER {role}"
    if template:
        create = f"CREATE DATABASE {db} TEMPLATE {template} OWNER {role} STRATEGY FILE_COPY"
    t0 = time.perf_counter()
    psql(f"CREATE ROLE {role} LOGIN PASSWORD '{pw}'", create)
    psql("SELECT 1", url=f"postgres://{role}:{pw}@127.0.0.1:{os.environ['PGPORT']}/{db}")
    wall = time.perf_counter() - t0
    psql(f"DROP DATABASE {db}", f"DROP ROLE {role}")
    return wall

def settle():
    psql("CHECKPOINT")

results = {}  # name -> {"ours": [], "server": [], "direct": []}

def record(name, wall, server, d):
    r = results.setdefault(name, {"ours": [], "server": [], "direct": []})
    r["ours"].append(wall); r["server"].append(server); r["direct"].append(d)

# The clone's source: a project with pgbench tables.
r, _, _, _ = ours("POST", "/v1/projects", {"name": "clone-source"})
src = r["project"]["id"]
info = api("GET", f"/v1/projects/{src}/connections")[0]
p = subprocess.run([f"{PGBIN}/pgbench", "-i", "-q", "-s", str(SCALE), info["uri"]], capture_output=True, text=True)
if p.returncode != 0:
    die(f"pgbench -i: {p.stderr.strip()}")
src_db = info["database"]
size = psql(f"SELECT pg_size_pretty(pg_database_size('{src_db}'))")
print(f"clone source: {src_db}, {size} (pgbench -s {SCALE})", file=sys.stderr)

# One untimed round of each first: caches, the first connections.
for mode in ("empty", "clone"):
    r, _, _, _ = ours("POST", f"/v1/projects/{src}/preview-databases", {"name": f"warm-{mode}", "mode": mode})
    wait_job(api("DELETE", f"/v1/preview-databases/{r['preview']['id']}")["job"]["id"])
direct("warm", template=src_db)

for i in range(RUNS):
    # Alternate which goes first, so a slow patch of the machine hits both.
    order = ("ours", "direct") if i % 2 == 0 else ("direct", "ours")
    for name in ("provision", "empty preview", "clone preview"):
        got = {}
        for who in order:
            settle()
            if who == "direct":
                got["direct"] = direct(i, template=src_db if name == "clone preview" else None)
                continue
            if name == "provision":
                r, wall, server, job = ours("POST", "/v1/projects", {"name": f"bench-{i}"})
                got["ours"] = (wall, server)
                wait_job(api("DELETE", f"/v1/projects/{r['project']['id']}")["job"]["id"])
            else:
                mode = "empty" if name == "empty preview" else "clone"
                r, wall, server, job = ours(
                    "POST", f"/v1/projects/{src}/preview-databases", {"name": f"{mode}-{i}", "mode": mode}
                )
                got["ours"] = (wall, server)
                # Usable by its own role once the job says completed.
                conn_info = api("GET", f"/v1/preview-databases/{r['preview']['id']}/connections")[0]
                if mode == "clone":
                    # The rows are there and the tables are the preview role's own.
                    n = psql(
                        "SELECT count(*) FROM pgbench_branches",
                        "ALTER TABLE pgbench_history ADD COLUMN bench_check int",
                        "ALTER TABLE pgbench_history DROP COLUMN bench_check",
                        url=conn_info["uri"],
                    )
                    if int(n) != SCALE:
                        die(f"clone {r['preview']['id']}: {n} branches, expected {SCALE}")
                else:
                    psql("CREATE TABLE t (x int); DROP TABLE t", url=conn_info["uri"])
                wait_job(api("DELETE", f"/v1/preview-databases/{r['preview']['id']}")["job"]["id"])
        record(name, *got["ours"], got["direct"])
    print(f"run {i + 1}/{RUNS} done", file=sys.stderr)

# What direct pays for its two psql processes alone (start, SCRAM login, SELECT 1).
spawn = []
for _ in range(RUNS):
    t0 = time.perf_counter()
    psql("SELECT 1")
    spawn.append(time.perf_counter() - t0)

def q(xs, f):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(f * (len(xs) - 1))))]

targets = {"provision": 0.050, "empty preview": 0.050, "clone preview": 0.150}
failed = False
print(f"{'':14}  {'ours wall':>17}  {'ours job':>17}  {'direct':>17}  {'over direct':>12}")
print(f"{'':14}  {'p50':>8} {'p90':>8}  {'p50':>8} {'p90':>8}  {'p50':>8} {'p90':>8}  {'p50':>12}")
for name, r in results.items():
    ms = lambda xs, f: q(xs, f) * 1000
    over = ms(r["ours"], 0.5) - ms(r["direct"], 0.5)
    print(
        f"{name:14}  {ms(r['ours'], .5):8.1f} {ms(r['ours'], .9):8.1f}  {ms(r['server'], .5):8.1f} {ms(r['server'], .9):8.1f}"
        f"  {ms(r['direct'], .5):8.1f} {ms(r['direct'], .9):8.1f}  {over:+9.1f} ms"
    )
print(f"(direct includes two psql runs; one psql login + SELECT 1 alone: p50 {q(spawn, .5) * 1000:.1f} ms, p90 {q(spawn, .9) * 1000:.1f} ms)")
for name, r in results.items():
    over = (q(r["ours"], 0.5) - q(r["direct"], 0.5))
    ok = over <= targets[name]
    failed |= not ok
    print(f"target {name}: <= {targets[name] * 1000:.0f} ms over direct: {over * 1000:+.1f} ms  {'PASS' if ok else 'FAIL'}")

# Phases, from the step lines of capydb-local's log: from `job queued` to
# `job running` (the wait for a worker), each step, and the completion.
line_re = re.compile(r"^(\S+Z)\s.*?(job queued job_id=(\w+) kind=\"(\w+)\"|job\{job_id=(\w+)\}: (job running|step done|job completed)(?: step=\"(\w+)\")?)")
marks, kinds = {}, {}
cloned = set()
with open(os.environ["LOG"], errors="replace") as f:
    for line in f:
        c = re.search(r"job\{job_id=(\w+)\}: database cloned", line)
        if c:
            cloned.add(c.group(1))
        m = line_re.match(re.sub(r"\x1b\[[0-9;]*m", "", line))
        if not m:
            continue
        t = ts(m.group(1))
        if m.group(3):
            kinds[m.group(3)] = m.group(4)
            marks.setdefault(m.group(3), []).append((t, "queued", None))
        else:
            what = m.group(6)
            marks.setdefault(m.group(5), []).append((t, what, m.group(7) or ("complete" if what == "job completed" else "wait for a worker")))
if marks:
    print("phases of ours (ms, median per job kind; from capydb-local's log):")
    by_kind = {}
    for job_id, ev in marks.items():
        steps = [(step, (t - ev[i - 1][0]) * 1000) for i, (t, what, step) in enumerate(ev) if i > 0]
        kind = kinds.get(job_id, "?") + (" (clone)" if job_id in cloned else "")
        by_kind.setdefault(kind, []).append(steps)
    for kind, rows in sorted(by_kind.items()):
        names = [s for s, _ in rows[0]]
        rows = [r for r in rows if [s for s, _ in r] == names]
        if not names:
            continue
        cols = [statistics.median(d for _, d in c) for c in zip(*rows)]
        print(f"  {kind:22} ({len(rows):2} jobs): " + ", ".join(f"{n} {c:.1f}" for n, c in zip(names, cols)))
sys.exit(1 if failed and TARGETS else 0)
PY
