#!/usr/bin/env bash
# The whole test suite, on a fresh machine: unit and end-to-end tests (cargo test, with a
# throwaway PostgreSQL primary and streaming standby up, so the PostgreSQL tests run rather than
# skip), the end-to-end tests once more on the postgres engine, then the drills that need real
# outside tools — Prometheus and promtool, schemathesis, a Docker engine, the arm64 cross build
# under qemu. Each drill installs what it needs and cleans up after itself.
#
#   scripts/test.sh            everything
#   scripts/test.sh --quick    the two cargo test steps only
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

export CARGO_TERM_COLOR=never
passed=0
failed=0
failures=()

step() {
  local name=$1
  shift
  echo
  echo "=== $name"
  local started=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    echo "=== $name: passed in $((SECONDS - started)) s"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "=== $name: FAILED after $((SECONDS - started)) s"
  fi
}

need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq >/dev/null && export APT_UPDATED=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  fi
  command -v "$1" >/dev/null 2>&1
}

need curl curl || { echo "curl is required"; exit 1; }

# The server the PostgreSQL tests use lives as long as this run; Ctrl-C stops it too.
trap pg_stop EXIT
trap 'exit 130' INT TERM
step "postgres" pg_start --standby

# The crash drills kill a writer 50 times and a syncing follower 10 times here (20 and 5 in a
# plain `cargo test`). BLOCK_MANAGER_REQUIRE_POSTGRES=1: here a PostgreSQL test that finds no server
# fails instead of skipping.
step "cargo test" env CRASH_ROUNDS=50 SYNC_KILLS=10 BLOCK_MANAGER_REQUIRE_POSTGRES=1 cargo test
# The end-to-end files again, each test's chain in a PostgreSQL database of its own
# (BLOCK_MANAGER_TEST_ENGINE=postgres): what the API, sync, verify and health do must work the
# same on both engines. Left out: storage_faults, whose subject is the embedded engine's data
# volume, and postgres / postgres_harness, which pick their engine themselves. Inside the files
# run, the few tests about the embedded engine's files skip themselves on PostgreSQL, saying why.
step "cargo test (postgres engine)" env BLOCK_MANAGER_TEST_ENGINE=postgres BLOCK_MANAGER_REQUIRE_POSTGRES=1 \
  cargo test --test api --test ingest --test sync --test events --test openapi --test bounds \
  --test access --test metrics --test lifecycle --test connections --test logging \
  --test lucid_config --test config
if [ "${1:-}" != "--quick" ]; then
  step "release build" cargo build --release --locked
  for drill in tests/prometheus.sh tests/schemathesis.sh tests/container.sh tests/arm64.sh tests/range_memory.sh tests/follower_memory.sh tests/slowloris.sh tests/explorer.sh tests/postgres_server.sh tests/postgres_faults.sh tests/postgres_standby.sh; do
    if [ -f "$drill" ]; then
      step "$drill" bash "$drill"
    fi
  done
fi

echo
if [ ${#failures[@]} -gt 0 ]; then
  echo "failed steps: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
