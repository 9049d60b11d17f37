//! [`MediaAccessStrategy`]: the extension point, what a strategy says after a refusal
//! ([`RetryDecision`]) and its counters ([`StrategyStats`]); what every adapter asks of one
//! ([`strategy_serves`]) and [`resolve_str`] for plain strings.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use http::StatusCode;
use url::Url;

use crate::{AccessError, ConfigError, Credentials, MediaUrl, Resolution, SecureHosts};

/// What a strategy says after the media server refused its resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Something was repaired (a cache entry dropped, a token renewed): retry once with a fresh resolution.
    RetryOnce,
    /// Retrying would not help: hand the refusal to the caller.
    GiveUp,
}

/// Counters for dashboards and tests. Cheap to take; values only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StrategyStats {
    /// Presigned URLs answered from the cache.
    pub cache_hits: u64,
    /// Lookups the cache's local tier could not answer (a shared cache's remote tier is asked in
    /// the presign call that follows, where what it holds counts as a hit).
    pub cache_misses: u64,
    /// Calls made to the presigner (one per batch).
    pub presign_calls: u64,
    /// URLs presigned over all calls.
    pub urls_presigned: u64,
    /// URLs another process sharing the cache presigned while this one waited on its lease (a
    /// fleet's single presign per URL), instead of presigning them here.
    pub urls_from_fleet: u64,
    /// Refusals reported through [`MediaAccessStrategy::rejected`].
    pub refusals: u64,
    /// Token renewals asked of the token source.
    pub token_refreshes: u64,
    /// Refusals answered with [`RetryDecision::RetryOnce`].
    pub retries: u64,
}

/// How media requests prove access: implement it to extend secure-media with your own scheme
/// (a signed CDN URL, a cookie, another vendor's token), and every adapter (tower, reqwest,
/// image loaders) uses it unchanged.
///
/// Adapters call [`applies_to`](Self::applies_to) first (a request it declines passes untouched),
/// then [`resolve_ready`](Self::resolve_ready), and only when that answers `None`,
/// [`resolve`](Self::resolve). After a 401 or 403 they call [`rejected`](Self::rejected) and retry
/// at most once.
///
/// ```
/// use async_trait::async_trait;
/// use http::{header, HeaderValue, StatusCode};
/// use secure_media_core::*;
///
/// /// Sends a fixed API key to one host.
/// struct ApiKey { hosts: SecureHosts, key: HeaderValue }
///
/// #[async_trait]
/// impl MediaAccessStrategy for ApiKey {
///     fn secure_hosts(&self) -> &SecureHosts { &self.hosts }
///     fn resolve_ready(&self, _url: &MediaUrl<'_>) -> Option<Result<Resolution, AccessError>> {
///         Some(Ok(Resolution::keep().with_header(header::HeaderName::from_static("x-api-key"), self.key.clone())))
///     }
///     async fn resolve(&self, url: &MediaUrl<'_>) -> Result<Resolution, AccessError> {
///         self.resolve_ready(url).unwrap_or(Ok(Resolution::keep()))
///     }
///     async fn rejected(&self, _: &MediaUrl<'_>, _: &Resolution, _: StatusCode) -> RetryDecision {
///         RetryDecision::GiveUp
///     }
/// }
/// ```
#[async_trait]
pub trait MediaAccessStrategy: Send + Sync + 'static {
    /// The hosts this strategy serves. Default: none, for a strategy that answers
    /// [`applies_to`](Self::applies_to) itself (then nothing is secure unless it says so).
    fn secure_hosts(&self) -> &SecureHosts {
        SecureHosts::none()
    }

    /// The query parameters and headers that carry this strategy's proof beyond the shared ones
    /// (`fat`, `Signature`, `X-Amz-*`, ...): declare them, and the exchange treats them as
    /// `fat` (stripped on a hop elsewhere, never in a [`MediaKey`](crate::MediaKey), a response's
    /// URL or an error). Default: the shared ones only. A strategy that wraps another must
    /// pass this on.
    fn credentials(&self) -> &Credentials {
        Credentials::shared()
    }

    /// Does this URL need us at all? Default: it is on one of [`secure_hosts`](Self::secure_hosts).
    /// Adapters also require https unless `secure_hosts` allow http ([`strategy_serves`]), so an
    /// override that checks the host alone stays safe.
    fn applies_to(&self, url: &MediaUrl<'_>) -> bool {
        self.secure_hosts().matches(url)
    }

    /// The synchronous hot path: answer without awaiting anything when possible (a warm token, a
    /// cache hit), or `None` to be asked through [`resolve`](Self::resolve).
    fn resolve_ready(&self, url: &MediaUrl<'_>) -> Option<Result<Resolution, AccessError>> {
        let _ = url;
        None
    }

    /// The full resolution, which may wait (fetch a token, presign). Default:
    /// [`resolve_ready`](Self::resolve_ready)'s answer, for a strategy that never waits (a local
    /// signer implements only that).
    ///
    /// # Errors
    ///
    /// When no proof can be had for `url`: the token strategies answer
    /// [`AccessError::NotLoggedIn`] without a token; the presigned strategy also
    /// [`AccessError::Presign`], [`AccessError::PresignUnauthorized`] or [`AccessError::Busy`]
    /// when presigning fails. The default answers [`ConfigError::InvalidConfig`] (as
    /// [`AccessError::Config`]) when `resolve_ready` answers `None`.
    async fn resolve(&self, url: &MediaUrl<'_>) -> Result<Resolution, AccessError> {
        self.resolve_ready(url).unwrap_or_else(|| {
            Err(ConfigError::InvalidConfig("resolve_ready answered None and the strategy does not implement resolve")
                .into())
        })
    }

    /// The media server refused what `used` produced with `status` (401 or 403): drop caches,
    /// renew tokens, and say whether one retry makes sense. Default: one retry, with a fresh
    /// resolution (a local signer signs again, with a new expiry).
    async fn rejected(&self, url: &MediaUrl<'_>, used: &Resolution, status: StatusCode) -> RetryDecision {
        let _ = (url, used, status);
        RetryDecision::RetryOnce
    }

    /// A snapshot of the strategy's counters.
    fn stats(&self) -> StrategyStats {
        StrategyStats::default()
    }

    /// Whom the current proof speaks for, to scope cache keys ([`MediaKey`](crate::MediaKey)) so
    /// two principals never share a cached answer. Default `None`: the proof is the same for
    /// everyone. Token strategies answer [`FileAccessToken::cache_scope`](crate::FileAccessToken::cache_scope): the verified
    /// principal, or a digest of a token no server has accepted yet.
    fn cache_scope(&self) -> Option<Arc<str>> {
        None
    }

    /// Asks ahead for URLs the app knows it will load (a screenful, a page of a chat), so their
    /// loads find their proof ready. Presigned mode presigns the ones it does not hold, in as few
    /// concurrent batches as its limits allow; failures are left for the loads to meet. Default:
    /// nothing to do (embedded and header modes need nothing ahead).
    async fn prefetch(&self, urls: &[&str]) {
        let _ = urls;
    }
}

/// Does `strategy` take `url` (what every adapter asks before adding a proof)? Its
/// [`applies_to`](MediaAccessStrategy::applies_to), and https, or plain http only when its
/// [`secure_hosts`](MediaAccessStrategy::secure_hosts) allow it: a strategy that answers
/// `applies_to` by host alone never sends its proof in the clear, nor follows a redirect that
/// drops to http.
///
/// ```
/// use secure_media_core::{strategy_serves, EmbeddedStrategy, MediaUrl, SecureHosts, StaticToken};
///
/// let strategy = EmbeddedStrategy::new(SecureHosts::cometchat("us")?, std::sync::Arc::new(StaticToken::parse("t")?));
/// let https = url::Url::parse("https://files-us.cometchat.io/a.png").unwrap();
/// let http = url::Url::parse("http://files-us.cometchat.io/a.png").unwrap();
/// assert!(strategy_serves(&strategy, &MediaUrl::from_url(&https).unwrap()));
/// assert!(!strategy_serves(&strategy, &MediaUrl::from_url(&http).unwrap()));
/// # Ok::<(), secure_media_core::AccessError>(())
/// ```
pub fn strategy_serves(strategy: &(impl MediaAccessStrategy + ?Sized), url: &MediaUrl<'_>) -> bool {
    strategy.applies_to(url) && (url.scheme() == crate::Scheme::Https || strategy.secure_hosts().allows_http())
}

#[async_trait]
impl<S: MediaAccessStrategy + ?Sized> MediaAccessStrategy for Arc<S> {
    fn secure_hosts(&self) -> &SecureHosts {
        (**self).secure_hosts()
    }
    fn credentials(&self) -> &Credentials {
        (**self).credentials()
    }
    fn applies_to(&self, url: &MediaUrl<'_>) -> bool {
        (**self).applies_to(url)
    }
    fn resolve_ready(&self, url: &MediaUrl<'_>) -> Option<Result<Resolution, AccessError>> {
        (**self).resolve_ready(url)
    }
    async fn resolve(&self, url: &MediaUrl<'_>) -> Result<Resolution, AccessError> {
        (**self).resolve(url).await
    }
    async fn rejected(&self, url: &MediaUrl<'_>, used: &Resolution, status: StatusCode) -> RetryDecision {
        (**self).rejected(url, used, status).await
    }
    fn stats(&self) -> StrategyStats {
        (**self).stats()
    }
    fn cache_scope(&self) -> Option<Arc<str>> {
        (**self).cache_scope()
    }
    async fn prefetch(&self, urls: &[&str]) {
        (**self).prefetch(urls).await
    }
}

/// Resolves a URL string through any strategy: the input comes back unchanged when it is not a
/// valid URL or not on a secure host (the vendor SDK's passthrough). Headers the strategy adds
/// are in the returned [`Resolution`].
///
/// # Errors
///
/// The strategy's own, when the URL is one it serves and it cannot resolve it
/// ([`MediaAccessStrategy::resolve`]).
pub async fn resolve_str<'u, S: MediaAccessStrategy + ?Sized>(
    strategy: &S,
    url: &'u str,
) -> Result<(Cow<'u, str>, Option<Resolution>), AccessError> {
    let fast = MediaUrl::parse_plain(url);
    let full = match fast {
        Some(_) => None,
        None => match Url::parse(url) {
            Ok(full) => Some(full),
            Err(_) => return Ok((Cow::Borrowed(url), None)),
        },
    };
    let Some(view) = fast.or_else(|| full.as_ref().and_then(MediaUrl::from_url)) else {
        return Ok((Cow::Borrowed(url), None));
    };
    if !strategy_serves(strategy, &view) {
        return Ok((Cow::Borrowed(url), None));
    }
    let resolution = match strategy.resolve_ready(&view) {
        Some(ready) => ready?,
        None => strategy.resolve(&view).await?,
    };
    // The slow path normalised the URL: apply to the normalised text so the host stays the one checked.
    let resolved = match full {
        // No full parse means the fast path took the string: reuse its split.
        None => match fast {
            Some(plain) => resolution.apply_to_plain(&plain, url),
            None => resolution.apply_to_str(url),
        },
        Some(mut normal) => {
            resolution.apply_to_url(&mut normal);
            Cow::Owned(normal.into())
        }
    };
    Ok((resolved, Some(resolution)))
}
