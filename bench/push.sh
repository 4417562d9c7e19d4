#!/usr/bin/env bash
# Push, measured in one run on this machine with release binaries and real processes:
#  1. Lag: an upstream (a standalone block-manager) takes RATE creates/s for SECS s; two
#     followers of it run at once, one subscribed to its event stream (push), one polling at
#     the default interval (it follows through a relay that answers 404 to the event route, as
#     an upstream without the route would). The lag of a block is the time from the upstream's
#     201 reaching the client to the block's event on the follower's own event stream. That
#     event is sent after the follower's durable commit (its ledger wakes streams only once the
#     store's append returned), so it measures the commit, plus one loopback SSE write; polling
#     the follower's /chain/height instead would add the poll period to every figure.
#  2. Fan-out: one server with `ulimit -n` raised, api.max_connections and
#     api.max_event_streams raised, STREAMS open event streams (?thin=1; two Python asyncio
#     processes share them), FAN_RATE creates/s for FAN_SECS s from a third process over four
#     connections (its achieved rate is printed); the server's VmHWM from
#     /proc and how many streams received every block exactly once, in order.
# Usage: bench/push.sh   (env: RATE=20 SECS=60 STREAMS=1000 FAN_RATE=100 FAN_SECS=30, BIN=path
# to use a binary already built)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
RATE=${RATE:-20}
SECS=${SECS:-60}
STREAMS=${STREAMS:-1000}
FAN_RATE=${FAN_RATE:-100}
FAN_SECS=${FAN_SECS:-30}
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet --bin block-manager
    BIN=$PWD/target/release/block-manager
fi
CLIENT=$PWD/bench/push_client.py
# BENCH_TMPDIR picks where the servers keep their data (default $TMPDIR or /tmp): every 201 is
# fsync'd there, so on a shared, saturated disk the figures are the disk's, not push's.
WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/bm-push.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# start NAME PORT [VAR=value...]: a block-manager in $WORK/NAME; its PID is the last of PIDS
# (exec: the subshell becomes the server, so /proc/PID is the server's).
start() {
    local name=$1 port=$2
    shift 2
    mkdir -p "$WORK/$name"
    (cd "$WORK/$name" && ulimit -n "${NOFILE:-1024}" && exec env BLOCK_MANAGER_HOST=127.0.0.1 \
        BLOCK_MANAGER_PORT="$port" BLOCK_MANAGER_API_KEY=k BLOCK_MANAGER__RATE_LIMITS__ENABLED=false \
        "$@" "$BIN" >log 2>&1) &
    PIDS+=($!)
    wait_200 "127.0.0.1:$port/health/ready" 180 || { echo "$name did not become ready" >&2; tail "$WORK/$name/log" >&2; exit 1; }
}

echo "# block-manager push benchmark, $(date -u +%FT%TZ), $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- 1. lag, push and poll at once
UP=$(free_port); PUSH=$(free_port); RELAY=$(free_port); POLL=$(free_port)
start upstream "$UP"
python3 "$CLIENT" nopush "$RELAY" "http://127.0.0.1:$UP" &
PIDS+=($!)
start push "$PUSH" BLOCKCHAIN_ENGINE_URL="http://127.0.0.1:$UP"
start poll "$POLL" BLOCKCHAIN_ENGINE_URL="http://127.0.0.1:$RELAY"
# Both level with the upstream's genesis, and the push follower subscribed, before the clock starts.
for port in "$PUSH" "$POLL"; do
    deadline=$((SECONDS + 120))
    until curl -s "127.0.0.1:$port/api/v1/sync/status" | grep -q '"state":"synced"'; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "follower on $port never synced" >&2; curl -s "127.0.0.1:$port/api/v1/sync/status" >&2; exit 1; }
        sleep 0.2
    done
done
curl -s "127.0.0.1:$PUSH/api/v1/sync/status" | grep -q '"transport":"push"' || { echo "the push follower is not subscribed" >&2; exit 1; }
curl -s "127.0.0.1:$POLL/api/v1/sync/status" | grep -q '"transport":"poll"' || { echo "the poll follower is subscribed" >&2; exit 1; }
echo "## lag: $RATE creates/s for $SECS s on the upstream; followers: push, poll (default 5 s)"
python3 "$CLIENT" lag "http://127.0.0.1:$UP" "$RATE" "$SECS" "http://127.0.0.1:$PUSH" "http://127.0.0.1:$POLL"
echo "load average after the lag run: $(cut -d' ' -f1-3 /proc/loadavg)"
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()

# ------------------------------------------------------------------------------- 2. fan-out
FAN=$(free_port)
NOFILE=$((STREAMS * 2 + 1024)) start fan "$FAN" \
    BLOCK_MANAGER__API__MAX_CONNECTIONS=$((STREAMS * 2 + 256)) \
    BLOCK_MANAGER__API__MAX_EVENT_STREAMS=$((STREAMS * 2))
SERVER=${PIDS[-1]}
ulimit -n $((STREAMS * 2 + 1024))
HALF=$((STREAMS / 2))
LAST=$(python3 -c "print(int($FAN_RATE * $FAN_SECS))")
echo "## fan-out: $STREAMS streams (?thin=1), $FAN_RATE creates/s for $FAN_SECS s (blocks 1..$LAST)"
echo "VmRSS before the streams: $(grep VmRSS /proc/$SERVER/status | tr -s ' ')"
# Two processes hold the streams; a third, alone, writes (so reading never delays a create).
python3 "$CLIENT" fanstreams "http://127.0.0.1:$FAN" "$HALF" 1 "$LAST" > "$WORK/a.json" 2>"$WORK/a.err" &
A=$!
python3 "$CLIENT" fanstreams "http://127.0.0.1:$FAN" $((STREAMS - HALF)) 1 "$LAST" > "$WORK/b.json" 2>"$WORK/b.err" &
B=$!
deadline=$((SECONDS + 120))
until [ "$(curl -s "127.0.0.1:$FAN/metrics" | awk '/^block_manager_event_streams_open /{print int($2)}')" -ge "$STREAMS" ] 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "the $STREAMS streams did not open" >&2; exit 1; }
    sleep 0.2
done
echo "VmRSS with the streams open: $(grep VmRSS /proc/$SERVER/status | tr -s ' ')"
python3 "$CLIENT" create "http://127.0.0.1:$FAN" "$FAN_RATE" "$FAN_SECS" 4
wait "$A" || { echo "a stream process failed:" >&2; cat "$WORK/a.err" >&2; }
wait "$B" || { echo "a stream process failed:" >&2; cat "$WORK/b.err" >&2; }
cat "$WORK/a.json" "$WORK/b.json"
echo "server: $(grep -E 'VmHWM|VmRSS' /proc/$SERVER/status | tr -s ' ' | tr '\n' ' ')"
curl -s "127.0.0.1:$FAN/metrics" | grep -E '^block_manager_(event_streams_open|events_sent_total|event_subscribers_lagged_total)' || true
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
