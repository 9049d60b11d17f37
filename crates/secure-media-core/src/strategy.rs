//! [`MediaAccessStrategy`]: the extension point, and [`Resolution`]: what it decides.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue, StatusCode};
use url::Url;

use crate::presigned::SignedUrl;
use crate::{query, AccessError, Credentials, FileAccessToken, MediaUrl, SecureHosts};

/// A query parameter value, raw and form-urlencoded, both computed once and shared (one `Arc`:
/// a clone is one reference count). `Debug` hides it: it is usually a credential.
#[derive(Clone)]
pub struct ParamValue(Arc<ParamText>);

struct ParamText {
    raw: Box<str>,
    /// `None` when encoding changes nothing (a JWT is all unreserved characters).
    encoded: Option<Box<str>>,
}

impl ParamValue {
    /// Encodes `raw` once (`+` -> `%2B`, `/` -> `%2F`, `=` -> `%3D`, ...).
    pub fn new(raw: impl Into<Box<str>>) -> Self {
        let raw: Box<str> = raw.into();
        let encoded: String = url::form_urlencoded::byte_serialize(raw.as_bytes()).collect();
        let encoded = (encoded != *raw).then(|| encoded.into_boxed_str());
        Self(Arc::new(ParamText { raw, encoded }))
    }

    /// The value as given.
    pub fn raw(&self) -> &str {
        &self.0.raw
    }

    /// The value form-urlencoded, ready for a query string.
    pub fn encoded(&self) -> &str {
        self.0.encoded.as_deref().unwrap_or(&self.0.raw)
    }
}

impl std::fmt::Debug for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the request URL changes. Adapters apply it to their own URL type without reparsing.
/// `Debug` hides parameter values and signed URLs: they are credentials.
#[derive(Clone)]
#[non_exhaustive]
pub enum UrlChange {
    /// Send the URL as it is.
    Keep,
    /// Set one query parameter: the first existing one is replaced in place, duplicates dropped,
    /// otherwise it goes last.
    SetParam {
        /// The parameter name (plain ASCII).
        name: &'static str,
        /// The value, encoded once and shared.
        value: ParamValue,
    },
    /// Set several query parameters in order (a local signer's `md5` and `expires`), each
    /// replacing its name in any case or spelling; names are stored encoded.
    SetParams(Arc<[(Box<str>, ParamValue)]>),
    /// Remove a query parameter (a stale `fat` in header mode).
    RemoveParam(&'static str),
    /// Request another URL instead (a presigned or signed URL).
    Replace(Arc<SignedUrl>),
}

impl std::fmt::Debug for UrlChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Keep => f.write_str("Keep"),
            Self::SetParam { name, .. } => {
                f.debug_struct("SetParam").field("name", name).field("value", &"<redacted>").finish()
            }
            Self::SetParams(params) => {
                let names: Vec<&str> = params.iter().map(|(name, _)| &**name).collect();
                f.debug_struct("SetParams").field("names", &names).field("values", &"<redacted>").finish()
            }
            Self::RemoveParam(name) => f.debug_tuple("RemoveParam").field(name).finish(),
            Self::Replace(signed) => f.debug_tuple("Replace").field(signed).finish(),
        }
    }
}

/// A shared list of headers: built once (per token, for the header strategy) and cloned with
/// one reference count.
pub type SharedHeaders = Arc<[(HeaderName, HeaderValue)]>;

/// What to send for one media request: the URL change and the headers to add.
///
/// ```
/// use secure_media_core::{MediaUrl, Resolution};
///
/// let resolution = Resolution::set_param("fat", secure_media_core::ParamValue::new("abc"));
/// let url = "https://files-us.cometchat.io/a.png?w=1#top";
/// assert_eq!(resolution.apply_to_str(url), "https://files-us.cometchat.io/a.png?w=1&fat=abc#top");
/// ```
#[derive(Debug, Clone)]
pub struct Resolution {
    url: UrlChange,
    headers: Headers,
    token: Option<Arc<FileAccessToken>>,
}

/// Where a resolution's headers live.
#[derive(Clone)]
enum Headers {
    None,
    Shared(SharedHeaders),
    /// The list the resolution's token caches: header mode's hot path takes one reference count
    /// per request (the token's), not two.
    OfToken,
}

/// Names only: the values are proof of access.
impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Shared(headers) => f.debug_list().entries(headers.iter().map(|(name, _)| name)).finish(),
            Self::OfToken => f.write_str("OfToken"),
        }
    }
}

impl Resolution {
    /// Send the request unchanged.
    pub fn keep() -> Self {
        Self { url: UrlChange::Keep, headers: Headers::None, token: None }
    }

    /// Set a query parameter.
    pub fn set_param(name: &'static str, value: ParamValue) -> Self {
        Self { url: UrlChange::SetParam { name, value }, ..Self::keep() }
    }

    /// Set several query parameters at once, in order: what a local signer sends (nginx
    /// secure_link's `md5` and `expires`, a SigV4 query). Each replaces any parameter of its name
    /// in any case or spelling (a stale `MD5=` the caller's URL echoes), in place. Declare their names in the strategy's
    /// [`credentials`](MediaAccessStrategy::credentials) so they never leave the host.
    ///
    /// ```
    /// use secure_media_core::{ParamValue, Resolution};
    ///
    /// let signed = Resolution::set_params([("md5", ParamValue::new("q1w2")), ("expires", ParamValue::new("2000000000"))]);
    /// assert_eq!(
    ///     signed.apply_to_str("https://media.example/a.mp4?t=5&md5=old"),
    ///     "https://media.example/a.mp4?t=5&md5=q1w2&expires=2000000000",
    /// );
    /// ```
    pub fn set_params<N: AsRef<str>>(params: impl IntoIterator<Item = (N, ParamValue)>) -> Self {
        // Names are encoded once, as values are: a name with `&`, `#` or a space stays one name.
        let encode = |name: &str| url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>();
        let params: Arc<[(Box<str>, ParamValue)]> =
            params.into_iter().map(|(name, value)| (encode(name.as_ref()).into_boxed_str(), value)).collect();
        Self { url: UrlChange::SetParams(params), ..Self::keep() }
    }

    /// Remove a query parameter.
    pub fn remove_param(name: &'static str) -> Self {
        Self { url: UrlChange::RemoveParam(name), ..Self::keep() }
    }

    /// Request another URL.
    pub fn replace(url: Arc<SignedUrl>) -> Self {
        Self { url: UrlChange::Replace(url), ..Self::keep() }
    }

    /// The header strategy's shape, built in one step (the hot path of header mode): `headers`
    /// of `None` means the list `token` caches (`FileAccessToken::cached_headers`).
    pub(crate) fn with_token_headers(
        url: UrlChange,
        headers: Option<SharedHeaders>,
        token: Arc<FileAccessToken>,
    ) -> Self {
        let headers = headers.map_or(Headers::OfToken, Headers::Shared);
        Self { url, headers, token: Some(token) }
    }

    /// Also send this header (replacing any header of that name the request had). The value is
    /// marked sensitive: it is a credential, so HTTP/2 never indexes it and `Debug` hides it.
    pub fn with_header(mut self, name: HeaderName, mut value: HeaderValue) -> Self {
        value.set_sensitive(true);
        let mut all = self.headers().to_vec();
        all.push((name, value));
        self.headers = Headers::Shared(all.into());
        self
    }

    /// Also send these headers: build the list once and share it across resolutions (no
    /// allocation per request, unlike [`with_header`](Self::with_header)). Mark the values
    /// sensitive when you build them; the adapters mark every header they add anyway.
    pub fn with_headers(mut self, headers: SharedHeaders) -> Self {
        self.headers = match self.headers() {
            [] => Headers::Shared(headers),
            mine => Headers::Shared(mine.iter().chain(headers.iter()).cloned().collect()),
        };
        self
    }

    /// Remember which token this resolution used, so a refusal renews exactly that one.
    pub fn with_token(mut self, token: Arc<FileAccessToken>) -> Self {
        if let (Headers::OfToken, Some(list)) =
            (&self.headers, self.token.as_deref().and_then(FileAccessToken::cached_headers))
        {
            // The headers stay those of the token they were made for.
            self.headers = Headers::Shared(list.clone());
        }
        self.token = Some(token);
        self
    }

    /// The URL change.
    pub fn url_change(&self) -> &UrlChange {
        &self.url
    }

    /// The headers to set.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        match &self.headers {
            Headers::None => &[],
            Headers::Shared(headers) => headers,
            Headers::OfToken => self.token.as_deref().and_then(FileAccessToken::cached_headers).map_or(&[], |h| h),
        }
    }

    /// The token this resolution used, if any.
    pub fn token(&self) -> Option<&Arc<FileAccessToken>> {
        self.token.as_ref()
    }

    /// Applies the URL change to a parsed [`Url`].
    pub fn apply_to_url(&self, url: &mut Url) {
        match &self.url {
            UrlChange::Keep => {}
            UrlChange::SetParam { name, value } => match url.query() {
                Some(q) if query::contains(q, name) => {
                    if let Some(q) = query::set(Some(q), name, value.encoded()) {
                        url.set_query(Some(&q));
                    }
                }
                // Appending serialises unreserved bytes as runs: far cheaper than set_query's reparse.
                _ => {
                    url.query_pairs_mut().append_pair(name, value.raw());
                }
            },
            UrlChange::SetParams(params) => {
                if let Some(q) = set_all(url.query(), params) {
                    url.set_query(Some(&q));
                }
            }
            UrlChange::RemoveParam(name) => {
                if let Some(q) = query::remove(url.query(), name) {
                    url.set_query(q.as_deref());
                }
            }
            UrlChange::Replace(signed) => {
                // The fragment never reaches the server; keep the caller's (a video's #t=10).
                let fragment = url.fragment().map(str::to_owned);
                *url = signed.url().clone();
                url.set_fragment(fragment.as_deref());
            }
        }
    }

    /// Applies the URL change to a URL string that is on a secure host (checked by the caller).
    /// One allocation for the result, none when nothing changes.
    pub fn apply_to_str<'u>(&self, url: &'u str) -> Cow<'u, str> {
        let (base, old_query, fragment) = crate::media_url::split_tail(url);
        self.apply_to_parts(url, base, old_query, fragment)
    }

    /// [`apply_to_str`](Self::apply_to_str) for the text a [`MediaUrl::parse_plain`] view was
    /// made from, reusing the view's split.
    pub(crate) fn apply_to_plain<'u>(&self, view: &MediaUrl<'u>, url: &'u str) -> Cow<'u, str> {
        let (base, query, fragment) = plain_parts(view, url);
        self.apply_to_parts(url, base, query, fragment)
    }

    fn apply_to_parts<'u>(
        &self,
        url: &'u str,
        base: &str,
        old_query: Option<&str>,
        fragment: Option<&str>,
    ) -> Cow<'u, str> {
        let mut out;
        match &self.url {
            UrlChange::Keep => return Cow::Borrowed(url),
            UrlChange::SetParam { name, value } => {
                return set_param_in(url, base, old_query, fragment, name, value.encoded());
            }
            UrlChange::Replace(signed) => {
                let signed = signed.url();
                let base = signed.as_str().split_once('#').map_or(signed.as_str(), |(base, _)| base);
                out = String::with_capacity(base.len() + fragment.map_or(0, |f| f.len() + 1));
                out.push_str(base);
            }
            UrlChange::SetParams(params) => {
                let Some(query) = set_all(old_query, params) else {
                    return Cow::Borrowed(url);
                };
                out = String::with_capacity(base.len() + query.len() + 1);
                out.push_str(base);
                out.push('?');
                out.push_str(&query);
            }
            UrlChange::RemoveParam(name) => {
                let Some(kept) = query::remove(old_query, name) else {
                    return Cow::Borrowed(url);
                };
                out = String::with_capacity(url.len());
                out.push_str(base);
                if let Some(kept) = kept {
                    out.push('?');
                    out.push_str(&kept);
                }
            }
        }
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(fragment);
        }
        Cow::Owned(out)
    }

    /// Applies the URL change to an [`http::Uri`] (tower, hyper).
    pub fn apply_to_uri(&self, uri: &http::Uri) -> Result<Option<http::Uri>, AccessError> {
        let new_query = match &self.url {
            UrlChange::Keep => return Ok(None),
            UrlChange::Replace(signed) => {
                return signed
                    .as_str()
                    .parse()
                    .map(Some)
                    .map_err(|_| AccessError::InvalidUrl("the signed URL is not a valid URI"));
            }
            UrlChange::SetParam { name, value } => match query::set(uri.query(), name, value.encoded()) {
                Some(q) => Some(q),
                None => return Ok(None),
            },
            UrlChange::SetParams(params) => match set_all(uri.query(), params) {
                Some(q) => Some(q),
                None => return Ok(None),
            },
            UrlChange::RemoveParam(name) => match query::remove(uri.query(), name) {
                Some(q) => q,
                None => return Ok(None),
            },
        };
        let path_and_query = match new_query {
            Some(q) => format!("{}?{q}", uri.path()),
            None => uri.path().to_owned(),
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query =
            Some(path_and_query.parse().map_err(|_| AccessError::InvalidUrl("the rewritten path is not a valid URI"))?);
        http::Uri::from_parts(parts).map(Some).map_err(|_| AccessError::InvalidUrl("the rewritten URI is invalid"))
    }
}

/// The base (all before the query), query and fragment of the text a [`MediaUrl::parse_plain`]
/// view was made from, reusing the view's split: its path is a subslice of `url`, so the base
/// ends where the path ends (split afresh should `url` be another string).
pub(crate) fn plain_parts<'u>(view: &MediaUrl<'u>, url: &'u str) -> (&'u str, Option<&'u str>, Option<&'u str>) {
    let path = view.path();
    let base_len = (path.as_ptr() as usize).checked_sub(url.as_ptr() as usize).map(|start| start + path.len());
    match base_len.and_then(|len| url.get(..len)) {
        Some(base) => (base, view.query(), view.fragment()),
        None => crate::media_url::split_tail(url),
    }
}

/// `url` (split into base, query and fragment) with `name=encoded` set: one allocation, none
/// when the query already says exactly that.
pub(crate) fn set_param_in<'u>(
    url: &'u str,
    base: &str,
    old_query: Option<&str>,
    fragment: Option<&str>,
    name: &str,
    encoded: &str,
) -> Cow<'u, str> {
    // Already exactly that (idempotence): no allocation. A clean media URL, the common case,
    // has no query to scan.
    if old_query.is_some() && query::is_exactly(old_query, name, encoded) {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len() + name.len() + encoded.len() + 2);
    out.push_str(base);
    out.push('?');
    match old_query {
        None => {
            out.push_str(name);
            out.push('=');
            out.push_str(encoded);
        }
        Some(_) => query::write_set(&mut out, old_query, name, encoded),
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    Cow::Owned(out)
}

/// `query` with every parameter of `params` (names already encoded) set in order, each name in
/// any case or spelling ([`query::set_any_case`]); `None` when it already says exactly that.
fn set_all(query: Option<&str>, params: &[(Box<str>, ParamValue)]) -> Option<String> {
    let mut current: Option<String> = None;
    for (name, value) in params {
        let now = current.as_deref().or(query);
        if let Some(next) = query::set_any_case(now, name, value.encoded()) {
            current = Some(next);
        }
    }
    current
}

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
    /// Lookups that had to presign.
    pub cache_misses: u64,
    /// Calls made to the presigner (one per batch).
    pub presign_calls: u64,
    /// URLs presigned over all calls.
    pub urls_presigned: u64,
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
    async fn resolve(&self, url: &MediaUrl<'_>) -> Result<Resolution, AccessError> {
        self.resolve_ready(url).unwrap_or(Err(AccessError::InvalidConfig(
            "resolve_ready answered None and the strategy does not implement resolve",
        )))
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
    /// everyone. Token strategies answer [`FileAccessToken::cache_scope`]: the verified
    /// principal, or a digest of a token no server has accepted yet.
    fn cache_scope(&self) -> Option<Arc<str>> {
        None
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
}

/// Resolves a URL string through any strategy: the input comes back unchanged when it is not a
/// valid URL or not on a secure host (the vendor SDK's passthrough). Headers the strategy adds
/// are in the returned [`Resolution`].
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_params_encodes_names_and_every_adapter_agrees() {
        let resolution = Resolution::set_params([
            ("a b", ParamValue::new("1")),
            ("x&y", ParamValue::new("2")),
            ("h#", ParamValue::new("3")),
            ("md5", ParamValue::new("v&w=#")),
        ]);
        let text = "https://h.io/p?w=1&MD5=old#frag";
        let expected = "https://h.io/p?w=1&md5=v%26w%3D%23&a+b=1&x%26y=2&h%23=3#frag";
        assert_eq!(resolution.apply_to_str(text), expected);
        let mut url = Url::parse(text).unwrap();
        resolution.apply_to_url(&mut url);
        assert_eq!(url.as_str(), expected);
        let uri: http::Uri = "https://h.io/p?w=1&MD5=old".parse().unwrap();
        let sent = resolution.apply_to_uri(&uri).unwrap().unwrap();
        assert_eq!(sent.to_string(), expected.trim_end_matches("#frag"));
        // Applying it again changes nothing.
        assert!(matches!(resolution.apply_to_str(expected), Cow::Borrowed(_)));
    }

    #[test]
    fn apply_to_str_keeps_query_and_fragment_order() {
        let r = Resolution::set_param("fat", ParamValue::new("T"));
        assert_eq!(r.apply_to_str("https://h.io/a"), "https://h.io/a?fat=T");
        assert_eq!(r.apply_to_str("https://h.io/a?x=1"), "https://h.io/a?x=1&fat=T");
        assert_eq!(r.apply_to_str("https://h.io/a?fat=old&x=1#f"), "https://h.io/a?fat=T&x=1#f");
        assert!(matches!(r.apply_to_str("https://h.io/a?fat=T"), Cow::Borrowed(_)));
        let strip = Resolution::remove_param("fat");
        assert_eq!(strip.apply_to_str("https://h.io/a?fat=old#f"), "https://h.io/a#f");
        assert_eq!(strip.apply_to_str("https://h.io/a?w=1&fat=old"), "https://h.io/a?w=1");
    }

    #[test]
    fn apply_to_url_and_uri_match_apply_to_str() {
        let r = Resolution::set_param("fat", ParamValue::new("T+"));
        for text in ["https://h.io/a", "https://h.io/a?x=1", "https://h.io/a?fat=1&x=2"] {
            let mut url = Url::parse(text).unwrap();
            r.apply_to_url(&mut url);
            let uri: http::Uri = text.parse().unwrap();
            let uri = r.apply_to_uri(&uri).unwrap().unwrap();
            assert_eq!(url.as_str(), r.apply_to_str(text));
            assert_eq!(uri.to_string(), r.apply_to_str(text));
        }
    }

    #[test]
    fn replace_keeps_the_callers_fragment_and_hides_the_signature_in_debug() {
        let now = std::time::SystemTime::now();
        let signed = url::Url::parse("https://m.io/a.mp4?Signature=SIG").unwrap();
        let r = Resolution::replace(Arc::new(SignedUrl::new(signed, now, now)));
        assert_eq!(r.apply_to_str("https://h.io/a.mp4#t=10"), "https://m.io/a.mp4?Signature=SIG#t=10");
        let mut url = Url::parse("https://h.io/a.mp4?fat=x#t=10").unwrap();
        r.apply_to_url(&mut url);
        assert_eq!(url.as_str(), "https://m.io/a.mp4?Signature=SIG#t=10");
        assert!(!format!("{r:?}").contains("SIG"));
        let set = Resolution::set_param("fat", ParamValue::new("SECRET"));
        assert!(!format!("{set:?}").contains("SECRET"));
    }

    #[test]
    fn header_values_a_strategy_adds_are_marked_sensitive() {
        let r = Resolution::keep().with_header(HeaderName::from_static("x-key"), HeaderValue::from_static("SECRET"));
        assert!(r.headers()[0].1.is_sensitive());
        assert!(!format!("{r:?}").contains("SECRET"));
        let shared: SharedHeaders = Arc::new([(HeaderName::from_static("x-key"), HeaderValue::from_static("SECRET"))]);
        let r = Resolution::keep().with_headers(shared);
        assert!(!format!("{r:?}").contains("SECRET") && format!("{r:?}").contains("x-key"));
    }

    #[test]
    fn headers_keep_their_order_and_shared_lists_are_not_copied() {
        let name = HeaderName::from_static("x-a");
        let r = Resolution::keep().with_header(name.clone(), HeaderValue::from_static("1"));
        let r = r.with_header(HeaderName::from_static("x-b"), HeaderValue::from_static("2"));
        assert_eq!(r.headers().len(), 2);
        assert_eq!(r.headers()[0].0, name);
        let shared: SharedHeaders = Arc::new([(name, HeaderValue::from_static("3"))]);
        let r = Resolution::keep().with_headers(shared.clone());
        assert!(std::ptr::eq(r.headers(), &*shared));
        assert!(std::mem::size_of::<Resolution>() <= 64, "a resolution is moved on every request");
    }
}
