//! The counters behind [`StrategyStats`], and the refusal rule the token strategies share.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use http::StatusCode;

use crate::{AccessError, Clock, MediaUrl, Resolution, RetryDecision, StrategyStats, TokenSource};

/// One counter per cache line, so threads counting hits on different keys do not contend
/// (hand-written for the two-thread hit figure in BENCHMARKS.md).
#[derive(Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

const HIT_STRIPES: usize = 16;

/// This thread's hit stripe: threads numbered in the order they first count.
fn thread_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % HIT_STRIPES;
    }
    STRIPE.with(|stripe| *stripe)
}

#[derive(Default)]
pub(crate) struct Counters {
    hits: [Padded; HIT_STRIPES],
    pub(crate) misses: AtomicU64,
    pub(crate) presign_calls: AtomicU64,
    pub(crate) urls_presigned: AtomicU64,
    pub(crate) urls_from_fleet: AtomicU64,
    pub(crate) refusals: AtomicU64,
    pub(crate) token_refreshes: AtomicU64,
    pub(crate) retries: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Counters {
    /// Counts a hit on this thread's stripe: threads count on lines of their own (a stripe per
    /// key would bounce between threads that hit the same keys), with a plain load and store, not
    /// a locked add. Two threads that share a stripe may lose a count when they race: a dashboard
    /// figure, not an invariant.
    pub(crate) fn hit(&self) {
        let stripe = &self.hits[thread_stripe()].0;
        stripe.store(stripe.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StrategyStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StrategyStats {
            cache_hits: self.hits.iter().map(|p| get(&p.0)).sum(),
            cache_misses: get(&self.misses),
            presign_calls: get(&self.presign_calls),
            urls_presigned: get(&self.urls_presigned),
            urls_from_fleet: get(&self.urls_from_fleet),
            refusals: get(&self.refusals),
            token_refreshes: get(&self.token_refreshes),
            retries: get(&self.retries),
        }
    }

    /// The token strategies' answer to a refusal: a 401 (or a 403 for a token past its expiry)
    /// renews the token that was used; a retry makes sense only when a different token came back.
    /// The token source bounds renewals by time (a [`LoginCell`](crate::LoginCell) backs off after
    /// a failed relogin and does not renew a token it installed moments ago): its error is handed
    /// back as a refusal at once, and after a logout nothing logs the user back in.
    pub(crate) async fn refuse_token(
        &self,
        tokens: &dyn TokenSource,
        clock: &dyn Clock,
        url: &MediaUrl<'_>,
        used: &Resolution,
        status: StatusCode,
    ) -> RetryDecision {
        bump(&self.refusals, 1);
        let Some(stale) = used.token() else {
            return RetryDecision::GiveUp;
        };
        let renew =
            status == StatusCode::UNAUTHORIZED || (status == StatusCode::FORBIDDEN && !stale.is_valid_at(clock.now()));
        if !renew {
            tracing::info!(url = %url.redacted(), %status, "media refused; a new token would not help");
            return RetryDecision::GiveUp;
        }
        bump(&self.token_refreshes, 1);
        match tokens.refresh(stale).await {
            Ok(fresh) if !Arc::ptr_eq(&fresh, stale) => {
                bump(&self.retries, 1);
                tracing::info!(url = %url.redacted(), %status, "media refused; token renewed, retrying once");
                RetryDecision::RetryOnce
            }
            Ok(_) => RetryDecision::GiveUp,
            Err(AccessError::NotLoggedIn) => {
                tracing::info!(url = %url.redacted(), %status, "media refused after logout; not logging in again");
                RetryDecision::GiveUp
            }
            Err(error) => {
                tracing::warn!(url = %url.redacted(), %status, %error, "media refused; the token could not be renewed");
                RetryDecision::GiveUp
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::token::tests::{cell_with_hook, start, Hook};
    use crate::{
        EmbeddedStrategy, FileAccessToken, HeaderBasedStrategy, LoginCell, ManualClock, MediaAccessStrategy,
        SecureHosts,
    };

    /// A media server that refuses every token, and a relogin hook that counts its calls (and
    /// fails like a login endpoint answering 503 while told to).
    struct Storm {
        clock: Arc<ManualClock>,
        cell: Arc<LoginCell>,
        hook: Arc<Hook>,
    }

    impl Storm {
        fn new() -> Self {
            let clock = start();
            let (cell, hook) = cell_with_hook(&clock);
            cell.set(FileAccessToken::new("first").unwrap());
            Self { clock, cell: Arc::new(cell), hook }
        }

        fn strategies(&self) -> [Arc<dyn MediaAccessStrategy>; 2] {
            let hosts = SecureHosts::cometchat("us").unwrap();
            [
                Arc::new(EmbeddedStrategy::new(hosts.clone(), self.cell.clone()).with_clock(self.clock.clone())),
                Arc::new(HeaderBasedStrategy::new(hosts, self.cell.clone()).with_clock(self.clock.clone())),
            ]
        }

        fn relogins(&self) -> usize {
            self.hook.calls()
        }
    }

    /// `requests` requests through `strategy`, each refused with 401, its retry too.
    async fn refuse_every_request(strategy: &dyn MediaAccessStrategy, requests: usize) {
        let view = MediaUrl::parse_plain("https://files-us.cometchat.io/app/media/a.png").unwrap();
        for _ in 0..requests {
            let used = strategy.resolve(&view).await.unwrap();
            if strategy.rejected(&view, &used, StatusCode::UNAUTHORIZED).await == RetryDecision::RetryOnce {
                let again = strategy.resolve(&view).await.unwrap();
                assert_eq!(strategy.rejected(&view, &again, StatusCode::UNAUTHORIZED).await, RetryDecision::GiveUp);
            }
        }
    }

    #[tokio::test]
    async fn a_thousand_refused_requests_make_one_relogin_per_quiet_period() {
        for index in 0..2 {
            let storm = Storm::new();
            let strategy = storm.strategies()[index].clone();
            refuse_every_request(&*strategy, 1_000).await;
            assert_eq!(storm.relogins(), 1, "strategy {index}");
            let stats = strategy.stats();
            assert_eq!((stats.refusals, stats.retries), (1_001, 1), "strategy {index}");
            // Renewals grow with time, not with traffic: one more once the quiet period has passed.
            storm.clock.advance(Duration::from_secs(5));
            refuse_every_request(&*strategy, 1_000).await;
            assert_eq!(storm.relogins(), 2, "strategy {index}");
        }
    }

    #[tokio::test]
    async fn a_thousand_refused_requests_while_login_fails_make_one_relogin_per_backoff() {
        for index in 0..2 {
            let storm = Storm::new();
            storm.hook.fail(true);
            let strategy = storm.strategies()[index].clone();
            refuse_every_request(&*strategy, 1_000).await;
            assert_eq!(storm.relogins(), 1, "strategy {index}");
            assert_eq!(strategy.stats().retries, 0, "strategy {index}");
            // The first backoff is at most 1 s.
            storm.clock.advance(Duration::from_secs(1));
            refuse_every_request(&*strategy, 1_000).await;
            assert_eq!(storm.relogins(), 2, "strategy {index}");
        }
    }

    #[tokio::test]
    async fn a_refusal_after_logout_is_handed_back_without_a_login() {
        let storm = Storm::new();
        let view = MediaUrl::parse_plain("https://files-us.cometchat.io/app/media/a.png").unwrap();
        for strategy in storm.strategies() {
            let used = strategy.resolve(&view).await.unwrap();
            storm.cell.clear();
            assert_eq!(strategy.rejected(&view, &used, StatusCode::UNAUTHORIZED).await, RetryDecision::GiveUp);
            assert!(storm.cell.current().is_none());
            storm.cell.set(FileAccessToken::new("again").unwrap());
        }
        assert_eq!(storm.relogins(), 0);
    }
}
