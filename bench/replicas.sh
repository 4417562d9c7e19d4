#!/usr/bin/env bash
# Several replicas on one PostgreSQL chain (spec §13), measured in ONE run on this machine:
# a primary and one streaming hot standby (scripts/lib.sh pg_start --standby, fsync on), the
# replicas reading from the standby (storage.postgres.read_urls), all on the same cores as the
# load (bench/replicas.rs, HTTP clients round-robin over the replicas).
#   - creates with 8 clients through 1 replica, then through 3 (round-robin), each on a fresh
#     database; with each replica's commits and blocks from /metrics: group size and commit
#     latency explain the ratio (the chain's lock in the database serialises groups across
#     replicas);
#   - COUNT write-then-read pairs over the 3: each create through one replica, its block read at
#     once by height through the next (misses and read latency);
#   - random reads by height over the chain through 1 replica and through 3 (a ratio, not a
#     goal on 2 cores).
# Usage: bench/replicas.sh [seconds=10] [pairs=10000]
# Env: KEEP=1 keeps the work folder (logs) and prints where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib.sh
SECS=${1:-10}
PAIRS=${2:-10000}
cargo build --release --quiet
cargo bench --quiet --bench replicas --no-run 2>/dev/null
BIN=$ROOT/target/release/block-manager
drive() { (cd "$ROOT" && cargo bench --quiet --bench replicas -- "$@"); }
work_start
pg_start --standby >/dev/null
cd "$WORK"
pgurl() { echo "postgres://postgres@127.0.0.1:$PG_PORT/$1?sslmode=disable"; }
sburl() { echo "postgres://postgres@127.0.0.1:$PG_STANDBY_PORT/$1?sslmode=disable"; }
psql_in() { "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$(pgurl "$1")" -c "$2"; }
for db in bm_one bm_three; do psql_in postgres "CREATE DATABASE $db"; done
# The standby has replayed the databases' creation once it lists them.
for db in bm_one bm_three; do
    for _ in $(seq 200); do
        [ "$("$PG_BIN/psql" -X -q -A -t "$(sburl postgres)" -c "SELECT 1 FROM pg_database WHERE datname = '$db'" 2>/dev/null)" = 1 ] && break
        sleep 0.05
    done
done

# start NAME DB: a replica on a free port reading from the standby; appends its URL to URLS.
URLS=()
start() {
    local name=$1 db=$2 port
    port=$(free_port)
    (exec env BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT="$port" BLOCK_MANAGER_API_KEY=k \
        BLOCK_MANAGER__RATE_LIMITS__ENABLED=false BLOCK_MANAGER__LOGGING__FILES=false \
        BLOCK_MANAGER__SERVICE__INSTANCE_ID="$name" \
        BLOCK_MANAGER_DATABASE_URL="$(pgurl "$db")" BLOCK_MANAGER_DATABASE_READ_URLS="$(sburl "$db")" \
        "$BIN" >>"$WORK/$name.log" 2>&1) &
    PIDS+=("$!")
    URLS+=("http://127.0.0.1:$port")
    wait_200 "http://127.0.0.1:$port/api/v1/chain/height" 60 || { echo "$name did not start" >&2; tail "$WORK/$name.log" >&2; exit 1; }
}
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    URLS=()
}
# metric URL NAME: the sum of the samples of NAME (any labels) on one replica.
metric() { curl -s "$1/metrics" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 {s += $2} END {printf "%.6f", s}'; }
# groups LABEL: commits, blocks per commit and mean commit latency summed over URLS since the
# last call (per replica and in all).
declare -A BASE
groups() {
    local label=$1 u commits blocks secs dc db ds tc=0 tb=0 ts=0
    for u in "${URLS[@]}"; do
        commits=$(metric "$u" block_manager_store_commit_duration_seconds_count)
        secs=$(metric "$u" block_manager_store_commit_duration_seconds_sum)
        blocks=$(metric "$u" block_manager_blocks_appended_total)
        dc=$(python3 -c "print($commits - ${BASE[$u-c]:-0})")
        db=$(python3 -c "print($blocks - ${BASE[$u-b]:-0})")
        ds=$(python3 -c "print($secs - ${BASE[$u-s]:-0})")
        BASE[$u-c]=$commits BASE[$u-b]=$blocks BASE[$u-s]=$secs
        tc=$(python3 -c "print($tc + $dc)") tb=$(python3 -c "print($tb + $db)") ts=$(python3 -c "print($ts + $ds)")
        python3 -c "print(f'   {\"$u\"}: {$dc:.0f} commits, {$db / max($dc, 1):.2f} blocks/commit, {$ds * 1e3 / max($dc, 1):.2f} ms/commit')"
    done
    python3 -c "print(f'   $label: {$tc:.0f} commits, {$tb / max($tc, 1):.2f} blocks/commit, mean commit {$ts * 1e3 / max($tc, 1):.2f} ms')"
}
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k {print $2}'; }

echo "block-manager $(git -C "$ROOT" rev-parse --short HEAD), $("$PG_BIN/postgres" --version);" \
    "$(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== creates, 8 clients, ${SECS}s, through 1 replica"
start one-0 bm_one
groups "before" >/dev/null
ONE=$(drive creates "$SECS" 8 "${URLS[@]}")
echo "   $ONE"
groups "1 replica"
stop_all

echo "== creates, 8 clients, ${SECS}s, round-robin through 3 replicas"
for i in 0 1 2; do start "three-$i" bm_three; done
groups "before" >/dev/null
THREE=$(drive creates "$SECS" 8 "${URLS[@]}")
echo "   $THREE"
groups "3 replicas"

echo "== $PAIRS write-then-read pairs, 8 clients, each read through the next replica"
PAIRS_OUT=$(drive pairs "$PAIRS" 8 "${URLS[@]}")
echo "   $PAIRS_OUT"

TIP=$(curl -s "${URLS[0]}/api/v1/chain/height" | python3 -c 'import json,sys; print(json.load(sys.stdin)["height"])')
echo "== random reads by height over $((TIP + 1)) blocks, 64 clients, ${SECS}s: 1 replica, then 3"
R1=$(drive reads "$SECS" 64 "$TIP" "${URLS[0]}")
R3=$(drive reads "$SECS" 64 "$TIP" "${URLS[@]}")
echo "   1: $R1"
echo "   3: $R3"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

c1=$(field "$ONE" creates) c3=$(field "$THREE" creates)
r1=$(field "$R1" reads) r3=$(field "$R3" reads)
echo
echo "| measure | value | goal |"
echo "|---|---|---|"
echo "| creates, 8 clients, 1 replica | $c1/s (p99 $(field "$ONE" p99_ms) ms) | |"
echo "| creates, 8 clients round-robin, 3 replicas | $c3/s (p99 $(field "$THREE" p99_ms) ms) | |"
echo "| ratio 3 : 1 | $(python3 -c "print(f'{$c3 / $c1:.2f}')") | >= 0.5 |"
echo "| write-then-read pairs | $(field "$PAIRS_OUT" pairs), misses $(field "$PAIRS_OUT" misses) | 0 misses |"
echo "| read after write, p50 / p99 | $(field "$PAIRS_OUT" read_p50_ms) / $(field "$PAIRS_OUT" read_p99_ms) ms | p99 < 25 ms |"
echo "| random reads, 1 replica / 3 replicas | $r1/s / $r3/s ($(python3 -c "print(f'{$r3 / $r1:.2f}')")x) | reported |"
