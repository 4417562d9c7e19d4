#!/usr/bin/env bash
# Read and ingest throughput of the HTTP API, measured in one run on this machine:
#   - POST /api/v1/blocks (create) with 8 clients and with 1 client (durable: every 201 is fsync'd)
#   - GET /api/v1/blocks/height/{random h} over a store of N blocks of about 2 KB, against
#     GET /health/live (the HTTP stack's ceiling) on the same server, 64 connections.
# Usage: bench/reads.sh [blocks=100000] [seconds=10]
# WRK_THREADS (default 1) sets wrk's threads for the two GET runs: on two cores a second wrk
# thread competes with the server's workers for the CPU it is measuring.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
N=${1:-100000}
SECS=${2:-10}
WT=${WRK_THREADS:-1}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet
BIN=$PWD/target/release/block-manager
WORK=$(mktemp -d)
PORT=$(free_port)
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT=$PORT BLOCK_MANAGER_API_KEY=k \
  BLOCK_MANAGER__RATE_LIMITS__ENABLED=false "$BIN" >/dev/null 2>&1 &
PID=$!
wait_200 "127.0.0.1:$PORT/health/ready" 10 || { echo "block-manager did not become ready" >&2; exit 1; }
URL="http://127.0.0.1:$PORT"

# A create body of about 2 KB: 6 transactions of ~300 bytes; ids unique per wrk thread and request.
cat > create.lua <<'LUA'
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
rate() { awk '/Requests\/sec/ {print $2}'; }
p99() { awk '/ 99%/ {print $2}'; }

echo "== ingest: POST /api/v1/blocks, 8 clients, ${SECS}s"
ING8=$(RUN=a wrk -t2 -c8 -d"${SECS}s" --latency -s create.lua "$URL" | tee ingest8.txt | rate)
echo "== ingest: POST /api/v1/blocks, 1 client, ${SECS}s"
ING1=$(RUN=b wrk -t1 -c1 -d"${SECS}s" --latency -s create.lua "$URL" | tee ingest1.txt | rate)
HAVE=$(curl -s "$URL/api/v1/chain/height" | python3 -c 'import json,sys; print(json.load(sys.stdin)["height"])')
echo "== filling to $N blocks (have $HAVE)"
if [ "$HAVE" -lt "$N" ]; then
  # Fill the rest with 8 clients; stop once the height is reached.
  FILL=0
  while [ "$HAVE" -lt "$N" ]; do
    FILL=$((FILL + 1))
    RUN=f$FILL wrk -t2 -c8 -d5s -s create.lua "$URL" >/dev/null
    HAVE=$(curl -s "$URL/api/v1/chain/height" | python3 -c 'import json,sys; print(json.load(sys.stdin)["height"])')
  done
fi
SIZE=$(curl -s "$URL/api/v1/blocks/height/$((HAVE / 2))" | wc -c)
cat > read.lua <<LUA
math.randomseed(os.time())
request = function() return wrk.format("GET", "/api/v1/blocks/height/" .. math.random(0, $HAVE)) end
LUA
# Both routes are driven the same way (a Lua request function, which costs wrk CPU on these
# shared cores), so the ratio compares the server's work and not the load generator's.
cat > live.lua <<'LUA'
request = function() return wrk.format("GET", "/health/live") end
LUA
echo "== GET /health/live, 64 connections, $WT wrk thread(s), ${SECS}s"
wrk -t"$WT" -c64 -d"${SECS}s" --latency -s live.lua "$URL" > live.txt
echo "== GET /api/v1/blocks/height/{random}, 64 connections, $WT wrk thread(s), ${SECS}s"
wrk -t"$WT" -c64 -d"${SECS}s" --latency -s read.lua "$URL" > read.txt
RSS=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
LIVE=$(rate < live.txt); READ=$(rate < read.txt)
echo
echo "blocks stored:               $HAVE (a block document is $SIZE bytes)"
echo "create, 8 clients:           $ING8 blocks/s (p99 $(p99 < ingest8.txt))"
echo "create, 1 client:            $ING1 blocks/s (p99 $(p99 < ingest1.txt))"
echo "GET /health/live:            $LIVE req/s (p99 $(p99 < live.txt))"
echo "GET /blocks/height/{h}:      $READ req/s (p99 $(p99 < read.txt))"
echo "read / live ratio:           $(python3 -c "print(f'{$READ/$LIVE:.2f}')")"
echo "resident memory after reads: $((RSS / 1024)) MB"
grep -H "Non-2xx\|Socket errors" ./*.txt || echo "no errors, no non-2xx answers"
