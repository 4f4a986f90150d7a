//! A small HTTP/1.1 load generator for the benchmarks under `bench/`, plus the
//! bare axum hello-world they compare `capydb-local` against.
//!
//! - `hello --listen ADDR`: serves `GET /` → "hello" (the baseline).
//! - `max --url URL [-H k:v] --connections N --seconds S`: closed loop, N
//!   keep-alive connections as fast as they go; prints throughput.
//! - `rate --url URL [-H k:v] --rps R --seconds S --connections N`: open loop at
//!   a fixed rate; latency is measured from each request's scheduled start
//!   (no coordinated omission); prints p50/p99/max.
//!
//! Output is one JSON object on stdout. Every request must succeed: when any
//! fails (a non-2xx status, a connection or protocol error), the object says
//! how many and which (`"failures"`: status or error → count), stderr names
//! them, and the exit status is 1, so a bench cannot report the speed of
//! answering `429`.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Hello {
        #[arg(long)]
        listen: String,
    },
    Max {
        #[arg(long)]
        url: String,
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    Rate {
        #[arg(long)]
        url: String,
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        #[arg(long, default_value_t = 1000)]
        rps: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
    },
}

struct Target {
    addr: String,
    path: String,
    host: String,
    headers: Vec<(String, String)>,
}

fn target(url: &str, headers: &[String]) -> Target {
    let rest = url.strip_prefix("http://").expect("only http:// URLs");
    let (hostport, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let headers = headers
        .iter()
        .map(|h| {
            let (k, v) = h.split_once(':').expect("header as name:value");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Target { addr: hostport.to_string(), path, host: hostport.to_string(), headers }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(t: &Target) -> Result<Sender, String> {
    let stream = TcpStream::connect(&t.addr).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).ok();
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request; `Err` names what went wrong: the status of a non-2xx
/// answer, or the error.
async fn once(sender: &mut Sender, t: &Target) -> Result<(), String> {
    let mut req = http::Request::builder().uri(&t.path).header("host", &t.host);
    for (k, v) in &t.headers {
        req = req.header(k, v);
    }
    let res =
        sender.send_request(req.body(Empty::new()).expect("request")).await.map_err(|e| format!("request: {e}"))?;
    let status = res.status();
    let body = res.into_body().collect().await;
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    body.map(drop).map_err(|e| format!("body: {e}"))
}

/// Failed requests by status or error.
#[derive(Default)]
struct Failures(std::sync::Mutex<BTreeMap<String, u64>>);

impl Failures {
    fn add(&self, what: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(what).or_default() += 1;
    }

    fn total(&self) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }

    /// `{"HTTP 429":12,...}`
    fn json(&self) -> String {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let items: Vec<String> = m.iter().map(|(k, v)| format!("{:?}:{v}", k)).collect();
        format!("{{{}}}", items.join(","))
    }

    /// Exits 1 naming the failures, after `out` was printed, when there were any.
    fn exit_if_any(&self, mode: &str, url: &str) {
        let total = self.total();
        if total > 0 {
            eprintln!("capydb-loadgen {mode}: {total} request(s) to {url} failed: {}", self.json());
            std::process::exit(1);
        }
    }
}

#[tokio::main]
async fn main() {
    match Cli::parse().cmd {
        Cmd::Hello { listen } => {
            let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
            let l = tokio::net::TcpListener::bind(&listen).await.expect("bind");
            axum::serve(l, app).await.expect("serve");
        }
        Cmd::Max { url, headers, connections, seconds } => {
            let t = Arc::new(target(&url, &headers));
            let ok = Arc::new(AtomicU64::new(0));
            let failures = Arc::new(Failures::default());
            let end = Instant::now() + Duration::from_secs(seconds);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..connections {
                let (t, ok, failures) = (t.clone(), ok.clone(), failures.clone());
                tasks.push(tokio::spawn(async move {
                    let mut s = match connect(&t).await {
                        Ok(s) => s,
                        Err(e) => return failures.add(e),
                    };
                    while Instant::now() < end {
                        match once(&mut s, &t).await {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                failures.add(e);
                                // A fresh connection: hyper may have closed this one.
                                s = match connect(&t).await {
                                    Ok(s) => s,
                                    Err(e) => return failures.add(e),
                                };
                            }
                        }
                    }
                }));
            }
            for task in tasks {
                if let Err(e) = task.await {
                    failures.add(format!("connection task: {e}"));
                }
            }
            let secs = started.elapsed().as_secs_f64();
            let ok = ok.load(Ordering::Relaxed);
            println!(
                "{{\"mode\":\"max\",\"requests\":{ok},\"failed\":{},\"failures\":{},\"seconds\":{secs:.2},\"rps\":{:.0}}}",
                failures.total(),
                failures.json(),
                ok as f64 / secs
            );
            failures.exit_if_any("max", &url);
        }
        Cmd::Rate { url, headers, rps, seconds, connections } => {
            let t = Arc::new(target(&url, &headers));
            let total = rps * seconds;
            let interval = Duration::from_nanos(1_000_000_000 / rps.max(1));
            let pool: Arc<Mutex<Vec<Sender>>> = Arc::new(Mutex::new(Vec::new()));
            for _ in 0..connections {
                match connect(&t).await {
                    Ok(s) => pool.lock().await.push(s),
                    Err(e) => {
                        eprintln!("capydb-loadgen rate: {url}: {e}");
                        std::process::exit(1);
                    }
                }
            }
            let hist = Arc::new(std::sync::Mutex::new(
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
            ));
            let failures = Arc::new(Failures::default());
            // Pacing runs on an OS thread: std's sleep has ~0.1 ms slack where
            // tokio's timer has 1 ms ticks, which would add up to a tick to
            // every measured latency.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
            let start = Instant::now() + Duration::from_millis(20);
            std::thread::spawn(move || {
                for i in 0..total {
                    let scheduled = start + interval * i as u32;
                    let now = Instant::now();
                    if scheduled > now {
                        std::thread::sleep(scheduled - now);
                    }
                    if tx.send(scheduled).is_err() {
                        return;
                    }
                }
            });
            let mut tasks = Vec::with_capacity(total as usize);
            while let Some(scheduled) = rx.recv().await {
                let (t, pool, hist, failures) = (t.clone(), pool.clone(), hist.clone(), failures.clone());
                tasks.push(tokio::spawn(async move {
                    let sender = pool.lock().await.pop();
                    let mut s = match sender {
                        Some(s) => s,
                        None => match connect(&t).await {
                            Ok(s) => s,
                            Err(e) => return failures.add(e),
                        },
                    };
                    let result = once(&mut s, &t).await;
                    // From the scheduled start: a slow answer that delays later
                    // requests counts against them too (no coordinated omission).
                    let us = scheduled.elapsed().as_micros() as u64;
                    match result {
                        Ok(()) => {
                            let _ = hist.lock().map(|mut h| h.record(us.max(1)));
                            pool.lock().await.push(s);
                        }
                        Err(e) => failures.add(e),
                    }
                }));
            }
            for task in tasks {
                if let Err(e) = task.await {
                    failures.add(format!("request task: {e}"));
                }
            }
            let h = hist.lock().expect("histogram");
            println!(
                "{{\"mode\":\"rate\",\"target_rps\":{rps},\"requests\":{},\"failed\":{},\"failures\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
                h.len(),
                failures.total(),
                failures.json(),
                h.value_at_quantile(0.50) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                h.max() as f64 / 1000.0
            );
            drop(h);
            failures.exit_if_any("rate", &url);
        }
    }
}
