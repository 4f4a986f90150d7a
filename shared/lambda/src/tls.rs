//! The SDK configuration of the functions: HTTPS with rustls trusting Amazon's roots only.
use capydb_aws::sdk::aws_config::{self, SdkConfig};

use crate::Error;

/// The roots AWS's service endpoints chain to (Amazon Trust Services). The
/// SDK trusts these instead of reading the system's whole store at start-up,
/// which was most of a function's cold start.
const AMAZON_ROOTS: &[u8] = include_bytes!("../certs/amazon-trust-services.pem");

/// The SDK configuration of a function: region and credentials from the
/// Lambda environment, HTTPS with rustls (aws-lc-rs) trusting Amazon's roots.
pub async fn sdk_config() -> Result<SdkConfig, Error> {
    use aws_smithy_http_client::tls;
    let trust = tls::TrustStore::empty().with_native_roots(false).with_pem_certificate(AMAZON_ROOTS);
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
        .tls_context(tls::TlsContext::builder().with_trust_store(trust).build()?)
        .build_https();
    Ok(aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http).load().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sdk_config_builds_with_amazons_roots_only() {
        assert_eq!(String::from_utf8_lossy(AMAZON_ROOTS).matches("BEGIN CERTIFICATE").count(), 5);
        let sdk = sdk_config().await.expect("the SDK's HTTPS client builds from the embedded roots");
        assert!(sdk.http_client().is_some());
    }
}
