//! SDK clients made on first use. A function builds its adapters at start-up
//! without touching the SDK; the SDK configuration and each service client
//! are made by the first call that needs them, then shared, so a function
//! pays only for the services it really calls (identity never builds an SQS
//! or KMS client) and its init phase stays close to a bare runtime's.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use aws_config::SdkConfig;
use capydb_domain::{DomainError, DomainResult};
use tokio::sync::OnceCell;

type Loader = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<SdkConfig, String>> + Send>> + Send + Sync>;

/// The SDK configuration, loaded once, when first needed.
pub struct SdkCell {
    cell: OnceCell<SdkConfig>,
    load: Loader,
}

impl SdkCell {
    /// A configuration loaded on first use by `load`.
    pub fn lazy<F, Fut>(load: F) -> Arc<SdkCell>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<SdkConfig, String>> + Send + 'static,
    {
        Arc::new(SdkCell { cell: OnceCell::new(), load: Box::new(move || Box::pin(load())) })
    }

    /// A configuration already loaded (tests, tools).
    pub fn ready(sdk: SdkConfig) -> Arc<SdkCell> {
        let cell = OnceCell::new();
        let _ = cell.set(sdk);
        Arc::new(SdkCell { cell, load: Box::new(|| Box::pin(async { Err("unreachable: loaded".to_string()) })) })
    }

    pub async fn get(&self) -> DomainResult<&SdkConfig> {
        self.cell
            .get_or_try_init(|| async {
                (self.load)().await.map_err(|e| {
                    tracing::error!(error = %e, "the AWS SDK configuration could not be loaded");
                    DomainError::Unavailable("the AWS SDK configuration could not be loaded; retry later".into())
                })
            })
            .await
    }
}

/// Where a lazy client comes from: the SDK configuration and the client's constructor.
type Source<C> = (Arc<SdkCell>, fn(&SdkConfig) -> C);

/// A service client: given, or made from the [`SdkCell`] on first use.
/// Clones share the one client (adapters of the same service, such as the
/// store and the rate limiter on DynamoDB, make it once between them).
pub struct ClientCell<C> {
    cell: Arc<OnceCell<C>>,
    source: Option<Source<C>>,
}

impl<C> Clone for ClientCell<C> {
    fn clone(&self) -> Self {
        ClientCell { cell: Arc::clone(&self.cell), source: self.source.clone() }
    }
}

impl<C> ClientCell<C> {
    pub fn ready(client: C) -> Self {
        let cell = OnceCell::new();
        let _ = cell.set(client);
        ClientCell { cell: Arc::new(cell), source: None }
    }

    pub fn lazy(sdk: &Arc<SdkCell>, make: fn(&SdkConfig) -> C) -> Self {
        ClientCell { cell: Arc::new(OnceCell::new()), source: Some((Arc::clone(sdk), make)) }
    }

    pub async fn get(&self) -> DomainResult<&C> {
        self.cell
            .get_or_try_init(|| async {
                let (sdk, make) =
                    self.source.as_ref().ok_or_else(|| DomainError::internal("client cell without a source"))?;
                Ok(make(sdk.get().await?))
            })
            .await
    }
}

impl<C> From<C> for ClientCell<C> {
    fn from(client: C) -> Self {
        ClientCell::ready(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn the_sdk_is_loaded_on_first_use_once_and_a_failure_is_unavailable() {
        static LOADS: AtomicUsize = AtomicUsize::new(0);
        let sdk = SdkCell::lazy(|| async {
            LOADS.fetch_add(1, Ordering::SeqCst);
            Ok(SdkConfig::builder().build())
        });
        let a: ClientCell<usize> = ClientCell::lazy(&sdk, |_| 7);
        let b: ClientCell<usize> = ClientCell::lazy(&sdk, |_| 8);
        assert_eq!(LOADS.load(Ordering::SeqCst), 0, "nothing is loaded before a client is used");
        assert_eq!(*a.get().await.unwrap(), 7);
        assert_eq!(*b.get().await.unwrap(), 8);
        assert_eq!(*a.get().await.unwrap(), 7);
        assert_eq!(LOADS.load(Ordering::SeqCst), 1, "one load serves every client");

        static MADE: AtomicUsize = AtomicUsize::new(0);
        let shared: ClientCell<usize> = ClientCell::lazy(&sdk, |_| MADE.fetch_add(1, Ordering::SeqCst) + 10);
        let twin = shared.clone();
        assert_eq!(*twin.get().await.unwrap(), 10);
        assert_eq!(*shared.get().await.unwrap(), 10);
        assert_eq!(MADE.load(Ordering::SeqCst), 1, "clones share the one client");

        let broken = SdkCell::lazy(|| async { Err("no region".to_string()) });
        let c: ClientCell<usize> = ClientCell::lazy(&broken, |_| 9);
        assert!(matches!(c.get().await, Err(DomainError::Unavailable(_))));
        assert_eq!(*ClientCell::ready(3usize).get().await.unwrap(), 3);
    }
}
