//! The server `capydb-local` runs (`capydb_api::serve`): connections spread
//! over its threads with their peer's address, a graceful shutdown, and
//! hyper's own error answers as JSON.
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, Notify};

use capydb_api::serve::serve;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

/// One request on `s` (kept alive); the answer's head and body.
async fn get_on(s: &mut TcpStream, path: &str) -> String {
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("an answer").unwrap();
        assert!(n > 0, "closed before answering: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

#[tokio::test]
async fn connections_are_spread_over_the_threads_and_know_their_peer() {
    // Each answer names the thread that served it and the caller's address.
    let router = axum::Router::new().route(
        "/who",
        get(|req: axum::extract::Request| async move {
            let peer = capydb_api::extract::request_ip(req.extensions()).map(|ip| ip.to_string());
            format!("{} {}", std::thread::current().name().unwrap_or("?"), peer.unwrap_or_default())
        }),
    );
    let (l, addr) = listener().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(l, router, 2, async {
        let _ = stopped.await;
    }));
    let mut threads = std::collections::BTreeSet::new();
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(TcpStream::connect(addr).await.unwrap());
    }
    for _ in 0..3 {
        for c in conns.iter_mut() {
            let answer = get_on(c, "/who").await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            let body = answer.split("\r\n\r\n").nth(1).unwrap().to_string();
            assert!(body.ends_with(" 127.0.0.1"), "the peer's address: {body}");
            threads.insert(body.split(' ').next().unwrap().to_string());
        }
    }
    assert_eq!(
        threads.into_iter().collect::<Vec<_>>(),
        ["capydb-http-0", "capydb-http-1"],
        "four connections, two threads: each thread serves two"
    );
    drop(conns);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("serve returns").unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_answers_the_request_in_flight_closes_idle_connections_and_takes_no_new_one() {
    let release = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let router = axum::Router::new().route("/quick", get(|| async { "quick" })).route(
        "/slow",
        get({
            let (release, entered) = (release.clone(), entered.clone());
            move || async move {
                entered.notify_one();
                release.notified().await;
                "slow"
            }
        }),
    );
    let (l, addr) = listener().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(l, router, 2, async {
        let _ = stopped.await;
    }));
    // An idle keep-alive connection, and one with a request in flight.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(get_on(&mut idle, "/quick").await.starts_with("HTTP/1.1 200"));
    let slow = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        get_on(&mut s, "/slow").await
    });
    entered.notified().await;
    stop.send(()).unwrap();
    // The idle connection is closed by the server...
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf)).await.expect("closed").unwrap();
    assert_eq!(n, 0, "an idle connection is closed at shutdown");
    // ...no new connection is taken...
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
    // ...and serve waits for the request in flight, which is answered.
    assert!(!server.is_finished(), "serve returned with a request in flight");
    release.notify_one();
    let answer = slow.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("slow"), "{answer}");
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("serve returns").unwrap().unwrap();
}

#[tokio::test]
async fn hypers_own_error_answers_leave_as_json_through_the_server() {
    let (l, addr) = listener().await;
    tokio::spawn(serve(l, axum::Router::new(), 1, std::future::pending()));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-bad: a\x01b\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 400") && out.contains("application/json"), "{out}");
}
