//! The worker: runs lifecycle job steps from the jobs queue.
#[tokio::main]
async fn main() -> Result<(), capydb_lambda::Error> {
    capydb_lambda::run_worker().await
}
