//! The preview-database routes.
#[tokio::main]
async fn main() -> Result<(), capydb_lambda::Error> {
    capydb_lambda::serve_api(capydb_lambda::functions::PREVIEWS).await
}
