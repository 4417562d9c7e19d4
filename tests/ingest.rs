//! Concurrency and crash behaviour of the write path.

mod common;
use common::*;
use std::collections::HashSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_creates_from_8_clients_get_heights_1_to_1000_without_gaps() {
    let app = spawn_app(|_| {}).await;
    let mut tasks = Vec::new();
    for c in 0..8 {
        let client = app.client.clone();
        let url = app.url("/api/v1/blocks");
        tasks.push(tokio::spawn(async move {
            let mut heights = Vec::new();
            for i in 0..125 {
                let res = client
                    .post(&url)
                    .header("X-API-Key", WRITE_KEY)
                    .json(&create_body(&format!("c{c}-{i}"), 2))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201);
                let b: serde_json::Value = res.json().await.unwrap();
                heights.push(b["height"].as_u64().unwrap());
            }
            heights
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        for h in t.await.unwrap() {
            assert!(all.insert(h), "height {h} given twice");
        }
    }
    assert_eq!(all, (1..=1000).collect::<HashSet<u64>>());
    let dir = app.stop().await;
    let config = test_config(dir.path());
    let store = block_manager::app::open_store(&config).unwrap();
    let report = block_manager::verify::verify(&*store, 0, None).unwrap();
    assert!(report.is_valid, "{:?}", report.errors);
    assert_eq!(report.blocks_checked, 1001);
}

#[tokio::test]
async fn a_panicking_handler_answers_an_opaque_500_in_the_error_shape_and_is_logged_once_with_its_id()
 {
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let tracker = tokio_util::task::TaskTracker::new();
    let (state, _writer) =
        block_manager::app::build_state(test_config(dir.path()), &tracker, Default::default())
            .await
            .unwrap();
    let routes = axum::Router::new().route(
        "/boom",
        axum::routing::get(|| async {
            if std::hint::black_box(true) {
                panic!("secret internal detail");
            }
            "unreachable"
        }),
    );
    let app = block_manager::api::with_middleware(routes, state);
    // Everything logged while the request runs, to check the panic is logged once with its id.
    let logged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = logged.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || Captured(sink.clone()))
        .finish();
    let _scope = tracing::subscriber::set_default(subscriber);
    let res = app
        .oneshot(
            axum::http::Request::get("/boom")
                .header("x-request-id", "panic-probe-1")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["x-request-id"], "panic-probe-1");
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let detail = v["detail"].as_object().expect("the error shape");
    let mut keys: Vec<&str> = detail.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["additional_info", "error", "error_code", "severity"],
        "{v}"
    );
    assert_eq!(v["detail"]["error_code"], "SRV_001");
    assert!(v["detail"]["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(
        !String::from_utf8_lossy(&body).contains("secret"),
        "a 5xx never leaks internals"
    );
    let text = String::from_utf8(logged.lock().unwrap().clone()).unwrap();
    let panics: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("handler panicked"))
        .collect();
    assert_eq!(panics.len(), 1, "{text}");
    assert!(panics[0].contains("ERROR"), "{text}");
    assert!(panics[0].contains("panic-probe-1"), "{text}");
}

/// A log sink for one test: every write lands in the shared buffer.
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn acknowledged_blocks_survive_sigkill_during_a_stream_of_appends() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut acked: Vec<(u64, String)> = Vec::new();
    for round in 0..rounds {
        let mut p = spawn_process(dir.path(), &[]);
        // A writer streams creates; after a random-ish delay the process is killed mid-stream.
        let port = p.port;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let writer = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut i = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let body = create_body(&format!("k{round}-{i}"), 2);
                i += 1;
                let Some((201, json)) = http_post(port, "/api/v1/blocks", &body) else {
                    break;
                };
                let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                got.push((
                    v["height"].as_u64().unwrap(),
                    v["hash"].as_str().unwrap().to_string(),
                ));
            }
            got
        });
        let delay = 30 + (round as u64 * 37) % 150;
        std::thread::sleep(std::time::Duration::from_millis(delay));
        p.child.kill().unwrap();
        p.child.wait().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        acked.extend(writer.join().unwrap());
        // After each kill the store opens, verifies, and holds every acknowledged block.
        let (code, report) = run_verify(dir.path(), &[]);
        assert_eq!(code, Some(0), "round {round}: {report}");
    }
    let mut p = spawn_process(dir.path(), &[]);
    for (height, hash) in &acked {
        let path = format!("/api/v1/blocks/height/{height}");
        let mut s = std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.contains(hash.as_str()),
            "acknowledged block {height} missing after crashes"
        );
    }
    assert!(
        acked.len() > rounds,
        "the drill wrote too little to mean anything: {}",
        acked.len()
    );
    signal(&p, "TERM");
    assert_eq!(
        wait_exit(&mut p, std::time::Duration::from_secs(5)),
        Some(0)
    );
}

#[test]
fn verify_exits_1_naming_a_height_whose_served_body_differs_and_checks_only_the_range_asked() {
    if skip_on_postgres("the corruption is written into the embedded engine's body log files") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_process(dir.path(), &[]);
    for i in 0..5 {
        let body = create_body(&format!("v{i}"), 2);
        assert_eq!(
            http_post(p.port, "/api/v1/blocks", &body).map(|r| r.0),
            Some(201)
        );
    }
    signal(&p, "TERM");
    assert_eq!(
        wait_exit(&mut p, std::time::Duration::from_secs(10)),
        Some(0)
    );
    let (code, report) = run_verify(dir.path(), &[]);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("checked 6 blocks"), "{report}");

    // Height 3's entry in the body log now points at height 4's body, with a checksum made for
    // height 3 (what a stale entry left by a fork would look like): reads by height would serve
    // the wrong block, and verify must say so.
    let index = dir.path().join("data/blocks/blocks.redb.bodies-index");
    let mut raw = std::fs::read(&index).unwrap();
    let offset = u64::from_le_bytes(raw[4 * 16..4 * 16 + 8].try_into().unwrap());
    let len = u32::from_le_bytes(raw[4 * 16 + 8..4 * 16 + 12].try_into().unwrap());
    let data = std::fs::read(dir.path().join("data/blocks/blocks.redb.bodies")).unwrap();
    let body = &data[offset as usize..offset as usize + len as usize];
    let mut crc = crc32fast::Hasher::new();
    crc.update(&3u64.to_le_bytes());
    crc.update(&u64::from(len).to_le_bytes());
    crc.update(body);
    raw.copy_within(4 * 16..4 * 16 + 12, 3 * 16);
    raw[3 * 16 + 12..4 * 16].copy_from_slice(&crc.finalize().to_le_bytes());
    std::fs::write(&index, raw).unwrap();
    let (code, report) = run_verify(dir.path(), &[]);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains("height 3: a read by height serves a body that differs"),
        "{report}"
    );
    assert!(report.contains("1 problem(s)"), "{report}");

    // --from/--to limit the check: a range that leaves height 3 out is consistent.
    let out = std::process::Command::new(binary())
        .current_dir(dir.path())
        .args(["verify", "--from", "4", "--to", "5"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains("checked 2 blocks (heights 4-5)"),
        "{report}"
    );
}
