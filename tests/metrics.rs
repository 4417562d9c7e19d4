//! `/metrics` and the monitoring routes against a real in-process server: the exposition
//! parses, names and labels follow the rules, figures agree with the API, and the monitoring
//! answers come at once from the background sample.

mod common;
use common::*;
#[path = "metrics/exposition.rs"]
mod exposition;
use exposition::{Exposition, parse};
use serde_json::Value;
use std::time::{Duration, Instant};

async fn scrape(app: &TestApp) -> Exposition {
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse(&res.text().await.unwrap())
}

#[tokio::test]
async fn exposition_parses_and_every_name_is_prefixed() {
    let app = spawn_app(|_| {}).await;
    let m = scrape(&app).await;
    assert!(m.samples.len() > 30, "{} samples", m.samples.len());
    for s in &m.samples {
        // Ours are prefixed; the process family keeps its standard, unprefixed names.
        assert!(
            s.name.starts_with("block_manager_") || s.name.starts_with("process_"),
            "{}",
            s.name
        );
    }
    for (name, t) in &m.types {
        assert_eq!(t == "counter", name.ends_with("_total"), "{name} is a {t}");
    }
    for name in [
        "block_manager_chain_height",
        "block_manager_blocks_stored",
        "block_manager_transactions_stored",
        "block_manager_last_block_timestamp_seconds",
        "block_manager_store_file_size_bytes",
        "block_manager_http_requests_in_flight",
        "block_manager_http_rate_limited_total",
        "block_manager_host_cpu_usage_ratio",
        "block_manager_host_memory_used_bytes",
        "block_manager_host_memory_total_bytes",
        "block_manager_data_volume_free_bytes",
        "block_manager_data_volume_total_bytes",
        "block_manager_rate_limit_buckets",
        "block_manager_rate_limit_evictions_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(m.all(name).next().is_some(), "{name} missing");
    }
    assert_eq!(
        m.value(
            "block_manager_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // The host is sampled before the server answers, so its figures are already real.
    assert!(
        m.value("block_manager_host_memory_total_bytes", &[])
            .unwrap()
            > 0.0
    );
    // The postgres engine keeps no chain on a local volume, so there is none to size.
    if !on_postgres() {
        assert!(
            m.value("block_manager_data_volume_total_bytes", &[])
                .unwrap()
                > 0.0
        );
    }
    assert!(m.value("block_manager_store_file_size_bytes", &[]).unwrap() > 0.0);
    for period in ["1m", "5m", "15m"] {
        assert!(
            m.value("block_manager_host_load_average", &[("period", period)])
                .is_some()
        );
    }
    let cpu = m.value("block_manager_host_cpu_usage_ratio", &[]).unwrap();
    assert!((0.0..=1.0).contains(&cpu), "{cpu}");
    app.stop().await;
}

#[tokio::test]
async fn two_apps_in_one_process_count_their_own_requests() {
    // One test thread serves both: nothing kept per thread may mix their metrics.
    let a = spawn_app(|_| {}).await;
    let b = spawn_app(|_| {}).await;
    for _ in 0..3 {
        assert_eq!(a.get("/health/live").await.status(), 200);
    }
    for _ in 0..5 {
        assert_eq!(b.get("/health/live").await.status(), 200);
    }
    let live = |m: &Exposition| {
        m.value(
            "block_manager_http_requests_total",
            &[
                ("method", "GET"),
                ("route", "/health/live"),
                ("status", "200"),
            ],
        )
    };
    assert_eq!(live(&scrape(&a).await), Some(3.0));
    assert_eq!(live(&scrape(&b).await), Some(5.0));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn http_counters_carry_route_templates_not_raw_ids() {
    let app = spawn_app(|_| {}).await;
    let block = app.create_block("route", 2).await;
    let hash = block["hash"].as_str().unwrap().to_string();
    assert_eq!(app.get("/api/v1/blocks/height/1").await.status(), 200);
    assert_eq!(app.get("/api/v1/blocks/height/999").await.status(), 404);
    assert_eq!(
        app.get(&format!("/api/v1/blocks/{hash}")).await.status(),
        200
    );
    assert_eq!(app.get("/api/v1/transactions/route-1").await.status(), 200);
    assert_eq!(app.get("/api/v1/no-such/route-123").await.status(), 404);
    let m = scrape(&app).await;
    let count = |method: &str, route: &str, status: &str| {
        m.value(
            "block_manager_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(
        count("GET", "/api/v1/blocks/height/{height}", "200"),
        Some(1.0)
    );
    assert_eq!(
        count("GET", "/api/v1/blocks/height/{height}", "404"),
        Some(1.0)
    );
    assert_eq!(count("GET", "/api/v1/blocks/{block_id}", "200"), Some(1.0));
    assert_eq!(
        count("GET", "/api/v1/transactions/{tx_id}", "200"),
        Some(1.0)
    );
    assert_eq!(count("POST", "/api/v1/blocks", "201"), Some(1.0));
    assert_eq!(count("GET", "unmatched", "404"), Some(1.0));
    // Made-up methods share one label value.
    let res = app
        .client
        .request(
            reqwest::Method::from_bytes(b"BREW").unwrap(),
            app.url("/api/v1/chain/height"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    for s in &m.samples {
        for v in s.labels.values() {
            assert!(
                !v.contains(&hash) && !v.contains("route-") && !v.contains("999"),
                "raw id in a label: {s:?}"
            );
        }
    }
    let latency = m
        .value(
            "block_manager_http_request_duration_seconds_count",
            &[
                ("method", "GET"),
                ("route", "/api/v1/blocks/height/{height}"),
            ],
        )
        .unwrap();
    assert_eq!(latency, 2.0);
    let m = scrape(&app).await;
    assert_eq!(
        m.value(
            "block_manager_http_requests_total",
            &[
                ("method", "OTHER"),
                ("route", "/api/v1/chain/height"),
                ("status", "405")
            ],
        ),
        Some(1.0)
    );
    // This scrape is the one request in flight.
    assert_eq!(
        m.value("block_manager_http_requests_in_flight", &[]),
        Some(1.0)
    );
    app.stop().await;
}

#[tokio::test]
async fn chain_figures_agree_with_the_api() {
    let app = spawn_app(|_| {}).await;
    for i in 0..3 {
        app.create_block(&format!("agree{i}"), 3).await;
    }
    let mut bad = create_body("bad", 1);
    bad["transactions"][0]["signature"] = "".into();
    let (status, _) = app.post("/api/v1/blocks", &bad).await;
    assert_eq!(status, 422);
    let (_, height) = app.get_json("/api/v1/chain/height").await;
    let m = scrape(&app).await;
    let h = height["height"].as_f64().unwrap();
    assert_eq!(h, 3.0);
    assert_eq!(m.value("block_manager_chain_height", &[]), Some(h));
    assert_eq!(m.value("block_manager_blocks_stored", &[]), Some(h + 1.0));
    // Genesis holds one transaction, each created block three.
    assert_eq!(
        m.value("block_manager_transactions_stored", &[]),
        Some(10.0)
    );
    assert_eq!(
        m.value("block_manager_blocks_appended_total", &[("source", "api")]),
        Some(3.0)
    );
    assert_eq!(
        m.value("block_manager_blocks_appended_total", &[("source", "sync")]),
        Some(0.0)
    );
    assert_eq!(
        m.value("block_manager_block_size_bytes_count", &[]),
        Some(3.0)
    );
    assert!(
        m.value("block_manager_store_commit_duration_seconds_count", &[])
            .unwrap()
            >= 1.0
    );
    // The refused block is counted under its code even though it failed before the ledger.
    assert_eq!(
        m.value(
            "block_manager_validation_failures_total",
            &[("code", "VAL_004")]
        ),
        Some(1.0)
    );
    let failures: f64 = m
        .all("block_manager_validation_failures_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(failures, 1.0);
    let tip_time = m
        .value("block_manager_last_block_timestamp_seconds", &[])
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - tip_time).abs() < 600.0, "tip {tip_time}, now {now}");
    app.stop().await;
}

#[tokio::test]
async fn refusals_are_counted() {
    let app = spawn_app(|c| {
        c.rate_limits.requests = 3;
    })
    .await;
    let res = app
        .client
        .post(app.url("/api/v1/blocks"))
        .json(&create_body("nokey", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let mut limited = false;
    for _ in 0..5 {
        limited |= app.get("/api/v1/chain/height").await.status() == 429;
    }
    assert!(limited);
    let m = scrape(&app).await;
    assert_eq!(
        m.value(
            "block_manager_http_auth_failures_total",
            &[("reason", "missing")]
        ),
        Some(1.0)
    );
    assert!(
        m.value("block_manager_http_rate_limited_total", &[])
            .unwrap()
            >= 1.0
    );
    // Refused requests keep their route template.
    let limited = m
        .value(
            "block_manager_http_requests_total",
            &[
                ("method", "GET"),
                ("route", "/api/v1/chain/height"),
                ("status", "429"),
            ],
        )
        .unwrap_or(0.0);
    assert!(limited >= 1.0);
    assert_eq!(
        m.value(
            "block_manager_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/api/v1/blocks"),
                ("status", "401")
            ],
        ),
        Some(1.0)
    );
    app.stop().await;
}

async fn assert_disabled(app: &TestApp, path: &str) {
    let (status, body) = app.get_json(path).await;
    assert_eq!(status, 404, "{path}: {body}");
    assert_eq!(body["detail"]["error_code"], "MON_001", "{body}");
    assert!(
        body["detail"]["error"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );
    assert!(body["detail"]["severity"].is_string());
}

#[tokio::test]
async fn disabled_metrics_answer_404_in_the_error_shape() {
    let app = spawn_app(|c| c.monitoring.metrics_enabled = false).await;
    assert_disabled(&app, "/metrics").await;
    assert_disabled(&app, "/api/v1/monitoring/system").await;
    let (status, health) = app.get_json("/api/v1/monitoring/health").await;
    assert_eq!(status, 200);
    assert!(health["checks"].get("host").is_none(), "{health}");
    app.stop().await;
}

#[tokio::test]
async fn monitoring_system_has_every_lucid_field_at_once() {
    let app = spawn_app(|_| {}).await;
    let started = Instant::now();
    let (status, s) = app.get_json("/api/v1/monitoring/system").await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{s}");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    assert_eq!(s["sampled"], true, "sampled before serving: {s}");
    let pct = |k: &str| {
        let v = s[k].as_f64().unwrap_or_else(|| panic!("{k}: {s}"));
        assert!((0.0..=100.0).contains(&v), "{k} = {v}");
        v
    };
    pct("cpu_percent");
    pct("memory_percent");
    // The disk figures are those of the data volume, which the postgres engine has none of.
    let disk: &[&str] = if on_postgres() {
        &[]
    } else {
        pct("disk_usage_percent");
        &["disk_used_gb", "disk_free_gb"]
    };
    for k in ["memory_used_mb", "memory_available_mb"].iter().chain(disk) {
        assert!(s[k].as_f64().unwrap_or(-1.0) >= 0.0, "{k}: {s}");
    }
    assert!(s["memory_used_mb"].as_f64().unwrap() > 0.0);
    assert!(s["network_bytes_sent"].is_u64() && s["network_bytes_recv"].is_u64());
    let ts = s["timestamp"].as_str().unwrap();
    assert!(
        ts.ends_with("+00:00") && ts.len() >= 25 && &ts[10..11] == "T",
        "Lucid timestamp format: {ts}"
    );
    for k in ["1m", "5m", "15m"] {
        assert!(s["load_average"][k].as_f64().unwrap() >= 0.0);
    }
    assert!(s["sampled_at"].is_string() && s["sample_age_seconds"].as_f64().unwrap() >= 0.0);
    app.stop().await;
}

#[tokio::test]
async fn background_sampling_refreshes_the_host_figures() {
    let app = spawn_app(|c| c.monitoring.system_sample_interval_seconds = 0.25).await;
    let (_, first) = app.get_json("/api/v1/monitoring/system").await;
    let first_at = first["sampled_at"].as_str().unwrap().to_string();
    let later: Value = eventually(Duration::from_secs(10), "a newer sample", || async {
        let (_, s) = app.get_json("/api/v1/monitoring/system").await;
        (s["sampled_at"].as_str() != Some(first_at.as_str())).then_some(s)
    })
    .await;
    assert!(
        later["cpu_window_seconds"].as_f64().unwrap() > 0.0,
        "{later}"
    );
    // The store file size follows the file on disk (nothing writes in between); the postgres
    // engine has no store file.
    if on_postgres() {
        app.stop().await;
        return;
    }
    let on_disk = std::fs::metadata(app.dir.path().join("blocks/blocks.redb"))
        .unwrap()
        .len();
    let m = scrape(&app).await;
    let size = m.value("block_manager_store_file_size_bytes", &[]).unwrap();
    assert_eq!(size, on_disk as f64);
    app.stop().await;
}

#[tokio::test]
async fn monitoring_health_lists_checks_with_latency() {
    let app = spawn_app(|_| {}).await;
    let started = Instant::now();
    let (status, h) = app.get_json("/api/v1/monitoring/health").await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(status, 200, "{h}");
    let checks = h["checks"].as_object().unwrap();
    for name in ["store", "host"] {
        let c = &checks[name];
        assert!(c["status"].is_string(), "{name}: {c}");
        assert!(c["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(c["latency_ms"].as_f64().unwrap() >= 0.0);
    }
    assert_eq!(checks["host"]["status"], "healthy");
    assert!(h["status"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn a_failed_start_stops_the_sampler_and_releases_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = test_config(dir.path());
    config.service.port = busy.local_addr().unwrap().port();
    assert!(block_manager::app::start(config).await.is_err());
    // The sampler started before the bind failed; it must stop and let go of the store.
    let app = eventually(Duration::from_secs(5), "the store to be released", || {
        let config = test_config(dir.path());
        async move { block_manager::app::start(config).await.ok() }
    })
    .await;
    app.shutdown.cancel();
    app.done.await.unwrap();
}

/// CPU time of this process so far, as the kernel counts it (clock ticks).
fn cpu_seconds() -> f64 {
    let stat = procfs::process::Process::myself().unwrap().stat().unwrap();
    (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64
}

/// Burns CPU on this thread until the process has used `secs` more CPU time (on a shared
/// machine wall time says little about it), within a deadline.
fn burn(secs: f64) {
    let start = cpu_seconds();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut x = 0u64;
    while cpu_seconds() - start < secs {
        for _ in 0..100_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        assert!(Instant::now() < deadline, "could not burn {secs} s of CPU");
    }
}

#[tokio::test]
async fn standard_process_metrics_are_exported_with_sub_second_cpu_time() {
    let app = spawn_app(|_| {}).await;
    let kernel0 = cpu_seconds();
    let before = scrape(&app).await;
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_threads",
    ] {
        assert!(before.value(name, &[]).is_some(), "{name} missing");
        assert!(
            before
                .all(&format!("block_manager_{name}"))
                .next()
                .is_none(),
            "prefixed copy of {name}"
        );
    }
    assert_eq!(
        before
            .types
            .get("process_cpu_seconds_total")
            .map(String::as_str),
        Some("counter")
    );
    let started = before.value("process_start_time_seconds", &[]).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(started > now - 3600.0 && started <= now + 1.0, "{started}");
    assert!(before.value("process_open_fds", &[]).unwrap() >= 3.0);
    // The server runs in this process, so CPU burnt here is its CPU time.
    let cpu0 = before.value("process_cpu_seconds_total", &[]).unwrap();
    burn(0.3);
    let cpu1 = scrape(&app)
        .await
        .value("process_cpu_seconds_total", &[])
        .unwrap();
    // Everything this process used from before the first scrape to after the second (other
    // tests run here too): the counter moved by at least the 0.3 s burnt between the scrapes
    // and at most that whole span (a whole-second counter moves by 0 or 1).
    let kernel = cpu_seconds() - kernel0;
    let moved = cpu1 - cpu0;
    assert!(
        moved >= 0.3 - 1e-6 && moved <= kernel + 1e-6,
        "{kernel} s of CPU moved the counter by {moved} ({cpu0} -> {cpu1})"
    );
    assert!(
        cpu1.fract() != 0.0 || cpu0.fract() != 0.0,
        "whole seconds only: {cpu0}, {cpu1}"
    );
    app.stop().await;
}

/// Every metric name the dashboard's queries use.
fn dashboard_metric_names() -> std::collections::BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docker/grafana/block-manager-dashboard.json"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    fn exprs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", Value::String(e)) => out.push(e.clone()),
                        _ => exprs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    exprs(&doc, &mut all);
    assert!(all.len() > 10, "only {} queries found", all.len());
    let mut names = std::collections::BTreeSet::new();
    for e in all {
        // Identifiers that are metric names: ours and the standard process family. Label
        // names, functions and variables never start with these.
        let mut word = String::new();
        for c in e.chars().chain([' ']) {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                word.push(c);
                continue;
            }
            if word.starts_with("block_manager_") || word.starts_with("process_") {
                names.insert(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    names
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    // A follower of a standalone node, so the sync series exist too.
    let leader = spawn_app(|_| {}).await;
    let app = spawn_app(|c| c.synchronization.engine_url = Some(leader.base.clone())).await;
    eventually(Duration::from_secs(20), "the follower to sync", || async {
        let (_, h) = app.get_json("/api/v1/chain/height").await;
        (h["height"] == 0).then_some(())
    })
    .await;
    let res = app
        .client
        .post(app.url("/api/v1/chain/verify"))
        .header("x-api-key", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let m = scrape(&app).await;
    let names = dashboard_metric_names();
    let missing: Vec<&String> = names.iter().filter(|n| m.all(n).next().is_none()).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, not exported"
    );
    app.stop().await;
    leader.stop().await;
}
