//! [`SecureMediaMiddleware`]: secure media through reqwest-middleware.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Extensions, HeaderMap, HeaderName, Method, StatusCode};
use reqwest::{Request, Response, Url};
use reqwest_middleware::{Middleware, Next};
use secure_media_core::{AccessError, MediaAccessStrategy, MediaKey, MediaUrl, Resolution, RetryDecision, FAT_PARAM};

/// Adds proof of access to requests for secure hosts, retries once after a 401 or 403, follows
/// cross-origin redirects hop by hop so a token never reaches another origin, and keeps tokens
/// and signatures out of the errors it returns.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use secure_media_core::{HeaderStrategy, SecureHosts, StaticToken};
/// use secure_media_reqwest::{redirect_policy, SecureMediaMiddleware};
///
/// let strategy = HeaderStrategy::new(SecureHosts::cometchat("us")?, Arc::new(StaticToken::parse("my-fat")?));
/// let client = reqwest::Client::builder().redirect(redirect_policy()).build()?;
/// let client = reqwest_middleware::ClientBuilder::new(client)
///     .with(SecureMediaMiddleware::new(Arc::new(strategy)))
///     .build();
/// let image = client.get("https://files-us.cometchat.io/app/media/a.png").send().await?.bytes().await?;
/// # Ok(()) }
/// ```
///
/// Build the client with [`redirect_policy`](crate::redirect_policy) (or `Policy::none()`):
/// reqwest follows redirects inside `Client::execute`, below every middleware, and on a
/// cross-origin hop it strips headers but never the query, so a `?fat=` echoed into `Location`
/// would travel on. The policy hands cross-origin hops back to this middleware, which follows them
/// itself: a hop to a secure host is resolved afresh, any other hop loses the `fat` parameter and
/// the credential headers.
///
/// Replay: the request is copied before the first send (method, URL, headers, version, timeout,
/// a body held in memory); a streaming body cannot be copied, and such a request gets the
/// refusal back as is.
pub struct SecureMediaMiddleware {
    strategy: Arc<dyn MediaAccessStrategy>,
    max_redirects: usize,
    media_key: bool,
}

impl SecureMediaMiddleware {
    /// Resolves secure media requests through `strategy`; follows up to 10 cross-origin redirects.
    pub fn new(strategy: Arc<dyn MediaAccessStrategy>) -> Self {
        Self { strategy, max_redirects: 10, media_key: true }
    }

    /// Leaves the [`MediaKey`] out of the chain's and the response's extensions: for stacks
    /// without a cache that keys by it. The key costs three allocations per extension map it
    /// starts (`http::Extensions` boxes its map and each value), a third to a half of this
    /// middleware's cost on an in-process call (see BENCHMARKS.md).
    pub fn without_media_key(mut self) -> Self {
        self.media_key = false;
        self
    }

    /// Leaves redirects that reach the middleware to the caller instead of following them.
    pub fn without_redirects(mut self) -> Self {
        self.max_redirects = 0;
        self
    }

    /// The strategy.
    pub fn strategy(&self) -> &Arc<dyn MediaAccessStrategy> {
        &self.strategy
    }

    async fn resolve(&self, url: &MediaUrl<'_>) -> Result<Resolution, AccessError> {
        match self.strategy.resolve_ready(url) {
            Some(ready) => ready,
            None => self.strategy.resolve(url).await,
        }
    }

    /// One request: passthrough for other hosts; for secure hosts, resolve, send, and after a
    /// refusal retry once.
    async fn exchange(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: &Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let secure = MediaUrl::from_url(request.url()).filter(|url| self.strategy.applies_to(url));
        let Some(url) = secure else {
            return next.clone().run(request, extensions).await;
        };
        let key = self.media_key.then(|| MediaKey::of(&url));
        let resolution = self.resolve(&url).await.map_err(access_error)?;
        // The caller's request, cloned before any proof goes in: the one replay, and the URL
        // every later step reads (the request itself moves into the chain).
        let replay = replay_of(&request);
        let owned;
        let original: &Url = match &replay {
            Some(replay) => replay.url(),
            None => {
                owned = request.url().clone();
                &owned
            }
        };
        if let Some(key) = &key {
            extensions.insert(key.clone());
        }
        apply(&resolution, &mut request);
        let redact = |error: reqwest_middleware::Error| redact(error, original);
        let mut response = next.clone().run(request, extensions).await.map_err(redact)?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            // A refusal counts only if a secure host said it (not a host reqwest redirected to).
            let url = MediaUrl::from_url(original).filter(|u| self.strategy.applies_to(u));
            let from_secure_host = MediaUrl::from_url(response.url()).is_some_and(|u| self.strategy.applies_to(&u));
            let retry = replay.as_ref().and_then(replay_of);
            if let (Some(url), Some(mut retry), true) = (url, retry, from_secure_host) {
                if self.strategy.rejected(&url, &resolution, status).await == RetryDecision::RetryOnce {
                    let fresh = self.resolve(&url).await.map_err(access_error)?;
                    apply(&fresh, &mut retry);
                    response = next.clone().run(retry, extensions).await.map_err(redact)?;
                }
            }
        }
        if !same_origin(response.url(), original) && self.max_redirects > 0 {
            tracing::warn!("the client followed a cross-origin redirect itself: build it with secure_media_reqwest::redirect_policy()");
        }
        if let Some(key) = key {
            response.extensions_mut().insert(key);
        }
        Ok(response)
    }
}

/// Errors carry the clean URL, never the one with a token or signature.
fn redact(error: reqwest_middleware::Error, original: &Url) -> reqwest_middleware::Error {
    let clean = MediaUrl::from_url(original).map(|url| url.clean_key()).and_then(|key| Url::parse(&key).ok());
    match clean {
        Some(clean) => error.with_url(clean),
        None => error.without_url(),
    }
}

/// The caller's request once more, for the one retry: method, URL, headers, version, timeout and
/// a body held in memory. `Request::try_clone` does the same but also starts an extension map
/// (three allocations) to copy an unset timeout; reqwest keeps nothing else there for a request
/// built by its `Client`. A streaming body cannot be replayed: `None`.
fn replay_of(request: &Request) -> Option<Request> {
    let body = match request.body() {
        None => None,
        Some(body) => Some(reqwest::Body::from(bytes::Bytes::copy_from_slice(body.as_bytes()?))),
    };
    let mut replay = Request::new(request.method().clone(), request.url().clone());
    *replay.headers_mut() = request.headers().clone();
    *replay.version_mut() = request.version();
    if let Some(timeout) = request.timeout() {
        *replay.timeout_mut() = Some(*timeout);
    }
    *replay.body_mut() = body;
    Some(replay)
}

fn access_error(error: AccessError) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(error)
}

fn apply(resolution: &Resolution, request: &mut Request) {
    resolution.apply_to_url(request.url_mut());
    for (name, value) in resolution.headers() {
        request.headers_mut().insert(name.clone(), value.clone());
    }
}

/// Scheme, host and port equal (what `Url::origin` compares, without allocating).
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// Headers that never follow a redirect to another origin.
fn strip_credentials(headers: &mut HeaderMap) {
    for name in [header::AUTHORIZATION, header::COOKIE, header::PROXY_AUTHORIZATION] {
        headers.remove(name);
    }
    headers.remove(HeaderName::from_static(FAT_PARAM));
}

/// The next hop of a redirect answer to a GET or HEAD, built from the caller's own request
/// (before any resolution touched it).
fn next_hop(method: &Method, headers: &HeaderMap, response: &Response) -> Option<Request> {
    if !response.status().is_redirection() || !(method == Method::GET || method == Method::HEAD) {
        return None;
    }
    let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
    // Relative to the URL that answered (after any same-origin hops reqwest took itself).
    let from = response.url();
    let mut target = from.join(location).ok()?;
    let cross_origin = !same_origin(&target, from);
    tracing::debug!(cross_origin, "following a redirect");
    if cross_origin {
        // A token the other server echoed into Location must not travel on either.
        Resolution::remove_param(FAT_PARAM).apply_to_url(&mut target);
    }
    let mut hop = Request::new(method.clone(), target);
    *hop.headers_mut() = headers.clone();
    if cross_origin {
        strip_credentials(hop.headers_mut());
    }
    Some(hop)
}

#[async_trait]
impl Middleware for SecureMediaMiddleware {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        if self.max_redirects == 0 {
            return self.exchange(request, extensions, &next).await;
        }
        // What a hop is built from: the caller's method and headers (free to clone when empty).
        let method = request.method().clone();
        let headers = request.headers().clone();
        let mut response = self.exchange(request, extensions, &next).await?;
        for _ in 0..self.max_redirects {
            let Some(hop) = next_hop(&method, &headers, &response) else {
                return Ok(response);
            };
            response = self.exchange(hop, extensions, &next).await?;
        }
        Ok(response)
    }
}

impl fmt::Debug for SecureMediaMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureMediaMiddleware")
            .field("hosts", self.strategy.secure_hosts())
            .field("max_redirects", &self.max_redirects)
            .finish_non_exhaustive()
    }
}
