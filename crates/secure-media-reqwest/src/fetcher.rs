//! [`ReqwestFetcher`]: the [`MediaFetcher`] capability over reqwest and the middleware.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use http::{header, StatusCode};
use reqwest_middleware::ClientWithMiddleware;
use secure_media_core::{
    check_media, strategy_serves, AccessError, Media, MediaAccessStrategy, MediaFetcher, MediaKey, MediaUrl,
    NetworkError, NetworkFailure,
};

use crate::{client_builder, network_error, SecureMediaMiddleware};

/// Fetches secure media with reqwest through [`SecureMediaMiddleware`]: secure hosts only, one
/// retry after a refusal, redirects kept home, bodies capped (default 64 MiB), answers that are not
/// media refused.
///
/// ```no_run
/// # async fn run(strategy: std::sync::Arc<dyn secure_media_core::MediaAccessStrategy>) -> Result<(), Box<dyn std::error::Error>> {
/// use secure_media_core::MediaFetcher;
/// use secure_media_reqwest::ReqwestFetcher;
///
/// let fetcher = ReqwestFetcher::new(strategy)?;
/// let media = fetcher.fetch("https://files-us.cometchat.io/app/media/a.png").await?;
/// println!("{} bytes of {}", media.bytes.len(), media.content_type);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ReqwestFetcher {
    client: ClientWithMiddleware,
    strategy: Arc<dyn MediaAccessStrategy>,
    max_bytes: u64,
}

impl ReqwestFetcher {
    /// A fetcher with its own client (built with [`client_builder`]).
    ///
    /// # Errors
    ///
    /// reqwest's error when the client cannot be built (its TLS backend cannot be set up).
    pub fn new(strategy: Arc<dyn MediaAccessStrategy>) -> Result<Self, reqwest::Error> {
        let client = client_builder().build()?;
        Ok(Self::from_client(client, strategy))
    }

    /// A fetcher over your client. Build it from [`client_builder`], or give it at least
    /// `.redirect(reqwest::redirect::Policy::none())` and `.referer(false)`: a client that follows
    /// redirects itself does so below the middleware, carrying a query token to other origins and
    /// naming the tokenised URL in `Referer`.
    pub fn from_client(client: reqwest::Client, strategy: Arc<dyn MediaAccessStrategy>) -> Self {
        let client =
            reqwest_middleware::ClientBuilder::new(client).with(SecureMediaMiddleware::new(strategy.clone())).build();
        Self { client, strategy, max_bytes: 64 * 1024 * 1024 }
    }

    /// The largest body accepted.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }
}

#[async_trait]
impl MediaFetcher for ReqwestFetcher {
    fn handles(&self, url: &str) -> bool {
        match MediaUrl::parse_plain(url) {
            Some(view) => strategy_serves(&*self.strategy, &view),
            None => url::Url::parse(url)
                .ok()
                .is_some_and(|u| MediaUrl::from_url(&u).is_some_and(|v| strategy_serves(&*self.strategy, &v))),
        }
    }

    fn key_of(&self, url: &str) -> Option<MediaKey> {
        MediaKey::for_request(&*self.strategy, url).or_else(|| {
            // Not served: the clean URL all the same, without what the strategy declares.
            let parsed = url::Url::parse(url).ok()?;
            let view = MediaUrl::from_url(&parsed)?;
            MediaKey::of_str(&view.clean_key_with(self.strategy.credentials()))
        })
    }

    async fn prefetch(&self, urls: &[&str]) {
        self.strategy.prefetch(urls).await;
    }

    async fn fetch(&self, url: &str) -> Result<Media, AccessError> {
        // The strategy's key: its scope, and none of the credentials it declares.
        let Some(key) = MediaKey::for_request(&*self.strategy, url) else {
            let key = self.key_of(url).ok_or(AccessError::InvalidUrl("not an http(s) URL"))?;
            return Err(AccessError::NotSecure(key.url().to_owned()));
        };
        let clean = key.url().to_owned();
        let network = |error: NetworkError| AccessError::Network { url: clean.clone(), error };
        let mut response = self.client.get(url).send().await.map_err(|e| match e {
            reqwest_middleware::Error::Middleware(inner) => match inner.downcast::<AccessError>() {
                Ok(access) => access,
                Err(other) => network(NetworkError::from_chain(other.as_ref(), NetworkFailure::Other)),
            },
            reqwest_middleware::Error::Reqwest(e) => network(network_error(e)),
        })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(AccessError::Refused { url: clean, status });
        }
        if !status.is_success() {
            return Err(AccessError::Status { url: clean, status });
        }
        let too_large = || AccessError::TooLarge { url: clean.clone(), limit: self.max_bytes };
        if response.content_length().is_some_and(|len| len > self.max_bytes) {
            return Err(too_large());
        }
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| network(network_error(e)))? {
            if body.is_empty() {
                check_media(&content_type, &chunk)
                    .map_err(|reason| AccessError::NotMedia { url: clean.clone(), reason })?;
            }
            if body.len() as u64 + chunk.len() as u64 > self.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        if body.is_empty() {
            check_media(&content_type, &[]).map_err(|reason| AccessError::NotMedia { url: clean.clone(), reason })?;
        }
        Ok(Media { bytes: body.freeze(), content_type, key })
    }
}

impl fmt::Debug for ReqwestFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestFetcher")
            .field("hosts", self.strategy.secure_hosts())
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}
