//! [`HeaderBasedStrategy`]: the token in a request header; the URL stays clean.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use http::{header, HeaderName, StatusCode};

use crate::counters::Counters;
use crate::embedded::FAT_PARAM;
use crate::{
    AccessError, Clock, ConfigError, FileAccessToken, MediaAccessStrategy, MediaUrl, Resolution, RetryDecision,
    SecureHosts, StrategyStats, SystemClock, TokenSource,
};

/// Header mode: `Authorization: Bearer <token>` by default. The header name and scheme are
/// configurable (the vendor's iOS and Android SDKs send a header named `fat` with the bare token).
/// A stale `fat` query parameter is stripped so the token never travels twice.
///
/// ```
/// use std::sync::Arc;
/// use secure_media_core::{HeaderBasedStrategy, MediaAccessStrategy, MediaUrl, SecureHosts, StaticToken};
///
/// let strategy = HeaderBasedStrategy::new(SecureHosts::cometchat("us").unwrap(), Arc::new(StaticToken::parse("tok").unwrap()));
/// let view = MediaUrl::parse_plain("https://files-us.cometchat.io/a.png?fat=old").unwrap();
/// let resolution = strategy.resolve_ready(&view).unwrap().unwrap();
/// assert_eq!(resolution.headers()[0].1, "Bearer tok");
/// assert_eq!(resolution.apply_to_str("https://files-us.cometchat.io/a.png?fat=old"), "https://files-us.cometchat.io/a.png");
/// ```
pub struct HeaderBasedStrategy {
    hosts: SecureHosts,
    tokens: Arc<dyn TokenSource>,
    name: HeaderName,
    scheme: Box<str>,
    clock: Arc<dyn Clock>,
    counters: Counters,
}

impl HeaderBasedStrategy {
    /// `Authorization: Bearer <token>` on `hosts`.
    pub fn new(hosts: SecureHosts, tokens: Arc<dyn TokenSource>) -> Self {
        Self {
            hosts,
            tokens,
            name: header::AUTHORIZATION,
            scheme: "Bearer".into(),
            clock: Arc::new(SystemClock),
            counters: Counters::default(),
        }
    }

    /// Sends the token in another header, with `scheme` before it (`""` for the bare token).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use secure_media_core::*;
    /// // The vendor's mobile SDKs: a header named `fat` with the bare token.
    /// let strategy = HeaderBasedStrategy::new(SecureHosts::cometchat("us").unwrap(), Arc::new(StaticToken::parse("tok").unwrap()))
    ///     .with_token_header("fat", "")
    ///     .unwrap();
    /// let view = MediaUrl::parse_plain("https://files-us.cometchat.io/a.png").unwrap();
    /// let resolution = strategy.resolve_ready(&view).unwrap().unwrap();
    /// assert_eq!(resolution.headers()[0].0, "fat");
    /// assert_eq!(resolution.headers()[0].1, "tok");
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidHeader`] when `name` is not a valid header name, or `scheme` is not
    /// a single token (letters, digits and `-._~+/` only, such as `Bearer`).
    pub fn with_token_header(mut self, name: &str, scheme: &str) -> Result<Self, ConfigError> {
        self.name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError::InvalidHeader("not a valid header name"))?;
        if !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)) {
            return Err(ConfigError::InvalidHeader("the scheme must be a single token such as Bearer"));
        }
        self.scheme = scheme.into();
        Ok(self)
    }

    /// Uses another clock for expiry decisions (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn resolution(&self, url: &MediaUrl<'_>, token: Arc<FileAccessToken>) -> Result<Resolution, AccessError> {
        let headers = token.headers(&self.name, &self.scheme)?;
        let resolution =
            if url.has_param(FAT_PARAM) { Resolution::remove_param(FAT_PARAM) } else { Resolution::keep() };
        Ok(resolution.with_headers(headers).with_token(token))
    }
}

#[async_trait]
impl MediaAccessStrategy for HeaderBasedStrategy {
    fn secure_hosts(&self) -> &SecureHosts {
        &self.hosts
    }

    fn resolve_ready(&self, url: &MediaUrl<'_>) -> Option<Result<Resolution, AccessError>> {
        let token = self.tokens.current()?;
        Some(self.resolution(url, token))
    }

    async fn resolve(&self, url: &MediaUrl<'_>) -> Result<Resolution, AccessError> {
        let token = self.tokens.token().await?;
        self.resolution(url, token)
    }

    async fn rejected(&self, url: &MediaUrl<'_>, used: &Resolution, status: StatusCode) -> RetryDecision {
        self.counters.refuse_token(&*self.tokens, &*self.clock, url, used, status).await
    }

    fn stats(&self) -> StrategyStats {
        self.counters.snapshot()
    }

    fn cache_scope(&self) -> Option<Arc<str>> {
        self.tokens.peek().map(|token| token.cache_scope().clone())
    }
}

impl fmt::Debug for HeaderBasedStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderBasedStrategy")
            .field("hosts", &self.hosts)
            .field("header", &self.name)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StaticToken;

    fn strategy() -> HeaderBasedStrategy {
        HeaderBasedStrategy::new(SecureHosts::cometchat("us").unwrap(), Arc::new(StaticToken::parse("tok").unwrap()))
    }

    #[test]
    fn bearer_header_is_sensitive_and_url_is_clean() {
        let s = strategy();
        let view = MediaUrl::parse_plain("https://files-us.cometchat.io/a.png?w=1").unwrap();
        let r = s.resolve_ready(&view).unwrap().unwrap();
        assert_eq!(r.headers().len(), 1);
        assert_eq!(r.headers()[0].0, header::AUTHORIZATION);
        assert_eq!(r.headers()[0].1, "Bearer tok");
        assert!(r.headers()[0].1.is_sensitive());
        assert!(matches!(r.url_change(), crate::UrlChange::Keep));
    }

    #[test]
    fn a_stale_fat_is_stripped() {
        let s = strategy();
        let text = "https://files-us.cometchat.io/a.png?w=1&fat=old#f";
        let r = s.resolve_ready(&MediaUrl::parse_plain(text).unwrap()).unwrap().unwrap();
        assert_eq!(r.apply_to_str(text), "https://files-us.cometchat.io/a.png?w=1#f");
    }

    #[test]
    fn header_name_and_scheme_are_validated() {
        let bad_name = strategy().with_token_header("bad header", "Bearer").unwrap_err();
        assert_eq!(bad_name, ConfigError::InvalidHeader("not a valid header name"));
        assert!(matches!(strategy().with_token_header("x-token", "Bad Scheme"), Err(ConfigError::InvalidHeader(_))));
        assert!(strategy().with_token_header("x-token", "Token").is_ok());
    }

    #[test]
    fn resolutions_share_the_tokens_list_and_two_header_shapes_keep_their_own() {
        let token = Arc::new(StaticToken::parse("tok").unwrap());
        let bearer = HeaderBasedStrategy::new(SecureHosts::cometchat("us").unwrap(), token.clone());
        let bare = HeaderBasedStrategy::new(SecureHosts::cometchat("us").unwrap(), token)
            .with_token_header("fat", "")
            .unwrap();
        let view = MediaUrl::parse_plain("https://files-us.cometchat.io/a.png").unwrap();
        for _ in 0..3 {
            let (b, f) = (bearer.resolve_ready(&view).unwrap().unwrap(), bare.resolve_ready(&view).unwrap().unwrap());
            assert_eq!(
                (b.headers()[0].0.as_str(), b.headers()[0].1.to_str().unwrap()),
                ("authorization", "Bearer tok")
            );
            assert_eq!((f.headers()[0].0.as_str(), f.headers()[0].1.to_str().unwrap()), ("fat", "tok"));
        }
        let (first, again) =
            (bearer.resolve_ready(&view).unwrap().unwrap(), bearer.resolve_ready(&view).unwrap().unwrap());
        assert!(std::ptr::eq(first.headers(), again.headers()), "one list per token, shared");
        // A resolution moved to another token keeps the headers it was made with.
        let other = Arc::new(FileAccessToken::new("other").unwrap());
        let moved = first.clone().with_token(other);
        assert_eq!(moved.headers()[0].1, "Bearer tok");
    }

    #[tokio::test]
    async fn forbidden_with_a_live_token_is_not_retried() {
        let s = strategy();
        let view = MediaUrl::parse_plain("https://files-us.cometchat.io/a.png").unwrap();
        let used = s.resolve(&view).await.unwrap();
        assert_eq!(s.rejected(&view, &used, StatusCode::FORBIDDEN).await, RetryDecision::GiveUp);
        // A static token cannot be renewed: a 401 is handed back too.
        assert_eq!(s.rejected(&view, &used, StatusCode::UNAUTHORIZED).await, RetryDecision::GiveUp);
        assert_eq!(s.stats().refusals, 2);
    }
}
