//! The command line: `serve` (default), `healthcheck`, `config check|show`, `verify`, `copy`.

use crate::config::{self, LoadOptions, Loaded};
use clap::{Args, Parser, Subcommand};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// block-manager: the block store of the Lucid stack.
#[derive(Debug, Parser)]
#[command(
    name = "block-manager",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Target,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve(Target),
    /// Probe /health of the local service; exit 0 only on 200 (the container HEALTHCHECK).
    Healthcheck {
        #[command(flatten)]
        target: Target,
        /// Seconds to wait for an answer (default: healthcheck.timeout_seconds, 5).
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Check or show the effective configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Offline integrity check of the store (linkage, merkle roots, hashes, indexes).
    Verify {
        #[command(flatten)]
        target: Target,
        /// First height to check.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Last height to check (default: the tip).
        #[arg(long)]
        to: Option<u64>,
    },
    /// Copy the chain between engines, resuming after the target's tip; the source is only read.
    Copy {
        /// Source: an embedded store folder (storage.blocks_path), its blocks.redb, or a
        /// postgres:// URL.
        #[arg(long, value_name = "PATH|URL")]
        from: String,
        /// Target, in the same forms; created when new.
        #[arg(long, value_name = "PATH|URL")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Load and validate; exit 0 when valid, 2 otherwise.
    Check(Target),
    /// Print every effective setting with where it came from (secrets redacted).
    Show(Target),
}

/// Flags shared by the commands that read the configuration.
#[derive(Debug, Clone, Default, Args)]
struct Target {
    /// Main config file (YAML or JSON); default config/block-manager-config.yaml.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Bind address (overrides BLOCK_MANAGER_HOST).
    #[arg(long)]
    host: Option<String>,
    /// Bind port (overrides BLOCK_MANAGER_PORT).
    #[arg(long)]
    port: Option<u16>,
}

impl Target {
    fn options(&self) -> LoadOptions {
        LoadOptions {
            config_path: self.config.clone(),
            host: self.host.clone(),
            port: self.port,
        }
    }
}

/// Exit status for configuration and start-up errors.
const EXIT_CONFIG: u8 = 2;

fn load(target: &Target) -> Result<Loaded, ExitCode> {
    config::load(&target.options()).map_err(|e| {
        eprintln!("block-manager: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(t)) => serve(&t),
        Some(Command::Healthcheck { target, timeout }) => healthcheck(&target, timeout),
        Some(Command::Config {
            action: ConfigAction::Check(t),
        }) => match load(&t) {
            Ok(l) => {
                for w in &l.warnings {
                    eprintln!("warning: {w}");
                }
                println!("configuration is valid ({})", sources(&l));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Some(Command::Config {
            action: ConfigAction::Show(t),
        }) => match load(&t) {
            Ok(l) => {
                show(&l);
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Some(Command::Verify { target, from, to }) => verify(&target, from, to),
        Some(Command::Copy { from, to }) => crate::copy::main(&from, &to),
    }
}

fn sources(l: &Loaded) -> String {
    if l.files.is_empty() {
        "no config files: built-in defaults and environment".into()
    } else {
        l.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn serve(target: &Target) -> ExitCode {
    let loaded = match load(target) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let _guards = crate::telemetry::init(&loaded.config);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    for n in &loaded.notices {
        tracing::info!("{n}");
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %sources(&loaded), "starting block-manager");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("block-manager: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match runtime.block_on(crate::app::run(loaded.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("block-manager: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Where to probe: loopback when bound to a wildcard address, else the bound address.
fn probe_addrs(host: &str, port: u16) -> Vec<SocketAddr> {
    match host.trim().trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) if ip.is_unspecified() => {
            vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)]
        }
        Ok(IpAddr::V6(ip)) if ip.is_unspecified() => {
            vec![
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            ]
        }
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => (host, port)
            .to_socket_addrs()
            .map(Iterator::collect)
            .unwrap_or_default(),
    }
}

/// GET `path` over a plain socket: no shell, no curl, no TLS needed.
fn probe(addr: SocketAddr, host: &str, path: &str, deadline: Instant) -> Result<u16, String> {
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut s = TcpStream::connect_timeout(&addr, left())
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(left()))
        .and_then(|()| s.set_write_timeout(Some(left())))
        .map_err(|e| e.to_string())?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: block-manager-healthcheck\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = s
            .read(&mut head[n..])
            .map_err(|e| format!("no answer from {addr}: {e}"))?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer from {addr}"))
}

fn healthcheck(target: &Target, timeout: Option<f64>) -> ExitCode {
    let loaded = match config::load(&target.options()) {
        Ok(l) => l,
        Err(e) => {
            println!("unhealthy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let c = &loaded.config;
    let secs = timeout.unwrap_or(c.healthcheck.timeout_seconds);
    let secs = if secs.is_finite() && secs > 0.0 {
        secs
    } else {
        5.0
    };
    let deadline = Instant::now() + config::duration(secs);
    // A path without its leading slash, or with spaces around it, is still the same path.
    let path = format!("/{}", c.healthcheck.path.trim().trim_start_matches('/'));
    let mut last = String::from("no address to probe");
    for addr in probe_addrs(&c.service.host, c.service.port) {
        match probe(
            addr,
            &format!("{}:{}", addr.ip(), addr.port()),
            &path,
            deadline,
        ) {
            Ok(200) => {
                println!("healthy: {addr} answered 200 on {path}");
                return ExitCode::SUCCESS;
            }
            Ok(code) => last = format!("{addr} answered {code} on {path}"),
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    println!("unhealthy: {last}");
    ExitCode::FAILURE
}

fn show(l: &Loaded) {
    let value = serde_json::to_value(&l.config).unwrap_or_default();
    let mut lines = Vec::new();
    flatten(&mut Vec::new(), &value, &mut lines);
    println!(
        "# effective configuration ({}); secrets redacted",
        sources(l)
    );
    for (path, v) in lines {
        let source = config::source_of(&l.figment, &path);
        let key = path.join(".");
        let key = config::lucid_name(&key).unwrap_or(&key);
        println!("{key} = {v}    # {source}");
    }
}

/// Every leaf as its path segments (kept apart: a map key may hold dots) and shown value.
fn flatten<'a>(
    path: &mut Vec<&'a str>,
    v: &'a serde_json::Value,
    out: &mut Vec<(Vec<&'a str>, String)>,
) {
    match v {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                path.push(k);
                flatten(path, child, out);
                path.pop();
            }
        }
        other => {
            let leaf = path.last().copied().unwrap_or_default();
            out.push((path.clone(), config::redact::value(leaf, other)));
        }
    }
}

/// `verify` on a PostgreSQL database: it is shared with running replicas, so it is read in
/// place (the engine's reads never change it) and creates nothing (no genesis).
fn verify_shared(config: &crate::config::Config, from: u64, to: Option<u64>) -> ExitCode {
    let store = match crate::store::open::open_as_found(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("block-manager: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match crate::verify::verify(&*store, from, to) {
        Ok(r) => report_verified(&r),
        Err(e) => {
            eprintln!("block-manager: cannot read the store: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn verify(target: &Target, from: u64, to: Option<u64>) -> ExitCode {
    let loaded = match load(target) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if loaded.config.storage.engine() == crate::config::StorageBackend::Postgres {
        return verify_shared(&loaded.config, from, to);
    }
    // Verifying must never create a store where there was none.
    let file = loaded.config.store_file();
    if !file.is_file() {
        eprintln!(
            "block-manager: no block store at {} (storage.blocks_path / BLOCK_STORAGE_PATH)",
            file.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    // Read-only: checking a store must not change it (a backup, a copy on a read-only volume)
    let cache = (loaded.config.storage.cache_size_mb as usize)
        .saturating_mul(1024 * 1024)
        .max(1024 * 1024);
    let opened = match crate::store::ReadOnlyStore::open(&file, cache) {
        Ok(s) => s,
        Err(crate::store::StoreError::AlreadyOpen { .. }) => {
            eprintln!(
                "block-manager: cannot open block store {}: it is in use by another running block-manager (storage.blocks_path / BLOCK_STORAGE_PATH); use POST /api/v1/chain/verify on it instead",
                file.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            eprintln!(
                "block-manager: cannot open block store {}: {e}",
                file.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let checked = match &opened {
        Some(store) => crate::verify::verify(store, from, to),
        None => {
            // Not closed cleanly: redb must rewrite its header (its quick repair) before any
            // read, so this one open writes. On a read-only volume it fails, with the reason.
            eprintln!(
                "block-manager: {} was not closed cleanly; opening it writable to let the store recover first",
                file.display()
            );
            match crate::app::open_store(&loaded.config) {
                Ok(store) => crate::verify::verify(&*store, from, to),
                Err(e) => {
                    eprintln!(
                        "block-manager: {e} (to check a read-only copy, copy it to a writable folder first)"
                    );
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
    };
    match checked {
        Ok(r) => report_verified(&r),
        Err(e) => {
            eprintln!("block-manager: cannot read the store: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn report_verified(r: &crate::verify::Report) -> ExitCode {
    for e in &r.errors {
        println!("error: {e}");
    }
    let verdict = if r.is_valid {
        "consistent"
    } else {
        "INCONSISTENT"
    };
    println!(
        "checked {} blocks (heights {}-{}): {verdict}, {} problem(s)",
        r.blocks_checked, r.start_height, r.end_height, r.error_count
    );
    if r.is_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
