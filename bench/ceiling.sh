#!/usr/bin/env bash
# How close block-manager comes to the HTTP ceiling of this machine, measured in one run:
# a bare axum server (bench/bare: no middleware, one prebuilt block document from memory)
# against the service's GET /health/live and random block reads by height and by hash over a
# store of N blocks. Every target is driven by the same wrk Lua request function (a random
# path from a list), one wrk thread, 64 connections; rounds alternate the targets so drifts of
# the shared machine's load fall on all of them alike. Prints each target's median and its
# ratio to the bare server, the block reads' p99, and the access lines written and dropped.
# Also each server's CPU time per request (user + system, all its threads, from /proc), which a
# busy shared machine disturbs less than req/s: the ratio of bare's to the service's is what the
# throughput ratio would be if the server alone were short of CPU.
# The service runs as shipped: the embedded engine, default logging (console redirected to a
# file, plus the rotated file, INFO, one line per request), the default middleware, and the
# rate limit on, at a limit this load never reaches.
# Usage: bench/ceiling.sh [blocks=35000] [rounds=5] [seconds=10]   (KEEP=1 keeps the work folder)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
N=${1:-35000}
ROUNDS=${2:-5}
SECS=${3:-10}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
# BLOCK_MANAGER_BIN (and BARE_BIN) measure other builds (to compare two) instead of this tree's.
if [ -z "${BLOCK_MANAGER_BIN:-}" ] || [ -z "${BARE_BIN:-}" ]; then
  # Symbols kept, so the same binaries can be profiled (valgrind, perf); code is unchanged.
  CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --quiet --bin block-manager --example bare
fi
BIN=${BLOCK_MANAGER_BIN:-$PWD/target/release/block-manager}
BARE=${BARE_BIN:-$PWD/target/release/examples/bare}
WORK=$(mktemp -d)
cleanup() {
  for p in ${PID:-} ${BPID:-}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
PORT=$(free_port)
BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT=$PORT BLOCK_MANAGER_API_KEY=k \
  BLOCK_MANAGER__RATE_LIMITS__REQUESTS=4000000000 \
  "$BIN" >console.log 2>&1 &
PID=$!
wait_200 "127.0.0.1:$PORT/health/ready" 30 || { echo "block-manager did not become ready" >&2; exit 1; }
URL="http://127.0.0.1:$PORT"

# Blocks of about 2.9 KB served: 6 transactions of ~300 bytes, ids unique per request.
cat > create.lua <<'LUA'
local counter = 0
function init(args) prefix = os.getenv("RUN") end
function request()
  counter = counter + 1
  local txs = {}
  for i = 1, 6 do
    txs[i] = string.format('{"tx_id":"c%s-%d-%d","type":"data_storage","from_address":"0x1111111111111111111111111111111111111111","to_address":"0x2222222222222222222222222222222222222222","value":%d,"fee":0.01,"data":"%s","signature":"sig-%d"}',
      prefix, counter, i, i, string.rep("d", 120), i)
  end
  local body = '{"producer":"bench","signature":"bench-sig","transactions":[' .. table.concat(txs, ",") .. ']}'
  return wrk.format("POST", "/api/v1/blocks", {["Content-Type"]="application/json", ["X-API-Key"]="k"}, body)
end
LUA
height() { curl -s "$URL/api/v1/chain/height" | python3 -c 'import json,sys; print(json.load(sys.stdin)["height"])'; }
HAVE=$(height)
FILL=0
echo "== filling the store to $N blocks"
while [ "$HAVE" -lt "$N" ]; do
  FILL=$((FILL + 1))
  RUN=f$FILL wrk -t1 -c8 -d5s -s create.lua "$URL" >/dev/null
  HAVE=$(height)
done
# Every block's hash, from the headers pages.
python3 - "$URL" "$HAVE" <<'PY'
import json, sys, urllib.request
url, top = sys.argv[1], int(sys.argv[2])
heights, hashes, h = [], [], 0
while h <= top:
    with urllib.request.urlopen(f"{url}/api/v1/blocks/headers?from={h}&limit=2000") as r:
        page = json.load(r)
    rows = page.get("headers") or page.get("blocks") or []
    if not rows:
        break
    for b in rows:
        heights.append(f"/api/v1/blocks/height/{b['height']}")
        hashes.append(f"/api/v1/blocks/{b.get('hash') or b.get('block_hash')}")
    h = rows[-1]["height"] + 1
open("height.paths", "w").write("\n".join(heights) + "\n")
open("hash.paths", "w").write("\n".join(hashes) + "\n")
PY
echo "/health/live" > live.paths
# The bare server answers any path with the block at the middle height, byte for byte.
curl -s "$URL/api/v1/blocks/height/$((HAVE / 2))" -o block.json
SIZE=$(wc -c < block.json)
BPORT=$(free_port)
"$BARE" "$BPORT" block.json &
BPID=$!
wait_200 "127.0.0.1:$BPORT/api/v1/blocks/height/1" 10 || { echo "bare server did not start" >&2; exit 1; }

# The one request function of every target: a random path from the target's list.
cat > paths.lua <<'LUA'
local paths = {}
for line in io.lines(os.getenv("PATHS")) do paths[#paths + 1] = line end
math.randomseed(os.time())
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
LUA
# CPU time (user + system, in clock ticks, all threads) the process has used so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # name url paths-file round pid
  local before; before=$(ticks "$5")
  PATHS=$3 wrk -t1 -c64 -d"${SECS}s" --latency -s paths.lua "$2" > "$1.$4.txt"
  echo $(($(ticks "$5") - before)) > "$1.$4.cpu"
}
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r/$ROUNDS (load $(cut -d' ' -f1-3 /proc/loadavg))"
  # The order turns each round, so no target always runs first or after the same one.
  # The bare server reads the same random block paths as the block reads.
  targets=("bare $BPORT height.paths $BPID" "live $PORT live.paths $PID" "height $PORT height.paths $PID" "hash $PORT hash.paths $PID")
  for i in 0 1 2 3; do
    set -- ${targets[$(((i + r - 1) % 4))]}
    run "$1" "http://127.0.0.1:$2" "$3" "$r" "$4"
    printf '   %-7s %s req/s\n' "$1" "$(awk '/Requests\/sec/ {print $2}' "$1.$r.txt")"
  done
done
sleep 1
python3 - "$ROUNDS" "$SIZE" "$HAVE" "$(getconf CLK_TCK)" <<'PY'
import re, statistics, sys
rounds, size, have, tck = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
def ms(s):
    v, u = re.match(r"([\d.]+)(us|ms|s)", s).groups()
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[u]
med, p99, cpu, total, bad = {}, {}, {}, 0, []
for t in ["bare", "live", "height", "hash"]:
    rates, tails, costs = [], [], []
    for r in range(1, rounds + 1):
        text = open(f"{t}.{r}.txt").read()
        rates.append(float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)))
        tails.append(ms(re.search(r"\s99%\s+(\S+)", text).group(1)))
        n = int(re.search(r"(\d+) requests in", text).group(1))
        costs.append(int(open(f"{t}.{r}.cpu").read()) * 1e6 / tck / max(n, 1))
        if t != "bare":
            total += n
        if "Non-2xx" in text or "Socket errors" in text:
            bad.append(f"{t} round {r}")
    med[t], p99[t] = statistics.median(rates), statistics.median(tails)
    cpu[t] = statistics.median(costs)
print(f"\nblocks stored {have}, block document {size} bytes; medians of {rounds} rounds")
for t, label in [("bare", "bare axum, block from memory"), ("live", "GET /health/live"),
                 ("height", "GET /blocks/height/{random}"), ("hash", "GET /blocks/{random hash}")]:
    print(f"{label:32} {med[t]:>9.0f} req/s  {med[t] / med['bare']:.2f}x bare  p99 {p99[t]:.2f} ms"
          f"  server CPU {cpu[t]:5.1f} us/req ({cpu['bare'] / cpu[t]:.2f}x bare's rate)")
print(f"requests to block-manager in the rounds: {total}")
print("errors or non-2xx: " + (", ".join(bad) if bad else "none"))
open("total", "w").write(str(total))
PY
# Access lines: every request made one line in each handler; the drop counter says how many
# a full queue lost.
curl -s "$URL/metrics" | grep '^block_manager_log_lines_dropped_total' || echo "no drop counter exported"
echo "access lines in console.log: $(grep -c 'request_id=' console.log || true)"
echo "access lines in the rotated file(s): $(cat logs/block-manager.log* 2>/dev/null | grep -c 'request_id=' || true)"
echo "resident memory of block-manager: $(($(awk '/VmRSS/ {print $2}' /proc/$PID/status) / 1024)) MB, of it anonymous (not mapped body log pages) $(($(awk '/RssAnon/ {print $2}' /proc/$PID/status) / 1024)) MB"
