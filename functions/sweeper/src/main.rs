//! The sweeper, every minute: expired previews, stuck jobs, unpublished events, due webhook retries.
#[tokio::main]
async fn main() -> Result<(), capydb_aws::lambda::Error> {
    capydb_aws::lambda::run_sweeper().await
}
