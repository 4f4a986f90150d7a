//! The HTTP server `capydb-local` runs: the router on a thread-per-core set
//! of connection threads, and the rewriting of hyper's own error answers.
//!
//! **Connection threads.** One thread accepts connections and hands them out
//! in turn to `shards` threads, each running a single-threaded runtime that
//! serves its connections to the end. A request is then read, answered and
//! written on one thread, with no wake-up of another worker and no task
//! moving between threads: on a 2-core machine that was 10% of the CPU time
//! of a `GET /v1/projects/{id}` on tokio's work-stealing runtime
//! (bench/api-throughput.sh). Everything else (job and webhook workers, the
//! sweeper) stays on the process's multi-threaded runtime. Shutdown is
//! graceful as with `axum::serve`: no new connection is taken, requests in
//! flight are answered, idle connections close, and `serve` returns once the
//! last one has.
//!
//! **JSON errors.** hyper answers a request it cannot parse (a control byte
//! in a header, a URL over 64 KiB, headers too large) itself, with an empty
//! body, before any router sees it. The connections rewrite exactly those
//! answers into the API's `{"error"}` JSON, so every 4xx leaves as JSON (API
//! Gateway answers such requests itself in the deployed shape).
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use crate::middleware::REQUEST_ID;

tokio::task_local! {
    /// The address of the client whose connection this task serves: each
    /// connection is one task, and hyper answers its requests inside it. A
    /// task-local rather than a `ConnectInfo` extension on every request,
    /// which cost an insert into each request's extension map.
    static PEER: SocketAddr;
}

/// The client address of the connection the current task serves, when it
/// serves one of [`serve`]'s.
pub fn current_peer() -> Option<SocketAddr> {
    PEER.try_with(|peer| *peer).ok()
}

/// Runs `f` as the task serving a connection from `peer`: what [`serve`]
/// does for each connection (and a router test for a request of its own).
pub async fn with_peer<F: Future>(peer: SocketAddr, f: F) -> F::Output {
    PEER.scope(peer, f).await
}

/// How many connection threads [`serve`] runs by default: one per CPU.
pub fn default_shards() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

type Accepted = (std::net::TcpStream, SocketAddr);

/// Serves `router` on `listener` until `shutdown` completes, then shuts
/// down gracefully (see the module's documentation). Fails when a
/// connection thread cannot be started, or when every one has stopped.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shards: usize,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut lanes = Vec::new();
    let mut finished = Vec::new();
    for n in 0..shards.max(1) {
        let (tx, rx) = mpsc::unbounded_channel::<Accepted>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<io::Result<()>>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let (router, stop) = (router.clone(), stop_rx.clone());
        // The runtime is made (and dropped) on its own thread: a runtime
        // dropped inside this async function would panic.
        std::thread::Builder::new().name(format!("capydb-http-{n}")).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => {
                    let _ = started_tx.send(Ok(()));
                    runtime.block_on(shard(rx, router, stop));
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            }
            let _ = done_tx.send(());
        })?;
        started_rx.await.map_err(|_| io::Error::other("a connection thread ended while starting"))??;
        lanes.push(tx);
        finished.push(done_rx);
    }
    let mut shutdown = pin!(shutdown);
    let mut next = 0usize;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            // Into a std socket (still non-blocking), so the connection
            // thread's runtime is the one that waits on it.
            Ok((stream, addr)) => match stream.into_std() {
                Ok(stream) => {
                    // To the next thread in turn; one that has stopped (it
                    // would have panicked) is passed over, and with none
                    // left the server stops rather than drop every connection.
                    let mut item = (stream, addr);
                    let mut handed = false;
                    for _ in 0..lanes.len() {
                        let lane = next % lanes.len();
                        next = next.wrapping_add(1);
                        match lanes[lane].send(item) {
                            Ok(()) => {
                                handed = true;
                                break;
                            }
                            Err(mpsc::error::SendError(back)) => {
                                tracing::error!(shard = lane, "a connection thread has stopped");
                                item = back;
                            }
                        }
                    }
                    if !handed {
                        return Err(io::Error::other("every connection thread has stopped"));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not hand over a connection"),
            },
            // As `axum::serve`: a connection that failed while being
            // accepted is its client's problem; anything else (out of file
            // descriptors) is waited out, or shutdown comes first.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                tracing::error!(error = %e, "accept failed; retrying in a second");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(lanes);
    for done in finished {
        let _ = done.await;
    }
    Ok(())
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// One connection thread: serves each connection handed to it until the
/// server stops, then waits for them to finish.
async fn shard(mut incoming: mpsc::UnboundedReceiver<Accepted>, router: axum::Router, mut stop: watch::Receiver<bool>) {
    // The connections' own stop signal and their count (each holds a
    // receiver): local to this thread, so a connection's polls never touch
    // a lock another thread takes.
    let (closing_tx, closing_rx) = watch::channel(false);
    loop {
        let accepted = tokio::select! {
            // Connections already handed over are taken before the stop.
            biased;
            accepted = incoming.recv() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => None,
        };
        let Some((stream, addr)) = accepted else { break };
        match TcpStream::from_std(stream) {
            Ok(stream) => {
                tokio::spawn(with_peer(addr, connection(stream, router.clone(), closing_rx.clone())));
            }
            Err(e) => tracing::warn!(error = %e, "could not take over a connection"),
        }
    }
    drop(closing_rx);
    let _ = closing_tx.send(true);
    closing_tx.closed().await;
}

/// Serves one connection (HTTP/1.1, keep-alive) until the client closes it
/// or, after `closing`, its request in flight is answered.
async fn connection(stream: TcpStream, router: axum::Router, mut closing: watch::Receiver<bool>) {
    // Responses go out at once; hyper writes each whole.
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(JsonErrorIo { inner: stream, pending: Vec::new(), sent: 0 });
    let service = router.map_request(|req: axum::http::Request<hyper::body::Incoming>| req.map(axum::body::Body::new));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let mut conn = pin!(builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service)));
    let mut draining = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = closing.wait_for(|c| *c), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A connection whose writes pass through, except hyper's own error answers.
pub struct JsonErrorIo<S> {
    inner: S,
    /// The rewritten answer still to send, and how much of it went out.
    pending: Vec<u8>,
    sent: usize,
}

/// The JSON answer replacing `head` when it is one of hyper's own: a 4xx or
/// 5xx head our router did not write (every answer of ours carries
/// `x-request-id`). `None` leaves `head` as it is.
pub fn rewrite_bare_error(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    if !matches!(rest.first(), Some(b'4' | b'5')) {
        return None;
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = std::str::from_utf8(&head[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    if lines.any(|l| l.split(':').next().is_some_and(|n| n.trim().eq_ignore_ascii_case(REQUEST_ID))) {
        return None;
    }
    let code: u16 = status_line.get(9..12)?.parse().ok()?;
    let message = match code {
        414 => "the URL is too long",
        431 => "the request's headers are too large",
        400 => "malformed HTTP request: the request line or a header could not be parsed",
        _ => "the HTTP request could not be handled",
    };
    let body = serde_json::json!({ "error": message }).to_string();
    Some(
        format!(
            "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncWrite + Unpin> JsonErrorIo<S> {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrorIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrorIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(replacement) = rewrite_bare_error(buf) {
            // hyper closes the connection after its own error answer, so
            // nothing follows it; what it wrote counts as sent.
            self.pending = replacement;
            self.sent = 0;
            let _ = self.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes each response head whole in one
    // buffer, which is what `rewrite_bare_error` reads.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_own_error_answers_become_json() {
        let head = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Sun, 29 Nov 2026 16:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite_bare_error(head).expect("rewritten")).unwrap();
        assert!(out.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{out}");
        assert!(out.contains("content-type: application/json\r\n"), "{out}");
        let body = out.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "the URL is too long");
        assert!(out.contains(&format!("content-length: {}\r\n", body.len())), "{out}");
    }

    #[test]
    fn answers_of_the_router_pass_untouched() {
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nx-request-id: req_1\r\ncontent-length: 2\r\n\r\n{}";
        assert!(rewrite_bare_error(ours).is_none());
        assert!(rewrite_bare_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(rewrite_bare_error(b"{\"error\":\"HTTP/1.1 400\"}").is_none());
        // A head cut across two writes is never half-rewritten.
        assert!(rewrite_bare_error(b"HTTP/1.1 400 Bad Request\r\ncontent-len").is_none());
    }
}
