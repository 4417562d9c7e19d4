#!/usr/bin/env bash
# Slowloris drill: the release binary runs with `ulimit -n 256`; one client opens 400 requests
# that never finish their head, while /health/live is probed every 100 ms for 15 s. Every probe
# must answer 200 in under a second, and every half-sent request must be closed within the
# header timeout (3 s here, plus slack). Prints the slowest probe and how long the half-sent
# sockets lived. Starts only its own process (free loopback port, temp dir) and stops it by
# PID on exit. Prints "N passed, M failed"; exits non-zero on any failure.
#
# Env: BLOCK_MANAGER_BIN (default target/release/block-manager, built when missing),
#      HALF_SENT (400), HEADER_TIMEOUT (3), PROBE_SECONDS (15), FD_LIMIT (256).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
BIN=${BLOCK_MANAGER_BIN:-$ROOT/target/release/block-manager}
HALF_SENT=${HALF_SENT:-400}
HEADER_TIMEOUT=${HEADER_TIMEOUT:-3}
PROBE_SECONDS=${PROBE_SECONDS:-15}
FD_LIMIT=${FD_LIMIT:-256}
drill_start

command -v python3 >/dev/null || { fail "python3 is required"; finish; }
command -v curl >/dev/null || { fail "curl is required"; finish; }
if [ ! -x "$BIN" ]; then
    echo "building $BIN"
    (cd "$ROOT" && cargo build --release --bin block-manager) || { fail "release build"; finish; }
fi

PORT=$(free_port) || { fail "free port"; finish; }
mkdir -p "$WORK/bm"
(
    cd "$WORK/bm" &&
        ulimit -n "$FD_LIMIT" &&
        exec env BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT="$PORT" \
            BLOCK_STORAGE_PATH="$WORK/bm/data" \
            BLOCK_MANAGER__RATE_LIMITS__ENABLED=false \
            BLOCK_MANAGER__API__HEADER_TIMEOUT_SECONDS="$HEADER_TIMEOUT" \
            "$BIN"
) >"$WORK/bm.log" 2>&1 &
PIDS+=($!)
if ! wait_200 "http://127.0.0.1:$PORT/health/ready" 20; then
    cat "$WORK/bm.log"
    fail "block-manager ready with ulimit -n $FD_LIMIT"
    finish
fi
pass "block-manager ready with ulimit -n $FD_LIMIT"

# One client: HALF_SENT half-sent heads, watched until the server closes each, and a probe
# every 100 ms on a fresh connection. Prints key=value lines.
python3 - "$PORT" "$HALF_SENT" "$PROBE_SECONDS" >"$WORK/drill.txt" 2>"$WORK/drill.err" <<'EOF'
import selectors, socket, sys, threading, time

port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
sel = selectors.DefaultSelector()
opened, lived = {}, []
open_failures = 0
for _ in range(count):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        s.setblocking(False)
        opened[s] = time.monotonic()
        sel.register(s, selectors.EVENT_READ)
    except OSError:
        open_failures += 1

probes, slow, failed, worst = 0, 0, 0, 0.0
def probe_loop():
    global probes, slow, failed, worst
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        ok = False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as p:
                p.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                ok = p.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            pass
        took = time.monotonic() - started
        probes += 1
        worst = max(worst, took)
        if not ok:
            failed += 1
        elif took >= 1.0:
            slow += 1
        time.sleep(max(0.0, 0.1 - took))

prober = threading.Thread(target=probe_loop)
prober.start()
deadline = time.monotonic() + seconds
while opened and time.monotonic() < deadline:
    for key, _ in sel.select(timeout=0.1):
        s = key.fileobj
        try:
            data = s.recv(4096)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            lived.append(time.monotonic() - opened.pop(s))
            sel.unregister(s)
            s.close()
prober.join()
print(f"half_sent={count}")
print(f"open_failures={open_failures}")
print(f"closed={len(lived)}")
print(f"still_open={len(opened)}")
print(f"max_life_ms={max(lived, default=0) * 1000:.0f}")
print(f"probes={probes}")
print(f"probe_failures={failed}")
print(f"slow_probes={slow}")
print(f"max_probe_ms={worst * 1000:.0f}")
EOF
cat "$WORK/drill.err"
value() { sed -n "s/^$1=//p" "$WORK/drill.txt"; }
echo "measured: $(tr '\n' ' ' <"$WORK/drill.txt")"
[ -s "$WORK/drill.txt" ] || { fail "drill client ran"; finish; }

limit_ms=$(( (HEADER_TIMEOUT * 1000) + 1500 ))
if [ "$(value open_failures)" = 0 ]; then
    pass "$HALF_SENT half-sent requests opened"
else
    fail "$(value open_failures) of $HALF_SENT half-sent requests could not connect"
fi
if [ "$(value probe_failures)" = 0 ] && [ "$(value slow_probes)" = 0 ] && [ "$(value probes)" -ge 50 ]; then
    pass "$(value probes) probes of /health/live all 200 in under 1 s (slowest $(value max_probe_ms) ms)"
else
    fail "probes: $(value probe_failures) failed, $(value slow_probes) slower than 1 s of $(value probes) (slowest $(value max_probe_ms) ms)"
fi
if [ "$(value still_open)" = 0 ] && [ "$(value max_life_ms)" -le "$limit_ms" ]; then
    pass "every half-sent request closed, the longest after $(value max_life_ms) ms (header timeout ${HEADER_TIMEOUT} s)"
else
    fail "half-sent requests: $(value still_open) still open, the longest lived $(value max_life_ms) ms (limit $limit_ms)"
fi
if grep -qi "too many open files" "$WORK/bm.log"; then
    grep -i "too many open files" "$WORK/bm.log" | head -3
    fail "the server ran out of file descriptors"
else
    pass "the server never ran out of file descriptors"
fi
metrics=$(curl -fsS "http://127.0.0.1:$PORT/metrics")
shed=$(sed -n 's/^block_manager_http_connections_shed_total //p' <<<"$metrics")
timeouts=$(sed -n 's/^block_manager_http_header_timeouts_total //p' <<<"$metrics")
cap=$(sed -n 's/^block_manager_http_connections_max //p' <<<"$metrics")
echo "metrics: connections_max=$cap shed_total=$shed header_timeouts_total=$timeouts"
if [ -n "$cap" ] && [ "$cap" -le $((FD_LIMIT - 64)) ] && [ "${shed:-0}" -gt 0 ] && [ "${timeouts:-0}" -gt 0 ]; then
    pass "cap $cap within the fd limit; $shed shed, $timeouts header timeouts counted"
else
    fail "metrics: cap '$cap', shed '$shed', header timeouts '$timeouts'"
fi
finish
