//! One log record as every formatter sees it, and its `%(message)s`: the event's message with
//! its fields as `key=value`.

use std::fmt::Write as _;
use time::OffsetDateTime;
use tracing::Level;

/// A structured field's value, as recorded.
#[derive(Debug, Clone)]
pub enum Value {
    /// A string field (`route = "/x"`): bare in text when it needs no quotes.
    Str(String),
    /// A field recorded through `Display` or `Debug` (`%id`, `?err`), already rendered.
    Text(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

impl Value {
    pub(super) fn write_text(&self, out: &mut String) {
        match self {
            // Quoted only when a reader could not tell where it ends.
            Value::Str(s) if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '"') => {
                let _ = write!(out, "{s:?}");
            }
            Value::Str(s) | Value::Text(s) => out.push_str(s),
            Value::I64(v) => {
                let _ = write!(out, "{v}");
            }
            Value::U64(v) => {
                let _ = write!(out, "{v}");
            }
            Value::F64(v) => {
                let _ = write!(out, "{v}");
            }
            Value::Bool(v) => {
                let _ = write!(out, "{v}");
            }
        }
    }

    pub(super) fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Str(s) | Value::Text(s) => serde_json::Value::from(s.as_str()),
            Value::I64(v) => (*v).into(),
            Value::U64(v) => (*v).into(),
            Value::F64(v) => {
                serde_json::Number::from_f64(*v).map_or(serde_json::Value::Null, Into::into)
            }
            Value::Bool(v) => (*v).into(),
        }
    }
}

/// One log record, as every formatter sees it.
pub struct Record<'a> {
    pub time: OffsetDateTime,
    pub level: Level,
    /// The Lucid logger name (`blockchain.api`, ...).
    pub name: &'a str,
    /// The tracing target (Rust module path unless the event names one).
    pub target: &'a str,
    pub module_path: Option<&'a str>,
    pub file: Option<&'a str>,
    pub line: Option<u32>,
    pub thread: u64,
    pub message: &'a str,
    /// The event's fields, then those of its spans not already present.
    pub fields: &'a [(&'static str, Value)],
}

/// Python's level names.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARNING",
        Level::ERROR => "ERROR",
    }
}

pub(super) fn level_number(level: Level) -> i64 {
    match level {
        Level::TRACE => 5,
        Level::DEBUG => 10,
        Level::INFO => 20,
        Level::WARN => 30,
        Level::ERROR => 40,
    }
}

/// The fields of the access line, shown first and in this shape: `GET /route 200 0.41ms`.
const ACCESS: [&str; 4] = ["method", "route", "status", "latency_ms"];

/// `%(message)s`: the event's message, then its fields as `key=value`. The access line reads
/// `GET /api/v1/blocks/latest 200 0.41ms request_id=...`.
#[cfg(test)]
pub fn text_message(r: &Record) -> String {
    let mut out = String::with_capacity(r.message.len() + 32 * r.fields.len());
    write_text_message(r, &mut out);
    out
}

/// `%(message)s`, appended to `out` (a buffer the caller reuses).
pub fn write_text_message(r: &Record, out: &mut String) {
    let start = out.len();
    let get = |k: &str| r.fields.iter().find(|(n, _)| *n == k).map(|(_, v)| v);
    let access = match ACCESS.map(get) {
        [Some(m), Some(route), Some(s), Some(l)] if r.message == "request" => {
            for (i, v) in [m, route, s].into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                v.write_text(out);
            }
            out.push(' ');
            l.write_text(out);
            out.push_str("ms");
            true
        }
        _ => {
            out.push_str(r.message);
            false
        }
    };
    for (k, v) in r.fields {
        if access && ACCESS.contains(k) {
            continue;
        }
        if out.len() > start {
            out.push(' ');
        }
        out.push_str(k);
        out.push('=');
        v.write_text(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_line_leads_with_method_route_status_and_latency() {
        let fields = [
            ("method", Value::Text("GET".into())),
            ("route", Value::Str("/api/v1/blocks/latest".into())),
            ("status", Value::U64(200)),
            ("latency_ms", Value::F64(0.41)),
            ("request_id", Value::Text("abc".into())),
            ("note", Value::Str("two words".into())),
        ];
        let r = Record {
            time: OffsetDateTime::UNIX_EPOCH,
            level: Level::INFO,
            name: "blockchain.api",
            target: "block_manager::http",
            module_path: None,
            file: None,
            line: None,
            thread: 1,
            message: "request",
            fields: &fields,
        };
        assert_eq!(
            text_message(&r),
            "GET /api/v1/blocks/latest 200 0.41ms request_id=abc note=\"two words\""
        );
    }
}
