#!/usr/bin/env bash
# The explorer page in a real headless Chromium (WebDriver through Python selenium): the page
# opens under read auth with the read key in sessionStorage, a block created after it opened
# appears in the live list, a transaction search shows its JSON, and the browser console has no
# error (a CSP violation or a script error would be one). Saves a screenshot to
# target/explorer.png. Installs chromium, chromium-driver and selenium when missing; starts
# only its own server (a free loopback port, a temp dir) and stops it by PID on exit.
#
# Env: BLOCK_MANAGER_BIN (default target/release/block-manager, built when missing),
#      EXPLORER_SCREENSHOT (default target/explorer.png).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
BIN=${BLOCK_MANAGER_BIN:-$ROOT/target/release/block-manager}
SHOT=${EXPLORER_SCREENSHOT:-$ROOT/target/explorer.png}
WRITE_KEY=explorer-write-key
READ_KEY=explorer-read-key

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
if ! python3 -c 'import selenium' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check selenium 2>/dev/null ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages selenium
fi
if [ ! -x "$BIN" ]; then
    (cd "$ROOT" && cargo build --release --locked --bin block-manager)
fi

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
(
    cd "$WORK"
    exec env BLOCK_MANAGER_HOST=127.0.0.1 BLOCK_MANAGER_PORT="$PORT" \
        BLOCK_STORAGE_PATH="$WORK/blocks" BLOCK_MANAGER_API_KEY="$WRITE_KEY" \
        BLOCK_MANAGER_READ_API_KEY="$READ_KEY" BLOCK_MANAGER__SECURITY__REQUIRE_READ_AUTH=true \
        BLOCK_MANAGER__CHAIN__GENESIS_TIMESTAMP=2024-01-01T00:00:00+00:00 \
        "$BIN" serve
) >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
if ! wait_200 "$BASE/health/ready" 30; then
    echo "block-manager did not become ready:" >&2
    cat "$WORK/server.log" >&2
    exit 1
fi

create() {
    curl -fsS -X POST "$BASE/api/v1/blocks" -H "X-API-Key: $WRITE_KEY" \
        -H 'Content-Type: application/json' \
        -d "{\"transactions\":[{\"tx_id\":\"$1\",\"type\":\"data_storage\",\"from_address\":\"0xa\",\"to_address\":\"0xb\",\"value\":1,\"data\":\"<b>not html</b>\",\"signature\":\"s\"}],\"producer\":\"<i>producer</i>\",\"signature\":\"s\"}"
}
for n in 1 2 3; do create "before-$n" >/dev/null; done
mkdir -p "$(dirname "$SHOT")"

BASE="$BASE" READ_KEY="$READ_KEY" SHOT="$SHOT" WORK="$WORK" WRITE_KEY="$WRITE_KEY" python3 - <<'EOF'
import json, os, subprocess, sys, time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

base, key, shot = os.environ["BASE"], os.environ["READ_KEY"], os.environ["SHOT"]
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for arg in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--window-size=1280,900", "--user-data-dir=" + os.path.join(os.environ["WORK"], "chromium")]:
    opts.add_argument(arg)
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
failed = []

def check(what, ok):
    print(("ok   - " if ok else "FAIL - ") + what)
    if not ok:
        failed.append(what)

def until(what, f, limit=30):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            v = f()
            if v:
                return v
        except Exception:
            pass
        time.sleep(0.1)
    check(what, False)
    return None

try:
    # The key goes into this tab's sessionStorage before the page's first request.
    driver.get(base + "/explorer.css")
    driver.execute_script("sessionStorage.setItem('block-manager-read-key', arguments[0])", key)
    driver.get(base + "/explorer")
    check("the page shows the node's health",
          until("health", lambda: driver.find_element(By.ID, "health").text in ("healthy", "degraded")))
    check("the page shows the mode", until("mode", lambda: driver.find_element(By.ID, "mode").text == "standalone"))
    check("the stream is live", until("live", lambda: driver.find_element(By.ID, "stream-state").text == "live"))
    check("the latest blocks are listed",
          until("rows", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#blocks tr")) >= 4))

    # A block created after the page opened arrives through the event stream.
    created = json.loads(subprocess.check_output(["curl", "-fsS", "-X", "POST", base + "/api/v1/blocks",
        "-H", "X-API-Key: " + os.environ["WRITE_KEY"], "-H", "Content-Type: application/json", "-d",
        json.dumps({"transactions": [{"tx_id": "live-tx", "from_address": "0xa", "to_address": "0xb",
                    "value": 2, "data": "<script>alert(1)</script>", "signature": "s"}],
                    "producer": "<img src=x onerror=alert(1)>", "signature": "s"})]))
    row = until("the new block's row",
                lambda: driver.find_element(By.CSS_SELECTOR, '#blocks tr[data-height="%d"]' % created["height"]))
    check("a block created after the page opened appears live", row is not None)
    if row is not None:
        check("its hash is shown", created["hash"] in row.text)
        check("its producer is text, not markup",
              "<img src=x onerror=alert(1)>" in row.text and not row.find_elements(By.TAG_NAME, "img"))
    check("the tip follows", until("tip", lambda: driver.find_element(By.ID, "tip-height").text == str(created["height"])))

    # Search a transaction: its JSON is shown.
    box = driver.find_element(By.ID, "search-input")
    box.send_keys("live-tx")
    driver.find_element(By.CSS_SELECTOR, "#search-form button").click()
    result = until("the search result", lambda: json.loads(driver.find_element(By.ID, "result").text))
    check("a transaction search shows its JSON",
          bool(result) and json.dumps(result).find("live-tx") >= 0 and json.dumps(result).find(created["hash"]) >= 0)
    box.clear()
    box.send_keys(str(created["height"]))
    driver.find_element(By.CSS_SELECTOR, "#search-form button").click()
    check("a height search shows the block",
          until("block result", lambda: json.loads(driver.find_element(By.ID, "result").text)["hash"] == created["hash"]))

    driver.save_screenshot(shot)
    check("a screenshot was saved", os.path.getsize(shot) > 10000)
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    for e in errors:
        print("console:", e.get("message"))
    check("no errors in the browser console", not errors)
finally:
    driver.quit()
print("%d failed" % len(failed))
sys.exit(1 if failed else 0)
EOF
