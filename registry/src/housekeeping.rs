//! Background housekeeping (spec 1.11): upload expiry, `-maxver` pruning, blob GC.
//!
//! Each job is a tokio task that runs the store call in `spawn_blocking` on its own schedule
//! and stops when the token is cancelled (a run in progress finishes first). Errors are logged
//! with the original's texts.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::{Store, StoreError};

/// Upload expiry: every 10 min (the original's maxAge/3).
pub const EXPIRE_EVERY: Duration = Duration::from_secs(10 * 60);
/// Version pruning: after 1 h, then hourly.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);
/// Unreferenced blob GC: after 3 h, then every 3 h.
pub const GC_EVERY: Duration = Duration::from_secs(3 * 60 * 60);

/// Starts the jobs on `tracker`. `maxver < 1` turns pruning off.
pub fn start(store: &Store, maxver: i64, tracker: &TaskTracker, token: &CancellationToken) {
    let job =
        |period: Duration, what: &'static str, run: fn(&Store) -> Result<usize, StoreError>| {
            let (store, token) = (store.clone(), token.clone());
            tracker.spawn(every(period, token, move || {
                run_job(store.clone(), what, run)
            }));
        };
    job(EXPIRE_EVERY, "error removing expired uploads", |s| {
        s.expire_uploads()
    });
    if let Ok(keep) = usize::try_from(maxver)
        && keep >= 1
    {
        let (store, token) = (store.clone(), token.clone());
        tracker.spawn(every(PRUNE_EVERY, token, move || {
            let store = store.clone();
            async move {
                let result = tokio::task::spawn_blocking(move || store.prune_versions(keep)).await;
                report(
                    "error removing excess versions",
                    "pruned old versions",
                    result,
                );
            }
        }));
    }
    job(GC_EVERY, "error removing unreferenced files", |s| {
        s.gc_blobs()
    });
}

async fn run_job(store: Store, what: &'static str, run: fn(&Store) -> Result<usize, StoreError>) {
    let result = tokio::task::spawn_blocking(move || run(&store)).await;
    report(what, "housekeeping", result);
}

fn report(
    error_text: &str,
    done: &str,
    result: Result<Result<usize, StoreError>, tokio::task::JoinError>,
) {
    match result {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!(removed = n, "{done}"),
        Ok(Err(StoreError::Internal(cause))) => tracing::error!("{error_text}: {cause:#}"),
        Ok(Err(err)) => tracing::error!("{error_text}: {err}"),
        Err(err) => tracing::error!("{error_text}: {err}"),
    }
}

/// Runs `job` after `period`, then every `period`, until `token` is cancelled.
async fn every<F, Fut>(period: Duration, token: CancellationToken, mut job: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = ticker.tick() => job().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn schedule_first_run_after_one_period_and_stops_on_cancel() {
        let token = CancellationToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let task = tokio::spawn(every(Duration::from_secs(60), token.clone(), move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }));
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        token.cancel();
        task.await.unwrap();
    }
}
