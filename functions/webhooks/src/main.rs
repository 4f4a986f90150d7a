//! The webhook-endpoint and delivery routes.
#[tokio::main]
async fn main() -> Result<(), capydb_aws::lambda::Error> {
    capydb_aws::lambda::serve_webhooks_api(capydb_aws::lambda::functions::WEBHOOKS).await
}
