//! [`ReqwestPresigner`]: the presign endpoint over reqwest.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::{header, Client, Url};
use secure_media_core::presigned::endpoint::{self, PresignRequest, RetryPolicy, Unreachable};
use secure_media_core::presigned::{Presigned, Presigner};
use secure_media_core::{AccessError, ConfigError, FileAccessToken};

use crate::network_error;

/// Presigns through the presign endpoint ([`endpoint`](secure_media_core::presigned::endpoint)
/// format): batch calls under the core's [`RetryPolicy`] (a timeout per call, bounded jittered
/// backoff on 5xx, 429, connection errors and cut-off answers), answers read in chunks up to
/// [`MAX_ANSWER_BYTES`](endpoint::MAX_ANSWER_BYTES), and a clear error for a malformed answer.
///
/// The token goes to the endpoint only over https; [`new_allowing_http`](Self::new_allowing_http)
/// opts into plain http for a loopback test server.
///
/// ```
/// use std::time::Duration;
/// use secure_media_core::presigned::endpoint::RetryPolicy;
/// use secure_media_reqwest::ReqwestPresigner;
///
/// let endpoint = "https://api.example.com/v1/media/presign".parse().unwrap();
/// let client = secure_media_reqwest::client_builder().build().unwrap();
/// let presigner = ReqwestPresigner::new(client.clone(), endpoint)?
///     .with_retry_policy(RetryPolicy::default().with_timeout(Duration::from_secs(5)).with_retries(2, Duration::from_millis(100)));
/// assert!(ReqwestPresigner::new(client, "http://127.0.0.1:8787/v1/media/presign".parse().unwrap()).is_err());
/// # let _ = presigner;
/// # Ok::<(), secure_media_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ReqwestPresigner {
    client: Client,
    endpoint: Url,
    retry: RetryPolicy,
    max_batch: usize,
}

impl ReqwestPresigner {
    /// Presigns at the https `endpoint` with `client`: the default [`RetryPolicy`] (10 s per
    /// call, 2 retries from 100 ms), 100 URLs a call.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InsecureEndpoint`] for a plain-http or non-http(s) endpoint, or one without
    /// a host.
    pub fn new(client: Client, endpoint: Url) -> Result<Self, ConfigError> {
        endpoint::check_endpoint(endpoint.as_str(), false)?;
        Ok(Self::unchecked(client, endpoint))
    }

    /// The same, also accepting a plain `http://` endpoint: for loopback test servers only, since
    /// the token could be read on the way.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InsecureEndpoint`] for a non-http(s) endpoint, or one without a host.
    pub fn new_allowing_http(client: Client, endpoint: Url) -> Result<Self, ConfigError> {
        endpoint::check_endpoint(endpoint.as_str(), true)?;
        Ok(Self::unchecked(client, endpoint))
    }

    fn unchecked(client: Client, endpoint: Url) -> Self {
        Self { client, endpoint, retry: RetryPolicy::default(), max_batch: 100 }
    }

    /// The timeout per call and the retries (the core's [`RetryPolicy`], shared by every
    /// presigner): `RetryPolicy::default().with_timeout(..).with_retries(..)`.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The most URLs per call.
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }
}

#[async_trait]
impl Presigner for ReqwestPresigner {
    async fn presign(&self, url: &str, token: &FileAccessToken) -> Result<Presigned, AccessError> {
        endpoint::presign_one(self, url, token).await
    }

    async fn presign_batch(&self, urls: &[Arc<str>], token: &FileAccessToken) -> Vec<Result<Presigned, AccessError>> {
        let send = |call: &PresignRequest| {
            let request = self
                .client
                .post(self.endpoint.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, call.authorization.clone())
                .body(call.body.clone());
            // `network_error` takes the endpoint's URL out of reqwest's error.
            async move { request.send().await.map(http::Response::from).map_err(|e| Unreachable(network_error(e))) }
        };
        self.retry.presign(urls, token, send, tokio::time::sleep).await
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }
}

impl fmt::Debug for ReqwestPresigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestPresigner")
            .field("endpoint", &secure_media_core::redacted_url(&self.endpoint))
            .field("retry", &self.retry)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}
