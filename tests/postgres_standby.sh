#!/usr/bin/env bash
# Hot standby drill: the release binary with its reads on a streaming standby
# (BLOCK_MANAGER_DATABASE_READ_URLS) of a throwaway PostgreSQL primary, and the primary stopped
# under it:
#   1. both up: /health healthy, the store check lists the standby up with its lag;
#      with replay paused on the standby, new blocks are served from the primary without each
#      read waiting `replay_wait_ms`, and /health and /metrics show the lag;
#   2. primary down, standby up: every stored block is still served (by height, by hash, by
#      transaction id, latest, the list), a hash no block has is a 404, writes answer 503 ST_001 within the connect timeout,
#      /health answers 200 `degraded` saying the primary is unreachable and reads are served by
#      the standby;
#   3. both down: /health answers 503 `unhealthy`;
#   4. both back: healthy again and writes resume, without a restart.
# Starts only its own processes (free loopback ports, temp dirs) and stops them by PID on exit.
# Prints "N passed, M failed"; exits non-zero on any failure.
#
# Env: BLOCK_MANAGER_BIN (default target/release/block-manager, built when missing).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
BIN=${BLOCK_MANAGER_BIN:-$ROOT/target/release/block-manager}
CONNECT_TIMEOUT=2
# What an answer may take beyond the engine's bound: the HTTP round trip and scheduling on a
# small machine that is also running PostgreSQL.
MARGIN=2
BOUND=$((CONNECT_TIMEOUT + MARGIN))
BLOCKS=20
# Long, so a read that waits for replay shows in the timings.
REPLAY_WAIT_MS=500
KEY=drill-write-key
drill_start

command -v python3 >/dev/null || { fail "python3 is required"; finish; }
command -v curl >/dev/null || { fail "curl is required"; finish; }
if [ ! -x "$BIN" ]; then
    echo "building $BIN"
    (cd "$ROOT" && cargo build --release --bin block-manager) || { fail "release build"; finish; }
fi
pg_start --standby >/dev/null || { fail "pg_start --standby"; finish; }
echo "postgres primary on 127.0.0.1:$PG_PORT, standby on 127.0.0.1:$PG_STANDBY_PORT"

DB=bm_standby_drill
"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE $DB" ||
    { fail "create the database"; finish; }
standby_has_db() {
    [ "$(pg_query "$PG_STANDBY_PORT" "select count(*) from pg_database where datname = '$DB'")" = 1 ]
}
primary() { pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/primary" -l "$PG_DIR/primary.log" -m fast -w -t 120 "$1" >/dev/null; }
standby() { pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/standby" -l "$PG_DIR/standby.log" -m fast -w -t 120 "$1" >/dev/null; }

# Polls "$@" every 50 ms until it succeeds or $1 seconds pass.
wait_for() {
    local seconds=$1
    shift
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.05
    done
}
wait_for 20 standby_has_db || { fail "the standby replays CREATE DATABASE"; finish; }

BM_PORT=$(free_port) || { fail "free port"; finish; }
BM="http://127.0.0.1:$BM_PORT"
mkdir -p "$WORK/bm"
(
    cd "$WORK/bm" &&
        exec env BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT="$BM_PORT" \
            BLOCK_STORAGE_PATH="$WORK/bm/data" BLOCK_MANAGER_API_KEY="$KEY" \
            BLOCK_MANAGER__RATE_LIMITS__ENABLED=false \
            BLOCK_MANAGER_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$DB?sslmode=disable" \
            BLOCK_MANAGER_DATABASE_READ_URLS="postgres://postgres@127.0.0.1:$PG_STANDBY_PORT/$DB?sslmode=disable" \
            BLOCK_MANAGER__STORAGE__POSTGRES__CONNECT_TIMEOUT_SECONDS="$CONNECT_TIMEOUT" \
            BLOCK_MANAGER__STORAGE__POSTGRES__REPLAY_WAIT_MS="$REPLAY_WAIT_MS" \
            "$BIN"
) >>"$WORK/bm.log" 2>&1 &
PIDS+=("$!")
wait_200 "$BM/health/live" 30 || { fail "block-manager starts: $(tail -5 "$WORK/bm.log")"; finish; }

# `status PATH` prints the HTTP status of a GET; the body is in $WORK/body.
status() { curl -s -o "$WORK/body" -w '%{http_code}' --max-time 30 "$BM$1"; }
# `timed_post TX` prints "<status> <seconds>" of a create with one transaction TX.
timed_post() {
    curl -s -o "$WORK/body" -w '%{http_code} %{time_total}' --max-time 30 -X POST \
        -H "X-API-Key: $KEY" -H 'content-type: application/json' \
        --data '{"transactions":[{"tx_id":"'"$1"'","from_address":"a","to_address":"b","value":1,"signature":"s"}],"producer":"p","signature":"s"}' \
        "$BM/api/v1/blocks"
}
# The store check as one line: overall status, store status, first standby's state and lag,
# and the store message.
store_line() {
    curl -s --max-time 30 "$BM/health" | python3 -c '
import json, sys
try:
    doc = json.load(sys.stdin)
except ValueError:
    print("unreadable"); sys.exit()
doc = doc.get("detail", {}).get("additional_info", doc)
store = doc.get("checks", {}).get("store", {})
sb = (store.get("standbys") or [{}])[0]
print(doc.get("status"), store.get("status"), sb.get("state"), sb.get("lag_blocks"), "|", store.get("message"))'
}
health_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$BM/health"; }
store_is() { [[ "$(store_line)" == $1 ]]; }

# ------------------------------------------------------------------------------ 1. both up
if wait_for 30 store_is "healthy healthy up *"; then
    pass "both up: $(store_line)"
else
    fail "both up: want healthy with the standby up, got $(store_line)"
fi
: >"$WORK/blocks"
for i in $(seq 1 "$BLOCKS"); do
    read -r code _ <<<"$(timed_post "drill-$i")"
    if [ "$code" != 201 ]; then
        fail "create $i: $code $(head -c 300 "$WORK/body")"
        finish
    fi
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["height"], d["hash"], sys.argv[2])' "$WORK/body" "drill-$i" >>"$WORK/blocks"
done
pass "$BLOCKS blocks created"
check "the standby catches up (lag 0)" wait_for 20 store_is "healthy healthy up 0 *"

# ------------------------------------------------------------- 1b. a lagging standby
# Replay paused on the standby: new blocks are read from the primary, without each read waiting
# the replay wait once the standby is seen to be seconds behind; health and metrics show the lag.
sb_sql() { "$PG_BIN/psql" -X -A -t -q -h 127.0.0.1 -p "$PG_STANDBY_PORT" -U postgres -d postgres -c "$1" >/dev/null 2>&1; }
sb_sql "SELECT pg_wal_replay_pause()" || fail "pause replay on the standby"
: >"$WORK/lagging"
for i in $(seq 1 5); do
    read -r code _ <<<"$(timed_post "drill-lag-$i")"
    [ "$code" = 201 ] || fail "create lag-$i: $code"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["height"], d["hash"], sys.argv[2])' "$WORK/body" "drill-lag-$i" >>"$WORK/lagging"
done
lag_seen() {
    curl -s --max-time 30 "$BM/health" | python3 -c '
import json, sys
sb = (json.load(sys.stdin).get("checks", {}).get("store", {}).get("standbys") or [{}])[0]
sys.exit(0 if sb.get("lag_blocks") == 5 and (sb.get("lag_seconds") or 0) > 1 else 1)'
}
if wait_for 20 lag_seen; then
    pass "lagging: health shows 5 blocks and over a second of lag: $(store_line)"
else
    fail "lagging: want lag_blocks 5, lag_seconds > 1; got $(curl -s "$BM/health" | head -c 600)"
fi
# Fetched whole, then searched: `grep -q` quitting early would fail the pipe under pipefail.
metrics() { curl -s --max-time 30 "$BM/metrics" >"$WORK/metrics"; }
if metrics && grep -q '^block_manager_postgres_standby_lag_blocks{standby="0"} 5$' "$WORK/metrics"; then
    pass "lagging: block_manager_postgres_standby_lag_blocks{standby=\"0\"} 5"
else
    fail "lagging: no lag of 5 in /metrics: $(grep standby "$WORK/metrics")"
fi
started=$(date +%s.%N)
missed=0
while read -r height hash tx; do
    for path in "/api/v1/blocks/height/$height" "/api/v1/blocks/$hash" "/api/v1/transactions/$tx"; do
        code=$(status "$path")
        { [ "$code" = 200 ] && grep -q "$hash" "$WORK/body"; } || missed=$((missed + 1))
    done
done <"$WORK/lagging"
took=$(python3 -c "import time; print(round(time.time() - $started, 3))")
# 15 reads that each waited the replay wait would take 15 x ${REPLAY_WAIT_MS} ms.
if [ "$missed" = 0 ] && python3 -c "import sys; sys.exit(0 if $took < 15 * $REPLAY_WAIT_MS / 1000 / 3 else 1)"; then
    pass "lagging: 15 reads of unreplayed blocks served by the primary in ${took}s (a wait each would be $((15 * REPLAY_WAIT_MS)) ms)"
else
    fail "lagging: $missed of 15 reads missed, took ${took}s"
fi
sb_sql "SELECT pg_wal_replay_resume()" || fail "resume replay on the standby"
cat "$WORK/lagging" >>"$WORK/blocks"
check "resumed: the standby catches up (lag 0)" wait_for 20 store_is "healthy healthy up 0 *"

# ------------------------------------------------------------- 2. primary down, standby up
primary stop || { fail "stop the primary"; finish; }
served=0
missed=()
while read -r height hash tx; do
    for path in "/api/v1/blocks/height/$height" "/api/v1/blocks/$hash" "/api/v1/transactions/$tx"; do
        code=$(status "$path")
        if [ "$code" = 200 ] && grep -q "$hash" "$WORK/body"; then
            served=$((served + 1))
        else
            missed+=("$path=$code")
        fi
    done
done <"$WORK/blocks"
if [ ${#missed[@]} -eq 0 ]; then
    pass "primary down: all $served reads served from the standby"
else
    fail "primary down: ${#missed[@]} reads not served: ${missed[*]:0:10}"
fi
check "primary down: a hash no block has is a 404 from the standby" [ "$(status "/api/v1/blocks/$(printf 'f%.0s' $(seq 64))")" = 404 ]
check "primary down: latest is served" [ "$(status /api/v1/blocks/latest)" = 200 ]
check "primary down: the list is served" [ "$(status '/api/v1/blocks?limit=5')" = 200 ]
read -r code secs <<<"$(timed_post drill-refused)"
if [ "$code" = 503 ] && grep -q '"error_code":"ST_001"' "$WORK/body" &&
    python3 -c "import sys; sys.exit(0 if float('$secs') <= $BOUND else 1)"; then
    pass "primary down: a create answers 503 ST_001 in ${secs}s (bound ${BOUND}s)"
else
    fail "primary down: a create answered $code in ${secs}s: $(head -c 300 "$WORK/body")"
fi
degraded() { [ "$(health_code)" = 200 ] && store_is "degraded degraded up *primary database is unreachable*served by the standby*"; }
if wait_for 10 degraded; then
    pass "primary down: /health 200 degraded: $(store_line)"
else
    fail "primary down: want 200 degraded naming the standby, got $(health_code) $(store_line)"
fi
if metrics && grep -Eq '^block_manager_postgres_reads_total\{pool="standby"\} [1-9]' "$WORK/metrics"; then
    pass "metrics count the reads the standby served"
else
    fail "no block_manager_postgres_reads_total{pool=\"standby\"} in /metrics"
fi

# ------------------------------------------------------------------------ 3. both down
standby stop || { fail "stop the standby"; finish; }
unhealthy() { [ "$(health_code)" = 503 ] && store_is "unhealthy unhealthy down *"; }
if wait_for $((BOUND + 5)) unhealthy; then
    pass "both down: /health 503 unhealthy: $(store_line)"
else
    fail "both down: want 503 unhealthy, got $(health_code) $(store_line)"
fi

# ------------------------------------------------------------------------ 4. both back
primary start || { fail "start the primary"; finish; }
standby start || { fail "start the standby"; finish; }
if wait_for 60 store_is "healthy healthy up *"; then
    pass "both back: $(store_line)"
else
    fail "both back: want healthy, got $(store_line)"
fi
read -r code _ <<<"$(timed_post drill-after)"
check "both back: writes resume ($code)" [ "$code" = 201 ]

finish
