//! Who the client is and how it is limited, over real HTTP: forwarded addresses believed only
//! from trusted proxies, per-key limits, credentials, the auth-failure log line, the client
//! address in the access line, and the chain statistics route.
//!
//! Settings go in through the environment of a real child process, the way operators set them.

mod common;
use common::*;
use serde_json::Value;
use std::time::Duration;

/// A child process with the rate limit on and `env` on top.
fn limited(dir: &std::path::Path, env: &[(&str, &str)]) -> Proc {
    let mut all = vec![("BLOCK_MANAGER__RATE_LIMITS__ENABLED", "true")];
    all.extend_from_slice(env);
    spawn_process(dir, &all)
}

/// A client; reqwest is built without a default TLS provider, and this test talks to a child
/// process, so no server in this process installed one.
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn base(p: &Proc) -> String {
    format!("http://127.0.0.1:{}", p.port)
}

/// GET `path` with `headers`; the status.
async fn get(client: &reqwest::Client, url: &str, headers: &[(&str, String)]) -> u16 {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    req.send().await.expect("answered").status().as_u16()
}

/// Stops the process and returns its log lines parsed as JSON.
fn json_log(mut p: Proc) -> Vec<Value> {
    signal(&p, "TERM");
    assert_eq!(wait_exit(&mut p, Duration::from_secs(10)), Some(0));
    let out = std::fs::read_to_string(&p.log).unwrap();
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn a_trusted_proxy_forwards_520_distinct_clients_without_a_429() {
    let dir = tempfile::tempdir().unwrap();
    let p = limited(
        dir.path(),
        &[
            ("BLOCK_MANAGER__RATE_LIMITS__REQUESTS", "100"),
            ("BLOCK_MANAGER__API__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]"),
        ],
    );
    let client = http();
    let url = format!("{}/api/v1/chain/height", base(&p));
    let mut refused = 0;
    for i in 0..520u32 {
        let client_ip = format!("10.1.{}.{}", i / 256, i % 256);
        // Both header forms, and a chain where the gateway itself appears right-most.
        let headers = match i % 3 {
            0 => vec![("x-forwarded-for", client_ip)],
            1 => vec![(
                "x-forwarded-for",
                format!("192.0.2.1, {client_ip}, 127.0.0.1"),
            )],
            _ => vec![("forwarded", format!("for={client_ip};proto=http"))],
        };
        if get(&client, &url, &headers).await == 429 {
            refused += 1;
        }
    }
    assert_eq!(
        refused, 0,
        "distinct clients behind the gateway were refused"
    );
    // Each of them still has its own limit.
    let one = [("x-forwarded-for", "10.9.9.9".to_string())];
    for _ in 0..100 {
        assert_eq!(get(&client, &url, &one).await, 200);
    }
    assert_eq!(get(&client, &url, &one).await, 429);
}

#[tokio::test]
async fn an_untrusted_peers_forwarded_header_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let p = limited(
        dir.path(),
        &[
            ("BLOCK_MANAGER__RATE_LIMITS__REQUESTS", "100"),
            ("BLOCK_MANAGER__API__TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
        ],
    );
    let client = http();
    let url = format!("{}/api/v1/chain/height", base(&p));
    for i in 0..100u32 {
        let spoof = [("x-forwarded-for", format!("10.2.0.{i}"))];
        assert_eq!(get(&client, &url, &spoof).await, 200, "request {i}");
    }
    let spoof = [("x-forwarded-for", "10.3.3.3".to_string())];
    assert_eq!(
        get(&client, &url, &spoof).await,
        429,
        "a peer outside trusted_proxies must not pick its own identity"
    );
}

#[tokio::test]
async fn a_valid_key_is_limited_per_key_and_unlimited_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let client = http();
    let p = limited(
        dir.path(),
        &[
            ("BLOCK_MANAGER__RATE_LIMITS__REQUESTS", "3"),
            ("BLOCK_MANAGER_READ_API_KEY", READ_KEY),
        ],
    );
    let url = format!("{}/api/v1/chain/height", base(&p));
    let keyed = [("x-api-key", READ_KEY.to_string())];
    for i in 0..20 {
        assert_eq!(
            get(&client, &url, &keyed).await,
            200,
            "keyed request {i} was limited by the address"
        );
    }
    drop(p);

    let dir = tempfile::tempdir().unwrap();
    let p = limited(
        dir.path(),
        &[
            ("BLOCK_MANAGER__RATE_LIMITS__REQUESTS", "100"),
            ("BLOCK_MANAGER__RATE_LIMITS__PER_KEY_REQUESTS", "5"),
            ("BLOCK_MANAGER_READ_API_KEY", READ_KEY),
        ],
    );
    let url = format!("{}/api/v1/chain/height", base(&p));
    let bearer = [("authorization", format!("Bearer {READ_KEY}"))];
    for _ in 0..5 {
        assert_eq!(get(&client, &url, &bearer).await, 200);
    }
    assert_eq!(get(&client, &url, &bearer).await, 429, "the key's limit");
    assert_eq!(
        get(&client, &url, &[]).await,
        200,
        "the address keeps its own bucket"
    );
    let wrong = [("x-api-key", "not-a-key".to_string())];
    assert_eq!(
        get(&client, &url, &wrong).await,
        200,
        "an unknown key falls back to the address"
    );
}

#[tokio::test]
async fn an_empty_x_api_key_does_not_shadow_a_valid_bearer_token() {
    let app = spawn_app(|_| {}).await;
    let res = app
        .client
        .post(app.url("/api/v1/blocks"))
        .header("X-API-Key", "")
        .header("Authorization", format!("Bearer {WRITE_KEY}"))
        .json(&create_body("bearer", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    app.stop().await;
}

#[tokio::test]
async fn an_auth_failure_is_logged_once_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn_process(dir.path(), &[("BLOCK_MANAGER__LOGGING__FORMAT", "json")]);
    let client = http();
    let secret = "wrong-secret-4f7a9c";
    let res = client
        .post(format!("{}/api/v1/blocks", base(&p)))
        .header("x-api-key", secret)
        .header("x-request-id", "auth-fail-1")
        .json(&create_body("x", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let lines = json_log(p);
    let warned: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            (l["request_id"] == "auth-fail-1" || l["span"]["request_id"] == "auth-fail-1")
                && (l["level"] == "WARN" || l["level"] == "WARNING")
        })
        .collect();
    assert_eq!(warned.len(), 1, "{lines:#?}");
    assert!(warned[0].to_string().contains("AUTH_002"), "{}", warned[0]);
    assert!(
        lines.iter().all(|l| !l.to_string().contains(secret)),
        "the key leaked into the log"
    );
}

#[tokio::test]
async fn the_access_line_carries_the_client_address() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn_process(
        dir.path(),
        &[
            ("BLOCK_MANAGER__LOGGING__FORMAT", "json"),
            ("BLOCK_MANAGER__API__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]"),
        ],
    );
    let client = http();
    let url = format!("{}/api/v1/chain/height", base(&p));
    let forwarded = [
        ("x-forwarded-for", "203.0.113.9".to_string()),
        ("x-request-id", "client-fwd".to_string()),
    ];
    assert_eq!(get(&client, &url, &forwarded).await, 200);
    let direct = [("x-request-id", "client-direct".to_string())];
    assert_eq!(get(&client, &url, &direct).await, 200);
    let lines = json_log(p);
    let line = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id && l["route"].is_string())
            .unwrap_or_else(|| panic!("no access line for {id}: {lines:#?}"))
            .clone()
    };
    assert_eq!(line("client-fwd")["client"], "203.0.113.9");
    assert_eq!(line("client-direct")["client"], "127.0.0.1");
    assert_eq!(line("client-direct")["status"], 200, "existing fields stay");
}

#[tokio::test]
async fn blocks_stats_reports_the_chain_figures() {
    let app = spawn_app(|_| {}).await;
    let (status, empty) = app.get_json("/api/v1/blocks/stats").await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["total_blocks"], 1, "{empty}");
    assert_eq!(empty["average_block_time_seconds"], Value::Null, "{empty}");
    let mut txs = 1;
    let mut last = Value::Null;
    for (i, n) in [2, 3, 4].into_iter().enumerate() {
        last = app.create_block(&format!("stats{i}"), n).await;
        txs += n;
    }
    let res = app.get("/api/v1/blocks/stats").await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let s: Value = res.json().await.unwrap();
    let (_, info) = app.get_json("/api/v1/chain/info").await;
    assert_eq!(s["height"], 3, "{s}");
    assert_eq!(s["total_blocks"], 4, "{s}");
    assert_eq!(s["total_transactions"], txs, "{s}");
    assert_eq!(s["total_size_bytes"], info["total_size_bytes"], "{s}");
    assert_eq!(s["first_block_time"], GENESIS_TS, "{s}");
    assert_eq!(s["last_block_time"], last["timestamp"], "{s}");
    let avg = s["average_block_time_seconds"].as_f64().unwrap();
    let want = info["average_block_time_seconds"].as_f64().unwrap();
    assert!((avg - want).abs() < 1e-6, "{avg} vs {want}");
    let size = s["average_block_size_bytes"].as_f64().unwrap();
    let bytes = info["total_size_bytes"].as_f64().unwrap();
    assert!((size - bytes / 4.0).abs() < 1e-6, "{s}");
    let per = s["average_transactions_per_block"].as_f64().unwrap();
    assert!((per - txs as f64 / 4.0).abs() < 1e-6, "{s}");
    // Genesis is dated 2024; the three new blocks are minutes old at most.
    assert_eq!(s["blocks_last_hour"], 3, "{s}");
    assert_eq!(s["blocks_last_24h"], 3, "{s}");
    app.stop().await;
}

#[test]
fn a_bad_trusted_proxy_or_client_cap_stops_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/block-manager-config.yaml"),
        "api:\n  trusted_proxies: [\"10.0.0.0/8\", \"172.18.0.0/33\"]\n",
    )
    .unwrap();
    // (environment, what the one line must name)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &[],
            &[
                "api.trusted_proxies",
                "172.18.0.0/33",
                "0-32",
                "block-manager-config.yaml",
            ],
        ),
        (
            &[(
                "BLOCK_MANAGER__API__TRUSTED_PROXIES",
                "10.0.0.0/8, 10.1.2.3/8",
            )],
            &[
                "BLOCK_MANAGER__API__TRUSTED_PROXIES",
                "'10.1.2.3/8'",
                "host bits",
            ],
        ),
        (
            &[
                ("BLOCK_MANAGER__API__TRUSTED_PROXIES", "10.0.0.0/8"),
                ("BLOCK_MANAGER__RATE_LIMITS__MAX_CLIENTS", "0"),
            ],
            &["BLOCK_MANAGER__RATE_LIMITS__MAX_CLIENTS", "expected 1-"],
        ),
    ];
    for (env, wanted) in cases {
        let mut cmd = std::process::Command::new(binary());
        cmd.current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("BLOCK_MANAGER_HOST", "127.0.0.1")
            .env("BLOCK_MANAGER_PORT", free_port().to_string());
        for (k, v) in *env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        for w in *wanted {
            assert!(stderr.contains(w), "{env:?}: want {w} in {stderr}");
        }
    }
}
