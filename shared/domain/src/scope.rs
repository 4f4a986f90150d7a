//! What the request running on this task holds: its `Idempotency-Key`,
//! which a job it starts is recorded under (`Admission::idempotency`).
use crate::ports::HeldKey;

tokio::task_local! {
    static HELD: HeldKey;
}

/// Runs `request` (a request's handling, on this task) holding `held`: a
/// job it starts is recorded in the key's record in the same write.
pub async fn holding<F: std::future::Future>(held: HeldKey, request: F) -> F::Output {
    HELD.scope(held, request).await
}

/// The key the running request holds, if any.
pub(crate) fn held() -> Option<HeldKey> {
    HELD.try_with(Clone::clone).ok()
}
