//! The OpenAPI document, and the JSON 404 of API Gateway's `$default` route.
#[tokio::main]
async fn main() -> Result<(), capydb_aws::lambda::Error> {
    capydb_aws::lambda::serve_api(capydb_aws::lambda::functions::OPENAPI).await
}
