//! The worker of a `postgres-server` deployment: runs lifecycle job steps
//! from the jobs queue on the PostgreSQL server.
#[tokio::main]
async fn main() -> Result<(), capydb_lambda::Error> {
    capydb_lambda::run_worker(capydb_lambda::Role::server_worker).await
}
