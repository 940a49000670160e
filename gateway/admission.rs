//! Waiting a bounded time for a turn at a bounded resource: webhook requests in flight, commands on the
//! shared Redis connection.

use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

/// A permit of `sem`, waiting at most `wait`; `None` when none came in time (or `sem` is closed). A free
/// permit is taken without setting up the timeout (a clock read and a runtime handle): callers run this
/// for every request, and a free permit is the usual case.
pub async fn permit_within(sem: &Semaphore, wait: Duration) -> Option<SemaphorePermit<'_>> {
    if let Ok(permit) = sem.try_acquire() {
        return Some(permit);
    }
    tokio::time::timeout(wait, sem.acquire()).await.ok()?.ok()
}
