//! Storage faults on real volumes: a data volume that fills up, and one that is read-only.
//! These mount small tmpfs volumes, so they need root (CI runs as root); elsewhere they say so
//! and return.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A tmpfs mounted at `dir/data`, unmounted on drop.
struct Volume(std::path::PathBuf);

impl Volume {
    fn mount(dir: &Path, opts: &str) -> Option<Volume> {
        let at = dir.join("data");
        std::fs::create_dir_all(&at).ok()?;
        sh(&format!("mount -t tmpfs -o {opts} tmpfs {}", at.display())).then_some(Volume(at))
    }
    fn remount(&self, opts: &str) -> bool {
        sh(&format!("mount -o remount,{opts} {}", self.0.display()))
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = sh(&format!("umount -l {}", self.0.display()));
    }
}

fn post(port: u16, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let (status, json) = http_post(port, "/api/v1/blocks", body).expect("the server answers");
    (
        status,
        serde_json::from_str(&json).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn a_full_data_volume_fails_writes_with_st_004_keeps_reads_and_recovers_when_space_returns() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(vol) = Volume::mount(dir.path(), "size=6m") else {
        panic!("cannot mount tmpfs")
    };
    let mut p = spawn_process(dir.path(), &[("BLOCK_STORAGE_PATH", "data/blocks")]);
    let mut stored = 0;
    let mut full = None;
    for i in 0..2000 {
        let (status, body) = post(p.port, &create_body(&format!("fill{i}"), 40));
        match status {
            201 => stored += 1,
            _ => {
                full = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = full.expect("the volume never filled up");
    assert!(status >= 500, "{status} {body}");
    assert_eq!(body["detail"]["error_code"], "ST_004", "{body}");
    // Reads keep working while the volume is full.
    assert_eq!(http_status(p.port, "/api/v1/blocks/latest"), Some(200));
    assert_eq!(
        http_status(p.port, &format!("/api/v1/blocks/height/{stored}")),
        Some(200)
    );
    assert_eq!(http_status(p.port, "/health"), Some(200));
    // Space returns: writes resume without a restart.
    assert!(vol.remount("size=64m"));
    let mut resumed = false;
    for i in 0..50 {
        if post(p.port, &create_body(&format!("after{i}"), 1)).0 == 201 {
            resumed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(resumed, "writes did not resume once space returned");
    signal(&p, "TERM");
    assert_eq!(wait_exit(&mut p, Duration::from_secs(5)), Some(0));
    let (code, report) = run_verify(dir.path(), &[("BLOCK_STORAGE_PATH", "data/blocks")]);
    assert_eq!(code, Some(0), "{report}");
}

#[test]
fn a_read_only_data_folder_stops_start_up_with_a_clear_message() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(_vol) = Volume::mount(dir.path(), "ro,size=1m") else {
        panic!("cannot mount tmpfs")
    };
    let out = Command::new(binary())
        .current_dir(dir.path())
        .env("BLOCK_STORAGE_PATH", "data/blocks")
        .env("BLOCK_MANAGER_PORT", free_port().to_string())
        .env("BLOCK_MANAGER_HOST", "127.0.0.1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("data/blocks") && stderr.to_lowercase().contains("read-only"),
        "{stderr}"
    );
    // Root is refused by the volume, not by ownership: no chown would help.
    assert!(!stderr.contains("chown"), "{stderr}");
}

#[test]
fn data_and_log_folders_of_another_user_name_the_chown_that_fixes_them() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !is_root() {
        eprintln!("skipped: running the service as another user needs root");
        return;
    }
    // As Lucid's volume script leaves them: the folders exist and belong to someone else (root
    // here), and the service runs as 65532:65532.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    for d in ["data", "logs"] {
        std::fs::create_dir(root.join(d)).unwrap();
    }
    let out = Command::new(binary())
        .current_dir(&root)
        .uid(65532)
        .gid(65532)
        .env("BLOCK_MANAGER_PORT", free_port().to_string())
        .env("BLOCK_MANAGER_HOST", "127.0.0.1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let data = format!(
        "{}/data belongs to 0:0 and block-manager runs as 65532:65532: run `chown -R 65532:65532 {}/data`",
        root.display(),
        root.display()
    );
    assert!(stderr.contains(&data), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // The log folder is not fatal: one console warning, with its own chown.
    let logs = format!("run `chown -R 65532:65532 {}/logs`", root.display());
    let warnings: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| l.contains("log handler files cannot be written"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stdout}{stderr}");
    assert_eq!(warnings[0].matches(&logs).count(), 1, "{}", warnings[0]);
}
