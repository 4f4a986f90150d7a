//! The backup, restore and import routes, and the health check.
#[tokio::main]
async fn main() -> Result<(), capydb_lambda::Error> {
    capydb_lambda::serve_backups_api(capydb_lambda::functions::BACKUPS).await
}
