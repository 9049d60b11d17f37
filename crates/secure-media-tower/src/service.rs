//! [`SecureMediaLayer`] and [`SecureMediaService`]: resolve secure media requests through a
//! [`MediaAccessStrategy`], retry once after a refusal.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Extensions, HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use secure_media_core::{AccessError, MediaAccessStrategy, MediaKey, MediaUrl, Resolution, RetryDecision};
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

/// The error type of [`SecureMediaService`]: an [`AccessError`] or the inner service's error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Adds proof of access to requests for secure media. Holds configuration only (the strategy).
///
/// ```
/// use std::sync::Arc;
/// use secure_media_core::{HeaderStrategy, SecureHosts, StaticToken};
/// use secure_media_tower::SecureMediaLayer;
///
/// let strategy = HeaderStrategy::new(SecureHosts::cometchat("us").unwrap(), Arc::new(StaticToken::parse("fat").unwrap()));
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
}

impl SecureMediaLayer {
    /// A layer that resolves secure media requests through `strategy`.
    pub fn new(strategy: Arc<dyn MediaAccessStrategy>) -> Self {
        Self { strategy, media_key: true }
    }

    /// Leaves the [`MediaKey`] out of the request's and the response's extensions: for stacks
    /// without a cache that keys by it. The key costs three allocations per extension map it
    /// starts (`http::Extensions` boxes its map and each value), about half of the layer's cost
    /// on an in-process call (see BENCHMARKS.md).
    pub fn without_media_key(mut self) -> Self {
        self.media_key = false;
        self
    }
}

impl Clone for SecureMediaLayer {
    fn clone(&self) -> Self {
        Self { strategy: self.strategy.clone(), media_key: self.media_key }
    }
}

impl<Inner> Layer<Inner> for SecureMediaLayer {
    type Service = SecureMediaService<Inner>;

    fn layer(&self, inner: Inner) -> Self::Service {
        SecureMediaService { inner, strategy: self.strategy.clone(), media_key: self.media_key }
    }
}

/// The service [`SecureMediaLayer`] builds.
///
/// - A request whose URI is not on a secure host passes through untouched: nothing is looked up.
/// - A secure request is resolved (`resolve_ready`, else `resolve`): the URI rewritten, headers
///   set, and the clean URL inserted as a [`MediaKey`] into the request's and the response's
///   extensions (unless the layer was built [`without_media_key`](SecureMediaLayer::without_media_key)).
/// - A 401 or 403 calls [`MediaAccessStrategy::rejected`]; on
///   [`RetryOnce`](RetryDecision::RetryOnce) the request is sent once more with a fresh
///   resolution. Only requests with an empty body (`size_hint` exactly 0, the shape of media
///   GETs) are replayed, rebuilt with `B::default()`; others get the refusal back as is. A second
///   refusal is returned as is: never a loop.
///
/// The strategy is held as `Arc<dyn MediaAccessStrategy>`: one type for every strategy, and no
/// higher-ranked trait solving when the service's futures are awaited inside other futures.
pub struct SecureMediaService<Inner> {
    inner: Inner,
    strategy: Arc<dyn MediaAccessStrategy>,
    media_key: bool,
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
        Self { inner: self.inner.clone(), strategy: self.strategy.clone(), media_key: self.media_key }
    }
}

/// What a retry needs of the original request (before any resolution touched it).
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

    fn into_request<B: Default>(self) -> Request<B> {
        let mut request = Request::new(B::default());
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        *request.extensions_mut() = self.extensions;
        request
    }
}

fn apply<B>(resolution: &Resolution, request: &mut Request<B>) -> Result<(), AccessError> {
    if let Some(uri) = resolution.apply_to_uri(request.uri())? {
        *request.uri_mut() = uri;
    }
    for (name, value) in resolution.headers() {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    Ok(())
}

fn is_refusal(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
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
        let secure = MediaUrl::from_uri(request.uri()).filter(|url| self.strategy.applies_to(url));
        let Some(url) = secure else {
            return ResponseFuture::new(Kind::Passthrough { inner: self.inner.call(request) });
        };
        let key = self.media_key.then(|| MediaKey::of(&url));
        let ready = self.strategy.resolve_ready(&url);
        // Cloned before our key and proof go in: a replay starts from the caller's request.
        let replay = (request.body().size_hint().exact() == Some(0)).then(|| Replay::of(&request));
        if let Some(key) = &key {
            request.extensions_mut().insert(key.clone());
        }
        match ready {
            // The hot path (a warm token, a cache hit): no task, no box; the inner future is
            // polled in place and a refusal switches to the boxed retry below.
            Some(Ok(resolution)) => {
                if let Err(error) = apply(&resolution, &mut request) {
                    return ResponseFuture::new(Kind::Failed { error: Some(error.into()) });
                }
                let retry = replay.map(|replay| Retry {
                    replay,
                    service: self.inner.clone(),
                    strategy: self.strategy.clone(),
                    used: resolution,
                });
                let inner = self.inner.call(request);
                ResponseFuture::new(Kind::First { inner, retry, key })
            }
            Some(Err(error)) => ResponseFuture::new(Kind::Failed { error: Some(error.into()) }),
            None => {
                // Use the service poll_ready readied; leave a fresh clone in its place.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                let strategy = self.strategy.clone();
                let uri = request.uri().clone();
                ResponseFuture::new(Kind::Boxed {
                    future: Box::pin(async move {
                        let url = MediaUrl::from_uri(&uri).ok_or(AccessError::InvalidUrl("not an http(s) URI"))?;
                        let resolution = strategy.resolve(&url).await?;
                        apply(&resolution, &mut request)?;
                        let mut service = ready;
                        let response = service.call(request).await.map_err(Into::into)?;
                        let retry = replay.map(|replay| Retry { replay, service, strategy, used: resolution });
                        finish(response, retry, key).await
                    }),
                })
            }
        }
    }
}

/// What a second attempt needs: the caller's request, a service to send it through, and the
/// resolution the server refused.
struct Retry<S> {
    replay: Replay,
    service: S,
    strategy: Arc<dyn MediaAccessStrategy>,
    used: Resolution,
}

impl<S> Retry<S> {
    /// After a refusal: ask the strategy, and when it repaired something, send once more.
    async fn after<ReqB, ResB>(
        self,
        status: StatusCode,
        key: Option<&MediaKey>,
    ) -> Result<Option<Response<ResB>>, BoxError>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        S::Error: Into<BoxError>,
        ReqB: Default,
    {
        let Self { replay, mut service, strategy, used } = self;
        let url = MediaUrl::from_uri(&replay.uri).ok_or(AccessError::InvalidUrl("not an http(s) URI"))?;
        if strategy.rejected(&url, &used, status).await != RetryDecision::RetryOnce {
            return Ok(None);
        }
        let fresh = match strategy.resolve_ready(&url) {
            Some(ready) => ready?,
            None => strategy.resolve(&url).await?,
        };
        let mut request = replay.into_request::<ReqB>();
        if let Some(key) = key {
            request.extensions_mut().insert(key.clone());
        }
        apply(&fresh, &mut request)?;
        let ready = service.ready().await.map_err(Into::into)?;
        Ok(Some(ready.call(request).await.map_err(Into::into)?))
    }
}

/// The end of a secure exchange: one retry after a refusal, and the key on the response.
async fn finish<S, ReqB, ResB>(
    mut response: Response<ResB>,
    retry: Option<Retry<S>>,
    key: Option<MediaKey>,
) -> Result<Response<ResB>, BoxError>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ReqB: Default,
{
    if is_refusal(response.status()) {
        if let Some(retry) = retry {
            if let Some(second) = retry.after(response.status(), key.as_ref()).await? {
                response = second;
            }
        }
    }
    if let Some(key) = key {
        response.extensions_mut().insert(key);
    }
    Ok(response)
}

pin_project_lite::pin_project! {
    /// The future [`SecureMediaService`] returns: the inner future polled in place for requests
    /// that pass through or resolve without waiting; boxed only to wait for a resolution or to
    /// retry after a refusal.
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
        First { #[pin] inner: S::Future, retry: Option<Retry<S>>, key: Option<MediaKey> },
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
            KindProj::First { inner, retry, key } => {
                let mut response = match inner.poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
                    Poll::Ready(Ok(response)) => response,
                };
                let key = key.take();
                match retry.take().filter(|_| is_refusal(response.status())) {
                    Some(retry) => {
                        let mut future: BoxFuture<Self::Output> = Box::pin(finish(response, Some(retry), key));
                        let poll = future.as_mut().poll(cx);
                        if poll.is_pending() {
                            kind.set(Kind::Boxed { future });
                        }
                        poll
                    }
                    None => {
                        if let Some(key) = key {
                            response.extensions_mut().insert(key);
                        }
                        Poll::Ready(Ok(response))
                    }
                }
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
