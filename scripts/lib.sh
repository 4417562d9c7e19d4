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
