//! The listener `capydb-local` serves on. hyper answers a request it cannot
//! parse (a control byte in a header, a URL over 64 KiB, headers too large)
//! itself, with an empty body, before any router sees it. This listener's
//! connections rewrite exactly those answers into the API's `{"error"}`
//! JSON, so every 4xx leaves as JSON (API Gateway answers such requests
//! itself in the deployed shape).
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::middleware::REQUEST_ID;

pub struct JsonErrorListener(pub TcpListener);

impl axum::serve::Listener for JsonErrorListener {
    type Io = JsonErrorIo<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (JsonErrorIo { inner: io, pending: Vec::new(), sent: 0 }, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// The caller's address, as `ConnectInfo<Peer>`.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, JsonErrorListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, JsonErrorListener>) -> Self {
        Peer(*stream.remote_addr())
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
