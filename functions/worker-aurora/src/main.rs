//! The worker of an `aurora` deployment: runs lifecycle job steps from the
//! jobs queue on an Aurora Serverless v2 cluster per project and preview.
#[tokio::main]
async fn main() -> Result<(), capydb_lambda::Error> {
    capydb_lambda::run_worker(capydb_lambda::Role::aurora_worker).await
}
