//! The project routes: projects, connection strings, credential rotation.
#[tokio::main]
async fn main() -> Result<(), capydb_aws::lambda::Error> {
    capydb_aws::lambda::serve_api(capydb_aws::lambda::functions::PROJECTS).await
}
