#!/usr/bin/env bash
# Server-side cost of one /metrics scrape, idle and under read load.
#
# Runs the release server on a free loopback port with BLOCKS blocks, then:
#   1. idle:   SCRAPES scrapes back to back;
#   2. loaded: the same while wrk (2 connections) reads random /api/v1/blocks/height/{h}.
# The server-side figure comes from the server's own histogram
# block_manager_http_request_duration_seconds{route="/metrics"} (delta of _sum / delta of
# _count, and the share under the 1 ms bucket); the client-side one from curl's time_total.
# Goal: server-side mean < 1 ms. Starts only its own processes and stops them by PID.
#
# Env: BLOCKS (1000), SCRAPES (2000), LOAD_SECONDS (20: wrk's run, longer than the scrapes),
#      BLOCK_MANAGER_BIN (target/release/block-manager).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
BIN=${BLOCK_MANAGER_BIN:-$ROOT/target/release/block-manager}
BLOCKS=${BLOCKS:-1000}
SCRAPES=${SCRAPES:-2000}
work_start

[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --bin block-manager)
command -v wrk >/dev/null || { apt-get update && apt-get install -y --no-install-recommends wrk; }

PORT=$(free_port)
BM="http://127.0.0.1:$PORT"
mkdir -p "$WORK/bm"
(
    cd "$WORK/bm" &&
        exec env BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT="$PORT" \
            BLOCK_STORAGE_PATH="$WORK/bm/data" BLOCK_MANAGER_API_KEY=k \
            BLOCK_MANAGER__RATE_LIMITS__ENABLED=false LOG_LEVEL=warn "$BIN"
) >"$WORK/bm.log" 2>&1 &
PIDS+=($!)
wait_200 "$BM/health/ready" 20 || { cat "$WORK/bm.log" >&2; exit 1; }

echo "creating $BLOCKS blocks..."
create() {
    curl -s -o /dev/null -w '%{http_code}\n' -XPOST -H 'X-API-Key: k' \
        -H 'content-type: application/json' "$BM/api/v1/blocks" \
        -d '{"transactions":[{"tx_id":"b-'"$1"'-0","from_address":"a","to_address":"b","value":1,"signature":"s"},{"tx_id":"b-'"$1"'-1","from_address":"a","to_address":"b","value":2,"signature":"s"}],"producer":"p","signature":"s"}'
}
export -f create
export BM
seq 1 "$BLOCKS" | xargs -P 4 -I{} bash -c 'create {}' | sort | uniq -c
HEIGHT=$(curl -fsS "$BM/api/v1/chain/height" | sed -n 's/.*"height":\([0-9]*\).*/\1/p')
echo "height $HEIGHT"

# Sum and count of the /metrics latency histogram, and its <= 1 ms bucket.
histogram() {
    curl -fsS "$BM/metrics" | awk '
        /^block_manager_http_request_duration_seconds_sum\{method="GET",route="\/metrics"\}/ { s = $2 }
        /^block_manager_http_request_duration_seconds_count\{method="GET",route="\/metrics"\}/ { c = $2 }
        /^block_manager_http_request_duration_seconds_bucket\{le="0.001",method="GET",route="\/metrics"\}/ { b = $2 }
        /^block_manager_http_request_duration_seconds_bucket\{method="GET",route="\/metrics",le="0.001"\}/ { b = $2 }
        END { printf "%s %s %s\n", s + 0, c + 0, b + 0 }'
}

# Runs SCRAPES scrapes; prints a result line for label $1.
measure() {
    local label=$1 before after times
    before=$(histogram)
    times="$WORK/times-$label"
    # One curl for all scrapes: a kept-alive connection, so the client time is the request's
    # own rather than process start-up and connection setup.
    local args=()
    for _ in $(seq "$SCRAPES"); do
        args+=(-o /dev/null "$BM/metrics")
    done
    curl -s -w '%{time_total}\n' "${args[@]}" >"$times"
    after=$(histogram)
    # The two histogram reads are scrapes too: one lands between before and after.
    read -r s0 c0 b0 <<<"$before"
    read -r s1 c1 b1 <<<"$after"
    sort -n "$times" | awk -v label="$label" -v s0="$s0" -v s1="$s1" -v c0="$c0" -v c1="$c1" \
        -v b0="$b0" -v b1="$b1" '
        { t[NR] = $1 }
        END {
            n = c1 - c0
            printf "%-7s server mean %.3f ms over %d scrapes, %.1f%% under 1 ms | client p50 %.3f ms, p99 %.3f ms, max %.3f ms\n",
                label, (s1 - s0) / n * 1000, n, (b1 - b0) / n * 100,
                t[int(NR * 0.5)] * 1000, t[int(NR * 0.99)] * 1000, t[NR] * 1000
        }'
}

SIZE=$(curl -fsS "$BM/metrics" | wc -c)
SERIES=$(curl -fsS "$BM/metrics" | grep -vc '^#')
echo "exposition: $SIZE bytes, $SERIES series"

measure idle

cat >"$WORK/reads.lua" <<EOF
math.randomseed(os.time())
request = function()
    return wrk.format("GET", "/api/v1/blocks/height/" .. math.random(0, $HEIGHT))
end
EOF
# wrk reports only when its run ends: make the run outlast the loaded scrapes.
DURATION=${LOAD_SECONDS:-20}
wrk -t1 -c2 -d"${DURATION}s" -s "$WORK/reads.lua" "$BM" >"$WORK/wrk.txt" 2>&1 &
WRK=$!
PIDS+=("$WRK")
sleep 2
started=$SECONDS
measure loaded
if [ $((SECONDS - started + 2)) -ge "$DURATION" ]; then
    echo "warning: the scrapes outlasted the load; raise LOAD_SECONDS"
fi
wait "$WRK" || true
grep -E "Requests/sec|Latency" "$WORK/wrk.txt" | sed 's/^/wrk: /'
echo "machine: $(nproc) cores, $(uname -m), load $(cut -d' ' -f1-3 /proc/loadavg)"
