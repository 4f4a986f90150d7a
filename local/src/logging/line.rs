//! The text log line, written by hand instead of by `tracing_subscriber`'s
//! `Full` format. It prints the same thing —
//!
//! ```text
//! 2026-11-29T21:49:40.123456Z  INFO request{request_id="req_…"}: request finished method="GET" path="/v1/…" status=200 latency_us=93
//! ```
//!
//! — at a fraction of the cost, which matters because every request writes
//! one (bench/api-throughput.sh: the `Full` format's timestamp, `Debug` of
//! every string and `core::fmt` for every number took 12% of the server's
//! CPU under load). What it saves: the timestamp's date and time are
//! formatted once a second per thread, numbers go through `itoa`, and a
//! string that needs no escaping is copied between quotes. Anything else
//! (escapes, non-ASCII text, `Debug` values) takes the `Debug` path, so the
//! output never differs from what `Debug` would print.
use std::cell::RefCell;
use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events: `timestamp level spans: message fields`.
pub struct Line;

/// Formats fields, of events and of spans: `name=value` separated by
/// spaces, the message bare.
pub struct Fields;

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let ansi = w.has_ansi_escapes();
        if ansi {
            w.write_str("\x1b[2m")?;
        }
        timestamp(&mut w)?;
        if ansi {
            w.write_str("\x1b[0m")?;
        }
        w.write_str(" ")?;
        level(&mut w, *event.metadata().level(), ansi)?;
        w.write_str(" ")?;
        let mut any = false;
        // The request this task serves, when it has no span of its own
        // (`capydb_api::middleware::set_request_spans`): printed as its span
        // would be, `request{request_id="..."}:`.
        let spanned = ctx.event_scope().and_then(|s| s.from_root().next()).is_some_and(|s| s.name() == "request");
        if !spanned {
            capydb_api::middleware::current_request_id(|id| {
                if ansi {
                    w.write_str("\x1b[1mrequest\x1b[0m")?;
                } else {
                    w.write_str("request")?;
                }
                // Request ids are `[A-Za-z0-9._:-]`: quoted as `Debug` would.
                w.write_str("{request_id=\"")?;
                w.write_str(id)?;
                w.write_str("\"}:")?;
                any = true;
                Ok::<(), fmt::Error>(())
            })
            .transpose()?;
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if ansi {
                    w.write_str("\x1b[1m")?;
                }
                w.write_str(span.name())?;
                if ansi {
                    w.write_str("\x1b[0m")?;
                }
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        w.write_str("{")?;
                        w.write_str(fields)?;
                        w.write_str("}")?;
                    }
                }
                w.write_str(":")?;
                any = true;
            }
        }
        if any {
            w.write_str(" ")?;
        }
        let mut v = Visitor::new(&mut w);
        event.record(&mut v);
        v.result?;
        w.write_str("\n")
    }
}

impl<'w> FormatFields<'w> for Fields {
    fn format_fields<R: RecordFields>(&self, mut w: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = Visitor::new(&mut w);
        fields.record(&mut v);
        v.result
    }
}

fn level(w: &mut Writer<'_>, level: Level, ansi: bool) -> fmt::Result {
    let (text, colour) = match level {
        Level::TRACE => ("TRACE", "\x1b[35m"),
        Level::DEBUG => ("DEBUG", "\x1b[34m"),
        Level::INFO => (" INFO", "\x1b[32m"),
        Level::WARN => (" WARN", "\x1b[33m"),
        Level::ERROR => ("ERROR", "\x1b[31m"),
    };
    if ansi {
        w.write_str(colour)?;
        w.write_str(text)?;
        w.write_str("\x1b[0m")
    } else {
        w.write_str(text)
    }
}

thread_local! {
    /// The second this thread last formatted, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

/// RFC 3339 in UTC with microseconds, as `tracing_subscriber`'s `SystemTime`.
fn timestamp(w: &mut Writer<'_>) -> fmt::Result {
    let now = chrono::Utc::now();
    let secs = now.timestamp();
    let micros = now.timestamp_subsec_micros().min(999_999);
    SECOND.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != secs {
            cell.1.clear();
            let _ = write!(cell.1, "{}", now.format("%Y-%m-%dT%H:%M:%S"));
            cell.0 = secs;
        }
        w.write_str(&cell.1)
    })?;
    // Six digits, zero-padded: 1_000_000 + micros has seven; drop the 1.
    let mut digits = itoa::Buffer::new();
    let padded = digits.format(1_000_000 + micros);
    w.write_str(".")?;
    w.write_str(&padded[1..])?;
    w.write_str("Z")
}

struct Visitor<'a, 'w> {
    w: &'a mut Writer<'w>,
    /// Nothing written yet: no separating space before the next field.
    first: bool,
    result: fmt::Result,
}

impl<'a, 'w> Visitor<'a, 'w> {
    fn new(w: &'a mut Writer<'w>) -> Self {
        Visitor { w, first: true, result: Ok(()) }
    }

    /// `name=` (after a space unless first); the message has no name.
    fn name(&mut self, field: &Field) -> fmt::Result {
        if !self.first {
            self.w.write_str(" ")?;
        }
        self.first = false;
        if field.name() == "message" {
            return Ok(());
        }
        let name = field.name();
        self.w.write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.w.write_str("=")
    }

    fn put(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'w>) -> fmt::Result) {
        // Fields `tracing-log` adds to events from the `log` crate: the
        // `Full` format leaves them out too.
        if self.result.is_ok() && !field.name().starts_with("log.") {
            self.result = self.name(field).and_then(|_| value(self.w));
        }
    }
}

/// A string `Debug` would print unchanged between quotes: printable ASCII
/// without `"` or `\`.
fn plain(s: &str) -> bool {
    s.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for Visitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let message = field.name() == "message";
        self.put(field, |w| {
            if message {
                w.write_str(value)
            } else if plain(value) {
                w.write_str("\"")?;
                w.write_str(value)?;
                w.write_str("\"")
            } else {
                write!(w, "{value:?}")
            }
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, |w| write!(w, "{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    /// A layer writing `Line`s, without colours, into `out`.
    fn line_layer<S>(out: Capture) -> impl tracing_subscriber::Layer<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_subscriber::fmt::layer().with_writer(out).with_ansi(false).fmt_fields(Fields).event_format(Line)
    }

    /// What `f` logs, through `Line` and through `tracing_subscriber`'s
    /// `Full` format, with the timestamps cut off.
    fn both(f: impl Fn()) -> (String, String) {
        let ours = Capture::default();
        let full = Capture::default();
        let fast = line_layer(ours.clone());
        let reference = tracing_subscriber::fmt::layer().with_writer(full.clone()).with_ansi(false).with_target(false);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(fast), &f);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(reference), &f);
        let cut = |c: Capture| {
            let text = String::from_utf8(c.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|l| l.split_once(' ').map(|(_, rest)| rest.to_string()).unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        };
        (cut(ours), cut(full))
    }

    #[test]
    fn prints_what_the_full_format_prints() {
        let (ours, full) = both(|| {
            let span = tracing::info_span!("request", request_id = "req_123");
            let _g = span.enter();
            let inner = tracing::info_span!("job", job_id = "job_9", attempt = 2u64);
            let _i = inner.enter();
            tracing::info!(
                method = "GET",
                path = "/v1/projects/p_1",
                status = 200u16,
                latency_us = 93u64,
                "request finished"
            );
            tracing::warn!(note = "quote \" and\nnewline", n = -4i64, ok = true, "odd values");
            tracing::error!(error = %std::io::Error::other("disk full"), "failed: {}", 3);
            tracing::debug!(list = ?vec![1, 2], "debug value ünïcode");
        });
        assert_eq!(ours, full);
        assert!(ours.contains("request{request_id=\"req_123\"}:job{job_id=\"job_9\" attempt=2}: request finished"));
        assert!(ours.contains("status=200 latency_us=93"));
    }

    /// A request served without its span (`set_request_spans(false)`):
    /// every line of it reads as it does with the span.
    #[tokio::test]
    async fn a_request_without_its_span_prints_as_with_it() {
        let lines = || {
            let inner = tracing::info_span!("job", job_id = "job_9");
            let _i = inner.enter();
            tracing::info!(status = 200u16, "request finished");
            drop(_i);
            tracing::warn!("plain");
        };
        let (with_span, reference) = both(|| {
            let span = tracing::info_span!("request", request_id = "req_123");
            let _g = span.enter();
            lines();
        });
        assert_eq!(with_span, reference);
        let out = Capture::default();
        let layer = line_layer(out.clone());
        let _d = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        capydb_api::middleware::scope_request_id("req_123", async { lines() }).await;
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let without: Vec<&str> = text.lines().map(|l| l.split_once(' ').unwrap().1).collect();
        assert_eq!(without.join("\n"), with_span);
        assert!(with_span.contains("request{request_id=\"req_123\"}:job{job_id=\"job_9\"}: request finished"));
    }

    #[test]
    fn lines_outside_spans_and_timestamps() {
        let (ours, full) = both(|| tracing::info!("listening"));
        assert_eq!(ours, full);
        let out = Capture::default();
        let layer = line_layer(out.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || tracing::info!("x"));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let stamp = text.split(' ').next().unwrap();
        chrono::DateTime::parse_from_rfc3339(stamp).unwrap_or_else(|e| panic!("{stamp}: {e}"));
        assert_eq!(stamp.len(), "2026-11-29T21:49:40.123456Z".len(), "{stamp}");
    }
}
