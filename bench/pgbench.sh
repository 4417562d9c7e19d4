#!/usr/bin/env bash
# PostgreSQL's own durable insert rate on this machine: the reference the block-manager create
# benchmark on the postgres engine is compared to.
#
#   bench/pgbench.sh [SECONDS]      # SECONDS per measurement, default 10
#
# Starts a throwaway server (scripts/lib.sh pg_start: fsync and synchronous_commit on, as a
# deployment runs), makes one table shaped like a chain's (an identity key and a bytea body), then
# with pgbench, for 1 and for 8 clients:
#   - one ~3 KB row per transaction (each commit waits for its WAL flush), and
#   - 16 such rows per transaction (one multi-row INSERT: what one group commit writes).
# Bodies are 2,944 bytes of random hex (the block documents of bench/reads.sh are 2,926-2,932
# bytes): random, so PostgreSQL's compression cannot shrink what reaches the disk. Each
# measurement starts from an empty table after a CHECKPOINT, and the row count afterwards must
# match the transactions pgbench reports. Prints `pgbench clients=N tps=X` (and, for 16 rows,
# `rows_per_txn=16 ... blocks_per_s=Y`).
#
# Env: PG_TMPDIR — the folder the server's data goes in (default $TMPDIR or /tmp); it must be on
# the disk you mean to measure (a tmpfs makes fsync free).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
DURATION=${1:-10}
# 92 md5 hex digests of 32 characters: 2,944 bytes per body.
DIGESTS_PER_BODY=92
BATCH=16
WORK=$(mktemp -d)
trap 'pg_stop; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# A primary only (SC2119: pg_start takes no arguments of this script's).
# shellcheck disable=SC2119
pg_start >/dev/null
PGBENCH=$PG_BIN/pgbench
[ -x "$PGBENCH" ] || { echo "no pgbench in $PG_BIN" >&2; exit 1; }
URL=$BLOCK_MANAGER_TEST_DATABASE_URL
sql() { "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$URL" -c "$1"; }

sql "CREATE TABLE bench_blocks (height bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body bytea NOT NULL)"
body="convert_to(string_agg(md5(random()::text), ''), 'UTF8')"
cat >"$WORK/single.sql" <<SQL
INSERT INTO bench_blocks (body) SELECT $body FROM generate_series(1, $DIGESTS_PER_BODY);
SQL
cat >"$WORK/batch.sql" <<SQL
INSERT INTO bench_blocks (body)
SELECT $body FROM generate_series(1, $BATCH) AS b(i), generate_series(1, $DIGESTS_PER_BODY) GROUP BY b.i;
SQL

echo "postgres: $("$PG_BIN/postgres" --version | sed 's/^postgres (PostgreSQL) //'), fsync=$(sql 'SHOW fsync')," \
    "synchronous_commit=$(sql 'SHOW synchronous_commit'), wal_sync_method=$(sql 'SHOW wal_sync_method')," \
    "data in $PG_DIR ($(df -T "$PG_DIR" | awk 'NR == 2 {print $2}'))"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# One measurement: CLIENTS clients running SCRIPT for DURATION seconds, ROWS rows per transaction.
measure() {
    local clients=$1 script=$2 rows=$3 threads out tps txns stored
    threads=$((clients < 2 ? clients : 2))
    sql "TRUNCATE bench_blocks; CHECKPOINT"
    out=$("$PGBENCH" -n -M prepared -c "$clients" -j "$threads" -T "$DURATION" -f "$script" "$URL" 2>&1) || {
        printf '%s\n' "$out" >&2
        return 1
    }
    tps=$(awk '/^tps = / {print $3; exit}' <<<"$out")
    txns=$(awk -F': ' '/^number of transactions actually processed/ {print $2; exit}' <<<"$out")
    stored=$(sql "SELECT count(*) FROM bench_blocks")
    if [ -z "$tps" ] || [ "$stored" != $((txns * rows)) ]; then
        printf 'pgbench output does not add up (stored %s rows):\n%s\n' "$stored" "$out" >&2
        return 1
    fi
    if [ "$rows" = 1 ]; then
        printf 'pgbench clients=%s tps=%.0f\n' "$clients" "$tps"
    else
        printf 'pgbench clients=%s rows_per_txn=%s tps=%.0f blocks_per_s=%.0f\n' \
            "$clients" "$rows" "$tps" "$(awk -v t="$tps" -v r="$rows" 'BEGIN {print t * r}')"
    fi
}

sql "INSERT INTO bench_blocks (body) SELECT $body FROM generate_series(1, $DIGESTS_PER_BODY)"
echo "body bytes=$(sql 'SELECT octet_length(body) FROM bench_blocks LIMIT 1')"
for clients in 1 8; do
    measure "$clients" "$WORK/single.sql" 1
done
for clients in 1 8; do
    measure "$clients" "$WORK/batch.sql" "$BATCH"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
