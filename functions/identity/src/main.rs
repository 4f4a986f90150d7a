//! The identity and API-key routes: who am I, organizations, API keys.
#[tokio::main]
async fn main() -> Result<(), capydb_aws::lambda::Error> {
    capydb_aws::lambda::serve_api(capydb_aws::lambda::functions::IDENTITY).await
}
