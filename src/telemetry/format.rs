//! Line formats of Python's `logging`: %-style format strings (`%(asctime)s - %(name)s ...`)
//! and JSON lines. Pure: a record in, one line of text out.

use super::datefmt::{rfc3339, strftime, strftime_cached};
use super::record::{Record, level_name, level_number, push_i64};

/// A record attribute a format string can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attr {
    Asctime,
    Created,
    Filename,
    FuncName,
    Levelname,
    Levelno,
    Lineno,
    Message,
    Module,
    Msecs,
    Name,
    Pathname,
    Process,
    ProcessName,
    Thread,
    ThreadName,
    /// A name we do not know: printed as `-`, warned about at start-up.
    Unknown,
}

impl Attr {
    fn parse(name: &str) -> Self {
        match name {
            "asctime" => Self::Asctime,
            "created" => Self::Created,
            "filename" => Self::Filename,
            "funcName" => Self::FuncName,
            "levelname" => Self::Levelname,
            "levelno" => Self::Levelno,
            "lineno" => Self::Lineno,
            "message" => Self::Message,
            "module" => Self::Module,
            "msecs" => Self::Msecs,
            "name" => Self::Name,
            "pathname" => Self::Pathname,
            "process" => Self::Process,
            "processName" => Self::ProcessName,
            "thread" => Self::Thread,
            "threadName" => Self::ThreadName,
            _ => Self::Unknown,
        }
    }
}

/// `%-08.3d`-style conversion flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spec {
    left: bool,
    zero: bool,
    width: usize,
    precision: Option<usize>,
    conv: char,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    Field(Attr, Spec),
}

/// A parsed formatter: how one record becomes one line.
#[derive(Debug, Clone)]
pub struct LineFormat(Kind);

#[derive(Debug, Clone)]
enum Kind {
    /// A Python %-style format string and its optional strftime `datefmt`.
    Text {
        pieces: Vec<Piece>,
        datefmt: Option<String>,
        /// `pieces` in runs: those whose text is the same for every record of a callsite, and
        /// the others.
        runs: Vec<Run>,
        /// Names this format in the per-thread cache of fixed runs (unique per parse).
        id: u64,
    },
    /// One JSON object per line; `datefmt`, when given, shapes `timestamp`.
    Json { datefmt: Option<String> },
}

/// `format` of the built-in `standard` formatter (Lucid's).
pub const STANDARD: &str = "%(asctime)s - %(name)s - %(levelname)s - %(message)s";
/// `format` of the built-in `detailed` formatter.
pub const DETAILED: &str =
    "%(asctime)s - %(name)s - %(levelname)s - %(module)s:%(funcName)s:%(lineno)d - %(message)s";

impl LineFormat {
    /// Parses a %-style format string. Unknown attribute names are kept (printed as `-`) and
    /// returned, so start-up can name them.
    pub fn text(format: &str, datefmt: Option<&str>) -> Result<(Self, Vec<String>), String> {
        let mut pieces = Vec::new();
        let mut unknown = Vec::new();
        let mut lit = String::new();
        let mut rest = format;
        while let Some(at) = rest.find('%') {
            lit.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                lit.push('%');
                rest = tail;
                continue;
            }
            let Some(tail) = after.strip_prefix('(') else {
                // A lone % is printed as it stands.
                lit.push('%');
                rest = after;
                continue;
            };
            let close = tail
                .find(')')
                .ok_or_else(|| format!("unclosed %( at {:?}", &rest[at..]))?;
            let name = &tail[..close];
            let (spec, tail) = parse_spec(&tail[close + 1..])
                .ok_or_else(|| format!("%({name}) lacks a conversion such as s or d"))?;
            let attr = Attr::parse(name);
            if attr == Attr::Unknown && !unknown.iter().any(|u| u == name) {
                unknown.push(name.to_owned());
            }
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Field(attr, spec));
            rest = tail;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        let datefmt = datefmt.map(str::to_owned);
        let runs = runs(&pieces);
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok((
            Self(Kind::Text {
                pieces,
                datefmt,
                runs,
                id,
            }),
            unknown,
        ))
    }

    /// JSON lines; `datefmt`, when given, shapes `timestamp` (else RFC 3339 in UTC).
    pub fn json(datefmt: Option<&str>) -> Self {
        Self(Kind::Json {
            datefmt: datefmt.map(str::to_owned),
        })
    }

    /// Whether rendering uses `%(message)s` (worth computing once per record).
    pub fn needs_message(&self) -> bool {
        match &self.0 {
            Kind::Text { pieces, .. } => pieces
                .iter()
                .any(|p| matches!(p, Piece::Field(Attr::Message, _))),
            Kind::Json { .. } => false,
        }
    }

    /// Appends the record's line and a newline to `out`; `message` is its `%(message)s`.
    pub fn render(&self, r: &Record, message: &str, out: &mut String) {
        match &self.0 {
            Kind::Text {
                pieces,
                datefmt,
                runs,
                id,
            } => {
                let datefmt = datefmt.as_deref();
                let each = |out: &mut String, range: &std::ops::Range<usize>| {
                    for p in &pieces[range.clone()] {
                        render_piece(out, p, r, message, datefmt);
                    }
                };
                let key = (*id, r.callsite);
                FIXED.with_borrow_mut(|fixed| {
                    let texts = if r.callsite == 0 {
                        None
                    } else if let Some(at) = fixed.iter().position(|f| f.key == key) {
                        Some(&fixed[at].texts)
                    } else if fixed.len() < FIXED_PER_THREAD {
                        let texts = runs
                            .iter()
                            .filter(|run| run.fixed)
                            .map(|run| {
                                let mut text = String::new();
                                each(&mut text, &run.pieces);
                                text
                            })
                            .collect();
                        fixed.push(Fixed { key, texts });
                        fixed.last().map(|f| &f.texts)
                    } else {
                        None
                    };
                    let mut kept = texts.map(|t| t.iter());
                    for run in runs {
                        match kept.as_mut().filter(|_| run.fixed).and_then(Iterator::next) {
                            Some(text) => out.push_str(text),
                            None => each(out, &run.pieces),
                        }
                    }
                });
            }
            Kind::Json { datefmt } => {
                let mut map = serde_json::Map::new();
                let mut ts = String::new();
                match datefmt {
                    Some(f) => strftime(&mut ts, r.time, f),
                    None => rfc3339(&mut ts, r.time),
                }
                map.insert("timestamp".into(), ts.into());
                map.insert("level".into(), level_name(r.level).into());
                map.insert("name".into(), r.name.into());
                map.insert("target".into(), r.target.into());
                map.insert("message".into(), r.message.into());
                for (k, v) in r.fields {
                    // A field named like one of ours keeps both.
                    let key = if map.contains_key(*k) {
                        format!("field_{k}")
                    } else {
                        (*k).to_owned()
                    };
                    map.insert(key, v.to_json());
                }
                if let Ok(text) = serde_json::to_string(&map) {
                    out.push_str(&text);
                }
            }
        }
        out.push('\n');
    }
}

/// Consecutive pieces that are all fixed per callsite, or all not.
#[derive(Debug, Clone)]
struct Run {
    fixed: bool,
    pieces: std::ops::Range<usize>,
}

/// Whether a piece reads the same for every record of one callsite: literals and what comes
/// from the callsite's metadata (logger, level, module, function, line, file) or the process.
fn is_fixed(p: &Piece) -> bool {
    match p {
        Piece::Lit(_) => true,
        Piece::Field(attr, _) => !matches!(
            attr,
            Attr::Asctime
                | Attr::Created
                | Attr::Msecs
                | Attr::Message
                | Attr::Thread
                | Attr::ThreadName
        ),
    }
}

fn runs(pieces: &[Piece]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        let fixed = is_fixed(p);
        match runs.last_mut() {
            Some(run) if run.fixed == fixed => run.pieces.end = i + 1,
            _ => runs.push(Run {
                fixed,
                pieces: i..i + 1,
            }),
        }
    }
    runs
}

/// The text of a formatter's fixed runs for one callsite.
struct Fixed {
    /// The formatter's id and the callsite's address.
    key: (u64, usize),
    texts: Vec<String>,
}

/// Callsites whose fixed text a thread keeps: the busy ones are few (the access line above
/// all), and past this many the rest are formatted piece by piece.
const FIXED_PER_THREAD: usize = 64;

thread_local! {
    /// This thread's fixed runs per formatter and callsite: the access line's
    /// ` - blockchain.api - INFO - observe:call:189 - ` is one copy instead of eleven pieces.
    static FIXED: std::cell::RefCell<Vec<Fixed>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn render_piece(out: &mut String, p: &Piece, r: &Record, message: &str, datefmt: Option<&str>) {
    match p {
        Piece::Lit(s) => out.push_str(s),
        Piece::Field(attr, spec) => render_attr(out, *attr, spec, r, message, datefmt),
    }
}

/// Parses `-08.3d` after `%(name)`: flags, width, precision, conversion; and what follows.
fn parse_spec(s: &str) -> Option<(Spec, &str)> {
    let mut spec = Spec {
        left: false,
        zero: false,
        width: 0,
        precision: None,
        conv: 's',
    };
    let mut chars = s.char_indices().peekable();
    while let Some(&(_, c)) = chars.peek() {
        match c {
            '-' => spec.left = true,
            '0' => spec.zero = true,
            '+' | ' ' | '#' => {}
            _ => break,
        }
        chars.next();
    }
    let digits = |chars: &mut std::iter::Peekable<std::str::CharIndices>| {
        let mut n: Option<usize> = None;
        while let Some(&(_, c)) = chars.peek() {
            let Some(d) = c.to_digit(10) else { break };
            n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
            chars.next();
        }
        n
    };
    spec.width = digits(&mut chars).unwrap_or(0).min(256);
    if chars.peek().is_some_and(|&(_, c)| c == '.') {
        chars.next();
        spec.precision = Some(digits(&mut chars).unwrap_or(0).min(64));
    }
    let (i, conv) = chars.next()?;
    if !"sdiurfFeEgGxXa".contains(conv) {
        return None;
    }
    spec.conv = conv;
    Some((spec, &s[i + conv.len_utf8()..]))
}

/// A value before conversion.
enum Raw<'a> {
    S(&'a str),
    Owned(String),
    I(i64),
    F(f64),
}

/// The emitting module's last path segment: tracing has no function names.
fn module_segment<'a>(r: &Record<'a>) -> &'a str {
    let path = r.module_path.unwrap_or(r.target);
    path.rsplit("::").next().unwrap_or(path)
}

/// Python's module is the file's name without `.py`; a `mod.rs` is named by its folder.
fn module_name(file: &str) -> &str {
    let mut parts = file.rsplit(['/', '\\']);
    let base = parts.next().unwrap_or(file);
    match base.strip_suffix(".rs") {
        Some("mod") => parts.next().unwrap_or("mod"),
        Some(stem) => stem,
        None => base,
    }
}

fn render_attr(
    out: &mut String,
    attr: Attr,
    spec: &Spec,
    r: &Record,
    message: &str,
    datefmt: Option<&str>,
) {
    let file = r.file.unwrap_or("-");
    let raw = match attr {
        Attr::Asctime => {
            // Without width or precision the time is written straight into the line.
            let plain = spec.width == 0 && spec.precision.is_none() && spec.conv == 's';
            let mut own = String::new();
            let s = if plain { &mut *out } else { &mut own };
            match datefmt {
                Some(f) => strftime_cached(s, r.time, f),
                None => {
                    strftime_cached(s, r.time, "%Y-%m-%d %H:%M:%S");
                    let ms = r.time.millisecond();
                    s.push(',');
                    for d in [ms / 100, ms / 10 % 10, ms % 10] {
                        s.push(char::from(b'0' + d as u8));
                    }
                }
            }
            if plain {
                return;
            }
            Raw::Owned(own)
        }
        Attr::Created => {
            Raw::F(r.time.unix_timestamp() as f64 + f64::from(r.time.nanosecond()) / 1e9)
        }
        Attr::Filename => Raw::S(file.rsplit(['/', '\\']).next().unwrap_or(file)),
        Attr::FuncName => Raw::S(module_segment(r)),
        Attr::Levelname => Raw::S(level_name(r.level)),
        Attr::Levelno => Raw::I(level_number(r.level)),
        Attr::Lineno => Raw::I(i64::from(r.line.unwrap_or(0))),
        Attr::Message => Raw::S(message),
        Attr::Module => Raw::S(module_name(file)),
        Attr::Msecs => Raw::F(f64::from(r.time.nanosecond()) / 1e6),
        Attr::Name => Raw::S(r.name),
        Attr::Pathname => Raw::S(file),
        Attr::Process => Raw::I(i64::from(std::process::id())),
        Attr::ProcessName => Raw::S("MainProcess"),
        Attr::Thread => Raw::I(r.thread as i64),
        Attr::ThreadName => Raw::Owned(
            std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_owned(),
        ),
        Attr::Unknown => Raw::S("-"),
    };
    convert(out, raw, spec);
}

/// Applies a conversion (`s`, `d`, `f`, `x`...) with width, precision and alignment.
fn convert(out: &mut String, raw: Raw, spec: &Spec) {
    // The usual `%(name)s` and `%(lineno)d`, without width or precision: written straight in.
    if spec.width == 0 && spec.precision.is_none() {
        match (&raw, spec.conv) {
            (Raw::S(s), 's' | 'a') => return out.push_str(s),
            (Raw::Owned(s), 's' | 'a') => return out.push_str(s),
            (Raw::I(v), 'd' | 'i' | 'u' | 's' | 'a') => return push_i64(out, *v),
            _ => {}
        }
    }
    let numeric = !matches!(spec.conv, 's' | 'a');
    let mut text = match (&raw, spec.conv) {
        (Raw::I(v), 'x') => format!("{v:x}"),
        (Raw::I(v), 'X') => format!("{v:X}"),
        (Raw::F(v), 'x' | 'X') => format!("{:x}", *v as i64),
        (Raw::I(v), 'd' | 'i' | 'u') => v.to_string(),
        (Raw::F(v), 'd' | 'i' | 'u') => (v.trunc() as i64).to_string(),
        (Raw::I(v), 'f' | 'F' | 'e' | 'E' | 'g' | 'G') => {
            format!("{:.*}", spec.precision.unwrap_or(6), *v as f64)
        }
        (Raw::F(v), 'f' | 'F' | 'e' | 'E' | 'g' | 'G') => {
            format!("{:.*}", spec.precision.unwrap_or(6), v)
        }
        (Raw::I(v), _) => v.to_string(),
        (Raw::F(v), _) => v.to_string(),
        (Raw::S(s), _) => (*s).to_owned(),
        (Raw::Owned(s), _) => s.clone(),
    };
    if let (Some(p), 's' | 'a', Raw::S(_) | Raw::Owned(_)) = (spec.precision, spec.conv, &raw)
        && let Some((cut, _)) = text.char_indices().nth(p)
    {
        text.truncate(cut);
    }
    let len = text.chars().count();
    let pad = spec.width.saturating_sub(len);
    if pad == 0 {
        out.push_str(&text);
    } else if spec.left {
        out.push_str(&text);
        out.extend(std::iter::repeat_n(' ', pad));
    } else if spec.zero && numeric && !matches!(raw, Raw::S(_) | Raw::Owned(_)) {
        let digits = text.strip_prefix('-');
        if digits.is_some() {
            out.push('-');
        }
        out.extend(std::iter::repeat_n('0', pad));
        out.push_str(digits.unwrap_or(&text));
    } else {
        out.extend(std::iter::repeat_n(' ', pad));
        out.push_str(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::record::{Value, text_message};
    use time::OffsetDateTime;
    use tracing::Level;

    fn record<'a>(fields: &'a [(&'static str, Value)], message: &'a str) -> Record<'a> {
        Record {
            // 2024-01-02 03:04:05.678901 UTC
            time: OffsetDateTime::from_unix_timestamp_nanos(1_704_164_645_678_901_000)
                .expect("valid time"),
            level: Level::WARN,
            name: "blockchain.api",
            target: "block_manager::http",
            module_path: Some("block_manager::api::observe"),
            file: Some("src/api/observe.rs"),
            line: Some(97),
            thread: 7,
            callsite: 0,
            message,
            fields,
        }
    }

    fn line(format: &str, datefmt: Option<&str>, r: &Record) -> String {
        let (f, unknown) = LineFormat::text(format, datefmt).expect("parses");
        assert!(unknown.is_empty(), "{unknown:?}");
        let mut out = String::new();
        f.render(r, &text_message(r), &mut out);
        out
    }

    #[test]
    fn standard_and_detailed_lines_read_as_pythons() {
        let r = record(&[("height", Value::U64(3))], "stored");
        assert_eq!(
            line(STANDARD, Some("%Y-%m-%d %H:%M:%S"), &r),
            "2024-01-02 03:04:05 - blockchain.api - WARNING - stored height=3\n"
        );
        assert_eq!(
            line(DETAILED, None, &r),
            "2024-01-02 03:04:05,678 - blockchain.api - WARNING - observe:observe:97 - stored height=3\n"
        );
    }

    #[test]
    fn widths_alignment_and_percent_signs_follow_python() {
        let r = record(&[], "m");
        assert_eq!(
            line(
                "[%(levelname)-8s|%(lineno)5d|%(lineno)05d|%(name).5s] 100%% %(message)s",
                None,
                &r
            ),
            "[WARNING |   97|00097|block] 100% m\n"
        );
        assert_eq!(
            line("%(msecs)03d %(thread)d %(filename)s %(levelno)s", None, &r),
            "678 7 observe.rs 30\n"
        );
        assert_eq!(module_name("src/telemetry/mod.rs"), "telemetry");
        assert_eq!(module_name("src/api/observe.rs"), "observe");
    }

    #[test]
    fn lines_read_the_same_whether_a_callsite_text_is_kept_or_not() {
        let fields = [("height", Value::U64(3))];
        let first = record(&fields, "stored");
        let later = Record {
            time: first.time + time::Duration::milliseconds(1234),
            thread: 9,
            ..record(&fields, "stored again")
        };
        for format in [
            DETAILED,
            STANDARD,
            "%(levelname)-8s%(name)s %(thread)d [%(lineno)03d] %(message)s %(module)s",
            "%(message)s",
            "plain",
        ] {
            let (f, _) = LineFormat::text(format, None).expect("parses");
            let (other, _) = LineFormat::text("%(name)s|%(message)s", None).expect("parses");
            for r in [&first, &later, &first] {
                let uncached = {
                    let mut out = String::new();
                    f.render(r, &text_message(r), &mut out);
                    out
                };
                let kept = Record {
                    callsite: 42,
                    ..record(r.fields, r.message)
                };
                let kept = Record {
                    time: r.time,
                    thread: r.thread,
                    ..kept
                };
                for _ in 0..2 {
                    let mut out = String::new();
                    f.render(&kept, &text_message(&kept), &mut out);
                    assert_eq!(out, uncached, "{format}");
                    // Another format at the same callsite keeps its own text.
                    let mut out = String::new();
                    other.render(&kept, &text_message(&kept), &mut out);
                    assert_eq!(out, format!("blockchain.api|{}\n", text_message(r)));
                }
            }
        }
    }

    #[test]
    fn unknown_fields_are_reported_and_malformed_ones_refused() {
        let (_, unknown) = LineFormat::text("%(taskName)s %(message)s", None).expect("parses");
        assert_eq!(unknown, ["taskName"]);
        assert!(LineFormat::text("%(message)", None).is_err());
        assert!(LineFormat::text("%(message", None).is_err());
    }

    #[test]
    fn json_lines_carry_level_name_and_typed_fields() {
        let fields = [
            ("status", Value::U64(200)),
            ("name", Value::Str("x".into())),
        ];
        let r = record(&fields, "request");
        let mut out = String::new();
        LineFormat::json(None).render(&r, "", &mut out);
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(v["level"], "WARNING");
        assert_eq!(v["name"], "blockchain.api");
        assert_eq!(v["status"], 200);
        assert_eq!(v["field_name"], "x");
        assert_eq!(v["timestamp"], "2024-01-02T03:04:05.678901Z");
    }
}
