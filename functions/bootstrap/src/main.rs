//! The first organization and its admin API key, invoked by hand once after `sam deploy`.
#[tokio::main]
async fn main() -> Result<(), capydb_lambda::Error> {
    capydb_lambda::run_bootstrap().await
}
