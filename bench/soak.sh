#!/usr/bin/env bash
# Mixed-load soak: creates, block reads, lists, range reads, health and metrics at once for a
# while (default 10 minutes), sampling the server's resident memory every 10 s. Passes when no
# request got an error answer and the store verifies afterwards. Memory is shown twice: VmRSS,
# which also counts the pages of the body log's read-only maps the reads have touched (page
# cache, growing with the store as random reads reach more of it), and RssAnon, the process's
# own memory (heap, stacks), which is what must stay flat.
# Usage: bench/soak.sh [seconds=600]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
SECS=${1:-600}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
# BLOCK_MANAGER_BIN soaks another build (to compare two) instead of this tree's release build.
if [ -z "${BLOCK_MANAGER_BIN:-}" ]; then cargo build --release --quiet; fi
BIN=${BLOCK_MANAGER_BIN:-$PWD/target/release/block-manager}
WORK=$(mktemp -d)
PORT=$(free_port)
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT=$PORT BLOCK_MANAGER_API_KEY=k \
  BLOCK_MANAGER__RATE_LIMITS__ENABLED=false LOG_LEVEL=${SOAK_LOG_LEVEL:-WARNING} "$BIN" >server.log 2>&1 &
PID=$!
wait_200 "127.0.0.1:$PORT/health/ready" 10 || { echo "block-manager did not become ready" >&2; exit 1; }
URL="http://127.0.0.1:$PORT"
# Blocks 1..50 exist before the load starts, so that early reads never outrun the first creates.
SEED=50
for i in $(seq 1 $SEED); do
  curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' -H 'X-API-Key: k' \
    -d "{\"producer\":\"soak\",\"signature\":\"s\",\"transactions\":[{\"tx_id\":\"seed-$i\",\"from_address\":\"a\",\"to_address\":\"b\",\"value\":1,\"signature\":\"s\"}]}" \
    "$URL/api/v1/blocks"
done
cat > mixed.lua <<'LUA'
local counter = 0
local threads = {}
function setup(thread) thread:set("tid", #threads + 1); table.insert(threads, thread) end
function init(args) prefix = tostring(tid); statuses = {} end
function request()
  counter = counter + 1
  local r = counter % 10
  -- This thread's creates are every tenth request, at most 8 of them in flight: the chain holds
  -- at least 50 + counter / 10 - 8 blocks, always more than this bound.
  local top = 50 + math.max(0, math.floor(counter / 20) - 10)
  if r == 0 then
    local body = '{"producer":"soak","signature":"s","transactions":[{"tx_id":"soak' .. prefix .. '-' .. counter .. '","from_address":"a","to_address":"b","value":1,"data":"' .. string.rep("x", 800) .. '","signature":"s"}]}'
    return wrk.format("POST", "/api/v1/blocks", {["Content-Type"]="application/json", ["X-API-Key"]="k"}, body)
  elseif r == 1 then return wrk.format("GET", "/api/v1/blocks?limit=50&sort=timestamp_desc")
  -- Reads stay well behind the tip: a read racing a create that is not committed yet would
  -- rightly answer 404 and say nothing about the server. (A run with an earlier, tighter bound
  -- saw one 404 in 12.4 million requests; that bound could run ahead of the first creates.)
  elseif r == 2 then return wrk.format("GET", "/api/v1/blocks/range?from=" .. math.random(0, top) .. "&limit=20")
  elseif r == 3 then return wrk.format("GET", "/health")
  elseif r == 4 then return wrk.format("GET", "/metrics")
  elseif r == 5 then return wrk.format("GET", "/api/v1/blocks/latest")
  else return wrk.format("GET", "/api/v1/blocks/height/" .. math.random(0, top)) end
end
-- Count answers by status so any error is named, not only counted.
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for code, n in pairs(s) do io.write(string.format("status %d: %d\n", code, n)) end
  end
end
LUA
wrk -t2 -c16 -d"${SECS}s" -s mixed.lua "$URL" > soak.txt &
WRK=$!
MIN=999999; MAX=0; TRACE=""; AMIN=999999; AMAX=0; ATRACE=""
while kill -0 "$WRK" 2>/dev/null; do
  RSS=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
  ANON=$(awk '/RssAnon/ {print $2}' /proc/$PID/status)
  [ "$RSS" -lt "$MIN" ] && MIN=$RSS
  [ "$RSS" -gt "$MAX" ] && MAX=$RSS
  [ "$ANON" -lt "$AMIN" ] && AMIN=$ANON
  [ "$ANON" -gt "$AMAX" ] && AMAX=$ANON
  TRACE="$TRACE $((RSS / 1024))"
  ATRACE="$ATRACE $((ANON / 1024))"
  sleep 10
done
cat soak.txt
HEIGHT=$(curl -s "$URL/api/v1/chain/height" | python3 -c 'import json,sys; print(json.load(sys.stdin)["height"])')
kill "$PID"; wait "$PID" || true; PID=
grep -h "status=4\|status=5" server.log logs/*.log 2>/dev/null | sed "s/.*route=/route=/" | sort | uniq -c | head -5 || true
"$BIN" verify | tail -1
echo "height after soak: $HEIGHT; resident memory min $((MIN / 1024)) MB, max $((MAX / 1024)) MB; anonymous min $((AMIN / 1024)) MB, max $((AMAX / 1024)) MB"
echo "resident memory (VmRSS) every 10 s (MB):$TRACE"
echo "anonymous memory (RssAnon) every 10 s (MB):$ATRACE"
if grep -q "Non-2xx\|Socket errors" soak.txt; then echo "soak: errors seen"; exit 1; fi
echo "soak: no error answers"
