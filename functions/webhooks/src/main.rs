//! The webhook-endpoint and delivery routes.
#[tokio::main]
async fn main() -> Result<(), capydb_lambda::Error> {
    capydb_lambda::serve_webhooks_api(capydb_lambda::functions::WEBHOOKS).await
}
