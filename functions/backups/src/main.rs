//! The backup, restore and import routes, and the health check.
#[tokio::main]
async fn main() -> Result<(), capydb_aws::lambda::Error> {
    capydb_aws::lambda::serve_backups_api(capydb_aws::lambda::functions::BACKUPS).await
}
