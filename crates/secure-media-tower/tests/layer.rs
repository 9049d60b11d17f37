//! The layer's contract with the services around it.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use secure_media_core::*;
use secure_media_server::{ReferenceServer, Route, ServerConfig};
use secure_media_tower::{SecureMediaLayer, SecureMediaService};
use tower::{Service, ServiceBuilder, ServiceExt};

/// A strategy that counts what it is asked and always wants a retry.
#[derive(Default)]
struct Counting {
    hosts: SecureHosts,
    resolved: AtomicUsize,
    rejected: AtomicUsize,
}

#[async_trait]
impl MediaAccessStrategy for Counting {
    fn secure_hosts(&self) -> &SecureHosts {
        &self.hosts
    }
    fn resolve_ready(&self, _: &MediaUrl<'_>) -> Option<Result<Resolution, AccessError>> {
        self.resolved.fetch_add(1, Ordering::SeqCst);
        Some(Ok(Resolution::keep().with_header(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"))))
    }
    async fn resolve(&self, url: &MediaUrl<'_>) -> Result<Resolution, AccessError> {
        self.resolve_ready(url).unwrap_or(Ok(Resolution::keep()))
    }
    async fn rejected(&self, _: &MediaUrl<'_>, _: &Resolution, _: StatusCode) -> RetryDecision {
        self.rejected.fetch_add(1, Ordering::SeqCst);
        RetryDecision::RetryOnce
    }
}

fn counting() -> Arc<Counting> {
    Arc::new(Counting { hosts: SecureHosts::cometchat("us").unwrap(), ..Counting::default() })
}

/// What the inner service saw: URI, Authorization, and whether a MediaKey was attached.
type Seen = Arc<std::sync::Mutex<Vec<(String, Option<HeaderValue>, bool)>>>;

/// Answers 401 to everything; records what it saw; refuses calls it was not readied for.
#[derive(Clone, Default)]
struct Recorder {
    ready: bool,
    calls: Arc<AtomicUsize>,
    seen: Seen,
}

impl<B> Service<Request<B>> for Recorder {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        assert!(self.ready, "called a service that poll_ready did not ready");
        self.ready = false;
        self.calls.fetch_add(1, Ordering::SeqCst);
        let key = request.extensions().get::<MediaKey>().is_some();
        self.seen.lock().unwrap().push((
            request.uri().to_string(),
            request.headers().get(header::AUTHORIZATION).cloned(),
            key,
        ));
        let mut response = Response::new(String::new());
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        std::future::ready(Ok(response))
    }
}

#[tokio::test]
async fn other_hosts_pass_through_untouched_and_unlooked_at() {
    let strategy = counting();
    let inner = Recorder::default();
    let service = SecureMediaService::new(inner.clone(), strategy.clone());
    let request = Request::get("https://files-us.cometchat.io.evil.com/a.png?x=1").body(String::new()).unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1, "no retry for a host that is not secure");
    assert_eq!(strategy.resolved.load(Ordering::SeqCst), 0);
    let seen = inner.seen.lock().unwrap()[0].clone();
    assert_eq!(seen, ("https://files-us.cometchat.io.evil.com/a.png?x=1".into(), None, false));
    assert!(response.extensions().get::<MediaKey>().is_none());
}

#[tokio::test]
async fn a_refusal_is_retried_once_on_the_readied_service_then_returned() {
    let strategy = counting();
    let inner = Recorder::default();
    let mut service = ServiceBuilder::new().layer(SecureMediaLayer::new(strategy.clone())).service(inner.clone());
    let request = Request::get("https://files-us.cometchat.io/a.png").body(String::new()).unwrap();
    let response = ServiceExt::<Request<String>>::ready(&mut service).await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
    assert_eq!(strategy.rejected.load(Ordering::SeqCst), 1);
    assert_eq!(response.extensions().get::<MediaKey>().unwrap().as_str(), "https://files-us.cometchat.io/a.png");
    for (uri, auth, key) in inner.seen.lock().unwrap().iter() {
        assert_eq!(
            (uri.as_str(), auth.as_ref().map(|a| a.to_str().unwrap()), *key),
            ("https://files-us.cometchat.io/a.png", Some("Bearer t"), true)
        );
    }
    let _ = service.get_ref();
}

#[tokio::test]
async fn a_request_with_a_body_is_not_replayed() {
    let strategy = counting();
    let inner = Recorder::default();
    let service = SecureMediaService::new(inner.clone(), strategy.clone());
    let request = Request::post("https://files-us.cometchat.io/upload").body("payload".to_string()).unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1, "a body it cannot replay gets the refusal back");
    assert_eq!(strategy.rejected.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn composes_with_trace_and_timeout_and_keeps_tokens_out_of_errors() {
    secure_media_server::samples(); // generated once, before any timeout runs
    let server = ReferenceServer::start(secure_media_testkit::https(ServerConfig::default())).await.unwrap();
    let fat = server.login("tower-user").unwrap().fat;
    let strategy = Arc::new(EmbeddedStrategy::new(
        SecureHosts::new().with_host(&server.host()).unwrap(),
        Arc::new(StaticToken::parse(fat.clone()).unwrap()),
    ));
    let hyper = secure_media_testkit::hyper();
    let service = ServiceBuilder::new()
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(SecureMediaLayer::new(strategy))
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(300)))
        .service(hyper);
    let url = server.media_url("sample-64x64.gif");
    let ok = service.clone().oneshot(Request::get(&url).body(Full::default()).unwrap()).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.into_body().collect().await.unwrap().to_bytes().len(), {
        secure_media_server::samples().iter().find(|s| s.name == "sample-64x64.gif").unwrap().bytes.len()
    });

    server.faults().delay(Route::Media, Duration::from_millis(1000));
    let slow = service.clone().oneshot(Request::get(&url).body(Full::default()).unwrap()).await;
    let error = slow.err().expect("the timeout covers each attempt");
    assert!(error.to_string().contains("timed out") && !error.to_string().contains(&fat), "{error}");
    server.faults().delay(Route::Media, Duration::ZERO);

    server.faults().drop_next(Route::Media, 1);
    let error = service.oneshot(Request::get(&url).body(Full::default()).unwrap()).await;
    let shown = match error {
        Err(error) => format!("{error} {error:?}"),
        Ok(response) => format!("{:?}", response.into_body().collect().await.map(|_| ()).unwrap_err()),
    };
    assert!(!shown.contains(&fat), "{shown}");
}

/// Retries a request once after a 5xx: the tower retry policy a user would put outside us.
#[derive(Clone)]
struct RetryServerErrorsOnce(bool);

impl<E> tower::retry::Policy<Request<Full<Bytes>>, Response<hyper::body::Incoming>, E> for RetryServerErrorsOnce {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<hyper::body::Incoming>, E>,
    ) -> Option<Self::Future> {
        let server_error = result.as_ref().is_ok_and(|r| r.status().is_server_error());
        (server_error && !self.0).then(|| {
            self.0 = true;
            std::future::ready(())
        })
    }

    fn clone_request(&mut self, request: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut copy = Request::new(request.body().clone());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.headers_mut() = request.headers().clone();
        Some(copy)
    }
}

#[tokio::test]
async fn composes_with_a_retry_layer_outside() {
    secure_media_server::samples();
    let server = ReferenceServer::start(secure_media_testkit::https(ServerConfig::default())).await.unwrap();
    let fat = server.login("retry-user").unwrap().fat;
    let strategy = Arc::new(EmbeddedStrategy::new(
        SecureHosts::new().with_host(&server.host()).unwrap(),
        Arc::new(StaticToken::parse(fat).unwrap()),
    ));
    let hyper = secure_media_testkit::hyper();
    let service = ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(RetryServerErrorsOnce(false)))
        .layer(SecureMediaLayer::new(strategy))
        .service(hyper);
    server.faults().fail_next(Route::Media, 1, StatusCode::SERVICE_UNAVAILABLE);
    let response = service
        .oneshot(Request::get(server.media_url("sample-64x64.gif")).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the retry went through our layer and was resolved afresh");
    let stats = server.stats();
    assert_eq!((stats.faults_injected, stats.served.fat_query), (1, 1));
}

#[tokio::test]
async fn without_media_key_leaves_both_extensions_alone_and_still_retries() {
    let strategy = counting();
    let inner = Recorder::default();
    let layer = SecureMediaLayer::new(strategy.clone()).without_media_key();
    let service = ServiceBuilder::new().layer(layer).service(inner.clone());
    let request = Request::get("https://files-us.cometchat.io/a.png").body(String::new()).unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
    assert!(response.extensions().get::<MediaKey>().is_none());
    assert!(inner.seen.lock().unwrap().iter().all(|(_, auth, key)| auth.is_some() && !key));
}
