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

# Background processes (PIDS) ended at exit and a work folder (WORK) removed at exit (kept
# with KEEP=1, which says where), with the PostgreSQL of pg_start stopped: what every drill and
# benchmark script that starts servers needs. Call work_start once, after sourcing this file.
work_start() {
    PIDS=()
    WORK=$(mktemp -d)
    trap work_cleanup EXIT
    trap 'exit 130' INT TERM
}

work_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    pg_stop
    if [ "${KEEP:-0}" = 1 ]; then echo "work folder kept: $WORK"; else rm -rf "$WORK"; fi
}

# The skeleton every drill script shares: work_start's processes and folder, pass/fail
# counters and the closing `N passed, M failed` line. Call drill_start once, after sourcing
# this file.
drill_start() {
    PASSED=0
    FAILED=0
    work_start
}

pass() { PASSED=$((PASSED + 1)); echo "ok   - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

# Prints the closing line and exits 0 only when nothing failed.
finish() {
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
    exit $?
}

# ---------------------------------------------------------------------------------- PostgreSQL
# A throwaway PostgreSQL for tests, drills and benchmarks: `pg_start [--standby]` starts a
# primary (and with --standby a streaming hot standby) on free loopback ports in a temp folder,
# and exports
#   BLOCK_MANAGER_TEST_DATABASE_URL  postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
#   BLOCK_MANAGER_TEST_STANDBY_URL   the same on the standby (with --standby only)
#   PG_BIN, PG_PORT, PG_STANDBY_PORT
# and sets PG_DIR, its folder, in this shell only: child scripts see the URLs but not the folder,
# so a drill run from a script that has a server starts its own, and its exit trap cannot stop
# its parent's. `pg_stop` stops and removes the server this shell started; it is safe to call
# twice and when nothing was started, so call it from the EXIT trap (drill_cleanup already does). PG_TMPDIR picks the folder the temp folder is
# made in (default $TMPDIR or /tmp): fsync stays on, so put it on the disk you mean to measure.
# As root the server runs as the `postgres` user (PostgreSQL refuses root); as anyone else, as
# that user.

# The folder holding the server's binaries (initdb, pg_ctl, pg_basebackup, psql, pgbench): PG_BIN
# if set, else where initdb on PATH really lives (links followed), else the newest Debian install
# under /usr/lib/postgresql. Installs Debian's postgresql when none is found and we are root with
# apt-get (CI starts from a machine without it).
pg_find_bin() {
    if [ -n "${PG_BIN:-}" ]; then
        pg_complete_bin "$PG_BIN" && return 0
        echo "pg_find_bin: PG_BIN=$PG_BIN lacks initdb, pg_ctl, pg_basebackup or psql" >&2
        return 1
    fi
    pg_pick_bin && return 0
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
    pg_install && pg_pick_bin
}

pg_complete_bin() {
    local tool
    for tool in initdb pg_ctl pg_basebackup psql postgres; do
        [ -x "$1/$tool" ] || return 1
    done
}

pg_pick_bin() {
    local initdb dir
    initdb=$(command -v initdb 2>/dev/null)
    for dir in ${initdb:+"$(dirname "$(readlink -f "$initdb")")"} \
        $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
        if pg_complete_bin "$dir"; then
            PG_BIN=$dir
            return 0
        fi
    done
    return 1
}

# Installs Debian's postgresql (pgbench comes with it). The package would start its default
# cluster on port 5432; policy-rc.d keeps it from starting anything while it installs.
pg_install() {
    echo "installing postgresql" >&2
    local policy_created=0 rc=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy_created=1
    fi
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null && export APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends postgresql >/dev/null || rc=1
    [ "$policy_created" = 1 ] && rm -f /usr/sbin/policy-rc.d
    return "$rc"
}

# Runs a PostgreSQL binary as the server's owner.
pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# One value from the primary (psql over TCP as the superuser); empty on any error.
pg_query() {
    local port=$1 sql=$2
    "$PG_BIN/psql" -X -A -t -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "$sql" 2>/dev/null
}

pg_start() {
    local standby=0
    case "${1:-}" in
        --standby) standby=1 ;;
        "") ;;
        *) echo "pg_start: unknown argument $1 (want --standby or nothing)" >&2; return 2 ;;
    esac
    if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR" ]; then
        echo "pg_start: a server from this shell is already running in $PG_DIR (pg_stop first)" >&2
        return 1
    fi
    pg_find_bin || { echo "pg_start: no PostgreSQL found (initdb) and could not install it" >&2; return 1; }
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        echo "pg_start: running as root but there is no postgres user to run the server as" >&2
        return 1
    fi
    PG_DIR=$(mktemp -d "${PG_TMPDIR:-${TMPDIR:-/tmp}}/bm-pg.XXXXXX") || return 1
    export PG_BIN
    # The postgres user must reach the folder: mktemp makes it 0700 for us.
    [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR"
    PG_PORT=$(free_port)
    export PG_PORT
    if ! pg_start_primary; then
        pg_start_failed primary
        return 1
    fi
    export BLOCK_MANAGER_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
    if [ "$standby" = 1 ]; then
        PG_STANDBY_PORT=$(free_port)
        export PG_STANDBY_PORT
        if ! pg_start_standby; then
            pg_start_failed standby
            return 1
        fi
        export BLOCK_MANAGER_TEST_STANDBY_URL="postgres://postgres@127.0.0.1:$PG_STANDBY_PORT/postgres?sslmode=disable"
    fi
    echo "postgres: primary on 127.0.0.1:$PG_PORT${PG_STANDBY_PORT:+, standby on 127.0.0.1:$PG_STANDBY_PORT} ($("$PG_BIN/postgres" --version)), in $PG_DIR"
}

pg_start_primary() {
    # --no-sync only skips flushing initdb's own files; the server itself runs with fsync on
    # (durability tests kill our processes, not the server, and benchmarks need real fsync).
    pg_as_owner "$PG_BIN/initdb" -D "$PG_DIR/primary" -U postgres -A trust -E UTF8 --no-locale --no-sync \
        >"$PG_DIR/initdb.log" 2>&1 || return 1
    cat >>"$PG_DIR/primary/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR'
fsync = on
synchronous_commit = on
wal_level = replica
max_wal_senders = 4
max_replication_slots = 4
hot_standby = on
# Test binaries run in parallel, each test with its own pool of up to 8 connections per replica.
max_connections = 300
CONF
    pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/primary" -l "$PG_DIR/primary.log" -w -t 60 start >/dev/null
}

pg_start_standby() {
    pg_as_owner "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$PG_DIR/standby" \
        -X stream -R -C -S standby1 -c fast --no-sync >"$PG_DIR/basebackup.log" 2>&1 || return 1
    cat >>"$PG_DIR/standby/postgresql.conf" <<CONF
port = $PG_STANDBY_PORT
hot_standby_feedback = on
CONF
    pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/standby" -l "$PG_DIR/standby.log" -w -t 60 start >/dev/null || return 1
    # Started is not streaming yet: tests that read from the standby need the WAL sender running.
    local deadline=$((SECONDS + 30))
    until [ "$(pg_query "$PG_PORT" "select count(*) from pg_stat_replication where state = 'streaming'")" = 1 ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "pg_start: the standby did not reach 'streaming' within 30 s" >&2
            return 1
        fi
        sleep 0.1
    done
}

# Shows why a start failed (the tail of each log), then removes what was started.
pg_start_failed() {
    local f
    echo "pg_start: the $1 did not start" >&2
    for f in "$PG_DIR"/*.log; do
        [ -f "$f" ] || continue
        echo "--- $f" >&2
        tail -n 20 "$f" >&2
    done
    pg_stop
}

# CPU seconds (user + system) of a process and of the children it has reaped.
cpu_of() { awk '{ sub(/.*\) /, ""); print ($12 + $13 + $14 + $15) / 100 }' "/proc/$1/stat"; }
# CPU seconds of the PostgreSQL server whose postmaster is $PG_PID: the postmaster, its reaped
# backends and the live ones (for benchmarks).
pg_cpu() {
    local total child
    total=$(cpu_of "$PG_PID")
    # shellcheck disable=SC2013 # the file is a list of PIDs separated by spaces
    for child in $(cat "/proc/$PG_PID/task/"*/children 2>/dev/null); do
        total=$(awk -v a="$total" -v b="$(cpu_of "$child" 2>/dev/null || echo 0)" 'BEGIN {print a + b}')
    done
    echo "$total"
}

pg_stop() {
    [ -n "${PG_DIR:-}" ] || return 0
    local node
    for node in standby primary; do
        if [ -f "$PG_DIR/$node/postmaster.pid" ]; then
            pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/$node" -m fast -w -t 30 stop >/dev/null 2>&1 ||
                pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/$node" -m immediate -w stop >/dev/null 2>&1
        fi
    done
    rm -rf "$PG_DIR"
    unset PG_DIR PG_PORT PG_STANDBY_PORT BLOCK_MANAGER_TEST_DATABASE_URL BLOCK_MANAGER_TEST_STANDBY_URL
    return 0
}
