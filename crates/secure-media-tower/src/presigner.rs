//! [`TowerPresigner`]: the presign endpoint over any tower HTTP service.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use secure_media_core::presigned::{endpoint, Presigned, Presigner};
use secure_media_core::{AccessError, FileAccessToken};
use tower::ServiceExt;
use tower_service::Service;

use crate::BoxError;

/// Presigns through any tower HTTP service (a hyper-util client, say) that takes
/// `Request<Full<Bytes>>`, speaking the presign endpoint's format
/// ([`endpoint`](secure_media_core::presigned::endpoint)). Add timeouts and retries with tower
/// layers around the service.
#[derive(Clone)]
pub struct TowerPresigner<S> {
    service: S,
    endpoint: Uri,
    max_batch: usize,
}

impl<S> TowerPresigner<S> {
    /// Presigns at `endpoint` (e.g. `http://127.0.0.1:8787/v1/media/presign`) through `service`.
    pub fn new(service: S, endpoint: Uri) -> Self {
        Self { service, endpoint, max_batch: 100 }
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
        let urls = [Arc::from(url)];
        let mut answers = self.presign_batch(&urls, token).await;
        answers.pop().unwrap_or_else(|| Err(endpoint::batch_error(&urls, "no answer")))
    }

    async fn presign_batch(&self, urls: &[Arc<str>], token: &FileAccessToken) -> Vec<Result<Presigned, AccessError>> {
        let network = |what: &str| endpoint::batch_error(urls, format!("the presign call failed: {what}"));
        let call = async {
            let mut request = Request::new(Full::new(Bytes::from(endpoint::request_body(urls))));
            *request.method_mut() = Method::POST;
            *request.uri_mut() = self.endpoint.clone();
            request.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            request.headers_mut().insert(header::AUTHORIZATION, token.header_value("Bearer")?);
            let mut service = self.service.clone();
            let ready = service.ready().await.map_err(|_| network("service not ready"))?;
            let response = ready.call(request).await.map_err(|_| network("no response"))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), endpoint::MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|_| network("the answer could not be read"))?
                .to_bytes();
            endpoint::parse_answer(status, &body, urls)
        };
        match call.await {
            Ok(answers) => answers,
            Err(error) => urls.iter().map(|_| Err(error.clone())).collect(),
        }
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }
}

impl<S> fmt::Debug for TowerPresigner<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerPresigner").field("endpoint", &self.endpoint).field("max_batch", &self.max_batch).finish()
    }
}
