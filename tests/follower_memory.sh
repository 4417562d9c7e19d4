#!/usr/bin/env bash
# A follower's memory stays bounded against an upstream whose range replies are 40 MiB of
# block documents (one reply once took a follower from 37 MB to 3 GB): the release binary
# follows a small python3 stand-in that answers /api/v1/chain/height and, on
# /api/v1/blocks/range, 40 MiB alternately with a Content-Length and without one (the reply
# ends when the connection closes, so only reading it tells its size). Both must be refused
# (SYNC_003, counted in block_manager_sync_replies_refused_total) and the follower's peak
# resident memory (VmHWM) must stay under LIMIT_MB. Prints the figure. Starts only its own
# processes on free loopback ports and stops them by PID on exit. Prints "N passed, M failed";
# exits non-zero on any failure.
#
# Env: BLOCK_MANAGER_BIN (default target/release/block-manager), LIMIT_MB (default 150),
#      DEADLINE_SECONDS (default 60) for the refusals to show.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
BIN=${BLOCK_MANAGER_BIN:-$ROOT/target/release/block-manager}
LIMIT_MB=${LIMIT_MB:-150}
DEADLINE_SECONDS=${DEADLINE_SECONDS:-60}
drill_start

if [ ! -x "$BIN" ]; then
    fail "release binary $BIN exists (cargo build --release)"
    finish
fi

cat >"$WORK/upstream.py" <<'EOF'
import http.server, json, sys

SIZE = 40 * 1024 * 1024
HASH = "ab" * 32

def block(h):
    tx = {"tx_id": "tx-%d" % h, "type": "data_storage", "from_address": "0xaaaa",
          "to_address": "0xbbbb", "value": 1, "fee": 0.01, "data": "x" * 200,
          "timestamp": "2024-01-01T00:00:00+00:00", "signature": "sig"}
    return {"height": h, "hash": HASH, "previous_hash": HASH, "merkle_root": HASH,
            "timestamp": "2024-01-01T00:00:00+00:00", "producer": "node",
            "signature": "sig", "transactions": [tx, tx]}

# 40 MiB of block documents, built once: decoded into a generic JSON tree, this is gigabytes.
parts, size, h = [], 0, 0
while size < SIZE:
    doc = json.dumps(block(h))
    parts.append(doc)
    size += len(doc) + 1
    h += 1
BODY = ('{"blocks":[' + ",".join(parts) + "]}").encode()
served = {"n": 0}

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/api/v1/chain/height"):
            body = json.dumps({"height": 100000, "block_hash": HASH}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        served["n"] += 1
        self.send_response(200)
        self.send_header("content-type", "application/json")
        if served["n"] % 2:
            self.send_header("content-length", str(len(BODY)))
        else:
            # No length: the reply ends when the connection closes.
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        try:
            self.wfile.write(BODY)
        except (BrokenPipeError, ConnectionResetError):
            pass

http.server.ThreadingHTTPServer.daemon_threads = True
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
EOF

UP_PORT=$(free_port)
python3 "$WORK/upstream.py" "$UP_PORT" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
up_ready() { curl -fsS -o /dev/null "http://127.0.0.1:$UP_PORT/api/v1/chain/height" 2>/dev/null; }
deadline=$((SECONDS + 30))
until up_ready; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        fail "stand-in upstream starts"
        cat "$WORK/upstream.log"
        finish
    fi
    sleep 0.25
done

PORT=$(free_port)
mkdir -p "$WORK/node"
(
    cd "$WORK/node" &&
        exec env -i PATH="$PATH" \
            BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT="$PORT" \
            BLOCK_STORAGE_PATH="$WORK/node/data" \
            BLOCKCHAIN_ENGINE_URL="http://127.0.0.1:$UP_PORT" \
            BLOCK_MANAGER__SYNCHRONIZATION__POLL_INTERVAL_SECONDS=0.1 \
            BLOCK_MANAGER__SYNCHRONIZATION__SYNC_TIMEOUT_SECONDS=20 \
            "$BIN" serve
) >"$WORK/node.log" 2>&1 &
NODE=$!
PIDS+=("$NODE")
if ! wait_200 "http://127.0.0.1:$PORT/health/live" 30; then
    fail "follower starts"
    tail -n 20 "$WORK/node.log"
    finish
fi

refused() {
    curl -fsS "http://127.0.0.1:$PORT/metrics" |
        sed -n 's/^block_manager_sync_replies_refused_total \([0-9]*\).*/\1/p'
}
deadline=$((SECONDS + DEADLINE_SECONDS))
while [ "$(refused || echo 0)" -lt 4 ] 2>/dev/null; do
    [ "$SECONDS" -ge "$deadline" ] && break
    sleep 0.25
done
COUNT=$(refused || echo 0)
if [ "${COUNT:-0}" -ge 4 ]; then
    pass "40 MiB replies with and without a length refused ($COUNT refused)"
else
    fail "40 MiB replies refused (block_manager_sync_replies_refused_total=${COUNT:-none})"
    tail -n 20 "$WORK/node.log"
fi

STATUS=$(curl -fsS "http://127.0.0.1:$PORT/api/v1/sync/status")
if grep -q '"code":"SYNC_003"' <<<"$STATUS" && grep -q 'max_inflight_bytes' <<<"$STATUS"; then
    pass "sync status names SYNC_003 and synchronization.max_inflight_bytes"
else
    fail "sync status names SYNC_003: $STATUS"
fi

if kill -0 "$NODE" 2>/dev/null; then
    HWM_KB=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$NODE/status")
    HWM_MB=$((HWM_KB / 1024))
    echo "peak resident memory (VmHWM) of the follower: ${HWM_MB} MB (${HWM_KB} kB), limit ${LIMIT_MB} MB"
    if [ "$HWM_MB" -lt "$LIMIT_MB" ]; then
        pass "peak resident memory ${HWM_MB} MB < ${LIMIT_MB} MB"
    else
        fail "peak resident memory ${HWM_MB} MB >= ${LIMIT_MB} MB"
    fi
else
    fail "follower still running"
    tail -n 20 "$WORK/node.log"
fi

finish
