//! Presigned mode: clean URLs exchanged for time-limited presigned URLs, cached per principal,
//! renewed ahead of expiry, fetched once per key and in batches.

mod cache;
pub mod endpoint;
mod expiry;
mod flights;
mod presigner;

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::StatusCode;

pub use cache::{CacheKey, MemoryPresignCache, PresignCache};
pub use expiry::expiry_of;
pub use presigner::{Presigned, Presigner, SignedUrl};

use self::flights::{FlightKey, Flights, Outcome};
use crate::counters::{bump, Counters};
use crate::{
    AccessError, Clock, FileAccessToken, MediaAccessStrategy, MediaUrl, Resolution, RetryDecision, SecureHosts,
    StrategyStats, SystemClock, TokenListener, TokenSource, UrlChange,
};

/// Tuning for [`PresignedStrategy`]: `PresignConfig { batch_limit: 20, ..PresignConfig::default() }`.
#[derive(Debug, Clone)]
pub struct PresignConfig {
    /// A URL is not handed out within this much of its expiry (capped at a quarter of its
    /// lifetime, so short-lived URLs stay usable). Default 30 s.
    pub safety_margin: Duration,
    /// The lifetime assumed when neither the endpoint nor the URL states one. Default 15 min
    /// (the vendor's shortest).
    pub default_ttl: Duration,
    /// In the last fifth of a URL's usable life, one caller renews it while the rest keep using it.
    /// Set to 0 to renew only on expiry. Default 20 (percent).
    pub refresh_ahead_percent: u8,
    /// The most URLs in one presign call (also capped by [`Presigner::max_batch`]). Default 50.
    pub batch_limit: usize,
    /// The most distinct keys waiting for a presign at once; beyond it, [`AccessError::Busy`]. Default 10,000.
    pub max_waiting: usize,
    /// The cache scope; default: the token's principal (`sub`), so users never share URLs.
    pub scope: Option<Arc<str>>,
    /// Capacity of the default in-memory cache. Default 10,000.
    pub cache_capacity: usize,
}

impl Default for PresignConfig {
    fn default() -> Self {
        Self {
            safety_margin: Duration::from_secs(30),
            default_ttl: Duration::from_secs(15 * 60),
            refresh_ahead_percent: 20,
            batch_limit: 50,
            max_waiting: 10_000,
            scope: None,
            cache_capacity: 10_000,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Freshness {
    Fresh,
    RenewSoon,
    Expired,
}

/// Presigned mode. Generic over the [`Presigner`] (the endpoint) and the [`PresignCache`]
/// (memory by default, Redis for a fleet, or yours).
///
/// - Keyed by principal scope + clean URL, so tokens and signatures rotate without new keys and
///   one user's URL is never served to another; logout or a user switch purges the old scope.
/// - A cache hit answers synchronously ([`resolve_ready`](MediaAccessStrategy::resolve_ready)).
/// - Never hands out a URL within the safety margin of its expiry; renews ahead of it.
/// - Concurrent misses for one key make one presign call; misses arriving during a call join the
///   next call (group commit), up to the batch limit.
///
/// ```
/// # futures::executor::block_on(async {
/// use std::sync::Arc;
/// use async_trait::async_trait;
/// use secure_media_core::presigned::{Presigned, Presigner, PresignedStrategy};
/// use secure_media_core::*;
///
/// struct Signer;
/// #[async_trait]
/// impl Presigner for Signer {
///     async fn presign(&self, url: &str, _token: &FileAccessToken) -> Result<Presigned, AccessError> {
///         Ok(Presigned { url: format!("{url}?Expires=4000000000&Signature=abc&Key-Pair-Id=k"), expires_at: None })
///     }
/// }
///
/// let strategy = PresignedStrategy::new(SecureHosts::cometchat("us").unwrap(), Arc::new(StaticToken::parse("t").unwrap()), Signer);
/// let (url, _) = resolve_str(&strategy, "https://files-us.cometchat.io/app/media/a.png").await.unwrap();
/// assert_eq!(url, "https://files-us.cometchat.io/app/media/a.png?Expires=4000000000&Signature=abc&Key-Pair-Id=k");
/// assert_eq!(strategy.stats().presign_calls, 1);
/// # });
/// ```
pub struct PresignedStrategy<P, C = MemoryPresignCache> {
    hosts: SecureHosts,
    tokens: Arc<dyn TokenSource>,
    presigner: P,
    cache: Arc<C>,
    clock: Arc<dyn Clock>,
    config: PresignConfig,
    flights: Flights,
    counters: Counters,
    purger: Arc<ScopePurger<C>>,
}

impl<P: Presigner> PresignedStrategy<P, MemoryPresignCache> {
    /// Presigned URLs for `hosts` from `presigner`, cached in memory.
    pub fn new(hosts: SecureHosts, tokens: Arc<dyn TokenSource>, presigner: P) -> Self {
        let cache = Arc::new(MemoryPresignCache::new(PresignConfig::default().cache_capacity));
        Self::with_cache(hosts, tokens, presigner, cache)
    }

    /// The same, tuned. The in-memory cache takes `config.cache_capacity`.
    pub fn with_config(hosts: SecureHosts, tokens: Arc<dyn TokenSource>, presigner: P, config: PresignConfig) -> Self {
        let cache = Arc::new(MemoryPresignCache::new(config.cache_capacity));
        Self::with_cache(hosts, tokens, presigner, cache).configured(config)
    }
}

impl<P: Presigner, C: PresignCache> PresignedStrategy<P, C> {
    /// Presigned URLs for `hosts` from `presigner`, cached in `cache`.
    pub fn with_cache(hosts: SecureHosts, tokens: Arc<dyn TokenSource>, presigner: P, cache: Arc<C>) -> Self {
        let config = PresignConfig::default();
        let purger = Arc::new(ScopePurger { cache: cache.clone(), fixed_scope: false });
        let weak: Weak<dyn TokenListener> = Arc::downgrade(&purger) as Weak<dyn TokenListener>;
        tokens.subscribe(weak);
        Self {
            flights: Flights::new(config.batch_limit.min(presigner.max_batch()), config.max_waiting),
            hosts,
            tokens,
            presigner,
            cache,
            clock: Arc::new(SystemClock),
            config,
            counters: Counters::default(),
            purger,
        }
    }

    /// Applies a configuration (batch limit, margins, scope). The cache is not resized.
    pub fn configured(mut self, config: PresignConfig) -> Self {
        self.flights = Flights::new(config.batch_limit.min(self.presigner.max_batch()), config.max_waiting);
        if let Some(purger) = Arc::get_mut(&mut self.purger) {
            purger.fixed_scope = config.scope.is_some();
        }
        self.config = config;
        self
    }

    /// Uses another clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The cache.
    pub fn cache(&self) -> &Arc<C> {
        &self.cache
    }

    /// The presigner.
    pub fn presigner(&self) -> &P {
        &self.presigner
    }

    fn scope<'t>(&'t self, token: &'t FileAccessToken) -> &'t str {
        self.config.scope.as_deref().unwrap_or(token.principal())
    }

    fn freshness(&self, signed: &SignedUrl, now: SystemTime) -> Freshness {
        let (renew_from, usable_until) = signed.windows(|| {
            let lifetime = signed.lifetime();
            let margin = self.config.safety_margin.min(lifetime / 4);
            let usable_until = signed.expires_at() - margin;
            let renew_window = lifetime * u32::from(self.config.refresh_ahead_percent.min(100)) / 100;
            (usable_until.checked_sub(renew_window).unwrap_or(usable_until), usable_until)
        });
        if now >= usable_until {
            Freshness::Expired
        } else if now >= renew_from && renew_from < usable_until {
            Freshness::RenewSoon
        } else {
            Freshness::Fresh
        }
    }

    /// The cached URL if fresh, else a presigned one; renews ahead of expiry.
    async fn signed_url(&self, clean: &str, token: &Arc<FileAccessToken>) -> Outcome {
        let scope = self.scope(token);
        let key = CacheKey::new(scope, clean);
        let cached = match self.cache.get_ready(&key) {
            Some(hit) => Some(hit),
            None => self.cache.get(&key).await,
        };
        if let Some(hit) = cached {
            match self.freshness(&hit, self.clock.now()) {
                Freshness::Fresh => {
                    self.counters.hit();
                    return Ok(hit);
                }
                Freshness::RenewSoon => {
                    let ticket = self.flights.enter(scope, clean, token)?;
                    if !ticket.opened {
                        // Someone else is renewing it: keep using the current one.
                        self.counters.hit();
                        return Ok(hit);
                    }
                    tracing::debug!(url = clean, "presigned URL near expiry: renewing ahead");
                    return self.flights.wait(ticket, |token, keys| self.presign(token, keys)).await;
                }
                Freshness::Expired => self.cache.remove(&key).await,
            }
        }
        bump(&self.counters.misses, 1);
        tracing::debug!(url = clean, "presign cache miss");
        let ticket = self.flights.enter(scope, clean, token)?;
        self.flights.wait(ticket, |token, keys| self.presign(token, keys)).await
    }

    /// One presign call for a batch; fresh URLs go into the cache before waiters are told.
    async fn presign(&self, token: Arc<FileAccessToken>, keys: Vec<FlightKey>) -> Vec<Outcome> {
        bump(&self.counters.presign_calls, 1);
        bump(&self.counters.urls_presigned, keys.len() as u64);
        tracing::debug!(urls = keys.len(), "presign call");
        let urls: Vec<Arc<str>> = keys.iter().map(|k| k.url.clone()).collect();
        let answers = self.presigner.presign_batch(&urls, &token).await;
        let now = self.clock.now();
        let mut outcomes = Vec::with_capacity(keys.len());
        for (key, answer) in keys.iter().zip(answers) {
            let outcome =
                answer.and_then(|a| SignedUrl::from_presigned(a, &key.url, now, self.config.default_ttl)).map(Arc::new);
            match &outcome {
                Ok(signed) => self.cache.put(&CacheKey::new(&key.scope, &key.url), signed.clone()).await,
                Err(error) => tracing::warn!(url = &*key.url, %error, "presign failed"),
            }
            outcomes.push(outcome);
        }
        outcomes
    }
}

#[async_trait]
impl<P: Presigner, C: PresignCache> MediaAccessStrategy for PresignedStrategy<P, C> {
    fn secure_hosts(&self) -> &SecureHosts {
        &self.hosts
    }

    fn resolve_ready(&self, url: &MediaUrl<'_>) -> Option<Result<Resolution, AccessError>> {
        let clean = url.clean_key();
        // The token is lent, not cloned: see `TokenSource::peek`.
        let token = self.tokens.peek()?;
        let key = CacheKey::new(self.scope(&token), &clean);
        let hit = self.cache.get_ready(&key);
        drop(token);
        let hit = hit?;
        if self.freshness(&hit, self.clock.now()) != Freshness::Fresh {
            return None;
        }
        self.counters.hit();
        // No token in a hit's resolution: a refusal finds the scope in the URL's stored key.
        Some(Ok(Resolution::replace(hit)))
    }

    async fn resolve(&self, url: &MediaUrl<'_>) -> Result<Resolution, AccessError> {
        let clean = url.clean_key();
        let mut token = self.tokens.token().await?;
        let mut renewed = false;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.signed_url(&clean, &token).await {
                Ok(signed) => return Ok(Resolution::replace(signed).with_token(token)),
                Err(AccessError::PresignUnauthorized { .. }) if !renewed => {
                    tracing::info!(url = %url.redacted(), "presign endpoint refused the token: renewing it");
                    bump(&self.counters.token_refreshes, 1);
                    token = self.tokens.refresh(&token).await?;
                    renewed = true;
                }
                // The caller driving our flight was dropped: try again, a few times at most.
                Err(AccessError::Cancelled(_)) if attempts < 3 => {}
                Err(error) => return Err(error),
            }
        }
    }

    async fn rejected(&self, url: &MediaUrl<'_>, used: &Resolution, status: StatusCode) -> RetryDecision {
        bump(&self.counters.refusals, 1);
        if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
            return RetryDecision::GiveUp;
        }
        // Whose URL was refused: the token used, else the scope the URL was cached under.
        let current = self.tokens.current();
        let stored = match used.url_change() {
            UrlChange::Replace(signed) => signed.stored_scope(),
            _ => None,
        };
        let scope = match (used.token(), stored, &current) {
            (Some(token), _, _) => self.scope(token),
            (None, Some(stored), _) => stored,
            (None, None, Some(token)) => self.scope(token),
            (None, None, None) => return RetryDecision::GiveUp,
        };
        let clean = url.clean_key();
        self.cache.remove(&CacheKey::new(scope, &clean)).await;
        bump(&self.counters.retries, 1);
        tracing::info!(url = %url.redacted(), %status, "presigned URL refused: dropped, presigning again");
        RetryDecision::RetryOnce
    }

    fn stats(&self) -> StrategyStats {
        self.counters.snapshot()
    }

    fn cache_scope(&self) -> Option<Arc<str>> {
        match &self.config.scope {
            Some(scope) => Some(scope.clone()),
            None => self.tokens.peek().map(|token| token.cache_scope().into()),
        }
    }
}

impl<P, C> fmt::Debug for PresignedStrategy<P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresignedStrategy")
            .field("hosts", &self.hosts)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Purges the old principal's cached URLs when the token source switches user or logs out.
struct ScopePurger<C> {
    cache: Arc<C>,
    /// An app-given scope is the app's to manage.
    fixed_scope: bool,
}

impl<C: PresignCache> TokenListener for ScopePurger<C> {
    fn token_changed(&self, old: Option<&FileAccessToken>, new: Option<&FileAccessToken>) {
        if self.fixed_scope {
            return;
        }
        if let Some(old) = old {
            if new.map(FileAccessToken::principal) != Some(old.principal()) {
                tracing::debug!("principal changed: purging its presigned URLs");
                self.cache.purge_scope(old.principal());
            }
        }
    }
}

#[cfg(test)]
mod tests;
