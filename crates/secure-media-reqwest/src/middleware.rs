//! [`SecureMediaMiddleware`]: secure media through reqwest-middleware, driving the core's
//! [`Exchange`].

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Extensions};
use reqwest::{Request, Response, ResponseBuilderExt, Url};
use reqwest_middleware::{Middleware, Next};
// reqwest 0.13's own redirect layer is tower-http 0.6's: its `RequestUri` is what reqwest leaves.
use secure_media_core::{AccessError, Attempt, ConfigError, Exchange, MediaAccessStrategy, DEFAULT_MAX_HOPS};
use tower_http_06::follow_redirect::RequestUri;

/// Adds proof of access to requests for secure hosts, retries once after a refusal, follows
/// redirects hop by hop (a hop to a secure host is resolved afresh, any other hop carries no
/// credential), and hands back responses and errors that show the caller's clean URL only. The
/// decisions are the core's [`Exchange`]; this type only translates reqwest's types.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use secure_media_core::{HeaderBasedStrategy, SecureHosts, StaticToken};
///
/// let strategy = HeaderBasedStrategy::new(SecureHosts::cometchat("us")?, Arc::new(StaticToken::parse("my-fat")?));
/// let client = secure_media_reqwest::secure_client(Arc::new(strategy))?;
/// let image = client.get("https://files-us.cometchat.io/app/media/a.png").send().await?.bytes().await?;
/// # Ok(()) }
/// ```
///
/// # A hand-built client
/// [`secure_client`](crate::secure_client) builds the client this middleware needs. Building your
/// own, start from [`client_builder`](crate::client_builder), or at least set
/// `.redirect(reqwest::redirect::Policy::none())` and `.referer(false)`: reqwest follows redirects
/// inside `Client::execute`, below every middleware, keeping the query (a `?fat=` or a signature)
/// on a cross-origin hop and naming the tokenised URL in `Referer`. With redirects left to it,
/// this middleware follows each hop itself with per-hop rules.
///
/// Replay: the request is copied before the first send (method, URL, headers, version, timeout,
/// a body held in memory); a streaming body cannot be copied, and such a request gets a refusal
/// or a redirect back as is.
pub struct SecureMediaMiddleware {
    strategy: Arc<dyn MediaAccessStrategy>,
    max_hops: u32,
    media_key: bool,
}

impl SecureMediaMiddleware {
    /// Resolves secure media requests through `strategy`; follows up to 10 redirects.
    pub fn new(strategy: Arc<dyn MediaAccessStrategy>) -> Self {
        Self { strategy, max_hops: DEFAULT_MAX_HOPS, media_key: true }
    }

    /// Leaves the [`MediaKey`](secure_media_core::MediaKey) out of the chain's and the response's
    /// extensions: for stacks without a cache that keys by it (a little faster: BENCHMARKS.md).
    pub fn without_media_key(mut self) -> Self {
        self.media_key = false;
        self
    }

    /// Hands redirects back to the caller instead of following them.
    pub fn without_redirects(mut self) -> Self {
        self.max_hops = 0;
        self
    }

    /// The strategy.
    pub fn strategy(&self) -> &Arc<dyn MediaAccessStrategy> {
        &self.strategy
    }
}

/// The URL reqwest gives a response built without one (by a middleware below us).
const PLACEHOLDER_URL: &str = "http://no.url.provided.local/";

fn access_error(error: AccessError) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(error)
}

/// The caller's request once more, for a retry or a hop: method, URL, headers, version, timeout
/// and a body held in memory. `Request::try_clone` does the same but also starts an extension map
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

fn prepare(attempt: &Attempt, request: &mut Request) {
    attempt.apply_to_url(request.url_mut());
    attempt.apply_to_headers(request.headers_mut());
}

/// The response with `url` as its [`Response::url`] (reqwest keeps the URL it sent there, which
/// may carry a token or a signature).
fn with_url(response: Response, url: Url) -> Response {
    let response: http::Response<reqwest::Body> = response.into();
    let (mut parts, body) = response.into_parts();
    // `ResponseBuilderExt::url` is the one public door to the URL a rebuilt response reports.
    if let Ok(carrier) = http::Response::builder().url(url).body(()) {
        parts.extensions.extend(carrier.into_parts().0.extensions);
    }
    Response::from(http::Response::from_parts(parts, body))
}

#[async_trait]
impl Middleware for SecureMediaMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let Some(exchange) = Exchange::for_url(&self.strategy, request.url(), request.method()) else {
            // Not ours: the client's own redirect policy applies (see `secure_client`).
            return next.run(request, extensions).await;
        };
        // The caller's request before any proof goes in: every later attempt starts from it.
        let caller = replay_of(&request);
        let mut exchange = exchange.with_max_hops(self.max_hops).replayable(caller.is_some());
        let redact = |error: reqwest_middleware::Error, exchange: &Exchange| match exchange.clean_caller_url() {
            Some(clean) => error.with_url(clean),
            None => error.without_url(),
        };
        let key = if self.media_key { exchange.media_key() } else { None };
        if let Some(key) = &key {
            extensions.insert(key.clone());
        }
        let attempt = exchange.first().await.map_err(access_error)?;
        prepare(&attempt, &mut request);
        let mut response = match next.clone().run(request, extensions).await {
            Ok(response) => response,
            Err(error) => return Err(redact(error, &exchange)),
        };
        loop {
            // A response a middleware below us made without a URL carries reqwest's placeholder
            // host: it says nothing about redirects.
            let placeholder = response.url().as_str() == PLACEHOLDER_URL;
            if !placeholder && !exchange.answered_from_sent_origin(response.url()) {
                // The client followed a redirect below us, with whatever we had sent: refuse to
                // hand another origin's answer back as the caller's.
                tracing::warn!(
                    "the client follows redirects itself: build it with secure_media_reqwest::client_builder()"
                );
                return Err(access_error(AccessError::Config(ConfigError::InvalidConfig(
                    "the reqwest client followed a cross-origin redirect below SecureMediaMiddleware: build it with secure_media_reqwest::client_builder()",
                ))));
            }
            if !exchange.answered(response.status(), response.headers().get(header::LOCATION)) {
                break;
            }
            let Some(attempt) = exchange.next().await.map_err(access_error)? else { break };
            let Some(mut again) = caller.as_ref().and_then(replay_of) else { break };
            prepare(&attempt, &mut again);
            drop(response);
            response = match next.clone().run(again, extensions).await {
                Ok(response) => response,
                Err(error) => return Err(redact(error, &exchange)),
            };
        }
        if let Some(clean) = exchange.response_url(response.url()) {
            response = with_url(response, clean);
        }
        exchange.clean_response_headers(response.headers_mut());
        exchange.record_into(response.extensions_mut(), key);
        // reqwest keeps tower-http's record of the URI it sent (the one with our proof).
        exchange.scrub_recorded_uri(response.extensions_mut(), |recorded: &RequestUri| &recorded.0, RequestUri);
        Ok(response)
    }
}

impl fmt::Debug for SecureMediaMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureMediaMiddleware")
            .field("hosts", self.strategy.secure_hosts())
            .field("max_hops", &self.max_hops)
            .finish_non_exhaustive()
    }
}
