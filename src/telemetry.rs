//! Logging per the logging file: console, size-rotated file, errors-only file; formats
//! standard / detailed / json; per-module levels; `LOG_LEVEL` / `RUST_LOG` override.

use crate::config::{Config, Handler};
use file_rotate::{ContentLimit, FileRotate, compression::Compression, suffix::AppendCount};
use std::path::Path;
use tracing::Level;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::{Layer, Registry, layer::SubscriberExt, util::SubscriberInitExt};

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Keeps the background log writers alive; drop it last so buffered lines are flushed.
pub struct LogGuards(#[allow(dead_code)] Vec<WorkerGuard>);

/// Maps Python and Rust level names to a tracing level (`CRITICAL` → error).
pub fn parse_level(name: &str) -> Option<Level> {
    match name.trim().to_ascii_uppercase().as_str() {
        "TRACE" => Some(Level::TRACE),
        "DEBUG" => Some(Level::DEBUG),
        "INFO" => Some(Level::INFO),
        "WARN" | "WARNING" => Some(Level::WARN),
        "ERROR" | "CRITICAL" | "FATAL" => Some(Level::ERROR),
        _ => None,
    }
}

/// The filter directives: `RUST_LOG` if set, else root level (`LOG_LEVEL` wins over the
/// logging file's root) plus per-module levels from `loggers`.
fn directives(config: &Config) -> String {
    if let Ok(rust_log) = std::env::var("RUST_LOG")
        && !rust_log.trim().is_empty()
    {
        return rust_log;
    }
    let file_root = config
        .logging_config
        .root
        .as_ref()
        .and_then(|r| r.level.clone());
    let root = match (
        std::env::var("LOG_LEVEL").ok().filter(|v| !v.is_empty()),
        file_root,
    ) {
        (Some(env), _) => env,
        (None, Some(file)) => file,
        (None, None) => config.logging.level.clone(),
    };
    let root = parse_level(&root).unwrap_or(Level::INFO);
    // Libraries stay quiet unless asked for: their debug output drowns ours.
    let mut out = format!("{root},hyper=warn,h2=warn,reqwest=warn,rustls=warn,tower=warn");
    for (name, logger) in &config.logging_config.loggers {
        let target = name.replace('-', "_").replace('.', "::");
        if !target.starts_with("block_manager") {
            continue;
        }
        if let Some(level) = logger.level.as_deref().and_then(parse_level) {
            out.push_str(&format!(",{target}={level}"));
        }
    }
    out
}

fn format_of(config: &Config, handler: &Handler) -> &'static str {
    let name = handler
        .formatter
        .as_deref()
        .unwrap_or(&config.logging.format);
    let class = config
        .logging_config
        .formatters
        .get(name)
        .and_then(|f| f.class.clone())
        .unwrap_or_default();
    if name.contains("json") || class.to_ascii_lowercase().contains("json") {
        "json"
    } else if name.contains("detailed") {
        "detailed"
    } else {
        "standard"
    }
}

fn layer_for<W>(format: &str, writer: W, ansi: bool) -> BoxedLayer
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let base = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        "json" => base
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        "detailed" => base
            .with_thread_ids(true)
            .with_file(true)
            .with_line_number(true)
            .with_target(true)
            .boxed(),
        _ => base.with_target(true).boxed(),
    }
}

fn rotated_writer(path: &Path, handler: &Handler) -> std::io::Result<FileRotate<AppendCount>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // FileRotate opens lazily in places; open once now so an unwritable folder is reported here.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let limit =
        ContentLimit::Bytes(handler.max_bytes.unwrap_or(10 * 1024 * 1024).max(1024) as usize);
    Ok(FileRotate::new(
        path,
        AppendCount::new(handler.backup_count.unwrap_or(5).max(1)),
        limit,
        Compression::None,
        None,
    ))
}

/// Handlers when the logging file names none: console, the rotated file and the errors file.
fn default_handlers() -> Vec<(String, Handler)> {
    let file = |name: &str, level: &str| Handler {
        class: Some("logging.handlers.RotatingFileHandler".into()),
        level: Some(level.into()),
        formatter: Some("detailed".into()),
        filename: Some(format!("logs/{name}")),
        max_bytes: Some(10 * 1024 * 1024),
        backup_count: Some(5),
    };
    vec![
        (
            "console".into(),
            Handler {
                class: Some("logging.StreamHandler".into()),
                ..Default::default()
            },
        ),
        ("file".into(), file("block-manager.log", "DEBUG")),
        (
            "error_file".into(),
            file("block-manager-errors.log", "ERROR"),
        ),
    ]
}

/// Installs the global subscriber. Log files that cannot be opened are reported once on the
/// console and skipped: logging must never stop the service.
pub fn init(config: &Config) -> LogGuards {
    let filter = directives(config);
    let mut layers: Vec<BoxedLayer> = Vec::new();
    let mut guards = Vec::new();
    let mut problems = Vec::new();
    // The fix for a log folder of another user, said once however many handlers share it.
    let mut chown: Option<String> = None;
    let handlers: Vec<(String, Handler)> = if config.logging_config.handlers.is_empty() {
        default_handlers()
    } else {
        config
            .logging_config
            .handlers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    for (name, handler) in &handlers {
        let level = handler
            .level
            .as_deref()
            .and_then(parse_level)
            .map(LevelFilter::from_level)
            .unwrap_or(LevelFilter::TRACE);
        let format = format_of(config, handler);
        let layer = match &handler.filename {
            None => {
                let (writer, guard) = non_blocking(std::io::stdout());
                guards.push(guard);
                layer_for(format, writer, false)
            }
            Some(file) => match rotated_writer(Path::new(file), handler) {
                Ok(w) => {
                    let (writer, guard) = non_blocking(w);
                    guards.push(guard);
                    layer_for(format, writer, false)
                }
                Err(e) => {
                    problems.push(format!(
                        "log handler {name}: cannot write {file}: {e}; continuing without it"
                    ));
                    if e.kind() == std::io::ErrorKind::PermissionDenied && chown.is_none() {
                        chown = crate::ownership::chown_hint(Path::new(file));
                    }
                    continue;
                }
            },
        };
        let env = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
        layers.push(layer.with_filter(level).with_filter(env).boxed());
    }
    let _ = tracing_subscriber::registry().with(layers).try_init();
    // One line however many file handlers failed: the cause is almost always one folder.
    if !problems.is_empty() {
        tracing::warn!(
            "log handler files cannot be written, logging to the console only: {}{}",
            problems.join("; "),
            chown.map(|h| format!("; {h}")).unwrap_or_default()
        );
    }
    LogGuards(guards)
}

/// Lines a handler may have queued before new ones are dropped (the library's default is
/// 128,000, allocated up front: about 4 MB of resident memory per handler). This still covers
/// a second of requests at full speed while a slow disk catches up.
const QUEUED_LINES: usize = 16_384;

fn non_blocking<W: std::io::Write + Send + 'static>(
    w: W,
) -> (tracing_appender::non_blocking::NonBlocking, WorkerGuard) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .finish(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoggerConfig;

    #[test]
    fn python_level_names_map_to_tracing_levels() {
        assert_eq!(parse_level("WARNING"), Some(Level::WARN));
        assert_eq!(parse_level("critical"), Some(Level::ERROR));
        assert_eq!(parse_level("verbose"), None);
    }

    #[test]
    fn per_module_levels_become_rust_targets() {
        let mut config = Config::default();
        config.logging_config.loggers.insert(
            "block_manager.sync".into(),
            LoggerConfig {
                level: Some("DEBUG".into()),
                handlers: vec![],
            },
        );
        config.logging_config.loggers.insert(
            "uvicorn".into(),
            LoggerConfig {
                level: Some("DEBUG".into()),
                handlers: vec![],
            },
        );
        let d = directives(&config);
        assert!(d.contains("block_manager::sync=DEBUG"), "{d}");
        assert!(!d.contains("uvicorn"), "{d}");
    }
}
