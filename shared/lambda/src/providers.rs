//! The database providers of the functions: [`endpoint`] (where databases
//! are and how clients reach them, for the API functions) and
//! [`LazyProvider`] (the PostgreSQL provider, connected on first use, for
//! the worker and the backups function).
use std::sync::Arc;

use async_trait::async_trait;
use capydb_aws::client::{ClientCell, SdkCell};
use capydb_aws::sdk::ssm;
use capydb_domain::ports::{
    CloneResult, DatabaseEndpoint, DatabaseProvider, DedicatedServers, ProviderError, ProviderResult, ServerOwner,
    ServerSnapshot, ServerSnapshots, ServerSource, Slot,
};
use capydb_egress::EgressPolicy;
use capydb_postgres::{ClientEndpoint, PgProvider, PgTls};
use tokio::sync::OnceCell;

use crate::config::{Config, Databases};

/// Where databases are and how clients reach them, from the configuration
/// alone: the functions that only answer about databases never connect.
/// With Aurora each project and preview has its own host (recorded on it);
/// this knows the port, the region and the version.
pub fn endpoint(config: &Config) -> Result<ClientEndpoint, String> {
    match &config.databases {
        Databases::Server { admin_url, .. } => {
            ClientEndpoint::of_admin_url(admin_url, &config.region, &config.pg_version).map_err(|e| e.to_string())
        }
        Databases::Aurora(_) => Ok(ClientEndpoint::dedicated(&config.region, &config.pg_version, capydb_aurora::PORT)),
    }
}

/// The Aurora clusters of a deployment with `DatabaseProvider=aurora`: the
/// RDS client is made on first use, from the function's SDK configuration.
pub struct LazyServers {
    rds: ClientCell<capydb_aurora::aws_sdk_rds::Client>,
    settings: capydb_aurora::AuroraSettings,
    resolver: Arc<dyn capydb_aurora::Resolve>,
    region: String,
    egress: EgressPolicy,
    /// TLS to the clusters (always, deployed; see `without_tls`).
    tls: bool,
    servers: OnceCell<capydb_aurora::AuroraServers>,
}

impl LazyServers {
    pub fn of(
        config: &Config,
        sdk: &Arc<SdkCell>,
        resolver: Arc<dyn capydb_aurora::Resolve>,
    ) -> Result<LazyServers, String> {
        let Databases::Aurora(settings) = &config.databases else {
            return Err("the Aurora servers need CAPYDB_DATABASE_PROVIDER=aurora".into());
        };
        Ok(LazyServers {
            rds: ClientCell::lazy(sdk, capydb_aurora::aws_sdk_rds::Client::new),
            settings: settings.clone(),
            resolver,
            region: config.region.clone(),
            egress: config.egress(),
            tls: true,
            servers: OnceCell::new(),
        })
    }

    /// Plaintext to the clusters: only for the tests' stand-in servers,
    /// which speak no TLS.
    pub fn without_tls(self) -> LazyServers {
        LazyServers { tls: false, ..self }
    }

    async fn get(&self) -> ProviderResult<&capydb_aurora::AuroraServers> {
        self.servers
            .get_or_try_init(|| async {
                let client = self.rds.get().await.map_err(|e| setup_error(true, e.to_string()))?;
                let rds = capydb_aurora::Rds::new(client.clone(), self.settings.clone());
                let mut servers = capydb_aurora::AuroraServers::new(rds, self.resolver.clone(), &self.region);
                servers.set_egress_policy(self.egress);
                if self.tls {
                    servers.set_tls(PgTls::rds().map_err(|e| setup_error(false, format!("the RDS roots: {e}")))?);
                }
                Ok(servers)
            })
            .await
    }
}

#[async_trait]
impl DedicatedServers for LazyServers {
    async fn make(
        &self,
        owner: ServerOwner<'_>,
        slot: Slot<'_>,
        source: ServerSource<'_>,
        admin_password: &str,
    ) -> ProviderResult<String> {
        self.get().await?.make(owner, slot, source, admin_password).await
    }
    async fn swap(&self, owner: ServerOwner<'_>, job: &str) -> ProviderResult<String> {
        self.get().await?.swap(owner, job).await
    }
    async fn revert(&self, owner: ServerOwner<'_>, job: &str) -> ProviderResult<String> {
        self.get().await?.revert(owner, job).await
    }
    async fn remove_spares(&self, owner: ServerOwner<'_>) -> ProviderResult<()> {
        self.get().await?.remove_spares(owner).await
    }
    async fn remove(&self, owner: ServerOwner<'_>, final_snapshot: bool) -> ProviderResult<()> {
        self.get().await?.remove(owner, final_snapshot).await
    }
    async fn admin(&self, host: &str, admin_password: &str) -> ProviderResult<Arc<dyn DatabaseProvider>> {
        self.get().await?.admin(host, admin_password).await
    }
    async fn snapshot(&self, owner: ServerOwner<'_>, backup_id: &str) -> ProviderResult<()> {
        self.get().await?.snapshot(owner, backup_id).await
    }
}

/// The Aurora snapshots of a deployment with `DatabaseProvider=aurora`, for
/// the sweeper: the RDS client, made on first use, and nothing else.
pub struct LazySnapshots {
    rds: ClientCell<capydb_aurora::aws_sdk_rds::Client>,
    settings: capydb_aurora::AuroraSettings,
}

impl LazySnapshots {
    pub fn of(config: &Config, sdk: &Arc<SdkCell>) -> Result<LazySnapshots, String> {
        let Databases::Aurora(settings) = &config.databases else {
            return Err("the Aurora snapshots need CAPYDB_DATABASE_PROVIDER=aurora".into());
        };
        Ok(LazySnapshots {
            rds: ClientCell::lazy(sdk, capydb_aurora::aws_sdk_rds::Client::new),
            settings: settings.clone(),
        })
    }

    async fn get(&self) -> ProviderResult<capydb_aurora::AuroraSnapshots> {
        let client = self.rds.get().await.map_err(|e| setup_error(true, e.to_string()))?;
        Ok(capydb_aurora::AuroraSnapshots::new(capydb_aurora::Rds::new(client.clone(), self.settings.clone())))
    }
}

#[async_trait]
impl ServerSnapshots for LazySnapshots {
    async fn snapshots(&self) -> ProviderResult<Vec<ServerSnapshot>> {
        self.get().await?.snapshots().await
    }
    async fn delete_snapshot(&self, id: &str) -> ProviderResult<()> {
        self.get().await?.delete_snapshot(id).await
    }
}

/// `DatabaseProvider` that connects on first use: the admin password comes
/// from SSM then, so functions that only answer connection strings never fetch it.
pub struct LazyProvider {
    admin_url: String,
    password_param: Option<String>,
    ssm: ClientCell<ssm::Client>,
    /// Region, version and connection strings, as the API functions answer them.
    endpoint: ClientEndpoint,
    /// Where imports may connect (the deployed policy denies private targets).
    egress: EgressPolicy,
    provider: OnceCell<PgProvider>,
}

/// A failure to set the provider up (configuration, SSM): it reaches a
/// job's `error`, so the detail goes to the log and a user reads a sentence.
fn setup_error(retryable: bool, detail: String) -> ProviderError {
    tracing::error!(error = %detail, "the worker could not set up its PostgreSQL provider");
    let message = "CapyDB could not reach its database server; retry, or contact support if it persists".to_string();
    if retryable {
        ProviderError::Retryable(message)
    } else {
        ProviderError::Permanent(message)
    }
}

impl LazyProvider {
    /// The PostgreSQL provider of `config`, connected (and its admin
    /// password read from SSM) on first use.
    pub fn of(config: &Config, sdk: &Arc<SdkCell>) -> Result<LazyProvider, String> {
        let Databases::Server { admin_url, password_param } = &config.databases else {
            return Err("the PostgreSQL-server provider needs CAPYDB_DATABASE_PROVIDER=postgres-server".into());
        };
        Ok(LazyProvider {
            admin_url: admin_url.clone(),
            password_param: password_param.clone(),
            ssm: ClientCell::lazy(sdk, ssm::Client::new),
            endpoint: endpoint(config)?,
            egress: config.egress(),
            provider: OnceCell::new(),
        })
    }

    async fn get(&self) -> ProviderResult<&PgProvider> {
        self.provider
            .get_or_try_init(|| async {
                let mut url = url::Url::parse(&self.admin_url)
                    .map_err(|e| setup_error(false, format!("invalid CAPYDB_PG_ADMIN_URL: {e}")))?;
                if let Some(param) = &self.password_param {
                    let ssm = self.ssm.get().await.map_err(|e| setup_error(true, e.to_string()))?;
                    let out = ssm.get_parameter().name(param).with_decryption(true).send().await.map_err(|e| {
                        let why = ssm::error::DisplayErrorContext(&e);
                        setup_error(true, format!("read the admin password parameter {param}: {why}"))
                    })?;
                    let password = out.parameter().and_then(|p| p.value()).unwrap_or_default();
                    url.set_password(Some(password))
                        .map_err(|()| setup_error(false, "CAPYDB_PG_ADMIN_URL cannot carry a password".into()))?;
                }
                // Its own errors are already a user's sentence, the detail logged.
                let mut provider = PgProvider::connect(url.as_str(), &self.endpoint.region()).await?;
                provider.set_egress_policy(self.egress);
                let versions = provider.endpoint().pg_versions();
                let wanted = self.endpoint.pg_versions();
                if !wanted.iter().all(|v| versions.contains(v)) {
                    return Err(setup_error(
                        false,
                        format!(
                            "CAPYDB_PG_VERSION is {} but the server runs PostgreSQL {}",
                            wanted.join(", "),
                            versions.join(", ")
                        ),
                    ));
                }
                Ok(provider)
            })
            .await
    }
}

#[async_trait]
impl DatabaseProvider for LazyProvider {
    async fn ensure_role(&self, role: &str, password: &str) -> ProviderResult<()> {
        self.get().await?.ensure_role(role, password).await
    }
    async fn ensure_database(&self, database: &str, owner: &str) -> ProviderResult<()> {
        self.get().await?.ensure_database(database, owner).await
    }
    async fn clone_database(&self, source: &str, source_owner: &str, target: &str, owner: &str) -> CloneResult {
        self.get().await?.clone_database(source, source_owner, target, owner).await
    }
    async fn dump_database(&self, database: &str, dest: &std::path::Path) -> ProviderResult<()> {
        self.get().await?.dump_database(database, dest).await
    }
    async fn restore_database(&self, dump: &std::path::Path, target: &str, owner: &str) -> ProviderResult<()> {
        self.get().await?.restore_database(dump, target, owner).await
    }
    async fn import_database(&self, source_url: &str, target: &str, owner: &str) -> ProviderResult<()> {
        self.get().await?.import_database(source_url, target, owner).await
    }
    async fn replace_database(&self, live: &str, replacement: &str) -> ProviderResult<()> {
        self.get().await?.replace_database(live, replacement).await
    }
    async fn check_connection(&self, database: &str, role: &str, password: &str) -> ProviderResult<()> {
        self.get().await?.check_connection(database, role, password).await
    }
    async fn drop_database(&self, database: &str) -> ProviderResult<()> {
        self.get().await?.drop_database(database).await
    }
    async fn drop_role(&self, role: &str) -> ProviderResult<()> {
        self.get().await?.drop_role(role).await
    }
    async fn database_exists(&self, database: &str) -> ProviderResult<bool> {
        self.get().await?.database_exists(database).await
    }
    async fn role_exists(&self, role: &str) -> ProviderResult<bool> {
        self.get().await?.role_exists(role).await
    }
    async fn ping(&self) -> ProviderResult<()> {
        self.get().await?.ping().await
    }
}
