#!/usr/bin/env bash
# The yardstick the block reads are compared with: FastAPI on uvicorn (one worker, as the
# service we replace ran) serving the same block JSON from memory, 64 connections, same
# machine, same wrk settings as bench/reads.sh.
# Usage: bench/fastapi_baseline.sh [seconds=10]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
SECS=${1:-10}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
VENV=$(mktemp -d)
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$VENV"; }
trap cleanup EXIT
python3 -m venv "$VENV" && "$VENV/bin/pip" install -q fastapi uvicorn >/dev/null
# The vector block from the specification, padded with transactions to about 2.9 KB like the
# documents bench/reads.sh serves.
cat > "$VENV/app.py" <<'PY'
import json
from fastapi import FastAPI, Response
tx = {"tx_id": "t-0", "type": "data_storage", "from_address": "0x" + "1" * 40, "to_address": "0x" + "2" * 40,
      "value": 1, "fee": 0.01, "data": "d" * 120, "timestamp": "2024-01-01T00:00:10.500000+00:00",
      "signature": "sig-1", "size_bytes": 300}
block = {"block_id": "a" * 64, "height": 1, "hash": "a" * 64, "previous_hash": "b" * 64, "merkle_root": "c" * 64,
         "timestamp": "2024-01-01T00:00:10.500000+00:00", "producer": "bench", "validator": "bench",
         "signature": "s", "nonce": 0, "difficulty": 0.0, "transaction_count": 6, "block_size_bytes": 2800,
         "transactions": [dict(tx, tx_id=f"t-{i}") for i in range(6)]}
BODY = json.dumps(block).encode()
app = FastAPI()
@app.get("/api/v1/blocks/height/{height}")
async def by_height(height: int):
    return Response(content=BODY, media_type="application/json")
PY
PORT=$(free_port)
(cd "$VENV" && exec "$VENV/bin/uvicorn" app:app --host 127.0.0.1 --port "$PORT" --log-level warning) &
PID=$!
wait_200 "127.0.0.1:$PORT/api/v1/blocks/height/1" 10 || { echo "uvicorn did not answer" >&2; exit 1; }
echo "document: $(curl -s "127.0.0.1:$PORT/api/v1/blocks/height/1" | wc -c) bytes"
wrk -t"${WRK_THREADS:-1}" -c64 -d"${SECS}s" --latency "http://127.0.0.1:$PORT/api/v1/blocks/height/1" | grep -E "Requests/sec| 99%|Non-2xx|Socket"
