#!/usr/bin/env bash
# Memory bound of GET /api/v1/blocks/range: the release binary with a store of 45 blocks of
# ~1 MiB each answers 8 parallel anonymous `range?from=0&limit=1000` requests, five rounds,
# and its peak resident memory (VmHWM) must stay under RSS_LIMIT_MB (200). Each page must stop
# at api.max_response_bytes (8 MiB default) and still hold at least one block. Starts only its
# own process (free loopback port, temp dir) and stops it by PID on exit. Prints the peak and
# "N passed, M failed"; exits non-zero on any failure.
#
# Env: BLOCK_MANAGER_BIN (default target/release/block-manager, built when missing),
#      RSS_LIMIT_MB (default 200), BLOCKS (default 45), ROUNDS (default 5).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
BIN=${BLOCK_MANAGER_BIN:-$ROOT/target/release/block-manager}
RSS_LIMIT_MB=${RSS_LIMIT_MB:-200}
BLOCKS=${BLOCKS:-45}
ROUNDS=${ROUNDS:-5}
MAX_RESPONSE_BYTES=$((8 * 1024 * 1024))
drill_start

# Peak resident memory of a process in kB, from /proc.
peak_kb() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status"; }

if [ ! -x "$BIN" ]; then
    echo "building $BIN"
    (cd "$ROOT" && cargo build --release --bin block-manager) || { fail "release build"; finish; }
fi
command -v curl >/dev/null || { fail "curl is required"; finish; }
command -v python3 >/dev/null || { fail "python3 is required"; finish; }

PORT=$(free_port) || { fail "free port"; finish; }
BM="http://127.0.0.1:$PORT"
mkdir -p "$WORK/bm"
(
    cd "$WORK/bm" &&
        exec env BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT="$PORT" \
            BLOCK_STORAGE_PATH="$WORK/bm/data" BLOCK_MANAGER_API_KEY=k \
            BLOCK_MANAGER__RATE_LIMITS__ENABLED=false \
            "$BIN"
) >"$WORK/bm.log" 2>&1 &
BM_PID=$!
PIDS+=("$BM_PID")
if ! wait_200 "$BM/health/ready" 20; then
    cat "$WORK/bm.log"
    fail "block-manager ready on $BM"
    finish
fi
pass "block-manager ready on $BM"

# Blocks of ~1 MiB: one transaction whose data is 1,000,000 bytes (the default block limit is
# 1 MiB, the request body limit 2 MiB).
created=$(python3 - "$BM" "$BLOCKS" <<'PY'
import json, sys, urllib.request
base, n = sys.argv[1], int(sys.argv[2])
data = "x" * 1_000_000
ok = 0
for i in range(n):
    body = json.dumps({"transactions": [{"tx_id": f"big-{i}", "type": "data_storage",
        "from_address": "0xaaaa", "to_address": "0xbbbb", "value": 1, "data": data,
        "signature": f"sig-{i}"}], "producer": "drill", "signature": f"block-sig-{i}"}).encode()
    req = urllib.request.Request(base + "/api/v1/blocks", data=body, method="POST",
        headers={"Content-Type": "application/json", "X-API-Key": "k"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            ok += r.status == 201
    except Exception as e:
        print(f"create {i}: {e}", file=sys.stderr)
print(ok)
PY
)
check "$BLOCKS blocks of ~1 MiB created (got ${created:-0})" [ "${created:-0}" -eq "$BLOCKS" ]
echo "peak RSS after the creates: $(( $(peak_kb "$BM_PID") / 1024 )) MB"

pages_ok=true
for round in $(seq 1 "$ROUNDS"); do
    pids=()
    for c in $(seq 1 8); do
        curl -s -o "$WORK/page-$c" -w '%{http_code} %{size_download}\n' \
            "$BM/api/v1/blocks/range?from=0&limit=1000" >"$WORK/status-$c" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    for c in $(seq 1 8); do
        read -r code size <"$WORK/status-$c"
        if [ "$code" != 200 ] || [ "$size" -gt "$MAX_RESPONSE_BYTES" ] || [ "$size" -lt 1000000 ]; then
            echo "round $round client $c: status $code, $size bytes"
            pages_ok=false
        fi
    done
done
check "every page 200, at most $MAX_RESPONSE_BYTES bytes and at least one ~1 MiB block" $pages_ok

PEAK_KB=$(peak_kb "$BM_PID")
PEAK_MB=$((PEAK_KB / 1024))
echo "peak RSS (VmHWM) after $ROUNDS rounds of 8 parallel range requests: $PEAK_MB MB"
check "peak RSS $PEAK_MB MB under $RSS_LIMIT_MB MB" [ "$PEAK_MB" -lt "$RSS_LIMIT_MB" ]
TRUNCATED=$(curl -fsS "$BM/metrics" | sed -n 's/^block_manager_http_responses_truncated_total{route="\/api\/v1\/blocks\/range"} \([0-9]*\)$/\1/p')
check "truncated responses counted (${TRUNCATED:-none})" [ "${TRUNCATED:-0}" -ge $((ROUNDS * 8)) ]
finish
