//! `GET /v1/health`: whether this process can reach what it depends on.
//! Anyone may ask, so the answer says only `ok` or `unavailable` per
//! dependency; what went wrong goes to the log.
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::App;
use crate::error::DomainError;
use crate::ports::Hosting;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Ok,
    Unavailable,
    /// Nothing to ask: a deployment whose projects each have a database
    /// server of their own has no shared one.
    NotApplicable,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when every dependency is.
    pub status: Check,
    /// The metadata store (SQLite locally, DynamoDB deployed).
    pub store: Check,
    /// The job queue.
    pub queue: Check,
    /// The database server that hosts the projects (`not_applicable` where
    /// each project has its own).
    pub database: Check,
}

/// How long a dependency may take to answer: a health check that hangs is
/// no answer (a load balancer gives up long before a busy server would).
const BUDGET: std::time::Duration = std::time::Duration::from_secs(3);

async fn check<T, E: std::fmt::Display>(what: &str, f: impl std::future::Future<Output = Result<T, E>>) -> Check {
    match tokio::time::timeout(BUDGET, f).await {
        Ok(Ok(_)) => Check::Ok,
        Ok(Err(e)) => {
            tracing::warn!(dependency = what, error = %e, "health check failed");
            Check::Unavailable
        }
        Err(_) => {
            tracing::warn!(dependency = what, budget_s = BUDGET.as_secs(), "health check got no answer in time");
            Check::Unavailable
        }
    }
}

impl App {
    /// Asks each dependency one cheap question, all at once, each within
    /// [`BUDGET`].
    pub async fn health(&self) -> Health {
        let (store, queue, database) =
            tokio::join!(check("store", self.store.has_organizations()), check("queue", self.queue.depth()), async {
                if self.settings.hosting == Hosting::Dedicated {
                    return Check::NotApplicable;
                }
                check("database", async {
                    let answer = match &self.probe {
                        Some(probe) => probe.probe().await,
                        None => self.database()?.ping().await,
                    };
                    answer.map_err(|e| DomainError::Unavailable(e.to_string()))
                })
                .await
            },);
        let all = [store, queue, database].iter().all(|c| *c != Check::Unavailable);
        Health { status: if all { Check::Ok } else { Check::Unavailable }, store, queue, database }
    }
}
