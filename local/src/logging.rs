//! Logs go to stderr (stdout carries only the bootstrap lines): text by
//! default, JSON when `CAPYDB_LOG_FORMAT=json`, filtered by `RUST_LOG`.
//!
//! Formatted lines are appended to an in-memory buffer that a background
//! thread writes out every few milliseconds, so a request never waits on a
//! write(2) of its log line, and a busy server makes one write per batch
//! instead of one per line (measured on bench/api-throughput.sh: a
//! synchronous stderr write per request cost a third of the throughput).
//! Nothing is dropped: past `MAX_BUFFER` the logging thread writes inline.
//! Text lines are formatted by [`line::Line`], which prints what
//! `tracing_subscriber`'s `Full` format prints at a fraction of its cost.
mod line;

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;

const FLUSH_EVERY: Duration = Duration::from_millis(10);
const MAX_BUFFER: usize = 1 << 20;

#[derive(Default)]
struct Shared {
    buf: Mutex<Vec<u8>>,
    closed: Mutex<bool>,
    wake: Condvar,
}

impl Shared {
    /// Writes out what is buffered. `spare` (empty) trades places with the
    /// buffer, so each keeps its capacity: under load neither regrows.
    fn flush(&self, spare: &mut Vec<u8>) {
        match self.buf.lock() {
            Ok(mut b) if !b.is_empty() => std::mem::swap(&mut *b, spare),
            _ => return,
        }
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(spare);
        let _ = err.flush();
        spare.clear();
    }
}

#[derive(Clone)]
struct BatchWriter(Arc<Shared>);

impl Write for BatchWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let full = match self.0.buf.lock() {
            Ok(mut b) => {
                b.extend_from_slice(data);
                b.len() >= MAX_BUFFER
            }
            // A panic while holding the lock: write straight through.
            Err(_) => return std::io::stderr().write(data),
        };
        if full {
            self.0.flush(&mut Vec::new());
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;
    fn make_writer(&'a self) -> BatchWriter {
        self.clone()
    }
}

/// Flushes and stops the background writer when dropped: keep it alive
/// until exit.
pub struct LogGuard(Arc<Shared>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Ok(mut c) = self.0.closed.lock() {
            *c = true;
        }
        self.0.wake.notify_all();
        self.0.flush(&mut Vec::new());
    }
}

pub fn init() -> Option<LogGuard> {
    // `Targets` takes RUST_LOG's `target=level` syntax and, unlike
    // `EnvFilter`, costs next to nothing per span on the request path.
    // Driver internals log statements at debug level; statements can carry
    // secrets, so they stay off unless asked for.
    let default: Targets = "info,tokio_postgres=warn".parse().unwrap_or_default();
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) => spec.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("capydb-local: ignoring RUST_LOG ({e}); using info");
            default
        }),
        Err(_) => default,
    };
    let json = std::env::var("CAPYDB_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let ansi = std::io::stderr().is_terminal() && !json;

    let shared = Arc::new(Shared::default());
    let flusher = shared.clone();
    std::thread::Builder::new()
        .name("capydb-log".into())
        .spawn(move || {
            let mut spare = Vec::new();
            loop {
                let closed = match flusher.closed.lock() {
                    Ok(c) => flusher.wake.wait_timeout(c, FLUSH_EVERY).map(|(c, _)| *c).unwrap_or(true),
                    Err(_) => true,
                };
                flusher.flush(&mut spare);
                if closed {
                    return;
                }
            }
        })
        .ok()?;
    let writer = BatchWriter(shared.clone());

    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer).with_target(false).with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if json {
        registry.with(fmt.json().flatten_event(true).with_current_span(true).with_span_list(false)).try_init()
    } else {
        // Text lines name the request from the task's request id, as its
        // span would: no span per request (the largest cost of logging one).
        capydb_api::middleware::set_request_spans(false);
        registry.with(fmt.fmt_fields(line::Fields).event_format(line::Line)).try_init()
    };
    installed.ok().map(|_| LogGuard(shared))
}
