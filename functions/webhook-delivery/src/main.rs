//! Webhook delivery: fans published events out to endpoints and sends the attempts.
#[tokio::main]
async fn main() -> Result<(), capydb_lambda::Error> {
    capydb_lambda::run_webhook_delivery().await
}
