//! One log record as every formatter sees it, and its `%(message)s`: the event's message with
//! its fields as `key=value`.

use std::fmt::Write as _;
use time::OffsetDateTime;
use tracing::Level;

/// A structured field's value, as recorded.
#[derive(Debug, Clone)]
pub enum Value {
    /// A string field (`route = "/x"`): bare in text when it needs no quotes.
    Str(Text),
    /// A field recorded through `Display` or `Debug` (`%id`, `?err`), already rendered.
    Text(Text),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

/// Bytes a [`Text`] holds without a heap allocation: enough for a route template, a request
/// id, a client address or a method, which every access line records.
const INLINE: usize = 62;

/// A field's text, held inline when short (recording a field then allocates nothing).
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(String),
}

impl Text {
    pub fn new() -> Self {
        Self(Repr::Inline {
            len: 0,
            bytes: [0; INLINE],
        })
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only whole `str`s are ever copied in (see `push_str`).
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(s) => s,
        }
    }

    pub fn push_str(&mut self, s: &str) {
        match &mut self.0 {
            Repr::Inline { len, bytes } => {
                let at = usize::from(*len);
                if let Some(room) = bytes.get_mut(at..at + s.len()) {
                    room.copy_from_slice(s.as_bytes());
                    *len += s.len() as u8;
                } else {
                    let mut heap = String::with_capacity(at + s.len());
                    heap.push_str(std::str::from_utf8(&bytes[..at]).unwrap_or_default());
                    heap.push_str(s);
                    self.0 = Repr::Heap(heap);
                }
            }
            Repr::Heap(h) => h.push_str(s),
        }
    }
}

impl Default for Text {
    fn default() -> Self {
        Self::new()
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        let mut t = Self::new();
        t.push_str(s);
        t
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl Value {
    pub(super) fn write_text(&self, out: &mut String) {
        match self {
            Value::Str(s) => {
                let s = s.as_str();
                // Quoted only when a reader could not tell where it ends. Plain ASCII without
                // spaces or quotes (routes, ids, addresses) is told at a glance.
                let plain = !s.is_empty()
                    && (s.bytes().all(|b| b > b' ' && b != b'"' && b < 0x7f)
                        || !s.chars().any(|c| c.is_whitespace() || c == '"'));
                if plain {
                    out.push_str(s);
                } else {
                    let _ = write!(out, "{s:?}");
                }
            }
            Value::Text(s) => out.push_str(s),
            Value::I64(v) => push_i64(out, *v),
            Value::U64(v) => push_u64(out, *v),
            Value::F64(v) => write_f64(out, *v),
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

/// `v` as `Display` writes it. A value of whole thousandths (the access line's latency in
/// milliseconds) is written by hand: the shortest form of the double nearest to a decimal of
/// three places is that decimal with trailing zeros dropped (doubles this small lie far
/// closer together than a thousandth), and the general float formatting was a noticeable
/// part of a line.
fn write_f64(out: &mut String, v: f64) {
    // `n / 1e3 == v`: `v` is the double nearest to n thousandths (division rounds correctly).
    let n = (v * 1e3).round() as u64;
    // Positive only: `-0.0` prints its sign.
    if v.is_sign_positive() && v < 1e9 && n as f64 / 1e3 == v {
        push_u64(out, n / 1000);
        let frac = n % 1000;
        if frac != 0 {
            let digits = [frac / 100, frac / 10 % 10, frac % 10].map(|d| b'0' + d as u8);
            let keep = if !frac.is_multiple_of(10) {
                3
            } else if !frac.is_multiple_of(100) {
                2
            } else {
                1
            };
            out.push('.');
            out.push_str(std::str::from_utf8(&digits[..keep]).unwrap_or_default());
        }
        return;
    }
    let _ = write!(out, "{v}");
}

/// `v` in decimal, as `Display` writes it, without the formatting machinery (statuses, line
/// numbers and latencies are in every access line).
pub(super) fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[at..]).unwrap_or_default());
}

pub(super) fn push_i64(out: &mut String, v: i64) {
    if v < 0 {
        out.push('-');
    }
    push_u64(out, v.unsigned_abs());
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
    /// The event's callsite (the address of its `'static` metadata), 0 when there is none:
    /// what a formatter keys the text it keeps per callsite by.
    pub callsite: usize,
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
    // The access event names its fields in this order: found without a search.
    let leading =
        r.fields.len() >= ACCESS.len() && r.fields.iter().zip(ACCESS).all(|((n, _), k)| *n == k);
    let access = if r.message != "request" {
        None
    } else if leading {
        Some([0, 1, 2, 3].map(|i| &r.fields[i].1))
    } else {
        let get = |k: &str| r.fields.iter().find(|(n, _)| *n == k).map(|(_, v)| v);
        match ACCESS.map(get) {
            [Some(m), Some(route), Some(s), Some(l)] => Some([m, route, s, l]),
            _ => None,
        }
    };
    let rest = match access {
        Some([m, route, s, l]) => {
            for (i, v) in [m, route, s].into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                v.write_text(out);
            }
            out.push(' ');
            l.write_text(out);
            out.push_str("ms");
            if leading {
                &r.fields[ACCESS.len()..]
            } else {
                r.fields
            }
        }
        None => {
            out.push_str(r.message);
            r.fields
        }
    };
    for (k, v) in rest {
        if access.is_some() && ACCESS.contains(k) {
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
    fn latencies_read_as_display_prints_them() {
        for v in [
            0.0, -0.0, 0.001, 0.01, 0.05, 0.1, 0.12, 0.102, 3.007, 0.41, 1.0, 1.5, 12.345, 100.1,
            999.999, 1234.5, 0.1234, 1e10, 5e-5, -1.5,
        ] {
            let mut out = String::new();
            write_f64(&mut out, v);
            assert_eq!(out, v.to_string(), "{v}");
        }
    }

    #[test]
    fn integers_read_as_display_prints_them() {
        for v in [0, 1, -1, 9, 10, 99, 200, 404, -4711, i64::MAX, i64::MIN] {
            let mut out = String::new();
            push_i64(&mut out, v);
            assert_eq!(out, v.to_string());
        }
        for v in [0, 7, 1_000_000, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, v);
            assert_eq!(out, v.to_string());
        }
    }

    #[test]
    fn texts_hold_short_and_long_values_alike() {
        let short = Text::from("/api/v1/blocks/height/{height}");
        assert_eq!(short.as_str(), "/api/v1/blocks/height/{height}");
        let mut grown = Text::from(&*"x".repeat(60));
        grown.push_str("yyyy");
        assert_eq!(grown.as_str(), format!("{}yyyy", "x".repeat(60)));
        let mut t = Text::new();
        std::fmt::Write::write_fmt(&mut t, format_args!("{}-{}", "é", 7)).unwrap();
        assert_eq!(&*t, "é-7");
    }

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
            callsite: 0,
            message: "request",
            fields: &fields,
        };
        assert_eq!(
            text_message(&r),
            "GET /api/v1/blocks/latest 200 0.41ms request_id=abc note=\"two words\""
        );
        // The same fields in another order read the same.
        let mut shuffled = fields.clone();
        shuffled.swap(0, 4);
        shuffled.swap(1, 3);
        let r = Record {
            fields: &shuffled,
            ..r
        };
        assert_eq!(
            text_message(&r),
            "GET /api/v1/blocks/latest 200 0.41ms request_id=abc note=\"two words\""
        );
        // Another message keeps every field as key=value.
        let r = Record {
            message: "stored",
            ..r
        };
        assert!(text_message(&r).starts_with("stored request_id=abc latency_ms=0.41 status=200"));
    }
}
