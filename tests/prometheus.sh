#!/usr/bin/env bash
# /metrics against the real tools: `promtool check metrics` lints the exposition, and a real
# Prometheus scrapes the release binary until it sees `up` = 1, the chain height the API
# reports and the standard process_* figures. Starts only its own processes (on free loopback
# ports, with temp dirs) and stops them by PID on exit. Prints "N passed, M failed"; exits non-zero on any failure.
#
# Env: BLOCK_MANAGER_BIN (default target/release/block-manager, built when missing),
#      DEADLINE_SECONDS (default 40) for Prometheus to report the figures.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
BIN=${BLOCK_MANAGER_BIN:-$ROOT/target/release/block-manager}
DEADLINE_SECONDS=${DEADLINE_SECONDS:-40}
drill_start

# Polls "$@" every 0.25 s until it succeeds or $1 seconds pass.
wait_for() {
    local seconds=$1
    shift
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.25
    done
}

# The first "<key>":<number> in a JSON text (no jq on CI images).
json_number() { sed -n "s/.*\"$1\":\([0-9][0-9.]*\).*/\1/p" | head -n1; }

# The value of a one-series instant query: "value":[<time>,"<value>"].
prom_value() {
    curl -fsS -G "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
        sed -n 's/.*"value":\[[^,]*,"\([^"]*\)"\].*/\1/p' | head -n1
}

# --- tools ----------------------------------------------------------------------------------
if [ ! -x "$BIN" ]; then
    echo "building $BIN"
    (cd "$ROOT" && cargo build --release --bin block-manager) || { fail "release build"; finish; }
fi
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    echo "installing prometheus (Debian package)"
    { apt-get update && apt-get install -y --no-install-recommends prometheus; } >"$WORK/apt.log" 2>&1 ||
        { cat "$WORK/apt.log"; fail "install prometheus"; finish; }
fi
command -v curl >/dev/null || { fail "curl is required"; finish; }

# --- block-manager --------------------------------------------------------------------------
BM_PORT=$(free_port) || { fail "free port"; finish; }
BM="http://127.0.0.1:$BM_PORT"
mkdir -p "$WORK/bm"
(
    cd "$WORK/bm" &&
        exec env BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT="$BM_PORT" \
            BLOCK_STORAGE_PATH="$WORK/bm/data" BLOCK_MANAGER_API_KEY=k \
            BLOCK_MANAGER__RATE_LIMITS__ENABLED=false \
            BLOCK_MANAGER__MONITORING__SYSTEM_SAMPLE_INTERVAL_SECONDS=1 \
            "$BIN"
) >"$WORK/bm.log" 2>&1 &
PIDS+=($!)
if ! wait_200 "$BM/health/ready" 20; then
    cat "$WORK/bm.log"
    fail "block-manager ready on $BM"
    finish
fi
pass "block-manager ready on $BM"

created=0
for i in $(seq 1 5); do
    body='{"transactions":[{"tx_id":"p-'$i'","from_address":"a","to_address":"b","value":1,"signature":"s"},{"tx_id":"q-'$i'","from_address":"a","to_address":"b","value":2,"signature":"s"}],"producer":"p","signature":"s"}'
    code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST -H 'X-API-Key: k' \
        -H 'content-type: application/json' "$BM/api/v1/blocks" -d "$body")
    [ "$code" = 201 ] && created=$((created + 1))
done
check "5 blocks created" [ "$created" -eq 5 ]

reads_ok=true
for h in 0 1 2 3; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$BM/api/v1/blocks/height/$h")" = 200 ] || reads_ok=false
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$BM/api/v1/transactions/p-2")" = 200 ] || reads_ok=false
[ "$(curl -s -o /dev/null -w '%{http_code}' "$BM/api/v1/blocks/height/424242")" = 404 ] || reads_ok=false
[ "$(curl -s -o /dev/null -w '%{http_code}' "$BM/api/v1/no-such-thing/abc123")" = 404 ] || reads_ok=false
check "reads answer 200 and misses 404" $reads_ok

API_HEIGHT=$(curl -fsS "$BM/api/v1/chain/height" | json_number height)
check "API height is 5 (got '${API_HEIGHT}')" [ "${API_HEIGHT:-x}" = 5 ]

# --- promtool -------------------------------------------------------------------------------
curl -fsS "$BM/metrics" >"$WORK/metrics.txt"
if promtool check metrics <"$WORK/metrics.txt" >"$WORK/promtool.txt" 2>&1; then
    pass "promtool check metrics: clean"
else
    cat "$WORK/promtool.txt"
    fail "promtool check metrics"
fi
# Ours carry the prefix; the standard process family keeps its standard names, which
# dashboards and alerts written for any Prometheus client expect.
check "every metric name is prefixed block_manager_ or is a standard process_* name" \
    bash -c "! grep -v '^#' '$WORK/metrics.txt' | grep -Ev '^(block_manager_|process_)' | grep -q ."
for name in process_cpu_seconds_total process_resident_memory_bytes process_virtual_memory_bytes \
    process_open_fds process_max_fds process_start_time_seconds process_threads; do
    check "the linted exposition has $name" grep -q "^$name " "$WORK/metrics.txt"
done
check "route labels are templates, never raw ids" \
    bash -c "grep -q 'route=\"/api/v1/blocks/height/{height}\"' '$WORK/metrics.txt' &&
             grep -q 'route=\"unmatched\"' '$WORK/metrics.txt' &&
             ! grep -Eq '424242|abc123|p-2' '$WORK/metrics.txt'"

# --- a real Prometheus ----------------------------------------------------------------------
PROM_PORT=$(free_port) || { fail "free port"; finish; }
cat >"$WORK/prometheus.yml" <<EOF
global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: block-manager
    static_configs: [{targets: ['127.0.0.1:$BM_PORT']}]
EOF
promtool check config "$WORK/prometheus.yml" >/dev/null 2>&1 || fail "prometheus config"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)

up_is_1() { [ "$(prom_value 'up{job="block-manager"}')" = 1 ]; }
height_matches() { [ "$(prom_value 'block_manager_chain_height')" = "$API_HEIGHT" ]; }
if wait_for "$DEADLINE_SECONDS" up_is_1; then
    pass "Prometheus scrapes block-manager: up = 1"
else
    tail -n 20 "$WORK/prometheus.log"
    fail "Prometheus up = 1 within ${DEADLINE_SECONDS}s (last: '$(prom_value up)')"
fi
if wait_for "$DEADLINE_SECONDS" height_matches; then
    pass "Prometheus block_manager_chain_height = API height ($API_HEIGHT)"
else
    fail "Prometheus chain height '$(prom_value block_manager_chain_height)' vs API '$API_HEIGHT'"
fi
route_rate() {
    [ -n "$(prom_value 'sum(block_manager_http_requests_total{route="/api/v1/blocks/height/{height}",status="200"})')" ]
}
check "Prometheus sees requests by route template" wait_for 10 route_rate
host_seen() { [ -n "$(prom_value 'block_manager_host_memory_total_bytes > 0')" ]; }
check "Prometheus sees host figures" wait_for 10 host_seen
rss_seen() { [ -n "$(prom_value 'process_resident_memory_bytes{job="block-manager"} > 0')" ]; }
check "Prometheus sees process_resident_memory_bytes" wait_for 10 rss_seen

finish
