//! Webhook delivery: fans published events out to endpoints and sends the attempts.
#[tokio::main]
async fn main() -> Result<(), capydb_aws::lambda::Error> {
    capydb_aws::lambda::run_webhook_delivery().await
}
