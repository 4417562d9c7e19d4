# shellcheck shell=bash
# Helpers the test and bench scripts share. Source it; it does nothing on its own.

# A free loopback port: the kernel picks it, and the probe socket is closed before the caller
# binds it.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls URL until it answers 200, for at most SECONDS (default 10); fails when time runs out.
wait_200() {
    local url=$1 deadline=$((SECONDS + ${2:-10}))
    until [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = 200 ]; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

# The skeleton every drill script shares: pass/fail counters, background processes (PIDS) that
# are ended at exit, a work folder (WORK) removed at exit, and the closing `N passed, M failed`
# line. Call drill_start once, after sourcing this file.
drill_start() {
    PASSED=0
    FAILED=0
    PIDS=()
    WORK=$(mktemp -d)
    trap drill_cleanup EXIT
    trap 'exit 130' INT TERM
}

pass() { PASSED=$((PASSED + 1)); echo "ok   - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

drill_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    rm -rf "$WORK"
}

# Prints the closing line and exits 0 only when nothing failed.
finish() {
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
    exit $?
}
