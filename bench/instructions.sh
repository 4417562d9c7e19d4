#!/usr/bin/env bash
# User-space instructions per request (valgrind's callgrind), for the bare axum server of
# bench/ceiling.sh, GET /health/live and random block reads by height, over a store of N
# blocks. Unlike req/s or CPU time, the count barely moves with the load of a shared machine,
# so two builds compare within a fraction of a percent; it leaves out the kernel, cache misses
# and lock contention, which the req/s of bench/ceiling.sh includes.
# Each target runs twice under callgrind (FEW, then MANY requests over 4 kept-alive
# connections); the difference divided by MANY - FEW takes start-up out.
# Usage: bench/instructions.sh [blocks=2000] [few=1000] [many=5000]
# BLOCK_MANAGER_BIN and BARE_BIN measure other builds instead of this tree's; CALLGRIND_KEEP=dir
# keeps the callgrind outputs there (build with symbols to read them with callgrind_annotate).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
N=${1:-2000}
FEW=${2:-1000}
MANY=${3:-5000}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
if [ -z "${BLOCK_MANAGER_BIN:-}" ] || [ -z "${BARE_BIN:-}" ]; then
  cargo build --release --quiet --bin block-manager --example bare
fi
BIN=${BLOCK_MANAGER_BIN:-$PWD/target/release/block-manager}
BARE=${BARE_BIN:-$PWD/target/release/examples/bare}
WORK=$(mktemp -d)
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
serve() { # port: the service on the work folder's store, as shipped (see bench/ceiling.sh)
  BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT=$1 BLOCK_MANAGER_API_KEY=k \
    BLOCK_MANAGER__RATE_LIMITS__REQUESTS=4000000000 "${@:2}" "$BIN" >console.log 2>&1 &
  PID=$!
}
# The store: N blocks of ~2.9 KB (6 transactions of ~300 bytes), created over HTTP.
PORT=$(free_port)
serve "$PORT"
wait_200 "127.0.0.1:$PORT/health/ready" 30 || { echo "block-manager did not become ready" >&2; exit 1; }
python3 - "$PORT" "$N" <<'PY'
import http.client, json, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
for b in range(n):
    txs = [{"tx_id": f"i-{b}-{i}", "type": "data_storage",
            "from_address": "0x" + "1" * 40, "to_address": "0x" + "2" * 40,
            "value": i + 1, "fee": 0.01, "data": "d" * 120, "signature": f"sig-{i}"} for i in range(6)]
    body = json.dumps({"producer": "bench", "signature": "bench-sig", "transactions": txs})
    c.request("POST", "/api/v1/blocks", body, {"Content-Type": "application/json", "X-API-Key": "k"})
    r = c.getresponse(); r.read()
    assert r.status == 201, r.status
PY
curl -s "127.0.0.1:$PORT/api/v1/blocks/height/$((N / 2))" -o block.json
seq 1 "$N" | sed 's|^|/api/v1/blocks/height/|' > height.paths
python3 - "$PORT" "$N" <<'PY'
import http.client, json, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
hashes, h = [], 1
while h <= n:
    c.request("GET", f"/api/v1/blocks/headers?from={h}&limit=1000")
    rows = json.loads(c.getresponse().read())["headers"]
    hashes += [f"/api/v1/blocks/{b['hash']}" for b in rows if b["height"] >= 1]
    h = rows[-1]["height"] + 1
open("hash.paths", "w").write("\n".join(hashes) + "\n")
PY
kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
echo "/health/live" > live.paths

count() { # name paths requests -> total instructions of one run
  local port; port=$(free_port)
  if [ "$1" = bare ]; then
    valgrind --tool=callgrind --callgrind-out-file="cg.$1.$3" "$BARE" "$port" block.json >/dev/null 2>&1 &
    PID=$!
  else
    serve "$port" valgrind --tool=callgrind --callgrind-out-file="cg.$1.$3"
  fi
  local deadline=$((SECONDS + 120))
  until curl -sf -o /dev/null "127.0.0.1:$port/health/live"; do
    [ $SECONDS -lt $deadline ] || { echo "$1 did not start under valgrind" >&2; exit 1; }
    sleep 0.5
  done
  python3 - "$port" "$2" "$3" <<'PY'
import http.client, random, sys
port, paths, n = int(sys.argv[1]), open(sys.argv[2]).read().split(), int(sys.argv[3])
random.seed(7)
conns = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(4)]
for i in range(n):
    c = conns[i % 4]
    # Headers as wrk sends them (bench/ceiling.sh): no Accept-Encoding.
    c.putrequest("GET", random.choice(paths), skip_accept_encoding=True)
    c.endheaders()
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
  # SIGTERM: the service shuts down gracefully, the bare server ends; callgrind writes either way.
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  [ -n "${CALLGRIND_KEEP:-}" ] && mkdir -p "$CALLGRIND_KEEP" && cp "cg.$1.$3" "$CALLGRIND_KEEP/"
  awk '/^(summary|totals):/ {print $2; exit}' "cg.$1.$3"
}
printf '%-8s %s\n' target "user instructions per request"
for t in "bare height.paths" "live live.paths" "height height.paths" "hash hash.paths"; do
  set -- $t
  few=$(count "$1" "$2" "$FEW")
  many=$(count "$1" "$2" "$MANY")
  printf '%-8s %d\n' "$1" $(((many - few) / (MANY - FEW)))
done
