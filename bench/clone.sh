#!/usr/bin/env bash
# PgProvider::clone_database against the plain tools, on a ~1 GB pgbench
# database (scale 70) in a private cluster started here:
#   1. idle source: our clone (CREATE DATABASE ... TEMPLATE, FILE_COPY) vs
#      `createdb -T` (PG15 default strategy, WAL_LOG) and `createdb -T -S file_copy`;
#   2. busy source (pgbench -c 2 -R 50 running on it): our clone (snapshot
#      stream of the large tables in parallel page ranges, pg_dump/pg_restore
#      for the rest) vs a single-job `pg_dump -Fc | pg_restore`;
#   3. under the same load, the target's share of our busy clone alone: the
#      tables' rows loaded from binary files written beforehand (`COPY ...
#      FREEZE`, one session, as our clone does on 2 CPUs) and the indexes
#      built as our clone builds them. Nothing is read from the source and
#      nothing relayed: how fast our clone could be if that cost nothing.
# Targets: idle clone <= 1.2x createdb -T; busy clone >= 1.5x faster than the pipe.
# Usage: bench/clone.sh [scale=70]
# CAPYDB_LOG=capydb_postgres=debug also prints the phases of our busy clone;
# CAPYDB_PAGE_RANGES=1 (or 0) streams large tables in page ranges (or whole).
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-70}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --profile server -q -p capydb-postgres --example clone_bench
CLONE="$CARGO_TARGET_DIR/server/examples/clone_bench"

WORK=$(mktemp -d /tmp/capydb-clone-bench-XXXXXX)
chmod 755 "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# initdb and the server refuse to run as root.
AS=()
if [ "$(id -u)" = 0 ]; then AS=(runuser -u postgres --); chown postgres "$WORK"; fi
cleanup() {
  [ -n "${LOAD_PID:-}" ] && kill "$LOAD_PID" 2>/dev/null || true
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Trust on 127.0.0.1 only, for a throwaway cluster: no password to handle.
"${AS[@]}" "$PGBIN/initdb" -D "$WORK/data" -U capydb_admin --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/log" -w \
  -o "-p $PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=''" start >/dev/null
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=capydb_admin PGDATABASE=postgres
ADMIN_URL="postgres://capydb_admin@127.0.0.1:$PORT/postgres"
psql() { "$PGBIN/psql" -qAtX -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }
# Every timed step starts from the same state: no dirty pages of an earlier
# step still waiting to be written back, and a fresh checkpoint. Each step's
# copy is dropped after it: with an earlier copy still in the cluster the
# next step ran slower (see the README), which favoured whichever ran first.
settle() { sync; psql -c CHECKPOINT; sync; }
# CPU seconds the whole machine has spent busy (all cores, /proc/stat).
busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / {print ($2 + $3 + $4 + $7 + $8) / hz}' /proc/stat; }

psql -c "CREATE ROLE src_owner LOGIN" -c "CREATE ROLE dst_owner LOGIN" -c "CREATE DATABASE src OWNER src_owner"
echo "pgbench -i -s $SCALE ..."
"$PGBIN/pgbench" -i -q -s "$SCALE" -U src_owner src 2>&1 | tail -1
echo "source size: $(psql -c "SELECT pg_size_pretty(pg_database_size('src'))")"
echo "work dir: $WORK, $(nproc) CPUs"

echo "== idle source"
settle
read -r STRATEGY OURS_IDLE < <("$CLONE" "$ADMIN_URL" src src_owner idle_ours dst_owner)
echo "ours ($STRATEGY): $OURS_IDLE s"
psql -c "DROP DATABASE idle_ours"
settle
T0=$(now); "$PGBIN/createdb" -T src -O dst_owner idle_createdb; T1=$(now)
CREATEDB_IDLE=$(secs "$T0" "$T1")
echo "createdb -T (WAL_LOG): $CREATEDB_IDLE s"
psql -c "DROP DATABASE idle_createdb"
settle
T0=$(now); "$PGBIN/createdb" -T src -S file_copy -O dst_owner idle_createdb_fc; T1=$(now)
CREATEDB_FC_IDLE=$(secs "$T0" "$T1")
echo "createdb -T -S file_copy: $CREATEDB_FC_IDLE s"
psql -c "DROP DATABASE idle_createdb_fc"

# For step 3, written now, untimed: each table's rows in a binary file the
# server reads back (named after the table: pgbench's names need no quoting),
# and the schema.
mkdir "$WORK/rows"
[ ${#AS[@]} -gt 0 ] && chown postgres "$WORK/rows"
TABLES=$(psql -d src -c "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
for t in $TABLES; do
  psql -d src -c "COPY $t TO '$WORK/rows/$t.bin' (FORMAT binary)"
done
"$PGBIN/pg_dump" -Fc --schema-only --no-owner --no-privileges -f "$WORK/schema.dump" src

echo "== busy source (pgbench -c 2 -R 50)"
"$PGBIN/pgbench" -n -c 2 -R 50 -T 3600 -P 5 -U src_owner src >"$WORK/pgbench.log" 2>&1 &
LOAD_PID=$!
sleep 2
psql -c "CREATE DATABASE busy_pipe OWNER dst_owner"
settle
T0=$(now); C0=$(busy)
"$PGBIN/pg_dump" -Fc --no-owner --no-privileges src | "$PGBIN/pg_restore" --no-owner --no-privileges --role=dst_owner -d busy_pipe
T1=$(now); C1=$(busy)
PIPE_BUSY=$(secs "$T0" "$T1")
echo "pg_dump -Fc | pg_restore: $PIPE_BUSY s, machine busy $(secs "$C0" "$C1") CPU s"
psql -c "DROP DATABASE busy_pipe"
settle
C0=$(busy)
read -r STRATEGY OURS_BUSY < <("$CLONE" "$ADMIN_URL" src src_owner busy_ours dst_owner)
C1=$(busy)
echo "ours ($STRATEGY): $OURS_BUSY s, machine busy $(secs "$C0" "$C1") CPU s"
psql -c "DROP DATABASE busy_ours"
# The same options as our clone's restore sessions (RESTORE_OPTIONS).
RESTORE_OPTIONS="-c maintenance_work_mem=256MB -c synchronous_commit=off"
restore() { PGOPTIONS="$RESTORE_OPTIONS" "$PGBIN/pg_restore" --no-owner --no-privileges --role=dst_owner -d busy_floor "$@" "$WORK/schema.dump"; }
psql -c "CREATE DATABASE busy_floor OWNER dst_owner"
restore --section=pre-data
settle
T0=$(now); C0=$(busy)
for t in $TABLES; do
  PGOPTIONS="$RESTORE_OPTIONS" psql -d busy_floor \
    -c "BEGIN; TRUNCATE ONLY $t; COPY $t FROM '$WORK/rows/$t.bin' (FORMAT binary, FREEZE); COMMIT"
done
restore --section=post-data --jobs="$(nproc)"
T1=$(now); C1=$(busy)
FLOOR_BUSY=$(secs "$T0" "$T1")
echo "target's share alone (load from files + indexes): $FLOOR_BUSY s, machine busy $(secs "$C0" "$C1") CPU s"
psql -c "DROP DATABASE busy_floor"
kill "$LOAD_PID"; wait "$LOAD_PID" 2>/dev/null || true; LOAD_PID=
echo "pgbench progress during the busy clones (latency of the source's clients):"
grep -E "^progress" "$WORK/pgbench.log" | sed 's/^/  /'

echo "== results"
printf 'idle: ours / createdb -T            = %.2f (target <= 1.2)\n' "$(echo "$OURS_IDLE / $CREATEDB_IDLE" | bc -l)"
printf 'idle: ours / createdb -T -S file_copy = %.2f\n' "$(echo "$OURS_IDLE / $CREATEDB_FC_IDLE" | bc -l)"
printf 'busy: pipe / ours (speed-up)        = %.2f (target >= 1.5)\n' "$(echo "$PIPE_BUSY / $OURS_BUSY" | bc -l)"
printf 'busy: ours / target share alone     = %.2f (the cost of reading the source and relaying)\n' "$(echo "$OURS_BUSY / $FLOOR_BUSY" | bc -l)"
printf 'busy: pipe / target share alone     = %.2f (our speed-up if that cost were nothing)\n' "$(echo "$PIPE_BUSY / $FLOOR_BUSY" | bc -l)"
