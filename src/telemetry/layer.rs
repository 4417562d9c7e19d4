//! The tracing layer: maps each event to its Lucid logger, applies that logger's level and
//! handlers, formats the record once per formatter and hands the bytes to each handler's writer.

use super::format::LineFormat;
use super::queue::Queue;
use super::record::{Record, Text, Value, write_text_message};
use std::borrow::Cow;
use std::fmt::Write as _;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber, span};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The Lucid loggers our modules map to, and the library loggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logger {
    /// `blockchain.api`: the HTTP layer (`src/api`, the access line, axum, tower-http).
    Api,
    /// `blockchain.manager`: ledger, store, sync, app and the rest of the crate.
    Manager,
    /// `blockchain.core`: chain logic (`src/chain`).
    Core,
    /// `httpx`: our upstream client (`src/sync/client.rs`).
    Httpx,
    /// `httpx`, from the HTTP client libraries (reqwest, hyper's client): quiet below WARNING
    /// unless `loggers.httpx` sets a level.
    HttpxLibrary,
    /// Any other library: the root logger's handlers, quiet below WARNING.
    Library,
}

/// `name` is `prefix` or lies under it as a module path.
fn under(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

impl Logger {
    /// The logger of a tracing target (the emitting module unless the event names one).
    pub fn of(target: &str) -> Self {
        if let Some(rest) = target.strip_prefix("block_manager") {
            let rest = rest.strip_prefix("::").unwrap_or(rest);
            return if under(rest, "api") || under(rest, "http") {
                Self::Api
            } else if under(rest, "chain") {
                Self::Core
            } else if under(rest, "sync::client") {
                Self::Httpx
            } else {
                Self::Manager
            };
        }
        if ["reqwest", "hyper_util::client", "hyper::client"]
            .iter()
            .any(|p| under(target, p))
        {
            Self::HttpxLibrary
        } else if under(target, "axum") || under(target, "tower_http") {
            Self::Api
        } else {
            Self::Library
        }
    }

    /// The name `%(name)s` prints.
    pub fn name(self, target: &str) -> Cow<'_, str> {
        match self {
            Self::Api => "blockchain.api".into(),
            Self::Manager => "blockchain.manager".into(),
            Self::Core => "blockchain.core".into(),
            Self::Httpx | Self::HttpxLibrary => "httpx".into(),
            Self::Library => target.replace("::", ".").into(),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where one logger's records go.
#[derive(Debug, Clone)]
pub struct Route {
    /// Most verbose level the logger passes on.
    pub level: LevelFilter,
    /// Indexes into the sinks, ordered by formatter so each formatter runs once per record.
    pub sinks: Vec<usize>,
}

/// One handler that is written to (its destination is the writer thread's, same index).
pub struct Sink {
    pub level: LevelFilter,
    pub format: usize,
}

/// Everything the layer needs, built once at start-up.
pub struct Plan {
    pub formats: Vec<LineFormat>,
    pub sinks: Vec<Sink>,
    /// Indexed by [`Logger`].
    pub routes: [Route; 6],
    /// `RUST_LOG` decides levels: logger levels step aside (handler levels still apply).
    pub rust_log: bool,
    /// The writer thread's queue; `None` when it could not be started (nothing is written).
    pub queue: Option<Queue>,
}

pub struct LucidLayer {
    plan: Plan,
    /// Most verbose level any handler writes: nothing beyond it is ever recorded.
    max: LevelFilter,
}

impl LucidLayer {
    pub fn new(plan: Plan) -> Self {
        let max = plan
            .sinks
            .iter()
            .map(|s| s.level)
            .max()
            .unwrap_or(LevelFilter::OFF);
        Self { plan, max }
    }

    fn wanted(&self, meta: &Metadata) -> bool {
        let level = *meta.level();
        if meta.is_span() {
            // Spans carry request ids to the events inside them, whatever their own logger.
            return level <= self.max;
        }
        let route = &self.plan.routes[Logger::of(meta.target()).index()];
        (self.plan.rust_log || level <= route.level)
            && route
                .sinks
                .iter()
                .any(|&i| level <= self.plan.sinks[i].level)
    }
}

/// Span fields, kept in the span's extensions.
struct SpanFields(Vec<(&'static str, Value)>);

/// Collects an event's message and fields.
struct Collect<'a> {
    message: Option<&'a mut String>,
    fields: &'a mut Vec<(&'static str, Value)>,
}

impl Collect<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        // `log` records bridged into tracing carry these; they are not the record's fields.
        if field.name().starts_with("log.") {
            return;
        }
        self.fields.push((field.name(), value));
    }

    /// The event's message, when `field` is it and it is wanted.
    fn message(&mut self, field: &Field) -> Option<&mut String> {
        if field.name() == "message" {
            self.message.as_deref_mut()
        } else {
            None
        }
    }
}

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // The message is written where it is kept, not into a string of its own first.
        if let Some(m) = self.message(field) {
            let _ = write!(m, "{value:?}");
            return;
        }
        let mut text = Text::new();
        let _ = write!(text, "{value:?}");
        self.put(field, Value::Text(text));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(m) = self.message(field) {
            m.push_str(value);
            return;
        }
        self.put(field, Value::Str(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::U64(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
}

/// One record on its way to the queue: its message and fields, its line per formatter, and
/// its `%(message)s`.
#[derive(Default)]
struct Staged {
    message: String,
    fields: Vec<(&'static str, Value)>,
    /// The lines, one after another.
    lines: String,
    /// Which handlers each line is for, and where it lies in `lines`.
    each: Vec<(u64, std::ops::Range<usize>)>,
    text: String,
}

thread_local! {
    /// This thread's record being formatted: reused, so a record costs no allocation for its
    /// fields or lines, and all of its lines are queued at once.
    static LINE: std::cell::RefCell<Staged> = std::cell::RefCell::new(Staged {
        message: String::with_capacity(128),
        // Room for the access line's fields without growing.
        fields: Vec::with_capacity(8),
        lines: String::with_capacity(1024),
        each: Vec::with_capacity(4),
        text: String::with_capacity(256),
    });
    /// This thread's number, as `%(thread)d` prints it (std gives no stable accessor).
    static THREAD: u64 = {
        let id = format!("{:?}", std::thread::current().id());
        id.chars().filter(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0)
    };
}

impl<S> Layer<S> for LucidLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.wanted(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        self.wanted(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut fields = Vec::new();
        attrs.record(&mut Collect {
            message: None,
            fields: &mut fields,
        });
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(f) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut Collect {
                message: None,
                fields: &mut f.0,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level: Level = *meta.level();
        let logger = Logger::of(meta.target());
        if !self.passes(logger, level) {
            return;
        }
        let site = Site {
            target: meta.target(),
            module_path: meta.module_path(),
            file: meta.file(),
            line: meta.line(),
        };
        self.write(
            &site,
            std::ptr::from_ref(meta) as usize,
            logger,
            level,
            |message, fields| {
                event.record(&mut Collect {
                    message: Some(message),
                    fields,
                });
                if let Some(scope) = ctx.event_scope(event) {
                    // Innermost span first: its value wins over an outer span's of the same name.
                    for span in scope {
                        if let Some(sf) = span.extensions().get::<SpanFields>() {
                            for (k, v) in &sf.0 {
                                if !fields.iter().any(|(n, _)| n == k) {
                                    fields.push((k, v.clone()));
                                }
                            }
                        }
                    }
                }
            },
        );
    }
}

/// Where a record was logged: what its logger, `%(module)s`, `%(funcName)s` and
/// `%(lineno)d` come from.
pub struct Site {
    pub target: &'static str,
    pub module_path: Option<&'static str>,
    pub file: Option<&'static str>,
    pub line: Option<u32>,
}

impl LucidLayer {
    /// Whether `logger` passes records of `level` on at all.
    fn passes(&self, logger: Logger, level: Level) -> bool {
        self.plan.rust_log || level <= self.plan.routes[logger.index()].level
    }

    /// Formats the record `fill` gives (its message and fields) once per formatter and queues
    /// the lines for the handlers that take `level`. `callsite` names the call site for the
    /// formatters' per-callsite text: an address unique to it for the process's life.
    fn write(
        &self,
        site: &Site,
        callsite: usize,
        logger: Logger,
        level: Level,
        fill: impl FnOnce(&mut String, &mut Vec<(&'static str, Value)>),
    ) {
        let Some(queue) = &self.plan.queue else {
            return;
        };
        let route = &self.plan.routes[logger.index()];
        // The thread's buffers are taken for the record and put back after it; a record
        // logged meanwhile (only from a formatter's own failure) gets fresh ones.
        let mut staged = LINE
            .with(|l| l.try_borrow_mut().map(|mut s| std::mem::take(&mut *s)))
            .unwrap_or_default();
        let Staged {
            message,
            fields,
            lines,
            each,
            text,
        } = &mut staged;
        message.clear();
        fields.clear();
        fill(message, fields);
        if !fields.iter().any(|(n, _)| *n == "request_id") {
            super::context::with_current(|id| {
                if let Some(id) = id {
                    fields.push(("request_id", Value::Str(id.into())));
                }
            });
        }
        let name = logger.name(site.target);
        let record = Record {
            time: time::OffsetDateTime::now_utc(),
            level,
            name: &name,
            target: site.target,
            module_path: site.module_path,
            file: site.file,
            line: site.line,
            thread: THREAD.with(|t| *t),
            callsite,
            message,
            fields,
        };
        lines.clear();
        each.clear();
        let mut have_text = false;
        // Sinks are ordered by formatter: each formatter formats this record once, and the
        // line is queued once for all the handlers sharing that formatter.
        let sinks = &route.sinks;
        let mut at = 0;
        while at < sinks.len() {
            let format = self.plan.sinks[sinks[at]].format;
            let mut handlers = 0u64;
            while at < sinks.len() && self.plan.sinks[sinks[at]].format == format {
                let i = sinks[at];
                if level <= self.plan.sinks[i].level {
                    handlers |= 1 << i;
                }
                at += 1;
            }
            if handlers == 0 {
                continue;
            }
            let format = &self.plan.formats[format];
            if format.needs_message() && !have_text {
                text.clear();
                write_text_message(&record, text);
                have_text = true;
            }
            let start = lines.len();
            format.render(&record, if have_text { text } else { "" }, lines);
            each.push((handlers, start..lines.len()));
        }
        queue.push_each(each, lines.as_bytes());
        LINE.with(|l| {
            if let Ok(mut slot) = l.try_borrow_mut() {
                *slot = staged;
            }
        });
    }
}

/// Writes an INFO record of `message` with the fields `fill` gives, logged at `site`, as the
/// event `tracing::info!` at that site with those fields would be written, but without
/// tracing's dispatch and dynamic field recording (visiting each field through a trait
/// object and copying it), which were a fifth of the access line's cost. Only when this
/// thread's subscriber is ours and no `RUST_LOG` filter sits in it: otherwise returns false
/// and writes nothing, and the caller logs through tracing. Spans'
/// fields are not added: the caller logs outside any span.
pub fn write_info(
    site: &'static Site,
    message: &str,
    fill: impl FnOnce(&mut Vec<(&'static str, Value)>),
) -> bool {
    let mut fill = Some(fill);
    tracing::dispatcher::get_default(|dispatch| {
        // With RUST_LOG an EnvFilter decides what passes: tracing asks it.
        let Some(layer) = dispatch
            .downcast_ref::<LucidLayer>()
            .filter(|l| !l.plan.rust_log)
        else {
            return false;
        };
        let logger = Logger::of(site.target);
        if layer.passes(logger, Level::INFO)
            && let Some(fill) = fill.take()
        {
            let key = std::ptr::from_ref(site) as usize;
            layer.write(site, key, logger, Level::INFO, |m, fields| {
                m.push_str(message);
                fill(fields);
            });
        }
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::format::{DETAILED, STANDARD};
    use crate::telemetry::queue::Stream;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// A destination the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    static SITE: Site = Site {
        target: "block_manager::http",
        module_path: Some(module_path!()),
        file: Some(file!()),
        line: Some(line!()),
    };

    #[test]
    fn a_record_written_directly_reads_as_the_same_event_logged_through_tracing() {
        let (standard, detailed) = (Shared::default(), Shared::default());
        let (queue, writer, _) = Queue::start(vec![
            Box::new(Stream::new(standard.clone())),
            Box::new(Stream::new(detailed.clone())),
        ])
        .unwrap();
        let route = Route {
            level: LevelFilter::INFO,
            sinks: vec![0, 1],
        };
        let plan = Plan {
            formats: vec![
                LineFormat::text(STANDARD, Some("%Y-%m-%d %H:%M:%S"))
                    .unwrap()
                    .0,
                LineFormat::text(DETAILED, None).unwrap().0,
            ],
            sinks: vec![
                Sink {
                    level: LevelFilter::INFO,
                    format: 0,
                },
                Sink {
                    level: LevelFilter::DEBUG,
                    format: 1,
                },
            ],
            routes: std::array::from_fn(|_| route.clone()),
            rust_log: false,
            queue: Some(queue),
        };
        let subscriber = tracing_subscriber::registry().with(LucidLayer::new(plan));
        tracing::subscriber::with_default(subscriber, || {
            let (route, id, client) = ("/api/v1/blocks/{block_id}", "abc-1", "10.0.0.7");
            let written = write_info(&SITE, "request", |f| {
                f.extend([
                    ("method", Value::Str("GET".into())),
                    ("route", Value::Str(route.into())),
                    ("status", Value::U64(404)),
                    ("latency_ms", Value::F64(0.125)),
                    ("request_id", Value::Str(id.into())),
                    ("client", Value::Str(client.into())),
                    ("note", Value::Str("two words".into())),
                ]);
            });
            assert!(written);
            tracing::info!(
                target: SITE.target,
                method = "GET",
                route,
                status = 404u16,
                latency_ms = 0.125,
                request_id = id,
                client,
                note = "two words",
                "request"
            );
        });
        // Not ours: nothing is written, the caller logs through tracing.
        let other = tracing_subscriber::registry();
        tracing::subscriber::with_default(other, || {
            assert!(!write_info(&SITE, "request", |_| panic!("not called")));
        });
        drop(writer);
        // Each line less its time (and, in the detailed one, the line number of the call).
        let read = |s: &Shared| -> Vec<String> {
            let text = String::from_utf8(s.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| {
                    let mut parts: Vec<&str> = l.split(" - ").skip(1).collect();
                    if parts.len() == 4 {
                        parts[2] = parts[2].trim_end_matches(|c: char| c.is_ascii_digit());
                    }
                    parts.join(" - ")
                })
                .collect()
        };
        let message = "GET /api/v1/blocks/{block_id} 404 0.125ms request_id=abc-1 \
                       client=10.0.0.7 note=\"two words\"";
        let lines = read(&standard);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0], lines[1]);
        assert_eq!(lines[0], format!("blockchain.api - INFO - {message}"));
        let lines = read(&detailed);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0], lines[1]);
        assert_eq!(
            lines[0],
            format!("blockchain.api - INFO - layer:tests: - {message}")
        );
    }

    #[test]
    fn our_modules_map_to_lucid_logger_names() {
        for (target, name) in [
            ("block_manager::http", "blockchain.api"),
            ("block_manager::api::observe", "blockchain.api"),
            ("block_manager::ledger", "blockchain.manager"),
            ("block_manager::store::redb_store", "blockchain.manager"),
            ("block_manager::sync::follower", "blockchain.manager"),
            ("block_manager::app", "blockchain.manager"),
            ("block_manager::chain::validate", "blockchain.core"),
            ("block_manager::sync::client", "httpx"),
            ("reqwest::connect", "httpx"),
            ("hyper_util::client::legacy", "httpx"),
            ("tower_http::trace", "blockchain.api"),
            ("h2::codec", "h2.codec"),
            ("block_manager::apiary", "blockchain.manager"),
        ] {
            assert_eq!(Logger::of(target).name(target), name, "{target}");
        }
    }
}
