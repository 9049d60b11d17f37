//! The counters behind [`StrategyStats`], and the refusal rule the token strategies share.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use http::StatusCode;

use crate::{Clock, MediaUrl, Resolution, RetryDecision, StrategyStats, TokenSource};

/// One counter per cache line, so threads counting hits on different keys do not contend.
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
            refusals: get(&self.refusals),
            token_refreshes: get(&self.token_refreshes),
            retries: get(&self.retries),
        }
    }

    /// The token strategies' answer to a refusal: a 401 (or a 403 for a token past its expiry)
    /// renews the token that was used; a retry makes sense only when a different token came back.
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
            Err(error) => {
                tracing::warn!(url = %url.redacted(), %status, %error, "media refused; the token could not be renewed");
                RetryDecision::GiveUp
            }
        }
    }
}
