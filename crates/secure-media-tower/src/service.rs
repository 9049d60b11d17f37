//! [`SecureMediaLayer`] and [`SecureMediaService`]: resolve secure media requests through a
//! [`MediaAccessStrategy`], retry once after a refusal.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, Extensions, HeaderMap, Method, Request, Response, Uri, Version};
use secure_media_core::{AccessError, Attempt, Exchange, MediaAccessStrategy, MediaKey, DEFAULT_MAX_HOPS};
use tower::ServiceExt;
use tower_http::follow_redirect::RequestUri;
use tower_http_06::follow_redirect::RequestUri as RequestUri06;
use tower_layer::Layer;
use tower_service::Service;

/// The error type of [`SecureMediaService`]: an [`AccessError`] or the inner service's error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Adds proof of access to requests for secure media. Holds configuration only (the strategy).
///
/// ```
/// use std::sync::Arc;
/// use secure_media_core::{HeaderBasedStrategy, SecureHosts, StaticToken};
/// use secure_media_tower::SecureMediaLayer;
///
/// let strategy = HeaderBasedStrategy::new(SecureHosts::cometchat("us").unwrap(), Arc::new(StaticToken::parse("fat").unwrap()));
/// let layer = SecureMediaLayer::new(Arc::new(strategy));
/// let service = tower::ServiceBuilder::new()
///     .layer(layer)
///     .service(tower::service_fn(|req: http::Request<String>| async move {
///         // The inner service sees the header; hosts that are not secure never would.
///         let auth = req.headers().get(http::header::AUTHORIZATION).cloned();
///         Ok::<_, std::convert::Infallible>(http::Response::new(format!("{auth:?}")))
///     }));
/// # let _ = service;
/// ```
pub struct SecureMediaLayer {
    strategy: Arc<dyn MediaAccessStrategy>,
    media_key: bool,
    max_hops: u32,
}

impl SecureMediaLayer {
    /// A layer that resolves secure media requests through `strategy`.
    pub fn new(strategy: Arc<dyn MediaAccessStrategy>) -> Self {
        Self { strategy, media_key: true, max_hops: DEFAULT_MAX_HOPS }
    }

    /// Leaves the [`MediaKey`] out of the request's and the response's extensions: for stacks
    /// without a cache that keys by it (about half of the layer's own cost on an in-process
    /// call: BENCHMARKS.md).
    pub fn without_media_key(mut self) -> Self {
        self.media_key = false;
        self
    }

    /// Hands redirects of secure requests back to the caller instead of following them.
    pub fn without_redirects(mut self) -> Self {
        self.max_hops = 0;
        self
    }
}

impl Clone for SecureMediaLayer {
    fn clone(&self) -> Self {
        Self { strategy: self.strategy.clone(), media_key: self.media_key, max_hops: self.max_hops }
    }
}

impl<Inner> Layer<Inner> for SecureMediaLayer {
    type Service = SecureMediaService<Inner>;

    fn layer(&self, inner: Inner) -> Self::Service {
        SecureMediaService {
            inner,
            strategy: self.strategy.clone(),
            media_key: self.media_key,
            max_hops: self.max_hops,
        }
    }
}

/// The service [`SecureMediaLayer`] builds.
///
/// - A request whose URI is not on a secure host passes through untouched: nothing is looked up.
/// - A secure request is resolved (`resolve_ready`, else `resolve`): the URI rewritten, headers
///   set, and the clean URL inserted as a [`MediaKey`] into the request's and the response's
///   extensions (unless the layer was built [`without_media_key`](SecureMediaLayer::without_media_key)).
/// - The core's [`Exchange`] decides the rest: a 401 or 403 on what our resolution produced
///   calls [`MediaAccessStrategy::rejected`] and earns at most one retry; a redirect of a GET or
///   HEAD is followed hop by hop (up to 10, resolved afresh on a secure host, stripped of every
///   credential elsewhere). Only requests with an empty body (`size_hint` exactly 0, the shape of
///   media GETs) are sent again, rebuilt with `B::default()`; others get the answer back as is.
/// - The response carries the [`MediaKey`] and an [`ExchangeRecord`](secure_media_core::ExchangeRecord)
///   in its extensions, and no URI with a token (tower-http's `RequestUri` is scrubbed).
///
/// The strategy is held as `Arc<dyn MediaAccessStrategy>`: one type for every strategy, and no
/// higher-ranked trait solving when the service's futures are awaited inside other futures.
pub struct SecureMediaService<Inner> {
    inner: Inner,
    strategy: Arc<dyn MediaAccessStrategy>,
    media_key: bool,
    max_hops: u32,
}

impl<Inner> SecureMediaService<Inner> {
    /// Wraps `inner`.
    pub fn new(inner: Inner, strategy: Arc<dyn MediaAccessStrategy>) -> Self {
        SecureMediaLayer::new(strategy).layer(inner)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &Inner {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut Inner {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> Inner {
        self.inner
    }
}

impl<Inner: Clone> Clone for SecureMediaService<Inner> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            strategy: self.strategy.clone(),
            media_key: self.media_key,
            max_hops: self.max_hops,
        }
    }
}

/// The caller's request without its body (media requests have none): what a retry or a hop
/// starts from, before any proof goes in.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
}

impl Replay {
    fn of<B>(request: &Request<B>) -> Self {
        Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
            extensions: request.extensions().clone(),
        }
    }

    fn to_request<B: Default>(&self) -> Request<B> {
        let mut request = Request::new(B::default());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        *request.extensions_mut() = self.extensions.clone();
        request
    }
}

/// Applies an attempt to a request that starts from the caller's.
fn prepare<B>(attempt: &Attempt, request: &mut Request<B>) -> Result<(), AccessError> {
    if let Some(uri) = attempt.uri_for(request.uri())? {
        *request.uri_mut() = uri;
    }
    attempt.apply_to_headers(request.headers_mut());
    Ok(())
}

/// What follows the first send: the machine, the caller's request, a service to send again.
struct FollowUp<S> {
    exchange: Exchange,
    replay: Option<Replay>,
    service: S,
    key: Option<MediaKey>,
}

impl<S> FollowUp<S> {
    /// Retries and hops until the machine says done; `answered` already asked for a next step.
    async fn run<ReqB, ResB>(mut self, mut response: Response<ResB>) -> Result<Response<ResB>, BoxError>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        S::Error: Into<BoxError>,
        ReqB: Default,
    {
        loop {
            let Some(attempt) = self.exchange.next().await? else { break };
            let Some(replay) = &self.replay else { break };
            let mut request = replay.to_request::<ReqB>();
            prepare(&attempt, &mut request)?;
            drop(response);
            let ready = self.service.ready().await.map_err(Into::into)?;
            response = ready.call(request).await.map_err(Into::into)?;
            if !self.exchange.answered(response.status(), response.headers().get(header::LOCATION)) {
                break;
            }
        }
        Ok(self.finish(response))
    }

    /// The response as the caller gets it: our key and record in, no URI with a token.
    fn finish<ResB>(self, mut response: Response<ResB>) -> Response<ResB> {
        finish(&mut response, self.key, &self.exchange);
        response
    }
}

fn finish<ResB>(response: &mut Response<ResB>, key: Option<MediaKey>, exchange: &Exchange) {
    exchange.clean_response_headers(response.headers_mut());
    let extensions = response.extensions_mut();
    exchange.record_into(extensions, key);
    // tower-http's FollowRedirect below us (0.7, or the 0.6 a stack may still run) records the URI
    // it last sent, which may carry a token.
    exchange.scrub_recorded_uri(extensions, |recorded: &RequestUri| &recorded.0, RequestUri);
    exchange.scrub_recorded_uri(extensions, |recorded: &RequestUri06| &recorded.0, RequestUri06);
}

impl<Inner, ReqB, ResB> Service<Request<ReqB>> for SecureMediaService<Inner>
where
    Inner: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    Inner::Future: Send + 'static,
    Inner::Error: Into<BoxError>,
    ReqB: http_body::Body + Default + Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<Inner, ReqB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        let Some(exchange) = Exchange::for_uri(&self.strategy, request.uri(), request.method()) else {
            return ResponseFuture::new(Kind::Passthrough { inner: self.inner.call(request) });
        };
        // Only requests with an empty body (`size_hint` exactly 0, the shape of media GETs) are
        // sent again, rebuilt with `B::default()`.
        let replayable = request.body().size_hint().exact() == Some(0);
        let mut exchange = exchange.with_max_hops(self.max_hops).replayable(replayable);
        let key = if self.media_key { exchange.media_key() } else { None };
        if let Some(key) = &key {
            request.extensions_mut().insert(key.clone());
        }
        // Cloned before any proof goes in: a retry or a hop starts from the caller's request.
        let replay = replayable.then(|| Replay::of(&request));
        match exchange.first_ready() {
            // The hot path (a warm token, a cache hit): no box; the inner future is polled in
            // place and only a refusal or a redirect switches to the boxed follow-up.
            Some(Ok(attempt)) => {
                if let Err(error) = prepare(&attempt, &mut request) {
                    return ResponseFuture::new(Kind::Failed { error: Some(error.into()) });
                }
                let follow_up = FollowUp { exchange, replay, service: self.inner.clone(), key };
                let inner = self.inner.call(request);
                ResponseFuture::new(Kind::First { inner, follow_up: Some(follow_up) })
            }
            Some(Err(error)) => ResponseFuture::new(Kind::Failed { error: Some(error.into()) }),
            None => {
                // Use the service poll_ready readied; leave a fresh clone in its place.
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                let service = self.inner.clone();
                ResponseFuture::new(Kind::Boxed {
                    future: Box::pin(async move {
                        let mut follow_up = FollowUp { exchange, replay, service, key };
                        let attempt = follow_up.exchange.first().await?;
                        prepare(&attempt, &mut request)?;
                        let response = ready.call(request).await.map_err(Into::into)?;
                        if follow_up.exchange.answered(response.status(), response.headers().get(header::LOCATION)) {
                            follow_up.run(response).await
                        } else {
                            Ok(follow_up.finish(response))
                        }
                    }),
                })
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The future [`SecureMediaService`] returns: the inner future polled in place for requests
    /// that pass through or resolve without waiting; boxed only to wait for a resolution, or to
    /// retry after a refusal or follow a redirect.
    pub struct ResponseFuture<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        kind: Kind<S, ReqB>,
    }
}

type ResponseOf<S, ReqB> = <S as Service<Request<ReqB>>>::Response;

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        Passthrough { #[pin] inner: S::Future },
        First { #[pin] inner: S::Future, follow_up: Option<FollowUp<S>> },
        Boxed { future: BoxFuture<Result<ResponseOf<S, ReqB>, BoxError>> },
        Failed { error: Option<BoxError> },
    }
}

impl<S: Service<Request<ReqB>>, ReqB> ResponseFuture<S, ReqB> {
    fn new(kind: Kind<S, ReqB>) -> Self {
        Self { kind }
    }
}

impl<S, ReqB, ResB> Future for ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ReqB: Default + Send + 'static,
    ResB: Send + 'static,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        match kind.as_mut().project() {
            KindProj::Passthrough { inner } => inner.poll(cx).map_err(Into::into),
            KindProj::Failed { error } => {
                Poll::Ready(Err(error.take().unwrap_or_else(|| "polled after completion".into())))
            }
            KindProj::Boxed { future } => future.as_mut().poll(cx),
            KindProj::First { inner, follow_up } => {
                let response = match inner.poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
                    Poll::Ready(Ok(response)) => response,
                };
                let Some(mut follow_up) = follow_up.take() else {
                    return Poll::Ready(Err("polled after completion".into()));
                };
                if !follow_up.exchange.answered(response.status(), response.headers().get(header::LOCATION)) {
                    return Poll::Ready(Ok(follow_up.finish(response)));
                }
                let mut future: BoxFuture<Self::Output> = Box::pin(follow_up.run(response));
                let poll = future.as_mut().poll(cx);
                if poll.is_pending() {
                    kind.set(Kind::Boxed { future });
                }
                poll
            }
        }
    }
}

impl fmt::Debug for SecureMediaLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureMediaLayer").field("hosts", self.strategy.secure_hosts()).finish_non_exhaustive()
    }
}

impl<Inner: fmt::Debug> fmt::Debug for SecureMediaService<Inner> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureMediaService")
            .field("inner", &self.inner)
            .field("hosts", self.strategy.secure_hosts())
            .finish_non_exhaustive()
    }
}

impl<S: Service<Request<ReqB>>, ReqB> fmt::Debug for ResponseFuture<S, ReqB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Passthrough { .. } => "ResponseFuture::Passthrough",
            Kind::First { .. } => "ResponseFuture::Secure",
            Kind::Boxed { .. } => "ResponseFuture::Waiting",
            Kind::Failed { .. } => "ResponseFuture::Failed",
        })
    }
}
