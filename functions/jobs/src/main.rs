//! The job routes.
#[tokio::main]
async fn main() -> Result<(), capydb_aws::lambda::Error> {
    capydb_aws::lambda::serve_api(capydb_aws::lambda::functions::JOBS).await
}
