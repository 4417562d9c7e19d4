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
        let route = &self.plan.routes[logger.index()];
        if !self.plan.rust_log && level > route.level {
            return;
        }
        let Some(queue) = &self.plan.queue else {
            return;
        };
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
        if !fields.iter().any(|(n, _)| *n == "request_id") {
            super::context::with_current(|id| {
                if let Some(id) = id {
                    fields.push(("request_id", Value::Str(id.into())));
                }
            });
        }
        let name = logger.name(meta.target());
        let record = Record {
            time: time::OffsetDateTime::now_utc(),
            level,
            name: &name,
            target: meta.target(),
            module_path: meta.module_path(),
            file: meta.file(),
            line: meta.line(),
            thread: THREAD.with(|t| *t),
            callsite: std::ptr::from_ref(meta) as usize,
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

#[cfg(test)]
mod tests {
    use super::*;

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
