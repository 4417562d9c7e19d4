#!/usr/bin/env bash
# Drill for the throwaway PostgreSQL of scripts/lib.sh that the tests and benchmarks run on:
# `pg_start --standby` gives a durable primary and a streaming hot standby on loopback, with the
# URLs exported, and `pg_stop` leaves no process and no folder behind, also when called twice;
# a script that exits (here: one killed by SIGTERM) stops its server through the drill's trap,
# and a drill started from a script with a server of its own leaves the parent's running.
# Ends with `N passed, M failed`.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
drill_start

q() { "$PG_BIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 "$1" -c "$2" 2>&1; }

# The postmaster's pid, from its data folder.
postmaster_pid() { head -n 1 "$1/postmaster.pid" 2>/dev/null; }

# Whether process PID is gone within 5 s (a postmaster removes its pid file, which is what
# pg_ctl waits for, a moment before it exits). Called through `check` (SC2329).
# shellcheck disable=SC2329
gone() {
    local deadline=$((SECONDS + 5))
    [ -n "$1" ] || return 1
    while kill -0 "$1" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

# Whether folder DIR (named, not empty) no longer exists. Called through `check` (SC2329).
# shellcheck disable=SC2329
removed() { [ -n "$1" ] && [ ! -e "$1" ]; }

started=$SECONDS
pg_start --standby >/dev/null || { fail "pg_start --standby"; finish; }
pass "pg_start --standby in $((SECONDS - started)) s"
dir=$PG_DIR
primary_pid=$(postmaster_pid "$dir/primary")
standby_pid=$(postmaster_pid "$dir/standby")

check "the primary URL is the agreed one" \
    [ "$BLOCK_MANAGER_TEST_DATABASE_URL" = "postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable" ]
check "the standby URL names its own port" \
    [ "$BLOCK_MANAGER_TEST_STANDBY_URL" = "postgres://postgres@127.0.0.1:$PG_STANDBY_PORT/postgres?sslmode=disable" ]
check "PG_BIN holds pgbench" [ -x "$PG_BIN/pgbench" ]
check "the primary flushes its commits (fsync and synchronous_commit on)" \
    [ "$(q "$BLOCK_MANAGER_TEST_DATABASE_URL" "select current_setting('fsync') || ',' || current_setting('synchronous_commit')")" = "on,on" ]
check "the primary listens on loopback only" \
    [ "$(q "$BLOCK_MANAGER_TEST_DATABASE_URL" "show listen_addresses")" = 127.0.0.1 ]
check "the standby streams from the primary" \
    [ "$(q "$BLOCK_MANAGER_TEST_DATABASE_URL" "select state from pg_stat_replication")" = streaming ]
check "the standby is in recovery" [ "$(q "$BLOCK_MANAGER_TEST_STANDBY_URL" "select pg_is_in_recovery()")" = t ]
if [ "$(id -u)" = 0 ]; then
    check "as root, the server runs as postgres" [ "$(ps -o user= -p "$primary_pid")" = postgres ]
fi

q "$BLOCK_MANAGER_TEST_DATABASE_URL" "create table drill (x int); insert into drill values (7)" >/dev/null
seen=""
deadline=$((SECONDS + 10))
until [ "$seen" = 7 ] || [ "$SECONDS" -ge "$deadline" ]; do
    seen=$(q "$BLOCK_MANAGER_TEST_STANDBY_URL" "select x from drill")
    [ "$seen" = 7 ] || sleep 0.01
done
check "a commit on the primary shows on the standby" [ "$seen" = 7 ]
# The inner script expands its own arguments (SC2016).
# shellcheck disable=SC2016
check "the standby refuses writes" \
    bash -c '! "$1/psql" -X -q "$2" -c "insert into drill values (1)" >/dev/null 2>&1' _ "$PG_BIN" "$BLOCK_MANAGER_TEST_STANDBY_URL"

pg_stop
check "pg_stop stops the primary" gone "$primary_pid"
check "pg_stop stops the standby" gone "$standby_pid"
check "pg_stop removes the folder" removed "$dir"
check "pg_stop unsets the URLs" [ -z "${BLOCK_MANAGER_TEST_DATABASE_URL:-}${BLOCK_MANAGER_TEST_STANDBY_URL:-}" ]
check "pg_stop a second time is harmless" pg_stop

# A drill killed while its server runs: work_cleanup (the EXIT trap) must stop the server.
child_out="$WORK/child"
bash -c 'source "$1/scripts/lib.sh"; drill_start; pg_start >/dev/null || exit 1
         echo "$PG_DIR $(head -n 1 "$PG_DIR/primary/postmaster.pid")" >"$2"
         sleep 60 & PIDS+=($!); wait $!' \
    _ "$ROOT" "$child_out" &
child=$!
deadline=$((SECONDS + 30))
until [ -s "$child_out" ] || [ "$SECONDS" -ge "$deadline" ] || ! kill -0 "$child" 2>/dev/null; do sleep 0.05; done
read -r child_dir child_pid <"$child_out" 2>/dev/null || true
kill -TERM "$child" 2>/dev/null
wait "$child" 2>/dev/null
check "a drill stopped by SIGTERM had its server up" [ -n "${child_pid:-}" ]
check "a drill stopped by SIGTERM stops its server" gone "${child_pid:-}"
check "a drill stopped by SIGTERM removes its folder" removed "${child_dir:-}"

# A drill run by a script that has a server (scripts/test.sh): its own pg_start works, and its
# exit leaves the parent's server up.
pg_start >/dev/null || fail "pg_start again"
parent_pid=$(postmaster_pid "$PG_DIR/primary")
# shellcheck disable=SC2016
check "a child drill starts a server of its own and stops it" \
    bash -c 'source "$1/scripts/lib.sh"; drill_start; pg_start >/dev/null' _ "$ROOT"
check "the parent's server is still up after the child's exit" \
    [ "$(q "$BLOCK_MANAGER_TEST_DATABASE_URL" "select 1")" = 1 ]
check "the parent's postmaster is the one it started" [ "$(postmaster_pid "$PG_DIR/primary")" = "$parent_pid" ]
finish
