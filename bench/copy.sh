#!/usr/bin/env bash
# `block-manager copy` between engines with the release binary, no HTTP in the way:
#
#   bench/copy.sh [BLOCKS]       # default 100000
#
# Builds an embedded store of genesis + BLOCKS sealed blocks of ~3 KB (bench/copy_chain.rs),
# starts a throwaway PostgreSQL (scripts/lib.sh pg_start: fsync and synchronous_commit on), and
# times, each into a new target:
#   embedded -> PostgreSQL   (binary COPY, batches of 2,000)
#   PostgreSQL -> embedded
#   embedded -> embedded
# printing copy's own last line (blocks, seconds, blocks/s, the tip on both sides) and the wall
# time. A resumed copy of an up-to-date target is timed last (the prefix check alone).
#
# Env: PG_TMPDIR — where the server's data goes (default $TMPDIR or /tmp), WORK_TMPDIR — where
# the store files go; both must be on the disk you mean to measure (a tmpfs makes fsync free).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
BLOCKS=${1:-100000}
WORK=$(mktemp -d -p "${WORK_TMPDIR:-${TMPDIR:-/tmp}}")
trap 'pg_stop; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

cd "$ROOT"
cargo build --release --quiet
BIN=$ROOT/target/release/block-manager
cargo bench --quiet --bench copy_chain -- "$WORK/source" "$BLOCKS"
# The source's 0.9 GB still being written back would share the disk with the copies' fsyncs:
# a copy reads a store that has long been on disk.
sync -f "$WORK/source/blocks.redb"

# A primary only (SC2119: pg_start takes no arguments of this script's).
# shellcheck disable=SC2119
pg_start >/dev/null
sql() { "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$BLOCK_MANAGER_TEST_DATABASE_URL" -c "$1"; }
sql "CREATE DATABASE bm_copy"
DB=${BLOCK_MANAGER_TEST_DATABASE_URL%%\?*}
DB="${DB%/*}/bm_copy?sslmode=disable"

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# One copy: its last line (stdout) and wall seconds; progress lines (stderr) are dropped.
run() {
    local what=$1 from=$2 to=$3 start end line
    start=$(date +%s.%N)
    line=$("$BIN" copy --from "$from" --to "$to" 2>"$WORK/stderr") || {
        cat "$WORK/stderr" >&2
        return 1
    }
    end=$(date +%s.%N)
    printf '%-24s %s (wall %.2f s)\n' "$what" "$line" "$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')"
    if grep -q 'phases' "$WORK/stderr"; then
        printf '%-24s %s\n' "" "$(grep 'phases' "$WORK/stderr" | sed 's/^copy: //')"
    fi
}
run "embedded -> postgres" "$WORK/source" "$DB"
run "postgres -> embedded" "$DB" "$WORK/back"
run "embedded -> embedded" "$WORK/source" "$WORK/mirror"
run "up to date (resume)" "$WORK/source" "$DB"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
