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
/// Replay: the request is cloned (`try_clone`) before the first send; a streaming body cannot be
/// cloned, and such a request gets the refusal back as is.
pub struct SecureMediaMiddleware {
    strategy: Arc<dyn MediaAccessStrategy>,
    max_redirects: usize,
}

impl SecureMediaMiddleware {
    /// Resolves secure media requests through `strategy`; follows up to 10 cross-origin redirects.
    pub fn new(strategy: Arc<dyn MediaAccessStrategy>) -> Self {
        Self { strategy, max_redirects: 10 }
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
        let original = request.url().clone();
        let Some(url) = MediaUrl::from_url(&original).filter(|url| self.strategy.applies_to(url)) else {
            return next.clone().run(request, extensions).await;
        };
        let key = MediaKey::of(&url);
        extensions.insert(key.clone());
        // Errors carry the clean URL, never the one with a token or signature (parsed only then).
        let redact = |error: reqwest_middleware::Error| match Url::parse(key.as_str()) {
            Ok(clean) => error.with_url(clean),
            Err(_) => error.without_url(),
        };
        let replay = request.try_clone();
        let resolution = self.resolve(&url).await.map_err(access_error)?;
        apply(&resolution, &mut request);
        let mut response = next.clone().run(request, extensions).await.map_err(redact)?;
        let status = response.status();
        // A refusal counts only if a secure host said it (not a host reqwest redirected to).
        let from_secure_host = MediaUrl::from_url(response.url()).is_some_and(|u| self.strategy.applies_to(&u));
        if (status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN) && from_secure_host {
            if let Some(mut retry) = replay {
                if self.strategy.rejected(&url, &resolution, status).await == RetryDecision::RetryOnce {
                    let fresh = self.resolve(&url).await.map_err(access_error)?;
                    apply(&fresh, &mut retry);
                    response = next.clone().run(retry, extensions).await.map_err(redact)?;
                }
            }
        }
        if !same_origin(response.url(), &original) && self.max_redirects > 0 {
            tracing::warn!("the client followed a cross-origin redirect itself: build it with secure_media_reqwest::redirect_policy()");
        }
        response.extensions_mut().insert(key);
        Ok(response)
    }
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
fn next_hop(method: &Method, from: &Url, headers: &HeaderMap, response: &Response) -> Option<Request> {
    if !response.status().is_redirection() || !(method == Method::GET || method == Method::HEAD) {
        return None;
    }
    let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
    let mut target = from.join(location).ok()?;
    let mut hop = Request::new(method.clone(), target.clone());
    *hop.headers_mut() = headers.clone();
    if !same_origin(&target, from) {
        strip_credentials(hop.headers_mut());
        // A token the other server echoed into Location must not travel on either.
        Resolution::remove_param(FAT_PARAM).apply_to_url(&mut target);
        *hop.url_mut() = target;
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
        let method = request.method().clone();
        let headers = request.headers().clone();
        let mut from = request.url().clone();
        let mut response = self.exchange(request, extensions, &next).await?;
        for _ in 0..self.max_redirects {
            let Some(hop) = next_hop(&method, &from, &headers, &response) else {
                return Ok(response);
            };
            tracing::debug!(cross_origin = !same_origin(hop.url(), &from), "following a redirect");
            from = hop.url().clone();
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
