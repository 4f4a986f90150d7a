//! The sweeper, every minute: expired previews, stuck jobs, unpublished events, due webhook retries.
#[tokio::main]
async fn main() -> Result<(), capydb_lambda::Error> {
    capydb_lambda::run_sweeper().await
}
