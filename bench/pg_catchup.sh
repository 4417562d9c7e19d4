#!/usr/bin/env bash
# Follower catch-up into PostgreSQL, alternating builds in one run:
#
#   bench/pg_catchup.sh [BLOCKS] [ROUNDS] [BIN...]     # default 100000 3 target/release/block-manager
#
# Builds an embedded store of genesis + BLOCKS sealed blocks of ~3 KB (bench/copy_chain.rs),
# serves it from a standalone release node, and starts a throwaway PostgreSQL (scripts/lib.sh
# pg_start: fsync and synchronous_commit on). Each round runs every BIN in turn as a follower
# of that node into a fresh database, timed from its start until its height is the upstream's,
# and prints blocks/s, CPU per block of the follower, the upstream and PostgreSQL, the commits
# it made and its peak resident memory (VmHWM). Alternating builds in the same minutes is what
# makes their figures comparable on a shared machine.
#
# Env: PG_TMPDIR, WORK_TMPDIR as in bench/copy.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
BLOCKS=${1:-100000}
ROUNDS=${2:-3}
shift $(($# < 2 ? $# : 2))
cd "$ROOT"
if [ $# -eq 0 ]; then
    cargo build --release --quiet
    set -- "$ROOT/target/release/block-manager"
fi
# Each node runs in a folder of its own: the builds are named by absolute path.
BINS=()
for bin in "$@"; do BINS+=("$(realpath "$bin")"); done
set -- "${BINS[@]}"
work_start
cargo bench --quiet --bench copy_chain -- "$WORK/source" "$BLOCKS"
sync -f "$WORK/source/blocks.redb"
# shellcheck disable=SC2119 # pg_start takes no arguments of this script's
pg_start >/dev/null
PG_PID=$(head -1 "$PG_DIR/primary/postmaster.pid")
sql() { "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$BLOCK_MANAGER_TEST_DATABASE_URL" -c "$1"; }

height_of() {
    curl -s "$1/api/v1/chain/height" | python3 -c 'import json,sys; print(json.load(sys.stdin)["height"])' 2>/dev/null || echo -1
}
serve() { # NAME BIN [VAR=VALUE...]: a node on a free port in $WORK/NAME; sets URL and PID
    local name=$1 bin=$2 port
    shift 2
    port=$(free_port)
    mkdir -p "$WORK/$name"
    (cd "$WORK/$name" && exec env BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT="$port" \
        BLOCK_MANAGER__RATE_LIMITS__ENABLED=false "$@" "$bin" >>"$WORK/$name.log" 2>&1) &
    PID=$!
    PIDS+=("$PID")
    URL="http://127.0.0.1:$port"
}

serve upstream "$1" BLOCK_STORAGE_PATH="$WORK/source" LOG_LEVEL=warn
UP_URL=$URL UP_PID=$PID
wait_200 "$UP_URL/api/v1/chain/height" 60
TIP=$(height_of "$UP_URL")
echo "upstream holds heights 0-$TIP; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
RUN=0
for round in $(seq "$ROUNDS"); do
    for bin in "$@"; do
        RUN=$((RUN + 1))
        sql "CREATE DATABASE bm_catchup_$RUN"
        u0=$(cpu_of "$UP_PID") c0=$(pg_cpu) t0=$(date +%s.%N)
        serve "follower-$RUN" "$bin" BLOCKCHAIN_ENGINE_URL="$UP_URL" \
            BLOCK_MANAGER_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/bm_catchup_$RUN?sslmode=disable"
        deadline=$(($(date +%s) + 600))
        until [ "$(height_of "$URL")" = "$TIP" ]; do
            if [ "$(date +%s)" -gt "$deadline" ]; then
                echo "follower $RUN ($bin) did not catch up in 10 minutes" >&2
                exit 1
            fi
            sleep 0.02
        done
        t1=$(date +%s.%N) hwm=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
        f=$(cpu_of "$PID") u1=$(cpu_of "$UP_PID") c1=$(pg_cpu)
        commits=$(curl -s "$URL/metrics" | awk '/^block_manager_store_commit_duration_seconds_count/ {print $2; exit}')
        kill "$PID"
        wait "$PID" 2>/dev/null || true
        python3 -c "
n = $TIP + 1; s = $t1 - $t0
print(f'round $round  {n / s:>6.0f} blocks/s ({s:.2f} s); CPU per block: follower {$f * 1e6 / n:.1f}, '
      f'upstream {($u1 - $u0) * 1e6 / n:.1f}, PostgreSQL {($c1 - $c0) * 1e6 / n:.1f} µs; '
      f'{$commits:.0f} commits; peak RSS {$hwm / 1024:.0f} MB; load $(cut -d' ' -f1 /proc/loadavg)  $bin')"
        sql "DROP DATABASE bm_catchup_$RUN"
    done
done
