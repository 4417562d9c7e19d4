#!/usr/bin/env bash
# The PostgreSQL engine against the embedded one, measured in ONE run on this machine (release
# binary; PostgreSQL from scripts/lib.sh pg_start, fsync and synchronous_commit on, on the same
# cores as the service and wrk):
#   - pgbench's durable single-row ~3 KB insert (bench/pgbench.sh's statement), 1 and 8 clients,
#     on the same server the postgres engine uses;
#   - POST /api/v1/blocks (create, every 201 durable) with 8 clients and with 1, on a fresh store
#     of each engine;
#   - follower catch-up of N blocks from an embedded upstream block-manager (filled by the
#     creates), into an embedded follower and into a postgres follower, timed from the
#     follower's start until its height equals upstream's;
#   - each caught-up store restarted standalone and read: GET /health/live, GET by height over
#     the latest 1,000 blocks (the hot set) and over the whole chain at random, 64 connections;
#   - a table of rates and ratios, and for the postgres phases the top statements from
#     pg_stat_statements with calls per request.
# Usage: bench/postgres.sh [blocks=100000] [seconds=10]
# Env: WRK_THREADS (default 1) for the GETs, as in bench/reads.sh; PG_TMPDIR, the folder the
# server's data goes in (it must be on the disk you mean to measure); KEEP=1 keeps the work
# folder (logs, wrk outputs, statement lists) and prints where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib.sh
N=${1:-100000}
SECS=${2:-10}
WT=${WRK_THREADS:-1}
# pgbench runs are shorter: they are the reference line, not the subject.
PGB_SECS=$(((SECS + 1) / 2))
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet
BIN=$ROOT/target/release/block-manager
work_start
# shellcheck disable=SC2119
pg_start >/dev/null
# After pg_start: the server's owner cannot enter this folder, and pg_ctl runs from here.
cd "$WORK"
# pg_stat_statements needs to be preloaded: add it and restart the server pg_start made.
cat >>"$PG_DIR/primary/postgresql.conf" <<CONF
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.max = 1000
pg_stat_statements.track = all
CONF
# From /: the postgres user cannot enter this script's work folder.
(cd / && pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/primary" -l "$PG_DIR/primary.log" -w -t 60 restart >/dev/null)
PG_PID=$(head -1 "$PG_DIR/primary/postmaster.pid")
pgurl() { echo "postgres://postgres@127.0.0.1:$PG_PORT/$1?sslmode=disable"; }
psql_in() { "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$(pgurl "$1")" -c "$2"; }
for db in bm_create bm_follow pgb; do psql_in postgres "CREATE DATABASE $db"; done
psql_in postgres "CREATE EXTENSION pg_stat_statements"

now() { date +%s.%N; }
calc() { python3 -c "print(f'{$1:$2}')"; }
height_of() {
    curl -s "$1/api/v1/chain/height" | python3 -c 'import json,sys; print(json.load(sys.stdin)["height"])' 2>/dev/null || echo -1
}

# start NAME [VAR=VALUE...]: a block-manager on a free port, data under $WORK/NAME; sets URL, PID.
start() {
    local name=$1 port
    shift
    port=$(free_port)
    mkdir -p "$WORK/$name"
    (cd "$WORK/$name" && exec env BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT="$port" \
        BLOCK_MANAGER_API_KEY=k BLOCK_MANAGER__RATE_LIMITS__ENABLED=false "$@" "$BIN" \
        >>"$WORK/$name.log" 2>&1) &
    PID=$!
    PIDS+=("$PID")
    URL="http://127.0.0.1:$port"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# /health/ready answers 200 once the process serves, while the postgres engine may still be
# connecting in the background: a chain height that answers 200 means the store is loaded.
ready() {
    if ! { wait_200 "$1/health/ready" "${2:-120}" && wait_200 "$1/api/v1/chain/height" "${2:-120}"; }; then
        echo "block-manager at $1 did not become ready" >&2
        exit 1
    fi
}

# Reset and list pg_stat_statements: `statements reset`, then `statements LABEL REQUESTS` prints
# the top statements of what ran since, by total time, with calls per request.
statements() {
    if [ "$1" = reset ]; then
        psql_in postgres "SELECT pg_stat_statements_reset()" >/dev/null
        return
    fi
    local label=$1 requests=$2
    {
        echo "-- $label: top statements by total time ($requests requests)"
        "$PG_BIN/psql" -X -q -P pager=off "$(pgurl postgres)" -c "
            SELECT round(s.total_exec_time::numeric, 1) AS total_ms, s.calls,
                   round((s.calls / GREATEST($requests, 1)::numeric), 2) AS per_request,
                   round(s.mean_exec_time::numeric, 3) AS mean_ms, s.rows,
                   left(regexp_replace(s.query, '\s+', ' ', 'g'), 90) AS query
            FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
            WHERE d.datname LIKE 'bm_%'
            ORDER BY s.total_exec_time DESC LIMIT 12"
        psql_in postgres "
            SELECT 'all statements: ' || sum(s.calls) || ' calls, '
                   || round(sum(s.calls) / GREATEST($requests, 1)::numeric, 2) || ' per request, '
                   || round(sum(s.total_exec_time)::numeric, 1) || ' ms executing'
            FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname LIKE 'bm_%'"
    } | tee -a "$WORK/statements.txt"
}

# wrk scripts: creates of ~2.9 KB (bench/reads.sh's), GETs of /health/live and by height.
cat >create.lua <<'LUA'
local counter = 0
local threads = {}
function setup(thread) thread:set("tid", #threads + 1); table.insert(threads, thread) end
function init(args) prefix = os.getenv("RUN") .. "-" .. tostring(tid) end
function request()
  counter = counter + 1
  local txs = {}
  for i = 1, 6 do
    txs[i] = string.format('{"tx_id":"b%s-%d-%d","type":"data_storage","from_address":"0x1111111111111111111111111111111111111111","to_address":"0x2222222222222222222222222222222222222222","value":%d,"fee":0.01,"data":"%s","signature":"sig-%d"}',
      prefix, counter, i, i, string.rep("d", 120), i)
  end
  local body = '{"producer":"bench","signature":"bench-sig","transactions":[' .. table.concat(txs, ",") .. ']}'
  return wrk.format("POST", "/api/v1/blocks", {["Content-Type"]="application/json", ["X-API-Key"]="k"}, body)
end
LUA
# Both GET routes are driven by a Lua request function, so wrk's own CPU (on these same two
# cores) weighs the same on both sides of each ratio.
cat >live.lua <<'LUA'
request = function() return wrk.format("GET", "/health/live") end
LUA
# by height in [LO, HI]: the range comes from the environment.
cat >range.lua <<'LUA'
local lo, hi = tonumber(os.getenv("LO")), tonumber(os.getenv("HI"))
function init(args) math.randomseed(os.time() + lo) end
request = function() return wrk.format("GET", "/api/v1/blocks/height/" .. math.random(lo, hi)) end
LUA
rate() { awk '/Requests\/sec/ {printf "%.0f", $2}' "$1"; }
p99() { awk '/ 99%/ {print $2}' "$1"; }
reqs() { awk '/requests in/ {print $1}' "$1"; }

echo "block-manager $(git -C "$ROOT" rev-parse --short HEAD), $(rustc --version | cut -d' ' -f1-2)," \
    "$("$PG_BIN/postgres" --version), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "postgres: fsync=$(psql_in postgres 'SHOW fsync'), synchronous_commit=$(psql_in postgres 'SHOW synchronous_commit')," \
    "wal_sync_method=$(psql_in postgres 'SHOW wal_sync_method'), shared_buffers=$(psql_in postgres 'SHOW shared_buffers')," \
    "data in $PG_DIR ($(df -T "$PG_DIR" | awk 'NR == 2 {print $2}'))"
echo "$(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg);" \
    "I/O pressure: $(head -1 /proc/pressure/io 2>/dev/null || echo n/a)"

# ---------------------------------------------------------------- pgbench on the same server
# bench/pgbench.sh's table and single-row statement: 2,944 bytes of random hex per row.
psql_in pgb "CREATE TABLE bench_blocks (height bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body bytea NOT NULL)"
cat >single.sql <<'SQL'
INSERT INTO bench_blocks (body) SELECT convert_to(string_agg(md5(random()::text), ''), 'UTF8') FROM generate_series(1, 92);
SQL
declare -A R
for c in 1 8; do
    echo "== pgbench: one ~3 KB row per transaction, $c client(s), ${PGB_SECS}s"
    psql_in pgb "TRUNCATE bench_blocks; CHECKPOINT"
    "$PG_BIN/pgbench" -n -M prepared -c "$c" -j "$((c < 2 ? c : 2))" -T "$PGB_SECS" -f single.sql "$(pgurl pgb)" \
        >"pgbench$c.txt" 2>&1
    R[pgbench$c]=$(awk '/^tps = / {printf "%.0f", $3; exit}' "pgbench$c.txt")
    [ -n "${R[pgbench$c]}" ] || { cat "pgbench$c.txt" >&2; exit 1; }
done
psql_in pgb "TRUNCATE bench_blocks; CHECKPOINT"

# ---------------------------------------------------------------- creates on fresh stores
creates() { # ENGINE RUN-PREFIX; on postgres, each phase's statements and server CPU
    local c cpu0 cpu1
    for c in 8 1; do
        if [ "$1" = postgres ]; then statements reset; cpu0=$(pg_cpu); fi
        echo "== $1: POST /api/v1/blocks, $c client(s), ${SECS}s"
        RUN=$2$c wrk -t$((c < 2 ? 1 : 2)) -c"$c" -d"${SECS}s" --latency -s create.lua "$URL" >"create$c-$1.txt"
        R[create$c-$1]=$(rate "create$c-$1.txt")
        if [ "$1" = postgres ]; then
            cpu1=$(pg_cpu)
            R[create$c-pgcpu]=$(calc "($cpu1 - $cpu0) * 1e6 / $(reqs "create$c-$1.txt")" .0f)
            statements "creates on postgres, $c client(s)" "$(reqs "create$c-$1.txt")"
        fi
    done
}

# The embedded node measured here is also the upstream of the catch-up: it is filled to N next.
start upstream
UP_URL=$URL UP_PID=$PID
ready "$UP_URL"
creates embedded e

start pg-create BLOCK_MANAGER_DATABASE_URL="$(pgurl bm_create)"
ready "$URL"
creates postgres p
stop "$PID"

HAVE=$(height_of "$UP_URL")
echo "== filling the upstream to $N blocks (have $HAVE)"
FILL=0
while [ "$HAVE" -lt "$N" ]; do
    FILL=$((FILL + 1))
    RUN=f$FILL wrk -t2 -c8 -d5s -s create.lua "$UP_URL" >/dev/null
    HAVE=$(height_of "$UP_URL")
done
TIP=$HAVE
SIZE=$(curl -s "$UP_URL/api/v1/blocks/height/$((TIP / 2))" | wc -c)

# ---------------------------------------------------------------- follower catch-up
follow() { # ENGINE [VAR=VALUE...]: times a fresh follower of the upstream to its tip
    local engine=$1 t0 t1 c0 c1 p1
    shift
    echo "== catch-up: $engine follower of $((TIP + 1)) blocks"
    c0=$(pg_cpu)
    t0=$(now)
    start "follow-$engine" BLOCKCHAIN_ENGINE_URL="$UP_URL" "$@"
    until [ "$(height_of "$URL")" = "$TIP" ]; do
        if [ "$(calc "$(now) - $t0" .0f)" -gt 600 ]; then
            echo "the $engine follower did not catch up in 10 minutes" >&2
            exit 1
        fi
        sleep 0.02
    done
    t1=$(now)
    p1=$(cpu_of "$PID")
    c1=$(pg_cpu)
    stop "$PID"
    R[catchup-$engine]=$(calc "($TIP + 1) / ($t1 - $t0)" .0f)
    R[catchup-$engine-secs]=$(calc "$t1 - $t0" .2f)
    R[catchup-$engine-cpu]=$(calc "$p1 * 1e6 / ($TIP + 1)" .1f)
    R[catchup-$engine-pgcpu]=$(calc "($c1 - $c0) * 1e6 / ($TIP + 1)" .1f)
}
follow embedded
statements reset
follow postgres BLOCK_MANAGER_DATABASE_URL="$(pgurl bm_follow)"
statements "catch-up into postgres" "$((TIP + 1))"

# ---------------------------------------------------------------- reads of the caught-up stores
# Restarted as the followers they are (a PostgreSQL database keeps its mode and refuses to be
# opened standalone): the upstream, idle now, stays up, and each follower polls it every 5 s.
reads() { # ENGINE: the store of follow-ENGINE, restarted
    local engine=$1 lo=$((TIP > 999 ? TIP - 999 : 0)) c0 c1
    shift
    start "follow-$engine" BLOCKCHAIN_ENGINE_URL="$UP_URL" "$@"
    ready "$URL"
    [ "$(height_of "$URL")" = "$TIP" ] || { echo "the $engine store does not hold $TIP blocks" >&2; exit 1; }
    # One pass over the hot set first, so the engine's body cache holds it as it would in service.
    LO=$lo HI=$TIP wrk -t1 -c8 -d2s -s range.lua "$URL" >/dev/null
    echo "== $engine: GET /health/live, 64 connections, $WT wrk thread(s), ${SECS}s"
    wrk -t"$WT" -c64 -d"${SECS}s" --latency -s live.lua "$URL" >"live-$engine.txt"
    [ "$engine" = postgres ] && statements reset && c0=$(pg_cpu)
    echo "== $engine: GET /blocks/height/{latest 1,000}, 64 connections, ${SECS}s"
    LO=$lo HI=$TIP wrk -t"$WT" -c64 -d"${SECS}s" --latency -s range.lua "$URL" >"hot-$engine.txt"
    if [ "$engine" = postgres ]; then
        c1=$(pg_cpu)
        R[hot-pgcpu]=$(calc "($c1 - $c0) * 1e6 / $(reqs "hot-$engine.txt")" .1f)
        statements "hot reads on postgres" "$(reqs "hot-$engine.txt")"
        statements reset
        c0=$(pg_cpu)
    fi
    echo "== $engine: GET /blocks/height/{random of $((TIP + 1))}, 64 connections, ${SECS}s"
    LO=0 HI=$TIP wrk -t"$WT" -c64 -d"${SECS}s" --latency -s range.lua "$URL" >"random-$engine.txt"
    if [ "$engine" = postgres ]; then
        c1=$(pg_cpu)
        R[random-pgcpu]=$(calc "($c1 - $c0) * 1e6 / $(reqs "random-$engine.txt")" .1f)
        statements "random reads on postgres" "$(reqs "random-$engine.txt")"
        curl -s "$URL/metrics" >"metrics-$engine.txt"
    fi
    R[rss-$engine]=$(($(awk '/VmRSS/ {print $2}' "/proc/$PID/status") / 1024))
    stop "$PID"
    R[live-$engine]=$(rate "live-$engine.txt")
    R[hot-$engine]=$(rate "hot-$engine.txt")
    R[random-$engine]=$(rate "random-$engine.txt")
}
reads embedded
reads postgres BLOCK_MANAGER_DATABASE_URL="$(pgurl bm_follow)"
stop "$UP_PID"

# ---------------------------------------------------------------- table
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
ratio() { calc "$1 / $2" .2f; }
row() { printf '| %-44s | %12s | %12s | %10s | %s\n' "$@"; }
echo
echo "chain: $((TIP + 1)) blocks, a block document is $SIZE bytes; load average after: $LOAD_AFTER;" \
    "I/O pressure: $(head -1 /proc/pressure/io 2>/dev/null || echo n/a)"
row "measurement" "embedded" "postgres" "pg / emb" "goal"
row "create, 8 clients (blocks/s)" "${R[create8-embedded]}" "${R[create8-postgres]}" \
    "$(ratio "${R[create8-postgres]}" "${R[create8-embedded]}")" ">= 0.5x embedded"
row "create, 1 client (blocks/s)" "${R[create1-embedded]}" "${R[create1-postgres]}" \
    "$(ratio "${R[create1-postgres]}" "${R[create1-embedded]}")" "report"
row "pgbench 3 KB row/txn, 8 / 1 clients (tps)" "" "${R[pgbench8]} / ${R[pgbench1]}" \
    "" "pg create 8 / pgbench 8: $(ratio "${R[create8-postgres]}" "${R[pgbench8]}")"
row "catch-up (blocks/s)" "${R[catchup-embedded]}" "${R[catchup-postgres]}" \
    "$(ratio "${R[catchup-postgres]}" "${R[catchup-embedded]}")" ">= 10000 blocks/s"
row "GET /health/live (req/s)" "${R[live-embedded]}" "${R[live-postgres]}" "" ""
row "GET latest 1,000 (req/s)" "${R[hot-embedded]}" "${R[hot-postgres]}" "" ""
row "  hot / live of the same server" "$(ratio "${R[hot-embedded]}" "${R[live-embedded]}")" \
    "$(ratio "${R[hot-postgres]}" "${R[live-postgres]}")" "" ">= 0.8"
row "GET random of the chain (req/s)" "${R[random-embedded]}" "${R[random-postgres]}" "" ""
row "  random / live of the same server" "$(ratio "${R[random-embedded]}" "${R[live-embedded]}")" \
    "$(ratio "${R[random-postgres]}" "${R[live-postgres]}")" "" ">= 0.3"
echo
echo "p99: create8 $(p99 create8-embedded.txt) / $(p99 create8-postgres.txt), create1 $(p99 create1-embedded.txt) / $(p99 create1-postgres.txt)," \
    "live $(p99 live-embedded.txt) / $(p99 live-postgres.txt), hot $(p99 hot-embedded.txt) / $(p99 hot-postgres.txt)," \
    "random $(p99 random-embedded.txt) / $(p99 random-postgres.txt) (embedded / postgres)"
echo "catch-up: embedded ${R[catchup-embedded-secs]} s, ${R[catchup-embedded-cpu]} µs follower CPU per block;" \
    "postgres ${R[catchup-postgres-secs]} s, ${R[catchup-postgres-cpu]} µs follower CPU + ${R[catchup-postgres-pgcpu]} µs PostgreSQL CPU per block"
echo "PostgreSQL server CPU per request: create ${R[create8-pgcpu]} / ${R[create1-pgcpu]} µs (8 / 1 clients), hot read ${R[hot-pgcpu]} µs, random read ${R[random-pgcpu]} µs"
echo "resident memory after reads: embedded ${R[rss-embedded]} MB, postgres ${R[rss-postgres]} MB"
grep -H "Non-2xx\|Socket errors" ./*.txt || echo "no errors, no non-2xx answers"
