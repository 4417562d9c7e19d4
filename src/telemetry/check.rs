//! The logging settings that stop start-up: a dictConfig version other than 1, an unknown
//! `LOG_FORMAT`, a malformed format string, unknown levels, and names that point nowhere.

use super::format::LineFormat;
use super::{STDERR, STDOUT, env};
use crate::config::{Config, LoggingFile, parse_level};

/// Built-in formatters, usable without defining them in the logging file.
fn defined_format(file: &LoggingFile, name: &str) -> bool {
    file.formatters.contains_key(name) || matches!(name, "standard" | "detailed" | "json")
}

fn level_of(key: &str, level: &Option<String>) -> Result<(), (String, String, String)> {
    match level {
        Some(l) if parse_level(l).is_none() => Err((
            key.to_owned(),
            l.clone(),
            "expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL".into(),
        )),
        _ => Ok(()),
    }
}

/// Logging settings that stop start-up: `(key, value, why)`. The key is a config path, or
/// an environment variable's name.
pub fn check(c: &Config) -> Result<(), (String, String, String)> {
    let file = &c.logging_config;
    if let Some(v) = file.version
        && v != 1
    {
        return Err((
            "logging_config.version".into(),
            v.to_string(),
            "expected 1, the only dictConfig schema version".into(),
        ));
    }
    if let Some(f) = env("LOG_FORMAT")
        && !defined_format(file, &f)
    {
        return Err((
            "LOG_FORMAT".into(),
            f,
            "expected json, standard, detailed or a formatter of the logging file".into(),
        ));
    }
    for (name, f) in &file.formatters {
        if let Some(text) = &f.format
            && let Err(why) = LineFormat::text(text, None)
        {
            let key = format!("logging_config.formatters.{name}.format");
            return Err((key, text.clone(), why));
        }
    }
    for (name, h) in &file.handlers {
        let key = |k: &str| format!("logging_config.handlers.{name}.{k}");
        level_of(&key("level"), &h.level)?;
        if let Some(f) = &h.formatter
            && !defined_format(file, f)
        {
            return Err((key("formatter"), f.clone(), "names no formatter".into()));
        }
        if let Some(s) = &h.stream
            && s != STDOUT
            && s != STDERR
        {
            let why = format!("expected {STDOUT} or {STDERR}");
            return Err((key("stream"), s.clone(), why));
        }
    }
    let root = file.root.iter().map(|r| ("root".to_owned(), r));
    let named = file
        .loggers
        .iter()
        .map(|(n, l)| (format!("loggers.{n}"), l));
    for (name, logger) in root.chain(named) {
        level_of(&format!("logging_config.{name}.level"), &logger.level)?;
        let defined = |h: &String| {
            file.handlers.contains_key(h)
                || (file.handlers.is_empty()
                    && ["console", "file", "error_file"].contains(&h.as_str()))
        };
        if let Some(h) = logger.handlers.iter().find(|h| !defined(h)) {
            let key = format!("logging_config.{name}.handlers");
            return Err((
                key,
                h.clone(),
                "names no handler of the logging file".into(),
            ));
        }
    }
    let mb = c.logging.rotate.max_size_mb;
    if !(mb.is_finite() && mb > 0.0 && mb < 1e6) {
        let why = "expected a positive size in MiB".into();
        return Err(("logging.rotate.max_size_mb".into(), mb.to_string(), why));
    }
    Ok(())
}
