//! [`ReqwestPresigner`]: the presign endpoint over reqwest.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{header, Client, Url};
use secure_media_core::presigned::{endpoint, Presigned, Presigner};
use secure_media_core::{AccessError, FileAccessToken};

/// Presigns through the presign endpoint ([`endpoint`](secure_media_core::presigned::endpoint)
/// format): batch calls, a timeout per call, bounded retries with exponential backoff on 5xx,
/// 429 and connection errors, and a clear error for a malformed answer.
///
/// ```
/// use std::time::Duration;
/// use secure_media_reqwest::ReqwestPresigner;
///
/// let presigner = ReqwestPresigner::new(reqwest::Client::new(), "http://127.0.0.1:8787/v1/media/presign".parse().unwrap())
///     .with_timeout(Duration::from_secs(5))
///     .with_retries(2, Duration::from_millis(100));
/// # let _ = presigner;
/// ```
#[derive(Clone)]
pub struct ReqwestPresigner {
    client: Client,
    endpoint: Url,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    max_batch: usize,
}

enum Failure {
    Retryable(AccessError),
    Final(AccessError),
}

impl ReqwestPresigner {
    /// Presigns at `endpoint` with `client`: 10 s timeout, 2 retries from 100 ms, 100 URLs a call.
    pub fn new(client: Client, endpoint: Url) -> Self {
        Self {
            client,
            endpoint,
            timeout: Duration::from_secs(10),
            retries: 2,
            backoff: Duration::from_millis(100),
            max_batch: 100,
        }
    }

    /// The timeout of each call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Retries after 5xx, 429 or connection errors, waiting `backoff`, then twice that, and so on.
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// The most URLs per call.
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    async fn call(
        &self,
        urls: &[Arc<str>],
        token: &FileAccessToken,
    ) -> Result<Vec<Result<Presigned, AccessError>>, Failure> {
        let auth = token.header_value("Bearer").map_err(Failure::Final)?;
        let sent = self
            .client
            .post(self.endpoint.clone())
            .timeout(self.timeout)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, auth)
            .body(endpoint::request_body(urls))
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            // No URL in the reason: reqwest's Display would print the endpoint's.
            Err(error) => {
                let reason = if error.is_timeout() {
                    "the presign call timed out"
                } else {
                    "the presign endpoint is unreachable"
                };
                return Err(Failure::Retryable(endpoint::batch_error(urls, reason)));
            }
        };
        let status = response.status();
        if endpoint::is_retryable(status) {
            return Err(Failure::Retryable(endpoint::batch_error(
                urls,
                format!("the presign endpoint answered {status}"),
            )));
        }
        if response.content_length().is_some_and(|len| len > endpoint::MAX_ANSWER_BYTES as u64) {
            return Err(Failure::Final(endpoint::batch_error(urls, "the presign answer is too large")));
        }
        let body = response
            .bytes()
            .await
            .map_err(|_| Failure::Retryable(endpoint::batch_error(urls, "the presign answer was cut off")))?;
        if body.len() > endpoint::MAX_ANSWER_BYTES {
            return Err(Failure::Final(endpoint::batch_error(urls, "the presign answer is too large")));
        }
        endpoint::parse_answer(status, &body, urls).map_err(Failure::Final)
    }
}

#[async_trait]
impl Presigner for ReqwestPresigner {
    async fn presign(&self, url: &str, token: &FileAccessToken) -> Result<Presigned, AccessError> {
        let urls = [Arc::from(url)];
        let mut answers = self.presign_batch(&urls, token).await;
        answers.pop().unwrap_or_else(|| Err(endpoint::batch_error(&urls, "no answer")))
    }

    async fn presign_batch(&self, urls: &[Arc<str>], token: &FileAccessToken) -> Vec<Result<Presigned, AccessError>> {
        let mut attempt = 0;
        let error = loop {
            match self.call(urls, token).await {
                Ok(answers) => return answers,
                Err(Failure::Retryable(error)) if attempt < self.retries => {
                    let wait = self.backoff.saturating_mul(2u32.saturating_pow(attempt));
                    tracing::warn!(%error, attempt, "presign call failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(Failure::Retryable(error) | Failure::Final(error)) => break error,
            }
        };
        urls.iter().map(|_| Err(error.clone())).collect()
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }
}

impl fmt::Debug for ReqwestPresigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestPresigner")
            .field("endpoint", &self.endpoint.as_str())
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}
