//! Presigned mode: clean URLs exchanged for time-limited presigned URLs, cached per principal,
//! renewed ahead of expiry, fetched once per key and in batches.

mod cache;
pub mod endpoint;
mod expiry;
mod flights;
mod presigner;
mod proven;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::StatusCode;

pub use cache::{CacheKey, Lease, MemoryPresignCache, PresignCache};
pub use expiry::expiry_of;
pub use presigner::{Presigned, Presigner, SignedUrl, MAX_CLOCK_AHEAD, MAX_URL_LIFETIME};

use self::endpoint::saturating_add;
use self::flights::{Early, FlightKey, Flights, Outcome, Ticket};
use self::presigner::Destinations;
use self::proven::{Proof, ProvenTokens};
use crate::counters::{bump, Counters};
use crate::{
    strategy_serves, AccessError, Clock, FileAccessToken, MediaAccessStrategy, MediaUrl, Resolution, RetryDecision,
    SecureHosts, StrategyStats, SystemClock, TokenListener, TokenSource, UrlChange,
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
    /// The most distinct keys waiting for a presign call at once (one that may find them in a
    /// shared cache's remote tier first); beyond it, [`AccessError::Busy`]. Default 10,000.
    pub max_waiting: usize,
    /// The most presign calls in flight at once. Each takes up to `batch_limit` of the URLs
    /// waiting when it starts; misses arriving meanwhile gather into the next. Asking ahead
    /// ([`prefetch`](MediaAccessStrategy::prefetch)) uses all but one, left to the loads under
    /// way. Default 16.
    pub max_concurrent_calls: usize,
    /// The cache scope; default: the token's principal, so users never share URLs. A JWT's
    /// `sub` names the scope only once the presign endpoint has accepted that token; until then
    /// the token is scoped by a digest of itself (`tok:<digest>`), shared only with holders of that
    /// very token (in any process using the same cache). A fixed scope is the app's promise that
    /// all its tokens may share URLs (a service account): logouts and user switches then purge
    /// nothing.
    pub scope: Option<Arc<str>>,
    /// Hosts besides the secure hosts that presigned URLs may point to (the CDN that serves
    /// them), under the secure hosts' scheme rule. A URL elsewhere, from the endpoint or from a
    /// cache, is not used. Default: none.
    pub cdn_hosts: SecureHosts,
}

impl Default for PresignConfig {
    fn default() -> Self {
        Self {
            safety_margin: Duration::from_secs(30),
            default_ttl: Duration::from_secs(15 * 60),
            refresh_ahead_percent: 20,
            batch_limit: 50,
            max_waiting: 10_000,
            max_concurrent_calls: 16,
            scope: None,
            cdn_hosts: SecureHosts::new(),
        }
    }
}

/// How many URLs [`PresignedStrategy::new`]'s in-memory cache holds.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// How many times a caller takes over after the callers driving its flights went away.
const MAX_CANCELLED_RETRIES: u32 = 8;

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
///   one user's URL is never served to another; logout or a user switch purges the old scope. A
///   JWT's `sub` is trusted as its scope only after the endpoint accepted that token; until then
///   the token is its own scope.
/// - A presigned URL is used only on a secure host or a [CDN host](PresignConfig::cdn_hosts),
///   whether it comes from the endpoint or from a (shared) cache.
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
    destinations: Destinations,
    proven: ProvenTokens,
    flights: Flights,
    counters: Counters,
    purger: Arc<ScopePurger<C>>,
}

impl<P: Presigner> PresignedStrategy<P, MemoryPresignCache> {
    /// Presigned URLs for `hosts` from `presigner`, cached in memory (at most
    /// [`DEFAULT_CACHE_CAPACITY`] URLs; [`with_cache`](Self::with_cache) for another cache).
    pub fn new(hosts: SecureHosts, tokens: Arc<dyn TokenSource>, presigner: P) -> Self {
        let cache = Arc::new(MemoryPresignCache::new(DEFAULT_CACHE_CAPACITY));
        Self::assemble(hosts, tokens, presigner, cache, PresignConfig::default(), Arc::new(SystemClock))
    }
}

impl<P: Presigner, C: PresignCache> PresignedStrategy<P, C> {
    /// The strategy from all its parts at once (the builder's path: one cache made, one purger
    /// subscribed).
    pub(crate) fn assemble(
        hosts: SecureHosts,
        tokens: Arc<dyn TokenSource>,
        presigner: P,
        cache: Arc<C>,
        config: PresignConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let purger = Arc::new(ScopePurger { cache: cache.clone(), fixed_scope: AtomicBool::new(false) });
        let weak: Weak<dyn TokenListener> = Arc::downgrade(&purger) as Weak<dyn TokenListener>;
        tokens.subscribe(weak);
        let strategy = Self {
            flights: Flights::new(1, 1, 1),
            destinations: Destinations::new(&hosts, &config.cdn_hosts),
            proven: ProvenTokens::default(),
            hosts,
            tokens,
            presigner,
            cache,
            clock,
            config: PresignConfig::default(),
            counters: Counters::default(),
            purger,
        };
        strategy.with_config(config)
    }

    /// The same strategy over another cache: a [`MemoryPresignCache`] of another size, Redis for a
    /// fleet, or yours.
    pub fn with_cache<D: PresignCache>(self, cache: Arc<D>) -> PresignedStrategy<P, D> {
        PresignedStrategy::assemble(self.hosts, self.tokens, self.presigner, cache, self.config, self.clock)
    }

    /// Applies a configuration.
    pub fn with_config(mut self, config: PresignConfig) -> Self {
        let batch_limit = config.batch_limit.min(self.presigner.max_batch());
        self.flights = Flights::new(batch_limit, config.max_waiting, config.max_concurrent_calls);
        self.destinations = Destinations::new(&self.hosts, &config.cdn_hosts);
        // The token source already holds the purger (weakly): a flag it reads, not a rebuild.
        self.purger.fixed_scope.store(config.scope.is_some(), Ordering::Relaxed);
        self.config = config;
        self
    }

    /// The configuration in effect.
    pub fn config(&self) -> &PresignConfig {
        &self.config
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

    /// The shared cache scope `token` may use, checking proof by address only (the hot path): the
    /// fixed scope, the principal of a token without claims to prove, or of one the endpoint
    /// accepted. `None`: its claims are unproven, so it may use only its
    /// [own scope](FileAccessToken::own_scope).
    fn trusted_scope<'t>(&'t self, token: &'t FileAccessToken) -> Option<&'t Arc<str>> {
        if let Some(fixed) = &self.config.scope {
            return Some(fixed);
        }
        // The app's own vouching (`mark_verified`, for a token from its login answer) counts;
        // an acceptance counts only for the endpoint that accepted it: this strategy's.
        (token.claims_trusted() || self.proven.by_address(token)).then(|| token.principal_shared())
    }

    /// The scope `token` looks up and presigns under, and whether a presign call with it proves
    /// its claims (their scope is not yet trusted: the token's own until then).
    fn scope_for<'t>(&'t self, token: &'t Arc<FileAccessToken>) -> (&'t Arc<str>, bool) {
        match self.proven_scope(token) {
            Some(scope) => (scope, false),
            None => (token.own_scope(), true),
        }
    }

    /// Does the principal `token` claims hold `clean` here? A hint only, never an answer: the
    /// claim is unproven.
    fn claimed_principal_holds(&self, token: &FileAccessToken, clean: &str) -> bool {
        self.cache.get_ready(&CacheKey::new(token.principal_shared(), clean)).is_some()
    }

    /// [`trusted_scope`](Self::trusted_scope), also recognising another copy of an accepted token.
    fn proven_scope<'t>(&'t self, token: &'t Arc<FileAccessToken>) -> Option<&'t Arc<str>> {
        self.trusted_scope(token).or_else(|| self.proven.contains(token).then(|| token.principal_shared()))
    }

    /// Does the cache hold a fresh, usable URL for `clean` under `scope`?
    async fn holds_fresh(&self, scope: &Arc<str>, clean: &str, now: SystemTime) -> bool {
        let key = CacheKey::new(scope, clean);
        let hit = match self.cache.get_ready(&key) {
            Some(hit) => Some(hit),
            None => self.cache.get(&key).await,
        };
        hit.is_some_and(|hit| self.usable(&hit, clean) && self.freshness(&hit, now) == Freshness::Fresh)
    }

    /// May a URL a cache handed back for `clean` be used? It must be for that very URL, and point
    /// where presigned URLs may point: a cache, shared or not, may hold anything.
    fn usable(&self, hit: &SignedUrl, clean: &str) -> bool {
        hit.clean_url() == clean && self.destinations.allows(hit)
    }

    /// What a URL a cache (local, remote or another process) handed back for `clean` is good
    /// for at `now`: `None` if it may not be used at all (logged; the caller drops it).
    fn judge(&self, stored: &SignedUrl, clean: &str, now: SystemTime) -> Option<Freshness> {
        if !self.usable(stored, clean) {
            tracing::warn!(
                url = clean,
                "a stored presigned URL is for another URL or points outside the secure and CDN hosts: dropped"
            );
            return None;
        }
        Some(self.freshness(stored, now))
    }

    fn freshness(&self, signed: &SignedUrl, now: SystemTime) -> Freshness {
        // Fetched in the future (any cache may hold anything): its trust window cannot be bounded.
        if now.checked_add(MAX_CLOCK_AHEAD).is_some_and(|latest| signed.fetched_at() > latest) {
            return Freshness::Expired;
        }
        // Whatever a cache holds, trust it for at most MAX_URL_LIFETIME after it was fetched.
        let expires_at = signed.expires_at().min(saturating_add(signed.fetched_at(), MAX_URL_LIFETIME));
        let lifetime = expires_at.duration_since(signed.fetched_at()).unwrap_or_default();
        let margin = self.config.safety_margin.min(lifetime / 4);
        let usable_until = expires_at.checked_sub(margin).unwrap_or(expires_at);
        let percent = u32::from(self.config.refresh_ahead_percent.min(100));
        let renew_window = lifetime.checked_mul(percent).map_or(lifetime, |w| w / 100);
        let renew_from = usable_until.checked_sub(renew_window).unwrap_or(usable_until);
        if now >= usable_until {
            Freshness::Expired
        } else if now >= renew_from {
            Freshness::RenewSoon
        } else {
            Freshness::Fresh
        }
    }

    /// The cached URL if fresh, else a presigned one; renews ahead of expiry.
    async fn signed_url(&self, clean: &str, token: &Arc<FileAccessToken>) -> Outcome {
        let mut waited_for_proof = false;
        loop {
            // Unproven claims: the token's own scope, until a presign call with it succeeds.
            let (scope, proving) = self.scope_for(token);
            let key = CacheKey::new(scope, clean);
            // The local tier only: a shared cache's remote tier is asked in the batch's call
            // (`presign`), so misses enter their flights at once and batch as they do in memory.
            if let Some(hit) = self.cache.get_ready(&key) {
                match self.judge(&hit, clean, self.clock.now()) {
                    Some(Freshness::Fresh) => {
                        self.counters.hit();
                        return Ok(hit);
                    }
                    Some(Freshness::RenewSoon) => {
                        // The URL still works: a renewal that cannot start or fails costs
                        // nothing but the renewal.
                        let ticket = match self.flights.enter(scope, clean, proving, token) {
                            Ok(ticket) if ticket.opened => ticket,
                            _ => {
                                self.counters.hit();
                                return Ok(hit);
                            }
                        };
                        tracing::debug!(url = clean, "presigned URL near expiry: renewing ahead");
                        return match self.await_flight(ticket).await {
                            Ok(fresh) => Ok(fresh),
                            Err(error) => {
                                tracing::debug!(url = clean, %error, "renewing ahead failed: the current URL serves");
                                Ok(hit)
                            }
                        };
                    }
                    Some(Freshness::Expired) | None => self.cache.remove_refused(&key, &hit).await,
                }
            }
            // A token being proven: one caller's call proves it. Another caller waits for that
            // proof when its claimed principal already holds this URL (a hint only, never an
            // answer): once proven, a renewed token finds its principal's URLs instead of every
            // caller presigning again. With nothing to find, it presigns along (batched).
            let _proof = match proving.then(|| self.proven.prove(scope)) {
                Some(Proof::Follow(done)) if !waited_for_proof && self.claimed_principal_holds(token, clean) => {
                    let _ = done.await;
                    waited_for_proof = true;
                    continue;
                }
                // Proven between our lookup and now: look again, under the proven scope.
                Some(Proof::Lead(_)) if self.proven_scope(token).is_some() => continue,
                Some(Proof::Lead(guard)) => Some(guard),
                _ => None,
            };
            bump(&self.counters.misses, 1);
            tracing::debug!(url = clean, "presign cache miss");
            let ticket = self.flights.enter(scope, clean, proving, token)?;
            return self.await_flight(ticket).await;
        }
    }

    /// An answer made usable: not expired, and pointing at a secure or CDN host.
    fn accept(&self, answer: Presigned, clean: &str, now: SystemTime) -> Outcome {
        let signed = SignedUrl::from_presigned(answer, clean, now, self.config.default_ttl)?;
        MediaUrl::with_str(signed.as_str(), |url| Some(self.destinations.check(url)))
            .unwrap_or(Err(crate::PresignFailure::NotHttp))
            .map_err(|reason| AccessError::Presign { url: clean.to_owned(), reason })?;
        Ok(signed)
    }

    /// Waits for `ticket`'s URL; given a free call slot, this caller presigns its batch.
    async fn await_flight(&self, ticket: Ticket<'_>) -> Outcome {
        self.flights.wait(ticket, |token, keys, early| self.presign(token, keys, early)).await
    }

    /// Removes stored URLs that may not serve, all at once: a slow shared cache costs one round
    /// trip, not one per URL.
    async fn drop_stored(&self, stored: &[(CacheKey<'_>, SignedUrl)]) {
        futures::future::join_all(stored.iter().map(|(key, url)| self.cache.remove_refused(key, url))).await;
    }

    /// A batch's URLs: what the cache holds (its remote tier, asked for the whole batch at
    /// once), else presigned here or by another process sharing the cache (`share_or_presign`).
    ///
    /// A fresh URL the cache holds is answered at once (`early`), not after the call for the
    /// rest. One near its expiry is renewed by the call, and serves if the renewal fails (it
    /// still works). An expired or unusable one is dropped and presigned.
    async fn presign(&self, token: Arc<FileAccessToken>, keys: Vec<FlightKey>, early: Early<'_>) -> Vec<Outcome> {
        let cache_keys: Vec<CacheKey<'_>> = keys.iter().map(|key| CacheKey::new(&key.scope, &key.url)).collect();
        let stored = futures::future::join_all(cache_keys.iter().map(|key| self.cache.get(key))).await;
        let now = self.clock.now();
        let mut outcomes: Vec<Option<Outcome>> = (0..keys.len()).map(|_| None).collect();
        let mut dropped = Vec::new();
        let mut stale: Vec<Option<SignedUrl>> = vec![None; keys.len()];
        for (i, hit) in stored.into_iter().enumerate() {
            let Some(hit) = hit else { continue };
            match self.judge(&hit, &keys[i].url, now) {
                Some(Freshness::Fresh) => {
                    self.counters.hit();
                    early.deliver(i, Ok(hit.clone()));
                    outcomes[i] = Some(Ok(hit));
                }
                // Renewed by this call; if that fails, the URL still works and serves.
                Some(Freshness::RenewSoon) => stale[i] = Some(hit),
                Some(Freshness::Expired) | None => dropped.push((cache_keys[i], hit)),
            }
        }
        self.drop_stored(&dropped).await;
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| outcomes[i].is_none()).collect();
        let (missing_keys, missing_cache_keys) = subset(&keys, &cache_keys, &missing);
        let presigned = self.share_or_presign(&token, &missing_keys, &missing_cache_keys).await;
        for (&i, outcome) in missing.iter().zip(presigned) {
            outcomes[i] = Some(match (outcome, stale[i].take()) {
                (Err(error), Some(stale)) => {
                    tracing::debug!(url = &*keys[i].url, %error, "renewing ahead failed: the current URL serves");
                    Ok(stale)
                }
                (outcome, _) => outcome,
            });
        }
        fill(outcomes, &keys)
    }

    /// URLs the cache did not hold: presigned here, or by another process sharing the cache that
    /// holds their lease (its URLs checked like any cached URL; a key whose holder gave up, went
    /// away or answered something unusable is presigned here after all). Fresh URLs go into the
    /// cache before waiters are told.
    async fn share_or_presign(
        &self,
        token: &Arc<FileAccessToken>,
        keys: &[FlightKey],
        cache_keys: &[CacheKey<'_>],
    ) -> Vec<Outcome> {
        let leases = self.cache.lease(cache_keys).await;
        // A cache that answers too few leases leaves the rest to this process.
        let (theirs, mine): (Vec<usize>, Vec<usize>) =
            (0..keys.len()).partition(|&i| leases.get(i) == Some(&Lease::Theirs));
        if theirs.is_empty() {
            return self.presign_here(token, keys, cache_keys).await;
        }
        let (my_keys, my_cache_keys) = subset(keys, cache_keys, &mine);
        let (their_keys, their_cache_keys) = subset(keys, cache_keys, &theirs);
        let (presigned, waited) = futures::future::join(
            self.presign_here(token, &my_keys, &my_cache_keys),
            self.cache.wait_for(&their_cache_keys),
        )
        .await;
        let mut outcomes: Vec<Option<Outcome>> = (0..keys.len()).map(|_| None).collect();
        for (i, outcome) in mine.iter().zip(presigned) {
            outcomes[*i] = Some(outcome);
        }
        let now = self.clock.now();
        let mut waited = waited.into_iter();
        let (mut fallback, mut unusable) = (Vec::new(), Vec::new());
        for ((&i, key), cache_key) in theirs.iter().zip(&their_keys).zip(&their_cache_keys) {
            let Some(url) = waited.next().flatten() else {
                fallback.push(i);
                continue;
            };
            match self.judge(&url, &key.url, now) {
                // Fresh only: an entry near its expiry is what a renewal ahead replaces.
                Some(Freshness::Fresh) => outcomes[i] = Some(Ok(url)),
                Some(_) => fallback.push(i),
                None => {
                    unusable.push((*cache_key, url));
                    fallback.push(i);
                }
            }
        }
        self.drop_stored(&unusable).await;
        bump(&self.counters.urls_from_fleet, (theirs.len() - fallback.len()) as u64);
        if !fallback.is_empty() {
            tracing::debug!(urls = fallback.len(), "lease holder gave up or went away: presigning here");
            let (late_keys, late_cache_keys) = subset(keys, cache_keys, &fallback);
            let late = self.presign_here(token, &late_keys, &late_cache_keys).await;
            for (i, outcome) in fallback.iter().zip(late) {
                outcomes[*i] = Some(outcome);
            }
        }
        fill(outcomes, keys)
    }

    /// One presign call for `keys` (their cache keys beside them); what fails gives up its lease.
    async fn presign_here(
        &self,
        token: &Arc<FileAccessToken>,
        keys: &[FlightKey],
        cache_keys: &[CacheKey<'_>],
    ) -> Vec<Outcome> {
        if keys.is_empty() {
            return Vec::new();
        }
        let outcomes = self.call_presigner(token, keys).await;
        let failed: Vec<CacheKey<'_>> =
            cache_keys.iter().zip(&outcomes).filter(|(_, outcome)| outcome.is_err()).map(|(key, _)| *key).collect();
        if !failed.is_empty() {
            self.cache.release(&failed).await;
        }
        outcomes
    }

    /// One presign call for a batch; fresh URLs go into the cache before waiters are told.
    async fn call_presigner(&self, token: &Arc<FileAccessToken>, keys: &[FlightKey]) -> Vec<Outcome> {
        bump(&self.counters.presign_calls, 1);
        bump(&self.counters.urls_presigned, keys.len() as u64);
        tracing::debug!(urls = keys.len(), "presign call");
        let urls: Vec<Arc<str>> = keys.iter().map(|k| k.url.clone()).collect();
        let mut answers = self.presigner.presign_batch(&urls, token).await.into_iter();
        let now = self.clock.now();
        // One outcome per key, whatever the presigner answered.
        let outcomes: Vec<Outcome> = keys
            .iter()
            .map(|key| match answers.next() {
                Some(answer) => answer.and_then(|a| self.accept(a, &key.url, now)),
                None => Err(missing(&key.url)),
            })
            .collect();
        // The endpoint accepted this exact token: its claims now name its scope.
        let accepted = outcomes.iter().any(Result::is_ok);
        // Asked under the token's own scope, a URL goes also under the scope it earns: this
        // process reads the latter once the token is proven, other holders of the token the former.
        let earned = accepted.then(|| self.config.scope.as_ref().unwrap_or(token.principal_shared()));
        let mut writes = Vec::with_capacity(keys.len());
        for (key, outcome) in keys.iter().zip(&outcomes) {
            match outcome {
                Ok(signed) => {
                    writes.push((&key.scope, &key.url, signed));
                    if let Some(earned) = earned.filter(|_| key.proving) {
                        writes.push((earned, &key.url, signed));
                    }
                }
                Err(error) => tracing::warn!(url = &*key.url, %error, "presign failed"),
            }
        }
        // All at once: a slow shared cache costs one round trip per batch, not one per URL, while
        // the batch's waiters (and the next call) wait for the slot.
        futures::future::join_all(writes.into_iter().map(|(scope, url, signed)| {
            let signed = signed.clone();
            async move { self.cache.put(&CacheKey::new(scope, url), signed).await }
        }))
        .await;
        // Proven only once its URLs are stored: a caller that sees the token proven looks under
        // the earned scope and finds them there, instead of opening a flight of its own.
        if accepted {
            self.proven.insert(token);
        }
        outcomes
    }
}

/// The keys at `indices`, with their cache keys.
fn subset<'k>(
    keys: &[FlightKey],
    cache_keys: &[CacheKey<'k>],
    indices: &[usize],
) -> (Vec<FlightKey>, Vec<CacheKey<'k>>) {
    indices.iter().map(|&i| (keys[i].clone(), cache_keys[i])).unzip()
}

/// No answer was given for `url`.
pub(crate) fn missing(url: &str) -> AccessError {
    AccessError::Presign { url: url.to_owned(), reason: crate::PresignFailure::Missing }
}

/// One outcome per key: `Missing` where none was found.
fn fill(outcomes: Vec<Option<Outcome>>, keys: &[FlightKey]) -> Vec<Outcome> {
    outcomes.into_iter().zip(keys).map(|(outcome, key)| outcome.unwrap_or_else(|| Err(missing(&key.url)))).collect()
}

#[async_trait]
impl<P: Presigner, C: PresignCache> MediaAccessStrategy for PresignedStrategy<P, C> {
    fn secure_hosts(&self) -> &SecureHosts {
        &self.hosts
    }

    fn resolve_ready(&self, url: &MediaUrl<'_>) -> Option<Result<Resolution, AccessError>> {
        let clean = url.clean_key();
        // The token is lent, not cloned: threads hitting at once do not bounce its reference
        // count between them (the two-thread hit figure in BENCHMARKS.md).
        let token = self.tokens.peek()?;
        let hit = self.cache.get_ready(&CacheKey::new(self.trusted_scope(&token)?, &clean));
        drop(token);
        let hit = hit?;
        // A URL pointing elsewhere is dropped on the async path.
        if !self.usable(&hit, &clean) || self.freshness(&hit, self.clock.now()) != Freshness::Fresh {
            return None;
        }
        self.counters.hit();
        // No token in a hit's resolution: a refusal works out the scopes from the current token.
        Some(Ok(Resolution::replace(hit)))
    }

    async fn resolve(&self, url: &MediaUrl<'_>) -> Result<Resolution, AccessError> {
        let clean = url.clean_key();
        let mut token = self.tokens.token().await?;
        let mut renewed = false;
        // Each cancellation means another caller, driving our flight, went away (a UI that drops
        // loads while scrolling): this caller then drives a flight of its own. Bounded all the same.
        let mut cancelled = 0;
        loop {
            match self.signed_url(&clean, &token).await {
                Ok(signed) => return Ok(Resolution::replace(signed).with_token(token)),
                Err(AccessError::PresignUnauthorized { .. }) if !renewed => {
                    tracing::info!(url = %url.redacted(), "presign endpoint refused the token: renewing it");
                    bump(&self.counters.token_refreshes, 1);
                    token = self.tokens.refresh(&token).await?;
                    renewed = true;
                }
                Err(AccessError::Cancelled(_)) if cancelled < MAX_CANCELLED_RETRIES => cancelled += 1,
                Err(error) => return Err(error),
            }
        }
    }

    async fn rejected(&self, url: &MediaUrl<'_>, used: &Resolution, status: StatusCode) -> RetryDecision {
        bump(&self.counters.refusals, 1);
        if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
            return RetryDecision::GiveUp;
        }
        // Whose URL was refused: the token used, else the current one.
        let current = self.tokens.current();
        let refused = match used.url_change() {
            UrlChange::Replace(signed) => Some(signed),
            _ => None,
        };
        let Some(token) = used.token().or(current.as_ref()) else {
            return RetryDecision::GiveUp;
        };
        // Every scope it may be cached under: the token's shared scope and its own (a URL
        // presigned before the token was proven is under both).
        let mut scopes: Vec<&Arc<str>> = self.proven_scope(token).into_iter().collect();
        if self.config.scope.is_none() && token.subject().is_some() {
            scopes.push(token.own_scope());
        }
        let clean = url.clean_key();
        for scope in scopes {
            let key = CacheKey::new(scope, &clean);
            // Only the URL that was refused: a fresher one cached meanwhile stays.
            match refused {
                Some(refused) => self.cache.remove_refused(&key, refused).await,
                None => self.cache.remove(&key).await,
            }
        }
        bump(&self.counters.retries, 1);
        tracing::info!(url = %url.redacted(), %status, "presigned URL refused: dropped, presigning again");
        RetryDecision::RetryOnce
    }

    fn stats(&self) -> StrategyStats {
        self.counters.snapshot()
    }

    async fn prefetch(&self, urls: &[&str]) {
        let mut cleans: Vec<String> = urls
            .iter()
            .filter_map(|url| {
                MediaUrl::with_str(url, |view| strategy_serves(self, view).then(|| view.clean_key().into_owned()))
            })
            .collect();
        cleans.sort_unstable();
        cleans.dedup();
        let Some(first) = cleans.first() else { return };
        let Ok(mut token) = self.tokens.token().await else { return };
        // A sample spread over the list, not its first few (it is sorted).
        let step = cleans.len().div_ceil(8).max(1);
        let claimed_holds = |token: &FileAccessToken| {
            cleans.iter().step_by(step).any(|clean| self.claimed_principal_holds(token, clean))
        };
        if self.proven_scope(&token).is_none() && claimed_holds(&token) {
            // A token not yet proven whose claimed principal holds some of these URLs (a hint
            // only, never an answer), as after a renewal: one load proves it the usual way, so
            // the rest are looked up under the scope it earns, not presigned again. With nothing
            // to find, the batches below prove it themselves.
            let _ = self.signed_url(first, &token).await;
            token = match self.tokens.token().await {
                Ok(token) => token,
                Err(_) => return,
            };
        }
        let (scope, proving) = self.scope_for(&token);
        let scope = scope.clone();
        // What the cache holds fresh needs nothing (a shared cache is asked a few at a time).
        let now = self.clock.now();
        let mut missing: Vec<&str> = Vec::new();
        for chunk in cleans.chunks(32) {
            let held = futures::future::join_all(chunk.iter().map(|clean| self.holds_fresh(&scope, clean, now))).await;
            missing.extend(chunk.iter().zip(held).filter(|(_, held)| !held).map(|(clean, _)| clean.as_str()));
        }
        // In rounds that leave a call slot and half the waiting room to the loads under way: each
        // round's URLs enter their flights before any call starts, so each call takes a full batch.
        let calls = self.config.max_concurrent_calls.saturating_sub(1).max(1);
        let round = self.flights.batch_limit() * calls;
        let mut rest = &missing[..];
        while !rest.is_empty() {
            let room = (self.config.max_waiting / 2).saturating_sub(self.flights.waiting());
            let tickets: Vec<_> = rest
                .iter()
                .take(round.min(room))
                .map_while(|clean| self.flights.enter(&scope, clean, proving, &token).ok())
                .collect();
            if tickets.is_empty() {
                return; // busy: the loads ask for the rest themselves
            }
            rest = rest.get(tickets.len()..).unwrap_or_default();
            bump(&self.counters.misses, tickets.len() as u64);
            tracing::debug!(urls = tickets.len(), "presigning ahead");
            let outcomes = futures::future::join_all(tickets.into_iter().map(|ticket| self.await_flight(ticket))).await;
            // A refused token: the rest would be refused too; the loads renew it.
            if outcomes.iter().any(|outcome| matches!(outcome, Err(AccessError::PresignUnauthorized { .. }))) {
                return;
            }
        }
    }

    fn cache_scope(&self) -> Option<Arc<str>> {
        if let Some(scope) = &self.config.scope {
            return Some(scope.clone());
        }
        let token = self.tokens.current()?;
        Some(self.proven_scope(&token).unwrap_or_else(|| token.own_scope()).clone())
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
    fixed_scope: AtomicBool,
}

impl<C: PresignCache> TokenListener for ScopePurger<C> {
    fn token_changed(&self, old: Option<&FileAccessToken>, new: Option<&FileAccessToken>) {
        if self.fixed_scope.load(Ordering::Relaxed) {
            return;
        }
        if let Some(old) = old {
            if new.map(FileAccessToken::principal) != Some(old.principal()) {
                tracing::debug!("principal changed: purging its presigned URLs");
                self.cache.purge_scope(old.principal());
                if old.subject().is_some() {
                    self.cache.purge_scope(old.own_scope());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
