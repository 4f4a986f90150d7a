//! TLS for the provider's connections to a server that requires it (an
//! Aurora cluster): rustls (aws-lc-rs, as the AWS SDK's), the server's
//! certificate verified against given roots and the host's name (libpq's
//! `verify-full`). `PgTls::rds` trusts the Amazon RDS root CAs.
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// The Amazon RDS root CAs (see the file's header).
pub const RDS_ROOTS: &[u8] = include_bytes!("../certs/rds-ca-bundle.pem");

/// A TLS client configuration for PostgreSQL connections, and the roots'
/// PEM text (`pg_dump` and `pg_restore` read it from a file).
#[derive(Clone)]
pub struct PgTls {
    config: Arc<rustls::ClientConfig>,
    roots_pem: Arc<Vec<u8>>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls").finish_non_exhaustive()
    }
}

impl PgTls {
    /// Trusting the Amazon RDS root CAs.
    pub fn rds() -> Result<PgTls, String> {
        PgTls::trusting(RDS_ROOTS)
    }

    /// Trusting the certificates in `pem` (and nothing else).
    pub fn trusting(pem: &[u8]) -> Result<PgTls, String> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("unreadable root certificate: {e}"))?;
            roots.add(cert).map_err(|e| format!("unusable root certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no root certificate given".into());
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(PgTls { config: Arc::new(config), roots_pem: Arc::new(pem.to_vec()) })
    }

    /// The roots, as PEM text.
    pub fn roots_pem(&self) -> &[u8] {
        &self.roots_pem
    }
}

impl<S> MakeTlsConnect<S> for PgTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type TlsConnect = PgTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<PgTlsConnect> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{domain} is not a server name")))?;
        Ok(PgTlsConnect { config: self.config.clone(), name })
    }
}

pub struct PgTlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for PgTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgTlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<PgTlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            Ok(PgTlsStream(connector.connect(self.name, stream).await?))
        })
    }
}

pub struct PgTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgTlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgTlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for PgTlsStream<S> {
    /// No channel binding: SCRAM without it, as libpq's default `prefer`.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rds_roots_load_and_nothing_is_trusted_without_roots() {
        let tls = PgTls::rds().expect("the RDS roots load");
        assert!(String::from_utf8_lossy(tls.roots_pem()).matches("BEGIN CERTIFICATE").count() >= 80);
        assert!(PgTls::trusting(b"").is_err());
        assert!(PgTls::trusting(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n").is_err());
    }
}
