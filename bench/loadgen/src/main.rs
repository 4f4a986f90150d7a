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
//! Output is one JSON object on stdout.
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

async fn connect(t: &Target) -> Sender {
    let stream = TcpStream::connect(&t.addr).await.expect("connect");
    stream.set_nodelay(true).ok();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    sender
}

/// One request; true on a 2xx answer.
async fn once(sender: &mut Sender, t: &Target) -> bool {
    let mut req = http::Request::builder().uri(&t.path).header("host", &t.host);
    for (k, v) in &t.headers {
        req = req.header(k, v);
    }
    let Ok(res) = sender.send_request(req.body(Empty::new()).expect("request")).await else { return false };
    let ok = res.status().is_success();
    let _ = res.into_body().collect().await;
    ok
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
            let failed = Arc::new(AtomicU64::new(0));
            let end = Instant::now() + Duration::from_secs(seconds);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..connections {
                let (t, ok, failed) = (t.clone(), ok.clone(), failed.clone());
                tasks.push(tokio::spawn(async move {
                    let mut s = connect(&t).await;
                    while Instant::now() < end {
                        if once(&mut s, &t).await {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            s = connect(&t).await;
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            let secs = started.elapsed().as_secs_f64();
            let ok = ok.load(Ordering::Relaxed);
            println!(
                "{{\"mode\":\"max\",\"requests\":{ok},\"failed\":{},\"seconds\":{secs:.2},\"rps\":{:.0}}}",
                failed.load(Ordering::Relaxed),
                ok as f64 / secs
            );
        }
        Cmd::Rate { url, headers, rps, seconds, connections } => {
            let t = Arc::new(target(&url, &headers));
            let total = rps * seconds;
            let interval = Duration::from_nanos(1_000_000_000 / rps.max(1));
            let pool: Arc<Mutex<Vec<Sender>>> = Arc::new(Mutex::new(Vec::new()));
            for _ in 0..connections {
                pool.lock().await.push(connect(&t).await);
            }
            let hist = Arc::new(std::sync::Mutex::new(
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
            ));
            let failed = Arc::new(AtomicU64::new(0));
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
                let (t, pool, hist, failed) = (t.clone(), pool.clone(), hist.clone(), failed.clone());
                tasks.push(tokio::spawn(async move {
                    let sender = pool.lock().await.pop();
                    let mut s = match sender {
                        Some(s) => s,
                        None => connect(&t).await,
                    };
                    let ok = once(&mut s, &t).await;
                    // From the scheduled start: a slow answer that delays later
                    // requests counts against them too (no coordinated omission).
                    let us = scheduled.elapsed().as_micros() as u64;
                    if ok {
                        let _ = hist.lock().map(|mut h| h.record(us.max(1)));
                        pool.lock().await.push(s);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            let h = hist.lock().expect("histogram");
            println!(
                "{{\"mode\":\"rate\",\"target_rps\":{rps},\"requests\":{},\"failed\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
                h.len(),
                failed.load(Ordering::Relaxed),
                h.value_at_quantile(0.50) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                h.max() as f64 / 1000.0
            );
        }
    }
}
