#!/usr/bin/env bash
# PostgreSQL failure drill: the release binary against a throwaway PostgreSQL that is stopped,
# killed and locked under it. Four scenarios, each on a database of its own:
#   1. down at start-up: the process stays up and unhealthy, writes answer 503 ST_001 at once,
#      and it turns healthy by itself (genesis created) when the server starts;
#   2. down while serving: clients keep creating while the server stops (`-m immediate`, then
#      `-m fast`); every request answers within the bound (writes and uncached reads 503
#      ST_001), recovery needs no restart, and every acknowledged block is stored as given;
#   3. SIGKILL mid-write, KILLS times (default 20): every acknowledged block survives with its
#      hash, heights have no gap, `block-manager verify` says consistent, totals match;
#   4. timeouts: the chain row locked from another session bounds a create by the lock
#      timeout; bm_blocks locked ACCESS EXCLUSIVE bounds an uncached read by height;
#   5. frozen server (SIGSTOP: it accepts connections and never answers, as a host cut off by
#      the network does): the first calls are cut at the engine's call limit, later ones at
#      the connect timeout (the pool does not keep handing out connections to a dead peer),
#      /health turns 503 within the same bound, and writes resume when it thaws.
# Starts only its own processes (free loopback ports, temp dirs) and stops them by PID on exit.
# Prints "N passed, M failed"; exits non-zero on any failure.
#
# Env: BLOCK_MANAGER_BIN (default target/release/block-manager, built when missing),
#      KILLS (20) for scenario 3, ONLY (e.g. "2 5": run only those scenarios).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
BIN=${BLOCK_MANAGER_BIN:-$ROOT/target/release/block-manager}
KILLS=${KILLS:-20}
# The engine's bounds here, short so the drill is quick. A call that cannot get a connection
# fails after CONNECT_TIMEOUT; a statement waiting for a lock after LOCK_TIMEOUT.
CONNECT_TIMEOUT=2
LOCK_TIMEOUT=1
STATEMENT_TIMEOUT=3
# What an answer may take beyond the engine's bound: the HTTP round trip and scheduling on a
# small machine that is also running PostgreSQL and the load clients.
MARGIN=2
WRITE_BOUND=$((CONNECT_TIMEOUT + MARGIN))
LOCK_BOUND=$((LOCK_TIMEOUT + MARGIN))
KEY=drill-write-key
drill_start

command -v python3 >/dev/null || { fail "python3 is required"; finish; }
command -v curl >/dev/null || { fail "curl is required"; finish; }
if [ ! -x "$BIN" ]; then
    echo "building $BIN"
    (cd "$ROOT" && cargo build --release --bin block-manager) || { fail "release build"; finish; }
fi
pg_start >/dev/null || { fail "pg_start"; finish; }
echo "postgres on 127.0.0.1:$PG_PORT; bounds: writes ${WRITE_BOUND}s (connect ${CONNECT_TIMEOUT}s + ${MARGIN}s), locks ${LOCK_BOUND}s (lock ${LOCK_TIMEOUT}s + ${MARGIN}s)"

# --------------------------------------------------------------------------------- helpers
# One value (or rows, `|`-separated) from database $1.
sql() { "$PG_BIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$1" -c "$2" 2>&1; }
db_url() { echo "postgres://postgres@127.0.0.1:$PG_PORT/$1?sslmode=disable"; }
# The same server, stopped and started again on its data folder and port (pg_ctl polls; on a
# loaded disk a checkpoint or crash recovery has been seen to take over a minute).
pg_down() { pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/primary" -m "$1" -w -t 180 stop >/dev/null; }
pg_up() { pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/primary" -l "$PG_DIR/primary.log" -w -t 180 start >/dev/null; }

# Polls "$@" every 50 ms until it succeeds or $1 seconds pass.
wait_for() {
    local seconds=$1
    shift
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.05
    done
}

# Starts block-manager on database $2 (log $WORK/$1.log) and waits until it answers
# /health/live; sets BM_PID and BM. Extra NAME=VALUE arguments are added to its environment.
BM_PORT=$(free_port) || { fail "free port"; finish; }
BM="http://127.0.0.1:$BM_PORT"
bm_start() {
    local name=$1 db=$2
    shift 2
    mkdir -p "$WORK/$name"
    (
        cd "$WORK/$name" &&
            exec env BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT="$BM_PORT" \
                BLOCK_STORAGE_PATH="$WORK/$name/data" BLOCK_MANAGER_API_KEY="$KEY" \
                BLOCK_MANAGER__RATE_LIMITS__ENABLED=false \
                BLOCK_MANAGER_DATABASE_URL="$(db_url "$db")" \
                BLOCK_MANAGER__STORAGE__POSTGRES__CONNECT_TIMEOUT_SECONDS="$CONNECT_TIMEOUT" \
                BLOCK_MANAGER__STORAGE__POSTGRES__LOCK_TIMEOUT_SECONDS="$LOCK_TIMEOUT" \
                BLOCK_MANAGER__STORAGE__POSTGRES__STATEMENT_TIMEOUT_SECONDS="$STATEMENT_TIMEOUT" \
                "$@" "$BIN"
    ) >>"$WORK/$name.log" 2>&1 &
    BM_PID=$!
    PIDS+=("$BM_PID")
    wait_200 "$BM/health/live" 20
}
bm_stop() {
    kill "$BM_PID" 2>/dev/null
    wait "$BM_PID" 2>/dev/null
}

# One request, timed: `timed METHOD PATH` prints "<status> <seconds>"; the body is in $WORK/body.
timed() {
    local args=(-s -o "$WORK/body" -w '%{http_code} %{time_total}' --max-time 30 -X "$1")
    if [ "$1" = POST ]; then
        args+=(-H "X-API-Key: $KEY" -H 'content-type: application/json' --data "$(new_block "$2")")
        set -- POST /api/v1/blocks
    fi
    curl "${args[@]}" "$BM$2"
}
new_block() {
    echo '{"transactions":[{"tx_id":"'"$1"'","from_address":"a","to_address":"b","value":1,"signature":"s"}],"producer":"p","signature":"s"}'
}
# `answered STATUS CODE BOUND WHAT`: the last `timed` answer was STATUS, error code CODE (or -),
# within BOUND seconds.
answered() {
    local want=$1 code=$2 bound=$3 what=$4 status secs
    read -r status secs <<<"$LAST"
    local ok=1
    [ "$status" = "$want" ] || ok=0
    [ "$code" = - ] || grep -q "\"error_code\":\"$code\"" "$WORK/body" || ok=0
    python3 -c "import sys; sys.exit(0 if float('$secs') <= $bound else 1)" || ok=0
    if [ "$ok" = 1 ]; then
        pass "$what: $status${code#-} in ${secs}s (bound ${bound}s)"
    else
        fail "$what: want $want $code within ${bound}s, got $status in ${secs}s: $(head -c 300 "$WORK/body")"
    fi
}
# /health's status code, and the store check's status from its body.
store_health() {
    curl -s --max-time 30 "$BM/health" | python3 -c '
import json, sys
try:
    doc = json.load(sys.stdin)
except ValueError:
    print("unreadable"); sys.exit()
doc = doc.get("detail", {}).get("additional_info", doc)
print(doc.get("checks", {}).get("store", {}).get("status", "none"), doc.get("checks", {}).get("store", {}).get("engine", "-"))'
}
health_is() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$BM/health")" = "$1" ]; }

# The load clients: `load.py create PORT KEY OUT PREFIX CLIENTS STOPFILE` runs CLIENTS threads
# creating blocks until STOPFILE exists, one JSON line per answer in OUT (and each 2xx in
# OUT.acks); `load.py verify PORT OUT DUMP` checks every acknowledged block against the API
# (hash and transactions as given) and against DUMP (`height|hash|tx_id` rows from SQL);
# `load.py answers OUT BOUND` checks that every answer came within BOUND seconds and every
# refusal was 503 ST_001.
cat >"$WORK/load.py" <<'EOF'
import http.client, json, sys, threading, time, os

def request(port, method, path, body=None, key=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"content-type": "application/json"}
    if key:
        headers["X-API-Key"] = key
    try:
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()

def create(port, key, out, prefix, clients, stopfile):
    lock = threading.Lock()
    log = open(out, "a", buffering=1)
    acks = open(out + ".acks", "a", buffering=1)
    def client(i):
        n = 0
        while not os.path.exists(stopfile):
            txs = [{"tx_id": f"{prefix}-{i}-{n}-{k}", "from_address": f"c{i}", "to_address": "b",
                    "value": n * 10 + k, "signature": "s"} for k in range(2)]
            body = json.dumps({"transactions": txs, "producer": f"p{i}", "signature": "s"})
            n += 1
            started = time.time()
            rec = {"t": started, "txs": txs}
            try:
                status, data = request(port, "POST", "/api/v1/blocks", body, key)
                rec["c"] = status
                try:
                    doc = json.loads(data)
                except ValueError:
                    doc = {}
                if 200 <= status < 300:
                    rec["h"], rec["hash"] = doc.get("height"), doc.get("hash")
                else:
                    rec["code"] = (doc.get("detail") or {}).get("error_code")
            except (OSError, http.client.HTTPException) as e:
                rec["c"], rec["err"] = 0, f"{type(e).__name__}: {e}"
            rec["s"] = round(time.time() - started, 3)
            line = json.dumps(rec)
            with lock:
                log.write(line + "\n")
                if 200 <= rec["c"] < 300:
                    acks.write(line + "\n")
            if not 200 <= rec["c"] < 300:
                # A client backs off a little after a refusal rather than spin.
                time.sleep(0.05)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

def answers(out, bound):
    recs = [json.loads(l) for l in open(out)]
    problems, slowest, by = [], 0.0, {}
    for r in recs:
        slowest = max(slowest, r["s"])
        key = f'{r["c"]}{" " + r["code"] if r.get("code") else ""}'
        by[key] = by.get(key, 0) + 1
        if r["c"] == 0:
            problems.append(f'no answer after {r["s"]}s: {r["err"]}')
        elif r["s"] > bound:
            problems.append(f'{r["c"]} after {r["s"]}s (bound {bound}s)')
        elif not 200 <= r["c"] < 300 and (r["c"] != 503 or r.get("code") != "ST_001"):
            problems.append(f'{r["c"]} {r.get("code")} (want 2xx or 503 ST_001)')
    print(f'{len(recs)} answers {dict(sorted(by.items()))}, slowest {slowest}s')
    for p in problems[:10]:
        print("  " + p)
    return not problems

def verify(port, out, dump):
    acks = [json.loads(l) for l in open(out + ".acks")]
    stored, tx_height = {}, {}
    for row in open(dump):
        height, hash_, tx = row.rstrip("\n").split("|")
        stored[int(height)] = hash_
        if tx:
            tx_height[tx] = int(height)
    problems = []
    for a in acks:
        h = a["h"]
        if stored.get(h) != a["hash"]:
            problems.append(f'SQL: height {h} holds {stored.get(h)}, acknowledged {a["hash"]}')
        for tx in a["txs"]:
            if tx_height.get(tx["tx_id"]) != h:
                problems.append(f'SQL: {tx["tx_id"]} at {tx_height.get(tx["tx_id"])}, acknowledged at {h}')
        status, data = request(port, "GET", f"/api/v1/blocks/height/{h}")
        if status != 200:
            problems.append(f"API: height {h}: {status} {data[:200]!r}")
            continue
        block = json.loads(data)
        got = [{k: t.get(k) for k in ("tx_id", "from_address", "to_address", "value", "signature")}
               for t in block.get("transactions", [])]
        if block.get("hash") != a["hash"] or got != a["txs"]:
            problems.append(f'API: height {h}: hash {block.get("hash")} txs {got}, acknowledged {a["hash"]} {a["txs"]}')
    heights = [a["h"] for a in acks]
    if len(set(heights)) != len(heights):
        problems.append("two acknowledgements name the same height")
    print(f"{len(acks)} acknowledged blocks checked against the API and SQL, {len(problems)} problem(s)")
    for p in problems[:10]:
        print("  " + p)
    return not problems

def frozen(out, frozen_at, thawed_at, first_bound, settle, later_bound):
    """Creates answered while the server was frozen: each 2xx or 503 ST_001, within
    first_bound; those sent settle seconds or more after the freeze, within later_bound."""
    recs = [json.loads(l) for l in open(out)]
    during = [r for r in recs if r["t"] + r["s"] >= frozen_at and r["t"] < thawed_at]
    later = [r for r in during if r["t"] >= frozen_at + settle and r["t"] + r["s"] <= thawed_at]
    problems = []
    for r in during:
        if r["c"] == 0:
            problems.append(f'no answer after {r["s"]}s: {r["err"]}')
        elif not 200 <= r["c"] < 300 and (r["c"] != 503 or r.get("code") != "ST_001"):
            problems.append(f'{r["c"]} {r.get("code")} after {r["s"]}s (want 2xx or 503 ST_001)')
        elif r["s"] > first_bound:
            problems.append(f'{r["c"]} after {r["s"]}s, {round(r["t"] - frozen_at, 1)}s into the freeze (bound {first_bound}s)')
    for r in later:
        if r["s"] > later_bound:
            problems.append(f'{r["c"]} after {r["s"]}s, {round(r["t"] - frozen_at, 1)}s into the freeze (bound {later_bound}s)')
    if not later:
        problems.append(f"no create was sent {settle}s or more into the freeze")
    slowest = max((r["s"] for r in during), default=0)
    slowest_later = max((r["s"] for r in later), default=0)
    print(f"{len(during)} answers during the freeze (slowest {slowest}s), {len(later)} after {settle}s (slowest {slowest_later}s)")
    for p in problems[:10]:
        print("  " + p)
    return not problems

mode = sys.argv[1]
if mode == "frozen":
    sys.exit(0 if frozen(sys.argv[2], *map(float, sys.argv[3:8])) else 1)
elif mode == "create":
    create(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), sys.argv[7])
elif mode == "answers":
    sys.exit(0 if answers(sys.argv[2], float(sys.argv[3])) else 1)
elif mode == "verify":
    sys.exit(0 if verify(int(sys.argv[2]), sys.argv[3], sys.argv[4]) else 1)
EOF
acks() { [ -f "$1.acks" ] && wc -l <"$1.acks" || echo 0; }
acks_reach() { [ "$(acks "$1")" -ge "$2" ]; }
# Answers in $1 whose status is 503 ST_001.
refusals() {
    local n=0
    [ -f "$1" ] && n=$(grep -c '"c": 503, "code": "ST_001"' "$1")
    echo "${n:-0}"
}
refusals_reach() { [ "$(refusals "$1")" -ge "$2" ]; }
# `height|hash|tx_id` for every stored block and transaction of database $1.
dump() {
    sql "$1" "SELECT b.height, b.hash, coalesce(t.tx_id, '') FROM bm_blocks b LEFT JOIN bm_transactions t ON t.height = b.height ORDER BY b.height" >"$2"
}
load_start() { # out prefix clients
    rm -f "$WORK/stop"
    python3 "$WORK/load.py" create "$BM_PORT" "$KEY" "$1" "$2" "$3" "$WORK/stop" 2>>"$WORK/load.err" &
    LOAD_PID=$!
    PIDS+=("$LOAD_PID")
}
load_stop() {
    touch "$WORK/stop"
    wait "$LOAD_PID"
}
# Heights 0..tip without a gap, and bm_chain's totals equal to what the tables hold.
chain_consistent() {
    local db=$1 got
    got=$(sql "$db" "SELECT (SELECT count(*) = max(height) + 1 AND min(height) = 0 FROM bm_blocks),
        (SELECT c.tip = (SELECT max(height) FROM bm_blocks)
            AND c.blocks = (SELECT count(*) FROM bm_blocks)
            AND c.transactions = (SELECT coalesce(sum(transaction_count), 0) FROM bm_blocks)
            AND c.transactions = (SELECT count(*) FROM bm_transactions)
            AND c.bytes = (SELECT coalesce(sum(size_bytes), 0) FROM bm_blocks) FROM bm_chain c)")
    if [ "$got" = "t|t" ]; then
        pass "$db: heights 0..$(sql "$db" "SELECT max(height) FROM bm_blocks") without a gap; bm_chain totals = count(*) / sum() ($(sql "$db" "SELECT blocks || ' blocks, ' || transactions || ' transactions, ' || bytes || ' bytes' FROM bm_chain"))"
    else
        fail "$db: gapless heights | totals match: $got ($(sql "$db" "SELECT * FROM bm_chain"); blocks $(sql "$db" "SELECT count(*) || ' max ' || max(height) FROM bm_blocks"))"
    fi
}
verify_cli() {
    local db=$1 out
    out=$(cd "$WORK" && env BLOCK_MANAGER_DATABASE_URL="$(db_url "$db")" BLOCK_STORAGE_PATH="$WORK/verify-data" "$BIN" verify 2>&1)
    if grep -q ': consistent, 0 problem' <<<"$out"; then
        pass "$db: block-manager verify: $(tail -n1 <<<"$out")"
    else
        fail "$db: block-manager verify: $out"
    fi
}

runs() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }

# Scenario 5 stops the server's processes (this drill's server only: the postmaster named in
# its postmaster.pid and its children); they are resumed before anything else at exit, or
# pg_stop could not stop them.
FROZEN=""
thaw() {
    [ -n "$FROZEN" ] && kill -CONT $FROZEN 2>/dev/null
    FROZEN=""
}
trap 'thaw; work_cleanup' EXIT

for db in s1 s2 s3 s4 s5; do
    sql postgres "CREATE DATABASE $db" >/dev/null || { fail "CREATE DATABASE $db"; finish; }
done

# ------------------------------------------------------------- 1. down at start-up
if runs 1; then
echo "--- 1. PostgreSQL down at start-up"
# Immediate: the point is a server that is not there; a fast stop's checkpoint can take a
# minute on a busy disk.
pg_down immediate || { fail "pg_ctl stop"; finish; }
if bm_start s1 s1; then
    pass "block-manager starts and answers /health/live 200 with the database down"
else
    tail -n 20 "$WORK/s1.log"
    fail "block-manager up with the database down"
    finish
fi
check "/health answers 503 while the database is down" wait_for 10 health_is 503
read -r st engine <<<"$(store_health)"
check "/health: the store check is unhealthy (got '$st')" [ "$st" = unhealthy ]
LAST=$(timed POST s1-down)
answered 503 ST_001 "$WRITE_BOUND" "a create with the database down"
LAST=$(timed GET /api/v1/blocks/height/0)
answered 503 ST_001 "$WRITE_BOUND" "a read with the database down"
check "the process is still up" kill -0 "$BM_PID"
pg_up || { fail "pg_ctl start"; finish; }
started=$SECONDS
# The retry backs off up to 10 s between attempts: one full wait plus an attempt, and slack.
if wait_for 25 health_is 200; then
    pass "/health turns 200 by itself $((SECONDS - started)) s after the database started"
else
    fail "/health not 200 within 25 s of the database starting: $(curl -s "$BM/health" | head -c 400)"
fi
read -r st engine <<<"$(store_health)"
check "/health: store healthy on engine postgres (got '$st $engine')" [ "$st $engine" = "healthy postgres" ]
genesis=$(sql s1 "SELECT hash FROM bm_blocks WHERE height = 0")
LAST=$(timed GET /api/v1/blocks/height/0)
check "genesis is in the database and served (${genesis:0:16}...)" \
    bash -c "[ -n '$genesis' ] && [ '${LAST%% *}' = 200 ] && grep -q '\"$genesis\"' '$WORK/body'"
LAST=$(timed POST s1-up)
answered 201 - "$WRITE_BOUND" "a create once the database is up"
check "the created block is in the database" [ "$(sql s1 "SELECT count(*) FROM bm_transactions WHERE tx_id = 's1-up'")" = 1 ]
bm_stop

fi

# ------------------------------------------------------------- 2. down while serving
if runs 2; then
echo "--- 2. PostgreSQL down while serving"
# No body cache: every read of a block goes to the database.
bm_start s2 s2 BLOCK_MANAGER__STORAGE__POSTGRES__CACHE_MB=0 || { tail -n 20 "$WORK/s2.log"; fail "block-manager on s2"; finish; }
check "ready on s2" wait_for 20 health_is 200
OUT2="$WORK/s2.jsonl"
load_start "$OUT2" s2 4
for mode in immediate fast; do
    before=$(acks "$OUT2")
    check "$mode: clients acknowledged (20 more than $before)" wait_for 30 acks_reach "$OUT2" $((before + 20))
    refused=$(refusals "$OUT2")
    hash2=$(sql s2 "SELECT hash FROM bm_blocks WHERE height = 2")
    pg_down "$mode" || fail "pg_ctl stop -m $mode"
    down_at=$SECONDS
    check "$mode: writes are refused 503 ST_001 while it is down" wait_for 20 refusals_reach "$OUT2" $((refused + 20))
    LAST=$(timed GET /api/v1/blocks/height/1)
    answered 503 ST_001 "$WRITE_BOUND" "$mode: an uncached read by height while it is down"
    LAST=$(timed GET "/api/v1/blocks/$hash2")
    answered 503 ST_001 "$WRITE_BOUND" "$mode: a read by hash while it is down"
    LAST=$(timed POST "s2-probe-$mode")
    answered 503 ST_001 "$WRITE_BOUND" "$mode: a create while it is down"
    # Within a deadline: the health report is reused for up to a second.
    check "$mode: /health 503 while it is down" wait_for 5 health_is 503
    check "$mode: block-manager still up" kill -0 "$BM_PID"
    pg_up || fail "pg_ctl start after -m $mode"
    echo "    the server was down $((SECONDS - down_at)) s"
    started=$SECONDS
    up_acks=$(acks "$OUT2")
    if wait_for 30 acks_reach "$OUT2" $((up_acks + 20)); then
        pass "$mode: writes acknowledged again $((SECONDS - started)) s after the start, without restarting block-manager"
    else
        fail "$mode: no recovery within 30 s: $(tail -n 2 "$OUT2")"
    fi
    check "$mode: /health 200 again" wait_for 15 health_is 200
done
load_stop
if out=$(python3 "$WORK/load.py" answers "$OUT2" "$WRITE_BOUND"); then
    pass "every create answered within ${WRITE_BOUND}s, 2xx or 503 ST_001: $out"
else
    fail "answers while the database went down: $out"
fi
dump s2 "$WORK/s2.dump"
if out=$(python3 "$WORK/load.py" verify "$BM_PORT" "$OUT2" "$WORK/s2.dump"); then
    pass "s2: every acknowledged block stored as given: $out"
else
    fail "s2: acknowledged blocks: $out"
fi
chain_consistent s2
bm_stop

fi

# ------------------------------------------------------------- 3. SIGKILL mid-write
if runs 3; then
echo "--- 3. SIGKILL mid-write, $KILLS times"
OUT3="$WORK/s3.jsonl"
bm_start s3 s3 || { tail -n 20 "$WORK/s3.log"; fail "block-manager on s3"; finish; }
check "ready on s3" wait_for 20 health_is 200
load_start "$OUT3" s3 4
killed=0
for round in $(seq 1 "$KILLS"); do
    # Kill after a random number of acknowledgements (1-25) since this process started.
    n=$((RANDOM % 25 + 1))
    target=$(($(acks "$OUT3") + n))
    if ! wait_for 30 acks_reach "$OUT3" "$target"; then
        fail "round $round: no $n acknowledgements within 30 s: $(tail -n 1 "$OUT3")"
        break
    fi
    kill -9 "$BM_PID"
    wait "$BM_PID" 2>/dev/null
    killed=$((killed + 1))
    if ! bm_start s3 s3 || ! wait_for 30 health_is 200; then
        tail -n 20 "$WORK/s3.log"
        fail "round $round: block-manager did not come back healthy on the killed database"
        break
    fi
done
check "killed block-manager $killed times after 1-25 acknowledgements each" [ "$killed" = "$KILLS" ]
wait_for 30 acks_reach "$OUT3" $(($(acks "$OUT3") + 5)) || fail "writes after the last restart"
load_stop
echo "    answers: $(python3 "$WORK/load.py" answers "$OUT3" 30 | head -n1)"
dump s3 "$WORK/s3.dump"
if out=$(python3 "$WORK/load.py" verify "$BM_PORT" "$OUT3" "$WORK/s3.dump"); then
    pass "s3: every acknowledged block present with its hash: $out"
else
    fail "s3: acknowledged blocks after $killed kills: $out"
fi
chain_consistent s3
bm_stop
verify_cli s3

fi

# ------------------------------------------------------------- 4. timeouts
if runs 4; then
echo "--- 4. lock and statement timeouts"
bm_start s4 s4 BLOCK_MANAGER__STORAGE__POSTGRES__CACHE_MB=0 || { tail -n 20 "$WORK/s4.log"; fail "block-manager on s4"; finish; }
check "ready on s4" wait_for 20 health_is 200
LAST=$(timed POST s4-first)
answered 201 - "$WRITE_BOUND" "a create before any lock"
# Another session holds a lock for up to 120 s (ended early with pg_terminate_backend).
hold() { # lock statement
    PGAPPNAME=bm-drill-lock "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d s4 \
        -c "BEGIN; $1; SELECT pg_sleep(120); COMMIT;" >/dev/null 2>&1 &
    HOLD_PID=$!
    PIDS+=("$HOLD_PID")
}
holding() { [ "$(sql s4 "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'bm-drill-lock' AND query LIKE '%pg_sleep%' AND wait_event = 'PgSleep'")" = 1 ]; }
release() {
    sql s4 "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'bm-drill-lock'" >/dev/null
    wait "$HOLD_PID" 2>/dev/null
}
hold "SELECT * FROM bm_chain FOR UPDATE"
if wait_for 10 holding; then
    LAST=$(timed POST s4-locked)
    answered 503 ST_001 "$LOCK_BOUND" "a create while bm_chain's row is locked"
    release
    LAST=$(timed POST s4-released)
    answered 201 - "$WRITE_BOUND" "a create once the lock is released"
else
    fail "could not hold bm_chain's row lock"
    release
fi
hold "LOCK TABLE bm_blocks IN ACCESS EXCLUSIVE MODE"
if wait_for 10 holding; then
    LAST=$(timed GET /api/v1/blocks/height/1)
    answered 503 ST_001 "$LOCK_BOUND" "an uncached read by height while bm_blocks is locked"
    LAST=$(timed GET /api/v1/blocks/height/0)
    answered 503 ST_001 "$LOCK_BOUND" "an uncached read of genesis while bm_blocks is locked"
    release
    LAST=$(timed GET /api/v1/blocks/height/1)
    answered 200 - "$WRITE_BOUND" "the read once the lock is released"
else
    fail "could not lock bm_blocks"
    release
fi
check "s4: the acknowledged creates are stored" \
    [ "$(sql s4 "SELECT count(*) FROM bm_transactions WHERE tx_id IN ('s4-first', 's4-released')")" = 2 ]
check "s4: the refused create is not" [ "$(sql s4 "SELECT count(*) FROM bm_transactions WHERE tx_id = 's4-locked'")" = 0 ]
chain_consistent s4
bm_stop
fi

# ------------------------------------------------------------- 5. frozen server
if runs 5; then
echo "--- 5. PostgreSQL frozen (SIGSTOP) while serving"
# A longer statement timeout here, so the engine's call limit (connect + statement + lock)
# stands well apart from the connect timeout in what is measured.
FROZEN_STATEMENT=8
CALL_LIMIT=$((CONNECT_TIMEOUT + FROZEN_STATEMENT + LOCK_TIMEOUT))
# The first calls may wait the call limit, and writes queued behind them one connect timeout
# more; once those are cut, each answer needs at most a connect timeout for itself and one for
# the write group it queued behind.
FIRST_BOUND=$((CALL_LIMIT + CONNECT_TIMEOUT + MARGIN))
LATER_BOUND=$((2 * CONNECT_TIMEOUT + MARGIN))
SETTLE=$((CALL_LIMIT + CONNECT_TIMEOUT))
bm_start s5 s5 BLOCK_MANAGER__STORAGE__POSTGRES__CACHE_MB=0 \
    BLOCK_MANAGER__STORAGE__POSTGRES__STATEMENT_TIMEOUT_SECONDS="$FROZEN_STATEMENT" ||
    { tail -n 20 "$WORK/s5.log"; fail "block-manager on s5"; finish; }
check "ready on s5" wait_for 20 health_is 200
OUT5="$WORK/s5.jsonl"
load_start "$OUT5" s5 4
check "clients acknowledged (20)" wait_for 30 acks_reach "$OUT5" 20
postmaster=$(head -n1 "$PG_DIR/primary/postmaster.pid")
FROZEN="$postmaster $(pgrep -d ' ' -P "$postmaster")"
frozen_at=$(date +%s.%N)
# shellcheck disable=SC2086 # one PID per word
kill -STOP $FROZEN
frozen_started=$SECONDS
# Not a wait for readiness: the clients keep writing through this window, and what they see
# past the first calls' cut-off is what is measured.
sleep $((SETTLE + 1))
LAST=$(timed GET /api/v1/blocks/height/1)
answered 503 ST_001 "$LATER_BOUND" "frozen: an uncached read by height, after the first calls were cut"
LAST=$(timed POST s5-frozen)
answered 503 ST_001 "$LATER_BOUND" "frozen: a create, after the first calls were cut"
LAST=$(curl -s -o "$WORK/body" -w '%{http_code} %{time_total}' --max-time 30 "$BM/health")
answered 503 SRV_002 "$LATER_BOUND" "frozen: /health"
# A few more seconds of load on the frozen server (the window measured), then it thaws.
rest=$((frozen_started + SETTLE + 2 * LATER_BOUND - SECONDS))
[ "$rest" -gt 0 ] && sleep "$rest"
thawed_at=$(date +%s.%N)
thaw
up_acks=$(acks "$OUT5")
started=$SECONDS
if wait_for 30 acks_reach "$OUT5" $((up_acks + 20)); then
    pass "thawed: writes acknowledged again $((SECONDS - started)) s later, without restarting block-manager"
else
    fail "thawed: no recovery within 30 s: $(tail -n 2 "$OUT5")"
fi
check "thawed: /health 200 again" wait_for 15 health_is 200
load_stop
if out=$(python3 "$WORK/load.py" frozen "$OUT5" "$frozen_at" "$thawed_at" "$FIRST_BOUND" "$SETTLE" "$LATER_BOUND"); then
    pass "frozen: every create answered 2xx or 503 ST_001, within ${FIRST_BOUND}s at first and ${LATER_BOUND}s after ${SETTLE}s: $out"
else
    fail "frozen: $out"
fi
dump s5 "$WORK/s5.dump"
if out=$(python3 "$WORK/load.py" verify "$BM_PORT" "$OUT5" "$WORK/s5.dump"); then
    pass "s5: every acknowledged block stored as given: $out"
else
    fail "s5: acknowledged blocks: $out"
fi
chain_consistent s5
bm_stop
fi

finish
