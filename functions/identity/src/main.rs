//! The identity and API-key routes: who am I, organizations, API keys.
#[tokio::main]
async fn main() -> Result<(), capydb_lambda::Error> {
    capydb_lambda::serve_api(capydb_lambda::functions::IDENTITY).await
}
