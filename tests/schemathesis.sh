#!/usr/bin/env bash
# Fuzzes the HTTP API against its own OpenAPI document with schemathesis: one run with
# schema-conforming data (every check, writes included) and one with schema-violating data
# (which must all be refused). Starts the release binary on a free loopback port with a
# temporary store of ~20 blocks and stops it on exit.
#
# Environment: BLOCK_MANAGER_BIN (default target/release/block-manager, built when missing),
# SCHEMATHESIS_MAX_EXAMPLES (default 100 per operation), SCHEMATHESIS_SEED (default fixed, so
# CI runs are reproducible; set "random" for a new seed), SCHEMATHESIS_WORKERS (default 1:
# hypothesis is not thread-safe everywhere and 2 workers gave spurious internal errors),
# SCHEMATHESIS_REPORT_DIR (keep the JUnit reports there).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
VERSION=4.32.5
BIN=${BLOCK_MANAGER_BIN:-$ROOT/target/release/block-manager}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-100}
SEED=${SCHEMATHESIS_SEED:-20240101}
WORKERS=${SCHEMATHESIS_WORKERS:-1}
KEY=k

if ! schemathesis --version 2>/dev/null | grep -q "$VERSION"; then
    python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi
if [ ! -x "$BIN" ]; then
    (cd "$ROOT" && cargo build --release --locked --bin block-manager)
fi

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"

# The working directory is the temp dir, so no config file of the checkout is read.
(
    cd "$WORK"
    exec env BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT="$PORT" \
        BLOCK_STORAGE_PATH="$WORK/blocks" BLOCK_MANAGER_API_KEY="$KEY" \
        BLOCK_MANAGER__RATE_LIMITS__ENABLED=false \
        BLOCK_MANAGER__CHAIN__GENESIS_TIMESTAMP=2024-01-01T00:00:00+00:00 \
        "$BIN" serve
) >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "$BASE/health/ready" 2>/dev/null; then break; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "block-manager exited early:" >&2
        cat "$WORK/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
curl -fsS -o /dev/null "$BASE/health/ready"

for n in $(seq 1 20); do
    curl -fsS -o /dev/null -X POST "$BASE/api/v1/blocks" \
        -H "X-API-Key: $KEY" -H 'Content-Type: application/json' \
        -d "{\"transactions\":[{\"tx_id\":\"t-$n\",\"from_address\":\"a\",\"to_address\":\"b\",\"value\":1,\"signature\":\"s\"}],\"producer\":\"p\",\"signature\":\"s\"}"
done

SEED_ARGS=()
if [ "$SEED" != random ]; then SEED_ARGS=(--seed "$SEED"); fi

# run MODE: one schemathesis run; its JUnit report is tallied below.
run() {
    local mode=$1
    echo "=== schemathesis --mode $mode ==="
    # From the temp dir: schemathesis keeps a cache folder in its working directory.
    (cd "$WORK" && schemathesis --config-file "$ROOT/tests/schemathesis.toml" run "$BASE/api/v1/openapi.json" \
        --checks all --mode "$mode" -H "X-API-Key: $KEY" \
        --max-examples "$MAX_EXAMPLES" --workers "$WORKERS" "${SEED_ARGS[@]}" \
        --request-timeout 10 --generation-database none --no-color \
        --report junit --report-junit-path "$WORK/junit-$mode.xml") || true
    if [ -n "${SCHEMATHESIS_REPORT_DIR:-}" ]; then
        mkdir -p "$SCHEMATHESIS_REPORT_DIR"
        cp "$WORK/junit-$mode.xml" "$SCHEMATHESIS_REPORT_DIR/" 2>/dev/null || true
    fi
}

run positive
run negative

# Operations that passed and failed, summed over both runs (from the JUnit reports).
python3 - "$WORK/junit-positive.xml" "$WORK/junit-negative.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

passed = failed = 0
for path in sys.argv[1:]:
    try:
        cases = ET.parse(path).getroot().iter("testcase")
    except (OSError, ET.ParseError) as e:
        print(f"no report from a run: {e}", file=sys.stderr)
        failed += 1
        continue
    for case in cases:
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is None:
            passed += 1
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed or not passed else 0)
EOF
