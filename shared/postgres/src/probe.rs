//! [`WireProbe`]: whether a PostgreSQL server takes connections, asked
//! without logging in. It opens a TCP connection and sends the 8-byte
//! `SSLRequest` a client sends first; a server process answers it with one
//! byte, `S` or `N`, before any authentication, so an answer means the
//! server accepted the connection and started a backend for it. Nothing
//! else is sent: no user name, no password, no failed login in the
//! server's log.
//!
//! What it does not tell: whether logins work (a server starting up,
//! shutting down or out of connection slots answers too, as would a proxy in
//! front of it), which only a login can. And a server with TLS on answers
//! `S` and then meets a closed connection instead of a handshake, which it
//! may log (`could not accept SSL connection: EOF detected`) once per health
//! check. The trade: the function that serves `/v1/health` holds no
//! database password.
use std::time::Duration;

use async_trait::async_trait;
use capydb_domain::ports::{DatabaseProbe, ProviderError, ProviderResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `SSLRequest` message: its length (8) and the code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// How long the connection and the answer may take, together.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Asks `host:port` (see the module's documentation).
#[derive(Debug, Clone)]
pub struct WireProbe {
    host: String,
    port: u16,
}

impl WireProbe {
    pub fn new(host: &str, port: u16) -> WireProbe {
        WireProbe { host: host.to_string(), port }
    }

    async fn ask(&self) -> std::io::Result<u8> {
        let mut stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
        stream.write_all(&SSL_REQUEST).await?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await?;
        Ok(answer[0])
    }
}

#[async_trait]
impl DatabaseProbe for WireProbe {
    async fn probe(&self) -> ProviderResult<()> {
        let unavailable = |detail: String| {
            tracing::warn!(host = %self.host, port = self.port, %detail, "the database server did not answer the probe");
            ProviderError::Retryable("the database server is not taking connections".into())
        };
        match tokio::time::timeout(TIMEOUT, self.ask()).await {
            Ok(Ok(b'S' | b'N')) => Ok(()),
            Ok(Ok(other)) => Err(unavailable(format!("answered {other:#04x}, not a PostgreSQL server's S or N"))),
            Ok(Err(e)) => Err(unavailable(e.to_string())),
            Err(_) => Err(unavailable(format!("no answer within {} s", TIMEOUT.as_secs()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A listener on 127.0.0.1 that reads the request and answers `reply`;
    /// it returns what it was sent.
    async fn server(reply: &'static [u8]) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = [0u8; 8];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(reply).await.unwrap();
            got.to_vec()
        });
        (port, task)
    }

    #[tokio::test]
    async fn an_answer_of_s_or_n_is_a_server_taking_connections() {
        for reply in [b"N", b"S"] {
            let (port, sent) = server(reply).await;
            WireProbe::new("127.0.0.1", port).probe().await.expect("up");
            assert_eq!(sent.await.unwrap(), SSL_REQUEST, "only the SSLRequest is sent");
        }
    }

    #[tokio::test]
    async fn anything_else_is_unavailable() {
        let (port, _) = server(b"H").await;
        assert!(matches!(WireProbe::new("127.0.0.1", port).probe().await, Err(ProviderError::Retryable(_))));

        // A closed port.
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        assert!(matches!(WireProbe::new("127.0.0.1", port).probe().await, Err(ProviderError::Retryable(_))));

        // A listener that never answers: the probe gives up.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let started = std::time::Instant::now();
        assert!(WireProbe::new("127.0.0.1", port).probe().await.is_err());
        assert!(started.elapsed() < TIMEOUT + Duration::from_secs(2));
        drop(silent);
    }
}
