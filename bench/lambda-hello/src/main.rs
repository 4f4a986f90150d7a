//! Hello world on `lambda_runtime`: echoes its event. The cold-start
//! benchmark compares every CapyDB function's init time with this one's.
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|e: LambdaEvent<serde_json::Value>| async move { Ok::<_, Error>(e.payload) })).await
}
