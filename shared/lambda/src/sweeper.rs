//! The `sweeper` function, every minute: one [`App::sweep`].
use capydb_domain::sweep::SweepReport;
use capydb_domain::App;
use lambda_runtime::{service_fn, LambdaEvent};

use crate::wiring::Role;
use crate::{start, Error};

/// One sweep; the invocation fails if any part did, so the failure shows in
/// the function's metrics.
pub async fn sweep(app: &App) -> Result<SweepReport, String> {
    let report = app.sweep().await;
    if report.is_ok() {
        Ok(report)
    } else {
        Err(report.errors.join("; "))
    }
}

/// `main` of `sweeper`: the one-minute schedule (the event's content is not used).
pub async fn run_sweeper() -> Result<(), Error> {
    let (_, app) = start(Role::sweeper).await?;
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| {
        let app = app.clone();
        async move { sweep(&app).await.map_err(Error::from) }
    }))
    .await
}
