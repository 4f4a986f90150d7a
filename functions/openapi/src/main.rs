//! The OpenAPI document, and the JSON 404 of API Gateway's `$default` route.
#[tokio::main]
async fn main() -> Result<(), capydb_lambda::Error> {
    capydb_lambda::serve_api(capydb_lambda::functions::OPENAPI).await
}
