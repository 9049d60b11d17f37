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
}

impl SecureMediaLayer {
    /// A layer that resolves secure media requests through `strategy`.
    pub fn new(strategy: Arc<dyn MediaAccessStrategy>) -> Self {
        Self { strategy }
    }
}

impl Clone for SecureMediaLayer {
    fn clone(&self) -> Self {
        Self { strategy: self.strategy.clone() }
    }
}

impl<Inner> Layer<Inner> for SecureMediaLayer {
    type Service = SecureMediaService<Inner>;

    fn layer(&self, inner: Inner) -> Self::Service {
        SecureMediaService { inner, strategy: self.strategy.clone() }
    }
}

/// The service [`SecureMediaLayer`] builds.
///
/// - A request whose URI is not on a secure host passes through untouched: nothing is looked up.
/// - A secure request is resolved (`resolve_ready`, else `resolve`): the URI rewritten, headers
///   set, and the clean URL inserted as a [`MediaKey`] into the request's and the response's
///   extensions.
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
        Self { inner: self.inner.clone(), strategy: self.strategy.clone() }
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
    type Future = ResponseFuture<Inner::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        let secure = MediaUrl::from_uri(request.uri()).filter(|url| self.strategy.applies_to(url));
        let Some(url) = secure else {
            return ResponseFuture::passthrough(self.inner.call(request));
        };
        let key = MediaKey::of(&url);
        let ready_resolution = self.strategy.resolve_ready(&url);
        request.extensions_mut().insert(key.clone());
        let replay = (request.body().size_hint().exact() == Some(0)).then(|| Replay::of(&request));
        let original = request.uri().clone();
        // Use the service poll_ready readied; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let strategy = self.strategy.clone();
        ResponseFuture::secure(Box::pin(async move {
            let url = MediaUrl::from_uri(&original).ok_or(AccessError::InvalidUrl("not an http(s) URI"))?;
            let resolution = match ready_resolution {
                Some(ready) => ready?,
                None => strategy.resolve(&url).await?,
            };
            apply(&resolution, &mut request)?;
            let mut response = ready.call(request).await.map_err(Into::into)?;
            let status = response.status();
            if is_refusal(status) {
                if let Some(replay) = replay {
                    if strategy.rejected(&url, &resolution, status).await == RetryDecision::RetryOnce {
                        let fresh = match strategy.resolve_ready(&url) {
                            Some(ready) => ready?,
                            None => strategy.resolve(&url).await?,
                        };
                        let mut retry = replay.into_request::<ReqB>();
                        apply(&fresh, &mut retry)?;
                        let service = ready.ready().await.map_err(Into::into)?;
                        response = service.call(retry).await.map_err(Into::into)?;
                    }
                }
            }
            response.extensions_mut().insert(key);
            Ok(response)
        }))
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`SecureMediaService`]: the inner future itself for requests that
    /// pass through, a boxed one for secure requests (which may resolve and retry).
    pub struct ResponseFuture<F, ResB> {
        #[pin]
        kind: Kind<F, ResB>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F, ResB> {
        Passthrough { #[pin] inner: F },
        Secure { future: BoxFuture<Result<Response<ResB>, BoxError>> },
    }
}

impl<F, ResB> ResponseFuture<F, ResB> {
    fn passthrough(inner: F) -> Self {
        Self { kind: Kind::Passthrough { inner } }
    }

    fn secure(future: BoxFuture<Result<Response<ResB>, BoxError>>) -> Self {
        Self { kind: Kind::Secure { future } }
    }
}

impl<F, E, ResB> Future for ResponseFuture<F, ResB>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { inner } => inner.poll(cx).map_err(Into::into),
            KindProj::Secure { future } => future.as_mut().poll(cx),
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

impl<F, ResB> fmt::Debug for ResponseFuture<F, ResB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Passthrough { .. } => f.write_str("ResponseFuture::Passthrough"),
            Kind::Secure { .. } => f.write_str("ResponseFuture::Secure"),
        }
    }
}
