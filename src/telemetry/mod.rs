//! Logging per Lucid's logging file (Python dictConfig): console and size-rotated file
//! handlers, %-style formatters, Lucid logger names mapped to our modules, per-logger levels.
//!
//! Precedence, most specific first: `RUST_LOG` (all levels); `LOG_LEVEL` (root and logger
//! levels) and `LOG_FORMAT` (console formatter); a handler's own settings in the logging file;
//! the main file's `logging.*` (`directory`, `level`, `format`, `rotate.*`).

mod check;
pub mod context;
mod datefmt;
mod format;
mod layer;
mod queue;
mod record;
mod rotate;
mod stats;

pub use check::check;
pub(crate) use layer::{Site, write_info};
pub(crate) use record::Value;
pub use stats::register as register_metrics;

use crate::config::{Config, Handler, LoggingFile, parse_level};
use format::{DETAILED, LineFormat, STANDARD};
use layer::{LucidLayer, Plan, Route, Sink};
use queue::{Destination, Queue, Stream};
use rotate::RotatingFile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};

/// Keeps the log writer thread alive; drop it last so queued lines are written.
pub struct LogGuards(#[allow(dead_code)] Option<queue::Writer>);

const STREAM: &str = "logging.StreamHandler";
const ROTATING: &str = "logging.handlers.RotatingFileHandler";
pub(crate) const STDOUT: &str = "ext://sys.stdout";
pub(crate) const STDERR: &str = "ext://sys.stderr";
/// Logger names of the logging file that map to our modules.
const OURS: [&str; 5] = [
    "blockchain",
    "blockchain.api",
    "blockchain.manager",
    "blockchain.core",
    "httpx",
];
/// Python libraries Lucid's file configures that have no counterpart here.
const ABSENT: [&str; 2] = ["motor", "pymongo"];

pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Formatters in use, each parsed once, by name.
#[derive(Default)]
struct Formats {
    names: Vec<String>,
    list: Vec<LineFormat>,
}

impl Formats {
    fn index(&mut self, file: &LoggingFile, name: &str, warnings: &mut Vec<String>) -> usize {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return i;
        }
        let defined = file.formatters.get(name);
        let class = defined.and_then(|f| f.class.as_deref()).unwrap_or("");
        let datefmt = defined.and_then(|f| f.datefmt.as_deref());
        let format = if name == "json" || class.to_ascii_lowercase().contains("json") {
            LineFormat::json(datefmt)
        } else {
            let (text, datefmt) = match (defined, name) {
                (Some(f), _) => (f.format.as_deref().unwrap_or("%(message)s"), datefmt),
                (None, "detailed") => (DETAILED, None),
                (None, _) => (STANDARD, Some("%Y-%m-%d %H:%M:%S")),
            };
            match LineFormat::text(text, datefmt) {
                Ok((f, unknown)) => {
                    for u in unknown {
                        warnings.push(format!(
                            "logging file formatters.{name}.format: %({u}) is not supported here and prints as -"
                        ));
                    }
                    f
                }
                // Refused at start-up by `check`; a standard line beats none.
                Err(_) => LineFormat::text(STANDARD, None)
                    .map(|(f, _)| f)
                    .unwrap_or_else(|_| LineFormat::json(None)),
            }
        };
        self.names.push(name.to_owned());
        self.list.push(format);
        self.names.len() - 1
    }
}

/// Handlers when the logging file names none: console, the rotated file and the errors file.
fn default_handlers() -> Vec<(String, Handler)> {
    let file = |name: &str, level: &str| Handler {
        class: Some(ROTATING.into()),
        level: Some(level.into()),
        formatter: Some("detailed".into()),
        filename: Some(format!("logs/{name}")),
        ..Default::default()
    };
    vec![
        (
            "console".into(),
            Handler {
                class: Some(STREAM.into()),
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

/// A handler's file: relative names lie under `logging.directory` when it is set.
fn file_path(config: &Config, filename: &str) -> PathBuf {
    match &config.logging.directory {
        Some(dir) if !dir.trim().is_empty() && Path::new(filename).is_relative() => {
            Path::new(dir).join(filename)
        }
        _ => PathBuf::from(filename),
    }
}

/// What opening the handlers gave: sinks by handler name, and where each writes.
struct Opened {
    sinks: Vec<Sink>,
    by_name: BTreeMap<String, usize>,
    /// Handler `i`'s destination, for the writer thread.
    destinations: Vec<Box<dyn Destination>>,
    /// Files that could not be opened (reported in one line).
    problems: Vec<String>,
    /// The fix for a log folder of another user, said once however many handlers share it.
    chown: Option<String>,
    /// The handlers' names, in sink order (for their drop counters).
    names: Vec<String>,
}

fn open_handlers(config: &Config, formats: &mut Formats, warnings: &mut Vec<String>) -> Opened {
    let file = &config.logging_config;
    let handlers: Vec<(String, Handler)> = if file.handlers.is_empty() {
        default_handlers()
    } else {
        file.handlers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let console_format = env("LOG_FORMAT");
    let rotate = &config.logging.rotate;
    let mut out = Opened {
        sinks: Vec::new(),
        by_name: BTreeMap::new(),
        destinations: Vec::new(),
        problems: Vec::new(),
        chown: None,
        names: Vec::new(),
    };
    for (name, h) in &handlers {
        if out.sinks.len() == queue::MAX_HANDLERS {
            warnings.push(format!(
                "logging file handlers.{name}: more than {} handlers; handler skipped",
                queue::MAX_HANDLERS
            ));
            continue;
        }
        let implied = if h.filename.is_some() {
            ROTATING
        } else {
            STREAM
        };
        let to_file = match h.class.as_deref().unwrap_or(implied) {
            STREAM => false,
            ROTATING => true,
            other => {
                warnings.push(format!(
                    "logging file handlers.{name}: class {other} is not supported ({STREAM} and {ROTATING} are); handler skipped"
                ));
                continue;
            }
        };
        if let Some(enc) = &h.encoding
            && !matches!(enc.to_ascii_lowercase().as_str(), "utf-8" | "utf8")
        {
            warnings.push(format!(
                "logging file handlers.{name}.encoding {enc}: lines are written as UTF-8"
            ));
        }
        if to_file && !config.logging.files {
            // Console only, as configured (logging.files: false): nothing to report.
            continue;
        }
        let formatter = match (&console_format, to_file) {
            (Some(f), false) => f.clone(),
            _ => h
                .formatter
                .clone()
                .unwrap_or_else(|| config.logging.format.clone()),
        };
        let format = formats.index(file, &formatter, warnings);
        let destination: Box<dyn Destination> = if to_file {
            let Some(filename) = &h.filename else {
                warnings.push(format!(
                    "logging file handlers.{name}: {ROTATING} without a filename; handler skipped"
                ));
                continue;
            };
            let path = file_path(config, filename);
            // Python's 0 means never; unset means the main file's rotation settings.
            let max = h
                .max_bytes
                .unwrap_or((rotate.max_size_mb * 1024.0 * 1024.0) as u64);
            let backups = h.backup_count.unwrap_or(rotate.backups);
            let rotations = stats::rotations(name);
            match RotatingFile::open(&path, max, backups, rotate.enabled, rotations) {
                Ok(f) => Box::new(f),
                Err(e) => {
                    out.problems.push(format!(
                        "log handler {name}: cannot write {}: {e}; continuing without it",
                        path.display()
                    ));
                    if e.kind() == std::io::ErrorKind::PermissionDenied && out.chown.is_none() {
                        out.chown = crate::ownership::chown_hint(&path);
                    }
                    continue;
                }
            }
        } else if h.stream.as_deref() == Some(STDERR) {
            Box::new(Stream::new(std::io::stderr()))
        } else {
            // Python's default is stderr; stdout is where containers' log collectors look.
            Box::new(Stream::new(std::io::stdout()))
        };
        let level = h
            .level
            .as_deref()
            .and_then(parse_level)
            .map_or(LevelFilter::TRACE, LevelFilter::from_level);
        out.destinations.push(destination);
        out.names.push(name.clone());
        out.by_name.insert(name.clone(), out.sinks.len());
        out.sinks.push(Sink { level, format });
    }
    out
}

/// The root level: `LOG_LEVEL`, else the logging file's `root.level`, else `logging.level`.
fn root_level(config: &Config) -> LevelFilter {
    let file_root = config
        .logging_config
        .root
        .as_ref()
        .and_then(|r| r.level.clone());
    let name = env("LOG_LEVEL")
        .or(file_root)
        .unwrap_or_else(|| config.logging.level.clone());
    LevelFilter::from_level(parse_level(&name).unwrap_or(Level::INFO))
}

/// The routes of the six loggers, Python-style: a logger's level is `LOG_LEVEL` when set, else
/// its own or its nearest configured parent's (`blockchain`), else the root's; its records go to
/// its handlers, then, while `propagate` is not false, to its parents' and the root's.
fn routes(config: &Config, opened: &Opened) -> [Route; 6] {
    let file = &config.logging_config;
    let sinks_named = |names: &[String]| -> Vec<usize> {
        names
            .iter()
            .filter_map(|n| opened.by_name.get(n).copied())
            .collect()
    };
    // A root naming no handlers writes to all of them, as every handler did before loggers
    // were routed.
    let root_sinks = match &file.root {
        Some(r) if !r.handlers.is_empty() => sinks_named(&r.handlers),
        _ => (0..opened.sinks.len()).collect(),
    };
    let root = root_level(config);
    let quiet = root.min(LevelFilter::WARN);
    let route = |name: &str| -> (Option<LevelFilter>, Vec<usize>) {
        let mut chain = vec![name];
        if let Some((parent, _)) = name.rsplit_once('.') {
            chain.push(parent);
        }
        let mut level = None;
        let mut sinks = Vec::new();
        let mut propagate = true;
        for n in chain {
            let Some(l) = file.loggers.get(n) else {
                continue;
            };
            level = level.or_else(|| {
                l.level
                    .as_deref()
                    .and_then(parse_level)
                    .map(LevelFilter::from_level)
            });
            if propagate {
                sinks.extend(sinks_named(&l.handlers));
                propagate = l.propagate.unwrap_or(true);
            }
        }
        if propagate {
            sinks.extend(root_sinks.iter().copied());
        }
        // Grouped by formatter, so each formatter runs once per record.
        sinks.sort_by_key(|&i| (opened.sinks[i].format, i));
        sinks.dedup();
        (level, sinks)
    };
    // `LOG_LEVEL` is more specific than any level of the files: it sets our loggers' too.
    let env_level = env("LOG_LEVEL")
        .and_then(|l| parse_level(&l))
        .map(LevelFilter::from_level);
    let ours = |name: &str| {
        let (level, sinks) = route(name);
        Route {
            level: env_level.or(level).unwrap_or(root),
            sinks,
        }
    };
    let (httpx_level, httpx_sinks) = route("httpx");
    let (_, root_only) = route("");
    [
        ours("blockchain.api"),
        ours("blockchain.manager"),
        ours("blockchain.core"),
        ours("httpx"),
        Route {
            level: httpx_level.unwrap_or(quiet),
            sinks: httpx_sinks,
        },
        Route {
            level: quiet,
            sinks: root_only,
        },
    ]
}

/// Installs the global subscriber. Log files that cannot be opened are reported once on the
/// console and skipped: logging must never stop the service.
pub fn init(config: &Config) -> LogGuards {
    let mut warnings = Vec::new();
    let mut formats = Formats::default();
    let mut opened = open_handlers(config, &mut formats, &mut warnings);
    let routes = routes(config, &opened);
    if !config.logging.rotate.enabled {
        warnings.push(
            "logging.rotate.enabled is false: log files are never rotated and grow without bound"
                .into(),
        );
    }
    for name in config.logging_config.loggers.keys() {
        if ABSENT.contains(&name.as_str()) {
            warnings.push(format!(
                "logging file loggers.{name} is unused: there is no {name} library here"
            ));
        } else if !OURS.contains(&name.as_str()) {
            warnings.push(format!(
                "logging file loggers.{name} is unused: it names none of {}",
                OURS.join(", ")
            ));
        }
    }
    let (queue, writer) = match Queue::start(std::mem::take(&mut opened.destinations)) {
        Ok((queue, writer, dropped)) => {
            let counters: Vec<(String, Arc<AtomicU64>)> = std::mem::take(&mut opened.names)
                .into_iter()
                .zip(dropped)
                .collect();
            stats::watch(counters);
            (Some(queue), Some(writer))
        }
        Err(e) => {
            // No thread, no log: the service still runs, and says so where it can.
            eprintln!("cannot start the log writer thread: {e}; logging is off");
            (None, None)
        }
    };
    let rust_log = env("RUST_LOG");
    let plan = Plan {
        formats: formats.list,
        sinks: opened.sinks,
        routes,
        rust_log: rust_log.is_some(),
        queue,
    };
    let filter = rust_log.map(|d| EnvFilter::try_new(d).unwrap_or_else(|_| EnvFilter::new("info")));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(LucidLayer::new(plan))
        .try_init();
    for w in &warnings {
        tracing::warn!("{w}");
    }
    // One line however many file handlers failed: the cause is almost always one folder.
    if !opened.problems.is_empty() {
        tracing::warn!(
            "log handler files cannot be written, logging to the console only: {}{}",
            opened.problems.join("; "),
            opened
                .chown
                .as_ref()
                .map(|h| format!("; {h}"))
                .unwrap_or_default()
        );
    }
    LogGuards(writer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoggerConfig;
    use layer::Logger;

    fn logger(level: &str, handlers: &[&str], propagate: Option<bool>) -> LoggerConfig {
        LoggerConfig {
            level: Some(level.into()),
            handlers: handlers.iter().map(|h| (*h).to_owned()).collect(),
            propagate,
        }
    }

    fn console(name: &str) -> (String, Handler) {
        let h = Handler {
            class: Some(STREAM.into()),
            formatter: Some(name.into()),
            ..Default::default()
        };
        (name.to_owned(), h)
    }

    #[test]
    fn loggers_take_their_own_or_parent_level_and_handlers_until_propagation_stops() {
        let mut c = Config::default();
        let f = &mut c.logging_config;
        f.handlers
            .extend([console("standard"), console("detailed")]);
        f.root = Some(logger("ERROR", &["standard"], None));
        f.loggers
            .insert("blockchain".into(), logger("DEBUG", &["detailed"], None));
        f.loggers.insert(
            "blockchain.api".into(),
            logger("WARNING", &["detailed"], Some(false)),
        );
        let mut formats = Formats::default();
        let opened = open_handlers(&c, &mut formats, &mut Vec::new());
        let r = routes(&c, &opened);
        let (standard, detailed) = (opened.by_name["standard"], opened.by_name["detailed"]);
        let api = &r[Logger::Api as usize];
        assert_eq!(
            (api.level, api.sinks.clone()),
            (LevelFilter::WARN, vec![detailed])
        );
        let manager = &r[Logger::Manager as usize];
        assert_eq!(manager.level, LevelFilter::DEBUG);
        let mut both = vec![standard, detailed];
        both.sort_by_key(|&i| opened.sinks[i].format);
        assert_eq!(manager.sinks, both);
        let library = &r[Logger::Library as usize];
        assert_eq!(
            (library.level, library.sinks.clone()),
            (LevelFilter::ERROR, vec![standard])
        );
    }

    #[test]
    fn version_other_than_1_and_unknown_names_are_refused() {
        let mut c = Config::default();
        c.logging_config.version = Some(2);
        assert_eq!(
            check(&c).map_err(|e| e.0),
            Err("logging_config.version".into())
        );
        c.logging_config.version = Some(1);
        c.logging_config
            .loggers
            .insert("blockchain.api".into(), logger("LOUD", &[], None));
        assert_eq!(
            check(&c).map_err(|e| e.0),
            Err("logging_config.loggers.blockchain.api.level".into())
        );
        c.logging_config
            .loggers
            .insert("blockchain.api".into(), logger("INFO", &["nowhere"], None));
        assert_eq!(
            check(&c).map_err(|e| e.0),
            Err("logging_config.loggers.blockchain.api.handlers".into())
        );
    }
}
