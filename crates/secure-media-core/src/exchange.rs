//! [`Exchange`]: one media request, from the caller's URL to the answer handed back, as a
//! sans-IO state machine. The tower layer and the reqwest middleware only translate their
//! request and response types and drive it, so every rule (when to resolve, when a refusal earns
//! the one retry, which redirect hop gets a token, which headers leave the caller's origin) is
//! written once, here.
//!
//! ```text
//!            first_ready / next                  answered(status, Location)
//!   Start ─────────────────────────▶ Sent ──────────────────────────────────▶ Done
//!     ▲                                │ 401/403 on what our resolution produced,
//!     │                                │ first time  ─▶ Refused ─▶ next: strategy.rejected,
//!     │                                │                resolve afresh (RetryOnce) or Done
//!     │                                │ 3xx + Location, GET/HEAD, hops left
//!     └──────── next: resolve the hop ─┘            ─▶ Redirected(hop URL, credentials stripped)
//! ```
//!
//! ```
//! # futures::executor::block_on(async {
//! use std::sync::Arc;
//! use http::{HeaderValue, Method, StatusCode};
//! use secure_media_core::{EmbeddedStrategy, Exchange, SecureHosts, StaticToken};
//!
//! let strategy: Arc<dyn secure_media_core::MediaAccessStrategy> =
//!     Arc::new(EmbeddedStrategy::new(SecureHosts::cometchat("us")?, Arc::new(StaticToken::parse("T")?)));
//! let caller = url::Url::parse("https://files-us.cometchat.io/app/media/a.png").unwrap();
//! let mut exchange = Exchange::for_url(&strategy, &caller, &Method::GET).expect("a secure URL");
//! let attempt = exchange.first_ready().unwrap()?;
//! let mut sent = caller.clone();
//! attempt.apply_to_url(&mut sent);
//! assert_eq!(sent.as_str(), "https://files-us.cometchat.io/app/media/a.png?fat=T");
//! // The media host moved the file elsewhere, echoing the token into Location.
//! let location = HeaderValue::from_static("https://cdn.example/a.png?fat=T");
//! assert!(exchange.answered(StatusCode::FOUND, Some(&location)));
//! let hop = exchange.next().await?.unwrap();
//! let mut sent = caller.clone();
//! hop.apply_to_url(&mut sent);
//! assert_eq!(sent.as_str(), "https://cdn.example/a.png"); // not a secure host: no token
//! assert!(hop.leaves_callers_origin()); // and none of the caller's credential headers
//! assert!(!exchange.answered(StatusCode::OK, None));
//! assert_eq!(exchange.record().hops, 1);
//! # Ok::<(), secure_media_core::AccessError>(())
//! # }).unwrap();
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::{header, Extensions, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use url::Url;

use crate::media_url::has_userinfo;
use crate::rewrite::query;
use crate::{
    strategy_serves, AccessError, Credentials, MediaAccessStrategy, MediaKey, MediaUrl, Resolution, UrlChange,
};

/// The most redirect hops an exchange follows by default.
pub const DEFAULT_MAX_HOPS: u32 = 10;

/// Headers of the caller's that never go to another origin than the caller's own: a hop to
/// another host, or a presigned URL on a CDN.
pub const CALLER_CREDENTIAL_HEADERS: [HeaderName; 5] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::PROXY_AUTHORIZATION,
    header::REFERER,
    // The vendor SDKs' own spelling of a header token.
    HeaderName::from_static("fat"),
];

/// What an exchange did, put in the extensions of the response handed back, so users and tests
/// can count without wrapping the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExchangeRecord {
    /// Requests sent (the first, a retry after a refusal, each redirect hop).
    pub attempts: u32,
    /// Retries after a refusal (0 or 1).
    pub retries: u32,
    /// The retry went out with another token than the refused one.
    pub token_renewed: bool,
    /// The retry went out with another presigned URL than the refused one.
    pub presigned_again: bool,
    /// Redirect hops followed.
    pub hops: u32,
}

/// The caller's URL, in the adapter's own type (no reparse on the hot path).
enum Caller {
    Url(Url),
    Uri(http::Uri),
}

impl Caller {
    fn view(&self) -> Option<MediaUrl<'_>> {
        match self {
            Self::Url(url) => MediaUrl::from_url(url),
            Self::Uri(uri) => MediaUrl::from_uri(uri),
        }
    }

    fn to_url(&self) -> Option<Cow<'_, Url>> {
        match self {
            Self::Url(url) => Some(Cow::Borrowed(url)),
            Self::Uri(uri) => Url::parse(&uri.to_string()).ok().map(Cow::Owned),
        }
    }

    /// Is `url` (what a response reports) the caller's own URL, with no credential in it?
    fn is_clean_url(&self, url: &Url, declared: &Credentials) -> bool {
        let same = match self {
            Self::Url(caller) => caller == url,
            Self::Uri(caller) => *caller == *url.as_str(),
        };
        same && self.is_clean(declared)
    }

    /// Is `uri` (what an inner layer recorded as sent) the caller's own URL, with no credential?
    fn is_clean_uri(&self, uri: &http::Uri, declared: &Credentials) -> bool {
        let same = match self {
            Self::Url(caller) => *uri == *caller.as_str(),
            Self::Uri(caller) => uri == caller,
        };
        same && self.is_clean(declared)
    }

    fn is_clean(&self, declared: &Credentials) -> bool {
        self.view().is_some_and(|view| !view.carries_credentials_with(declared))
    }
}

/// What the last answer asked for.
enum Pending {
    /// The first attempt has not been made.
    Start,
    /// Hand the last answer to the caller.
    Done,
    /// The attempt was refused with this status: ask the strategy, maybe retry once.
    Refused(StatusCode),
    /// Follow a redirect to this (credential-free) URL.
    Hop(Url),
}

/// One request to send: the caller's request (or a redirect hop) with a resolution applied.
///
/// Apply it to a copy of the caller's request: [`apply_to_url`](Self::apply_to_url) or
/// [`uri_for`](Self::uri_for), then [`apply_to_headers`](Self::apply_to_headers). `Debug` hides the
/// hop's query and the resolution's values.
pub struct Attempt {
    hop: Option<Url>,
    resolution: Option<Resolution>,
    foreign: bool,
    /// The headers the strategy declares as credentials ([`Credentials::headers`]), when the
    /// attempt leaves the caller's origin and there are any.
    declared_headers: Option<Arc<[HeaderName]>>,
}

impl Attempt {
    /// The redirect hop this attempt goes to, or `None` for the caller's own URL.
    pub fn hop(&self) -> Option<&Url> {
        self.hop.as_ref()
    }

    /// The proof of access to add, if the target is on a secure host.
    pub fn resolution(&self) -> Option<&Resolution> {
        self.resolution.as_ref()
    }

    /// Does the request go to another origin than the caller's (a hop elsewhere, a presigned URL
    /// on a CDN)? Then the caller's own credential headers stay behind.
    pub fn leaves_callers_origin(&self) -> bool {
        self.foreign
    }

    /// Turns a copy of the caller's URL into the URL to send.
    pub fn apply_to_url(&self, url: &mut Url) {
        if let Some(hop) = &self.hop {
            *url = hop.clone();
        }
        if let Some(resolution) = &self.resolution {
            resolution.apply_to_url(url);
        }
    }

    /// The URI to send instead of the caller's `uri`, or `None` to send it unchanged.
    ///
    /// # Errors
    ///
    /// [`AccessError::InvalidUrl`] when the hop's URL or the resolution's result is not a valid
    /// [`http::Uri`].
    pub fn uri_for(&self, uri: &http::Uri) -> Result<Option<http::Uri>, AccessError> {
        let hop = match &self.hop {
            Some(hop) => Some(
                hop.as_str()
                    .parse::<http::Uri>()
                    .map_err(|_| AccessError::InvalidUrl("the redirect target is not a URI"))?,
            ),
            None => None,
        };
        let base = hop.as_ref().unwrap_or(uri);
        let resolved = match &self.resolution {
            Some(resolution) => resolution.apply_to_uri(base)?,
            None => None,
        };
        Ok(resolved.or(hop))
    }

    /// Adjusts a copy of the caller's headers: the caller's credentials (and any header the
    /// strategy declares as one) go when the request leaves the caller's origin, then the
    /// resolution's headers go in.
    pub fn apply_to_headers(&self, headers: &mut HeaderMap) {
        if self.foreign {
            for name in CALLER_CREDENTIAL_HEADERS.iter().chain(self.declared_headers.iter().flat_map(|h| h.iter())) {
                headers.remove(name);
            }
        }
        if let Some(resolution) = &self.resolution {
            for (name, value) in resolution.headers() {
                // Proof of access: never indexed by HTTP/2 header compression, hidden in `Debug`.
                let mut value = value.clone();
                value.set_sensitive(true);
                headers.insert(name.clone(), value);
            }
        }
    }
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt")
            .field("hop", &self.hop.as_ref().and_then(MediaUrl::from_url).map(|hop| hop.redacted()))
            .field("resolution", &self.resolution)
            .field("leaves_callers_origin", &self.foreign)
            .finish()
    }
}

/// One media request driven through a [`MediaAccessStrategy`]: resolve, send, read the answer,
/// retry once after a refusal, follow redirect hops (resolved afresh on a secure host, stripped of
/// every credential anywhere else). No I/O: the adapter sends each [`Attempt`] and reports the
/// answer.
///
/// ```text
///            first_ready / next                  answered(status, Location)
///   Start ─────────────────────────▶ Sent ──────────────────────────────────▶ Done
///     ▲                                │ 401/403 on what our resolution produced,
///     │                                │ first time  ─▶ Refused ─▶ next: strategy.rejected,
///     │                                │                resolve afresh (RetryOnce) or Done
///     │                                │ 301/302/303/307/308 + Location, GET/HEAD, hops left
///     └──────── next: resolve the hop ─┘            ─▶ Redirected(hop URL, credentials stripped)
/// ```
pub struct Exchange {
    strategy: Arc<dyn MediaAccessStrategy>,
    caller: Caller,
    method_follows: bool,
    replayable: bool,
    max_hops: u32,
    /// The current target when it is a redirect hop.
    hop: Option<Url>,
    /// The resolution of the attempt in flight, if it carried one.
    used: Option<Resolution>,
    pending: Pending,
    record: ExchangeRecord,
    /// The cache scope the media key was made with.
    key_scope: Option<Arc<str>>,
}

impl Exchange {
    /// An exchange for a request to a parsed [`Url`] (reqwest); `None` when the strategy does
    /// not serve the URL: such a request passes through untouched, and nothing is copied.
    pub fn for_url(strategy: &Arc<dyn MediaAccessStrategy>, url: &Url, method: &Method) -> Option<Self> {
        let view = MediaUrl::from_url(url)?;
        strategy_serves(&**strategy, &view).then(|| Self::new(strategy.clone(), Caller::Url(url.clone()), method))
    }

    /// An exchange for a request to an [`http::Uri`] (tower, hyper); `None` when the strategy
    /// does not serve the URI.
    pub fn for_uri(strategy: &Arc<dyn MediaAccessStrategy>, uri: &http::Uri, method: &Method) -> Option<Self> {
        let view = MediaUrl::from_uri(uri)?;
        strategy_serves(&**strategy, &view).then(|| Self::new(strategy.clone(), Caller::Uri(uri.clone()), method))
    }

    fn new(strategy: Arc<dyn MediaAccessStrategy>, caller: Caller, method: &Method) -> Self {
        Self {
            strategy,
            caller,
            method_follows: method == Method::GET || method == Method::HEAD,
            replayable: true,
            max_hops: DEFAULT_MAX_HOPS,
            hop: None,
            used: None,
            pending: Pending::Start,
            record: ExchangeRecord::default(),
            key_scope: None,
        }
    }

    /// Follows at most `hops` redirects (0: hand every redirect to the caller).
    pub fn with_max_hops(mut self, hops: u32) -> Self {
        self.max_hops = hops;
        self
    }

    /// Says whether the adapter can send the request again (a body it still has): without that,
    /// refusals and redirects go back to the caller as they are.
    pub fn replayable(mut self, replayable: bool) -> Self {
        self.replayable = replayable;
        self
    }

    /// The key of the caller's URL for caches outside the adapter: the clean URL, scoped by the
    /// strategy's [`cache_scope`](MediaAccessStrategy::cache_scope).
    pub fn media_key(&mut self) -> Option<MediaKey> {
        let view = self.caller.view()?;
        let key = MediaKey::of_strategy(&*self.strategy, &view);
        self.key_scope = key.shared_scope();
        Some(key)
    }

    /// The caller's URL without credentials: what errors and the response handed back name.
    pub fn clean_caller_url(&self) -> Option<Url> {
        let mut url = self.caller.to_url()?.into_owned();
        strip_credentials(&mut url, self.strategy.credentials());
        Some(url)
    }

    /// The URL a response that reports `answered` must report instead, or `None` when `answered`
    /// is already the caller's own clean URL (header mode on a clean URL: nothing to rebuild).
    pub fn response_url(&self, answered: &Url) -> Option<Url> {
        if self.caller.is_clean_url(answered, self.strategy.credentials()) {
            return None;
        }
        self.clean_caller_url().filter(|clean| clean != answered)
    }

    /// Did `answered` (the URL a response reports) come from the origin the attempt in flight was
    /// sent to? A client that follows redirects below the adapter answers from elsewhere.
    pub fn answered_from_sent_origin(&self, answered: &Url) -> bool {
        let Some(answered) = MediaUrl::from_url(answered) else { return false };
        self.with_sent_view(self.used.as_ref(), |sent| sent.same_origin(&answered)).unwrap_or(false)
    }

    /// Puts what the caller may read of this exchange into the extensions of the answer handed
    /// back: the media key (if any) and the [`ExchangeRecord`].
    pub fn record_into(&self, extensions: &mut Extensions, key: Option<MediaKey>) {
        if let Some(key) = key {
            extensions.insert(key);
        }
        extensions.insert(self.record);
    }

    /// Makes a URI an inner layer recorded as sent (tower-http's `RequestUri`: type `T`, read and
    /// built by `read` and `make`) the caller's clean URI, or removes it; kept as it is when it
    /// already is the caller's own clean URI.
    pub fn scrub_recorded_uri<T: Clone + Send + Sync + 'static>(
        &self,
        extensions: &mut Extensions,
        read: fn(&T) -> &http::Uri,
        make: fn(http::Uri) -> T,
    ) {
        let Some(recorded) = extensions.get::<T>().map(read) else { return };
        if self.caller.is_clean_uri(recorded, self.strategy.credentials()) {
            return;
        }
        match self.clean_caller_url().and_then(|clean| clean.as_str().parse().ok()) {
            Some(clean) => extensions.insert(make(clean)),
            None => extensions.remove::<T>(),
        };
    }

    /// Did the principal change while the exchange ran (a logout or a user switch mid-flight)?
    /// Then a cache outside, which keyed the request by the old principal, must not store the
    /// answer: the adapters mark it `Cache-Control: no-store`.
    pub fn scope_changed(&self) -> bool {
        self.key_scope.is_some() && self.strategy.cache_scope() != self.key_scope
    }

    /// Makes the headers of the answer handed back to the caller safe: `Location` and
    /// `Content-Location` lose any credential ([`clean_location`](Self::clean_location)), and an
    /// answer given while the principal changed is marked `Cache-Control: no-store`
    /// ([`scope_changed`](Self::scope_changed)).
    pub fn clean_response_headers(&self, headers: &mut HeaderMap) {
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(location) = headers.get(&name) else { continue };
            match self.clean_location(location) {
                Some(clean) if clean == *location => {}
                Some(clean) => {
                    headers.insert(name, clean);
                }
                // Not a location we can read, so not one we can vouch for: it goes.
                None => {
                    headers.remove(name);
                }
            }
        }
        if self.scope_changed() {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }

    /// A `Location` (or `Content-Location`) of an answer handed back to the caller, made safe: a
    /// location with a query or userinfo (where a token can hide, in any spelling) is joined to
    /// the URL that answered and stripped of every credential; one without is kept as it is.
    /// `None`: it cannot be read as a URL, so it cannot be vouched for. A redirect the exchange
    /// did not follow (another method, the hop limit, [`with_max_hops(0)`](Self::with_max_hops))
    /// can echo the token.
    pub fn clean_location(&self, location: &HeaderValue) -> Option<HeaderValue> {
        let text = std::str::from_utf8(location.as_bytes()).ok()?;
        // WHATWG parsers drop tab, CR and LF: `f\tat=` is `fat=` to a client.
        if !text.contains(['?', '@', '\t', '\r', '\n', '\\']) {
            return Some(location.clone());
        }
        let mut target = self.sent_url(self.used.as_ref())?.join(text).ok()?;
        strip_credentials(&mut target, self.strategy.credentials());
        HeaderValue::from_str(target.as_str()).ok()
    }

    /// What the exchange did so far.
    pub fn record(&self) -> ExchangeRecord {
        self.record
    }

    /// The first attempt: [`first_ready`](Self::first_ready), else waiting for the strategy.
    ///
    /// # Errors
    ///
    /// The strategy's, when it cannot resolve the URL ([`MediaAccessStrategy::resolve`]);
    /// [`AccessError::InvalidUrl`] when the exchange was already started.
    pub async fn first(&mut self) -> Result<Attempt, AccessError> {
        if let Some(ready) = self.first_ready() {
            return ready;
        }
        self.next().await?.ok_or(AccessError::InvalidUrl("the exchange was already started"))
    }

    /// The first attempt, when the strategy can answer without waiting (a warm token, a cache
    /// hit); `None` means await [`next`](Self::next). The synchronous hot path.
    pub fn first_ready(&mut self) -> Option<Result<Attempt, AccessError>> {
        if !matches!(self.pending, Pending::Start) {
            return None;
        }
        let view = self.caller.view()?;
        let ready = self.strategy.resolve_ready(&view)?;
        self.pending = Pending::Done;
        Some(ready.map(|resolution| self.attempt(Some(resolution))))
    }

    /// The next attempt: the first one (when [`first_ready`](Self::first_ready) answered `None`),
    /// the retry or the hop that [`answered`](Self::answered) asked for. `Ok(None)`: hand the
    /// last answer to the caller (the strategy could not repair a refusal).
    ///
    /// # Errors
    ///
    /// The strategy's, when it cannot resolve the first attempt, the retry or a hop on a host it
    /// serves ([`MediaAccessStrategy::resolve`]); [`AccessError::InvalidUrl`] when the URL to
    /// resolve is not an http(s) URL.
    pub async fn next(&mut self) -> Result<Option<Attempt>, AccessError> {
        match std::mem::replace(&mut self.pending, Pending::Done) {
            Pending::Done => Ok(None),
            Pending::Start => {
                let resolution = self.resolve().await?;
                Ok(Some(self.attempt(Some(resolution))))
            }
            Pending::Refused(status) => {
                let Some(used) = self.used.take() else { return Ok(None) };
                let decision = {
                    let view = self.target_view().ok_or(AccessError::InvalidUrl("not an http(s) URL"))?;
                    self.strategy.rejected(&view, &used, status).await
                };
                if decision != crate::RetryDecision::RetryOnce {
                    return Ok(None);
                }
                let fresh = self.resolve().await?;
                self.record.retries += 1;
                self.record.token_renewed |= match (used.token(), fresh.token()) {
                    (Some(old), Some(new)) => !Arc::ptr_eq(old, new),
                    _ => false,
                };
                self.record.presigned_again |= match (used.url_change(), fresh.url_change()) {
                    (UrlChange::Replace(old), UrlChange::Replace(new)) => !old.same_as(new),
                    _ => false,
                };
                Ok(Some(self.attempt(Some(fresh))))
            }
            Pending::Hop(url) => {
                self.record.hops += 1;
                let secure = MediaUrl::from_url(&url).is_some_and(|view| strategy_serves(&*self.strategy, &view));
                self.hop = Some(url);
                let resolution = if secure { Some(self.resolve().await?) } else { None };
                Ok(Some(self.attempt(resolution)))
            }
        }
    }

    /// The answer to the attempt in flight: its status and `Location`. `true`: call
    /// [`next`](Self::next) (a retry or a hop); `false`: hand this answer to the caller.
    ///
    /// A 401 or 403 counts as a refusal only when the attempt carried our proof (the secure host,
    /// or the URL a resolution produced, say a presigned URL on a CDN), and only once.
    pub fn answered(&mut self, status: StatusCode, location: Option<&HeaderValue>) -> bool {
        self.pending = Pending::Done;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            if self.used.is_some() && self.record.retries == 0 && self.replayable {
                self.pending = Pending::Refused(status);
                return true;
            }
            return false;
        }
        // Only the redirects that name a new target (not 300, 304 or 305).
        let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
        if !redirect || !self.method_follows || !self.replayable || self.record.hops >= self.max_hops {
            return false;
        }
        match location.and_then(|location| self.hop_target(location)) {
            Some(hop) => {
                self.pending = Pending::Hop(hop);
                true
            }
            None => false,
        }
    }

    /// The resolution for the current target.
    async fn resolve(&self) -> Result<Resolution, AccessError> {
        let view = self.target_view().ok_or(AccessError::InvalidUrl("not an http(s) URL"))?;
        match self.strategy.resolve_ready(&view) {
            Some(ready) => ready,
            None => self.strategy.resolve(&view).await,
        }
    }

    fn target_view(&self) -> Option<MediaUrl<'_>> {
        match &self.hop {
            Some(hop) => MediaUrl::from_url(hop),
            None => self.caller.view(),
        }
    }

    fn attempt(&mut self, resolution: Option<Resolution>) -> Attempt {
        self.record.attempts += 1;
        let foreign = self.leaves_callers_origin(resolution.as_ref());
        self.used = resolution.clone();
        // Only a foreign attempt needs them: the common one takes no reference count.
        let declared = self.strategy.credentials();
        let declared_headers = (foreign && !declared.headers().is_empty()).then(|| declared.headers_shared());
        Attempt { hop: self.hop.clone(), resolution, foreign, declared_headers }
    }

    /// Where an attempt with `resolution` goes, compared with the caller's origin.
    fn leaves_callers_origin(&self, resolution: Option<&Resolution>) -> bool {
        let Some(caller) = self.caller.view() else { return true };
        self.with_sent_view(resolution, |sent| !sent.same_origin(&caller)).unwrap_or(true)
    }

    /// Where an attempt with `resolution` goes: the presigned URL for a replaced one, else the
    /// current target (a hop, or the caller's URL).
    fn with_sent_view<T>(&self, resolution: Option<&Resolution>, f: impl FnOnce(&MediaUrl<'_>) -> T) -> Option<T> {
        match resolution.map(Resolution::url_change) {
            Some(UrlChange::Replace(signed)) => MediaUrl::with_str(signed.as_str(), |sent| Some(f(sent))),
            _ => self.target_view().map(|sent| f(&sent)),
        }
    }

    /// [`with_sent_view`](Self::with_sent_view)'s URL, before our query went in: what relative
    /// `Location`s are joined to.
    fn sent_url<'s>(&'s self, resolution: Option<&'s Resolution>) -> Option<Cow<'s, Url>> {
        match resolution.map(Resolution::url_change) {
            Some(UrlChange::Replace(signed)) => Some(Cow::Owned(signed.url())),
            _ => match &self.hop {
                Some(hop) => Some(Cow::Borrowed(hop)),
                None => self.caller.to_url(),
            },
        }
    }

    /// The hop a `Location` points to, relative to the URL that answered, with every credential
    /// removed (a secure hop is resolved afresh, any other hop carries none).
    fn hop_target(&self, location: &HeaderValue) -> Option<Url> {
        let location = std::str::from_utf8(location.as_bytes()).ok()?;
        let answered = self.sent_url(self.used.as_ref())?;
        let mut target = answered.join(location).ok()?;
        if !matches!(target.scheme(), "http" | "https") || target.host_str().is_none() {
            return None;
        }
        strip_credentials(&mut target, self.strategy.credentials());
        // Whatever answered: a plain-http host in between must not bring the chain back to a
        // secure host over http either.
        if self.downgrades_a_secure_host(&target) {
            return None;
        }
        Some(target)
    }

    fn downgrades_a_secure_host(&self, target: &Url) -> bool {
        downgrades_to_http(target, |view| strategy_serves(&*self.strategy, view))
    }
}

/// Is `target` a plain-http URL on a host that `serves` (a strategy's `applies_to`, a
/// `SecureHosts::matches`) accepts over https only? A redirect there (an attacker on the path, a
/// misconfigured server) would strip the protection the caller asked for: the exchange does not
/// follow it, and the redirect policies of both stacks stop there. With `allowing_http` the http
/// URL is itself served, and this is `false`.
///
/// ```
/// use secure_media_core::{downgrades_to_http, SecureHosts};
///
/// let hosts = SecureHosts::cometchat("us")?;
/// let url = |s: &str| url::Url::parse(s).unwrap();
/// assert!(downgrades_to_http(&url("http://files-us.cometchat.io/app/a.png"), |v| hosts.matches(v)));
/// assert!(!downgrades_to_http(&url("http://cdn.example/a.png"), |v| hosts.matches(v)));
/// assert!(!downgrades_to_http(&url("https://files-us.cometchat.io/app/a.png"), |v| hosts.matches(v)));
/// # Ok::<(), secure_media_core::AccessError>(())
/// ```
pub fn downgrades_to_http(target: &Url, serves: impl Fn(&MediaUrl<'_>) -> bool) -> bool {
    if target.scheme() != "http" || MediaUrl::from_url(target).is_some_and(|view| serves(&view)) {
        return false;
    }
    let mut upgraded = target.clone();
    // `http` to `https` is always allowed by `Url::set_scheme` (both special schemes).
    if upgraded.set_scheme("https").is_err() {
        return true;
    }
    MediaUrl::from_url(&upgraded).is_some_and(|view| serves(&view))
}

/// Does the URL carry userinfo or a credential query parameter (a shared one or one in
/// `declared`, in any spelling)? Such a URL was made by a resolution, or echoed from one: it is
/// for its own host only.
pub fn carries_credentials(url: &Url, declared: &Credentials) -> bool {
    MediaUrl::from_url(url).map_or_else(
        || has_userinfo(url) || url.query().is_some_and(|q| query::has_credential(q, declared)),
        |view| view.carries_credentials_with(declared),
    )
}

/// Removes userinfo and every credential query parameter, in any spelling (the list
/// [`MediaUrl::clean_key`] drops: `fat`, `Expires`, `Signature`, `Key-Pair-Id`, `X-Amz-*`, ...):
/// what a URL handed back to a caller, or sent to another origin, must look like; and those in
/// `declared` (a strategy's [`Credentials`]).
pub fn strip_credentials(url: &mut Url, declared: &Credentials) {
    if has_userinfo(url) {
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    if let Some(kept) = url.query().and_then(|q| query::without_credentials(q, declared)) {
        url.set_query(kept.as_deref());
    }
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("caller", &self.caller.view().map(|view| view.redacted()))
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EmbeddedStrategy, SecureHosts, StaticToken};

    fn exchange(url: &str, method: Method) -> Exchange {
        let strategy = EmbeddedStrategy::new(
            SecureHosts::cometchat("us").unwrap(),
            Arc::new(StaticToken::parse("TOKEN").unwrap()),
        );
        let strategy: Arc<dyn MediaAccessStrategy> = Arc::new(strategy);
        Exchange::for_url(&strategy, &Url::parse(url).unwrap(), &method).unwrap()
    }

    fn sent(attempt: &Attempt, caller: &str) -> String {
        let mut url = Url::parse(caller).unwrap();
        attempt.apply_to_url(&mut url);
        url.into()
    }

    const SECURE: &str = "https://files-us.cometchat.io/app/media/a.png";

    #[tokio::test]
    async fn a_same_host_redirect_is_resolved_afresh_without_a_refusal() {
        let mut ex = exchange(SECURE, Method::GET);
        ex.first_ready().unwrap().unwrap();
        assert!(ex.answered(StatusCode::FOUND, Some(&HeaderValue::from_static("/app/media/b.png"))));
        let hop = ex.next().await.unwrap().unwrap();
        assert_eq!(sent(&hop, SECURE), "https://files-us.cometchat.io/app/media/b.png?fat=TOKEN");
        assert!(!hop.leaves_callers_origin());
        assert!(!ex.answered(StatusCode::OK, None));
        assert_eq!(ex.record(), ExchangeRecord { attempts: 2, hops: 1, ..ExchangeRecord::default() });
    }

    #[tokio::test]
    async fn a_foreign_hop_loses_every_credential_parameter_and_userinfo() {
        let mut ex = exchange(SECURE, Method::GET);
        ex.first_ready().unwrap().unwrap();
        let location = HeaderValue::from_static("https://u:p@cdn.example/a?x=1&FAT=T&%66at=T&Signature=S&Expires=1");
        assert!(ex.answered(StatusCode::TEMPORARY_REDIRECT, Some(&location)));
        let hop = ex.next().await.unwrap().unwrap();
        assert_eq!(sent(&hop, SECURE), "https://cdn.example/a?x=1");
        assert!(hop.resolution().is_none() && hop.leaves_callers_origin());
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("session=1"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic x"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("image/*"));
        hop.apply_to_headers(&mut headers);
        assert_eq!(headers.len(), 1);
    }

    #[tokio::test]
    async fn a_downgrade_to_http_on_a_secure_host_is_not_followed() {
        for location in [
            "http://files-us.cometchat.io/app/media/b.png",
            "http://files-us.cometchat.io:443/app/media/b.png?fat=ECHO",
            "HTTP://FILES-US.COMETCHAT.IO/app/media/b.png",
        ] {
            let mut ex = exchange(SECURE, Method::GET);
            ex.first_ready().unwrap().unwrap();
            assert!(!ex.answered(StatusCode::FOUND, Some(&HeaderValue::from_str(location).unwrap())), "{location}");
            assert_eq!(ex.record().hops, 0);
        }
        // Plain http elsewhere is another origin like any other: followed, carrying nothing.
        let mut ex = exchange(SECURE, Method::GET);
        ex.first_ready().unwrap().unwrap();
        assert!(ex.answered(StatusCode::FOUND, Some(&HeaderValue::from_static("http://cdn.example/b.png?fat=T"))));
        let hop = ex.next().await.unwrap().unwrap();
        assert_eq!(sent(&hop, SECURE), "http://cdn.example/b.png");
        // ...but it cannot bring the chain back to the secure host over http, in any spelling.
        for back in ["http://files-us.cometchat.io/app/media/b.png", "//files-us.cometchat.io/app/media/b.png"] {
            let mut ex = exchange(SECURE, Method::GET);
            ex.first_ready().unwrap().unwrap();
            assert!(ex.answered(StatusCode::FOUND, Some(&HeaderValue::from_static("http://cdn.example/x"))));
            ex.next().await.unwrap().unwrap();
            assert!(!ex.answered(StatusCode::FOUND, Some(&HeaderValue::from_static(back))), "{back}");
            assert_eq!(ex.record().hops, 1, "{back}");
        }
    }

    /// A strategy that signs locally with two parameters of its own, declared as credentials,
    /// written with the trait's defaults only (`resolve`, `rejected`).
    struct LocalSigner {
        hosts: SecureHosts,
        credentials: crate::Credentials,
    }

    #[async_trait::async_trait]
    impl MediaAccessStrategy for LocalSigner {
        fn secure_hosts(&self) -> &SecureHosts {
            &self.hosts
        }
        fn credentials(&self) -> &crate::Credentials {
            &self.credentials
        }
        fn resolve_ready(&self, _: &MediaUrl<'_>) -> Option<Result<Resolution, AccessError>> {
            let params = [("md5", crate::ParamValue::new("SIG")), ("expires", crate::ParamValue::new("99"))];
            Some(Ok(Resolution::set_params(params)))
        }
    }

    #[tokio::test]
    async fn declared_credentials_are_treated_as_fat() {
        let strategy: Arc<dyn MediaAccessStrategy> = Arc::new(LocalSigner {
            hosts: SecureHosts::cometchat("us").unwrap(),
            credentials: crate::Credentials::new()
                .param("md5")
                .param("expires")
                .header(HeaderName::from_static("x-sig")),
        });
        // The caller's URL echoes an old signature (any case): the key and the clean URL drop it.
        let caller = Url::parse("https://files-us.cometchat.io/app/a.mp4?t=5&MD5=OLD&EXPIRES=1").unwrap();
        let mut ex = Exchange::for_url(&strategy, &caller, &Method::GET).unwrap();
        assert_eq!(ex.media_key().unwrap().url(), "https://files-us.cometchat.io/app/a.mp4?t=5");
        assert_eq!(ex.clean_caller_url().unwrap().as_str(), "https://files-us.cometchat.io/app/a.mp4?t=5");
        let first = ex.first_ready().unwrap().unwrap();
        let first = sent(&first, caller.as_str());
        // Stale spellings are replaced in place: nginx reads names case-insensitively.
        assert_eq!(first, "https://files-us.cometchat.io/app/a.mp4?t=5&md5=SIG&expires=99");
        // The default `rejected`: one retry with a fresh resolution.
        assert!(ex.answered(StatusCode::FORBIDDEN, None));
        let retry = ex.next().await.unwrap().unwrap();
        assert!(format!("{:?}", retry.resolution().unwrap()).contains(r#"names: ["md5", "expires"]"#));
        // A hop elsewhere loses the signature, echoed or not, and the declared header.
        let location = HeaderValue::from_static("https://cdn.example/a.mp4?t=5&md5=SIG&Expires=99&%65xpires=9");
        assert!(ex.answered(StatusCode::FOUND, Some(&location)));
        let hop = ex.next().await.unwrap().unwrap();
        assert_eq!(sent(&hop, caller.as_str()), "https://cdn.example/a.mp4?t=5");
        let mut headers = HeaderMap::new();
        headers.insert("x-sig", HeaderValue::from_static("SIG"));
        hop.apply_to_headers(&mut headers);
        assert!(headers.is_empty());
        // A Location handed back names none of them either.
        let handed = ex.clean_location(&HeaderValue::from_static("/b.mp4?md5=SIG&expires=9&w=1")).unwrap();
        assert_eq!(handed, "https://cdn.example/b.mp4?w=1");
    }

    #[tokio::test]
    async fn a_refusal_earns_one_retry_and_no_more() {
        let mut ex = exchange(SECURE, Method::GET);
        ex.first_ready().unwrap().unwrap();
        assert!(ex.answered(StatusCode::UNAUTHORIZED, None));
        // A static token cannot be renewed: the strategy gives up, the refusal goes back.
        assert!(ex.next().await.unwrap().is_none());
        assert!(!ex.answered(StatusCode::UNAUTHORIZED, None));
    }

    #[tokio::test]
    async fn a_redirect_loop_ends_after_the_hop_limit() {
        let mut ex = exchange(SECURE, Method::GET).with_max_hops(3);
        ex.first_ready().unwrap().unwrap();
        let mut sends = 1;
        while ex.answered(StatusCode::FOUND, Some(&HeaderValue::from_static("/app/media/a.png"))) {
            ex.next().await.unwrap().unwrap();
            sends += 1;
        }
        assert_eq!((sends, ex.record().hops), (4, 3));
    }

    #[test]
    fn other_methods_and_unreplayable_requests_get_the_redirect_back() {
        let location = HeaderValue::from_static("/b");
        let mut post = exchange(SECURE, Method::POST);
        post.first_ready().unwrap().unwrap();
        assert!(!post.answered(StatusCode::FOUND, Some(&location)));
        let mut streaming = exchange(SECURE, Method::GET).replayable(false);
        streaming.first_ready().unwrap().unwrap();
        assert!(!streaming.answered(StatusCode::FOUND, Some(&location)));
        assert!(!streaming.answered(StatusCode::UNAUTHORIZED, None));
    }

    #[test]
    fn a_location_that_is_not_http_is_not_followed() {
        let mut ex = exchange(SECURE, Method::GET);
        ex.first_ready().unwrap().unwrap();
        assert!(!ex.answered(StatusCode::FOUND, Some(&HeaderValue::from_static("file:///etc/passwd"))));
        assert!(!ex.answered(StatusCode::FOUND, Some(&HeaderValue::from_static("javascript:alert(1)"))));
    }

    #[test]
    fn only_redirects_that_name_a_target_are_followed() {
        for status in [300, 304, 305] {
            let mut ex = exchange(SECURE, Method::GET);
            ex.first_ready().unwrap().unwrap();
            let status = StatusCode::from_u16(status).unwrap();
            assert!(!ex.answered(status, Some(&HeaderValue::from_static("/app/media/b.png"))), "{status}");
        }
    }

    #[test]
    fn a_location_handed_back_loses_its_credentials() {
        let mut ex = exchange(SECURE, Method::GET).with_max_hops(0);
        ex.first_ready().unwrap().unwrap();
        let echoed = HeaderValue::from_static("https://cdn.example/x?w=1&fat=TOKEN");
        assert!(!ex.answered(StatusCode::FOUND, Some(&echoed)));
        assert_eq!(ex.clean_location(&echoed).unwrap(), "https://cdn.example/x?w=1");
        let relative = HeaderValue::from_static("?Signature=S");
        assert_eq!(ex.clean_location(&relative).unwrap(), "https://files-us.cometchat.io/app/media/a.png");
        assert_eq!(ex.clean_location(&HeaderValue::from_static("/b.png")).unwrap(), "/b.png");
        for sneaky in [
            "https://cdn.example/x?f%61t=TOKEN",
            "https://cdn.example/x?F%41T=TOKEN",
            "https://cdn.example/x?f\tat=TOKEN",
            "https://cdn.example/x?%58-Amz-Credential=TOKEN",
            "https://cdn.example/x?Policy=TOKEN",
        ] {
            let value = HeaderValue::from_str(sneaky).unwrap();
            let clean = ex.clean_location(&value).unwrap();
            assert_eq!(clean, "https://cdn.example/x", "{sneaky:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, HeaderValue::from_bytes(b"https://cdn.example/\xff?fat=TOKEN").unwrap());
        ex.clean_response_headers(&mut headers);
        assert!(headers.get(header::LOCATION).is_none(), "a location that cannot be read is not handed back");
    }

    #[test]
    fn a_user_switch_mid_flight_is_noticed() {
        let cell = Arc::new(crate::LoginCell::new());
        cell.set(crate::FileAccessToken::new("alice-token").unwrap());
        let strategy = EmbeddedStrategy::new(SecureHosts::cometchat("us").unwrap(), cell.clone());
        let strategy: Arc<dyn MediaAccessStrategy> = Arc::new(strategy);
        let mut ex = Exchange::for_url(&strategy, &Url::parse(SECURE).unwrap(), &Method::GET).unwrap();
        let key = ex.media_key().unwrap();
        assert!(!ex.scope_changed());
        cell.set(crate::FileAccessToken::new("bob-token").unwrap());
        assert!(ex.scope_changed());
        assert!(!key.to_string().contains("alice-token"));
    }

    #[test]
    fn debug_shows_no_token() {
        let mut ex = exchange(&format!("{SECURE}?fat=OLD"), Method::GET);
        let attempt = ex.first_ready().unwrap().unwrap();
        for shown in [format!("{ex:?}"), format!("{attempt:?}")] {
            assert!(!shown.contains("TOKEN") && !shown.contains("OLD"), "{shown}");
        }
    }
}
