//! The worker: runs lifecycle job steps from the jobs queue.
#[tokio::main]
async fn main() -> Result<(), capydb_aws::lambda::Error> {
    capydb_aws::lambda::run_worker().await
}
