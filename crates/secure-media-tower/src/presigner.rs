//! [`TowerPresigner`]: the presign endpoint over any tower HTTP service.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, Uri};
use http_body_util::Full;
use secure_media_core::presigned::endpoint::{self, PresignRequest, RetryPolicy, Unreachable};
use secure_media_core::presigned::{Presigned, Presigner};
use secure_media_core::{AccessError, ConfigError, FileAccessToken, MediaUrl, NetworkError, NetworkFailure};
use tower::ServiceExt;
use tower_service::Service;

use crate::BoxError;

/// Presigns through any tower HTTP service (a hyper-util client, say) that takes
/// `Request<Full<Bytes>>`, speaking the presign endpoint's format
/// ([`endpoint`](secure_media_core::presigned::endpoint)) under the core's [`RetryPolicy`]: a
/// timeout per call, bounded jittered backoff on 5xx, 429, connection errors and cut-off answers,
/// and answers read in chunks up to [`MAX_ANSWER_BYTES`](endpoint::MAX_ANSWER_BYTES). It behaves
/// on faults exactly as the reqwest presigner does; keep retry layers for presign calls out of
/// `service`, or attempts multiply.
///
/// The token goes to the endpoint only over https; [`new_allowing_http`](Self::new_allowing_http)
/// opts into plain http for a loopback test server. Needs a tokio runtime (its timer).
///
/// ```
/// use secure_media_tower::TowerPresigner;
///
/// # fn main() -> Result<(), secure_media_core::ConfigError> {
/// let endpoint: http::Uri = "http://127.0.0.1:8787/v1/media/presign".parse().unwrap();
/// assert!(TowerPresigner::new((), endpoint.clone()).is_err()); // plain http: refused
/// let presigner = TowerPresigner::new_allowing_http((), endpoint)?.with_max_batch(50);
/// # let _ = presigner;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TowerPresigner<S> {
    service: S,
    endpoint: Uri,
    retry: RetryPolicy,
    max_batch: usize,
}

impl<S> TowerPresigner<S> {
    /// Presigns at the https `endpoint` through `service`: the default [`RetryPolicy`] (10 s per
    /// call, 2 retries from 100 ms), 100 URLs a call.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InsecureEndpoint`] for a plain-http or non-http(s) endpoint, or one without
    /// a host.
    pub fn new(service: S, endpoint: Uri) -> Result<Self, ConfigError> {
        endpoint::check_endpoint(&endpoint.to_string(), false)?;
        Ok(Self::unchecked(service, endpoint))
    }

    /// The same, also accepting a plain `http://` endpoint (e.g.
    /// `http://127.0.0.1:8787/v1/media/presign`): for loopback test servers only, since the token
    /// could be read on the way.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InsecureEndpoint`] for a non-http(s) endpoint, or one without a host.
    pub fn new_allowing_http(service: S, endpoint: Uri) -> Result<Self, ConfigError> {
        endpoint::check_endpoint(&endpoint.to_string(), true)?;
        Ok(Self::unchecked(service, endpoint))
    }

    fn unchecked(service: S, endpoint: Uri) -> Self {
        Self { service, endpoint, retry: RetryPolicy::default(), max_batch: 100 }
    }

    /// The timeout per call and the retries (the core's [`RetryPolicy`], shared by every
    /// presigner): `RetryPolicy::default().with_timeout(..).with_retries(..)`.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The most URLs per call (default 100).
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }
}

#[async_trait]
impl<S, B> Presigner for TowerPresigner<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn presign(&self, url: &str, token: &FileAccessToken) -> Result<Presigned, AccessError> {
        endpoint::presign_one(self, url, token).await
    }

    async fn presign_batch(&self, urls: &[Arc<str>], token: &FileAccessToken) -> Vec<Result<Presigned, AccessError>> {
        let send = |call: &PresignRequest| {
            let mut request = Request::new(Full::new(call.body.clone()));
            *request.method_mut() = Method::POST;
            *request.uri_mut() = self.endpoint.clone();
            request.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            request.headers_mut().insert(header::AUTHORIZATION, call.authorization.clone());
            let service = self.service.clone();
            // Read as a typed cause chain; queries are cut from its words (`NetworkError`).
            async move {
                service.oneshot(request).await.map_err(|error| {
                    let error: BoxError = error.into();
                    Unreachable(NetworkError::from_chain(error.as_ref(), NetworkFailure::Other))
                })
            }
        };
        self.retry.presign(urls, token, send, tokio::time::sleep).await
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }
}

impl<S> fmt::Debug for TowerPresigner<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The endpoint passed `check_endpoint`: an http(s) URI, which a `MediaUrl` views.
        let clean = MediaUrl::from_uri(&self.endpoint).map(|view| view.redacted());
        f.debug_struct("TowerPresigner")
            .field("endpoint", &clean)
            .field("retry", &self.retry)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}
