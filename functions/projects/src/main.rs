//! The project routes: projects, connection strings, credential rotation.
#[tokio::main]
async fn main() -> Result<(), capydb_lambda::Error> {
    capydb_lambda::serve_api(capydb_lambda::functions::PROJECTS).await
}
