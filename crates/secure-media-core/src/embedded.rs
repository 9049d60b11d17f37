//! [`EmbeddedStrategy`]: `?fat=<token>` on secure-host URLs, done right.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use http::StatusCode;

use crate::counters::Counters;
use crate::{
    AccessError, Clock, MediaAccessStrategy, MediaUrl, Resolution, RetryDecision, SecureHosts, StrategyStats,
    SystemClock, TokenSource,
};

/// The query parameter the vendor reads the token from.
pub const FAT_PARAM: &str = "fat";

/// Embedded mode: the token travels as `fat=<token>` in the query of secure-host URLs only.
///
/// Unlike the vendor's JavaScript SDK it parses the URL, matches the host exactly, keeps an
/// existing query (`&fat=`, not a second `?`), replaces an old `fat` in place, encodes the token
/// (once per token), keeps the fragment last, and is idempotent.
///
/// ```
/// use std::sync::Arc;
/// use secure_media_core::{EmbeddedStrategy, SecureHosts, StaticToken};
///
/// let strategy = EmbeddedStrategy::new(SecureHosts::cometchat("us").unwrap(), Arc::new(StaticToken::parse("t+k/n=").unwrap()));
/// assert_eq!(
///     strategy.embed("https://files-us.cometchat.io/app/media/fatima.jpg?w=1#x").unwrap(),
///     "https://files-us.cometchat.io/app/media/fatima.jpg?w=1&fat=t%2Bk%2Fn%3D#x",
/// );
/// // Another host never sees the token, even when it mentions the secure host.
/// let foreign = "https://evil.com/?next=files-us.cometchat.io";
/// assert_eq!(strategy.embed(foreign).unwrap(), foreign);
/// ```
pub struct EmbeddedStrategy {
    hosts: SecureHosts,
    tokens: Arc<dyn TokenSource>,
    clock: Arc<dyn Clock>,
    counters: Counters,
}

impl EmbeddedStrategy {
    /// Embeds tokens from `tokens` into URLs on `hosts`.
    pub fn new(hosts: SecureHosts, tokens: Arc<dyn TokenSource>) -> Self {
        Self { hosts, tokens, clock: Arc::new(SystemClock), counters: Counters::default() }
    }

    /// Uses another clock for expiry decisions (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The URL with the token embedded; the input unchanged when it is not a valid URL or not on a
    /// secure host.
    ///
    /// # Errors
    ///
    /// [`AccessError::NotLoggedIn`] when the URL is on a secure host and there is no token.
    pub fn embed<'u>(&self, url: &'u str) -> Result<Cow<'u, str>, AccessError> {
        if let Some(view) = MediaUrl::parse_plain(url) {
            if !self.hosts.matches(&view) {
                return Ok(Cow::Borrowed(url));
            }
            let token = self.tokens.peek().ok_or(AccessError::NotLoggedIn)?;
            // The hot path: straight from the view's split to the output, no Resolution.
            let (base, query, fragment) = crate::rewrite::plain_parts(&view, url);
            let encoded = token.query_param().encoded();
            return Ok(crate::rewrite::set_param_in(url, base, query, fragment, FAT_PARAM, encoded));
        }
        let Ok(mut full) = url::Url::parse(url) else {
            return Ok(Cow::Borrowed(url));
        };
        if !self.hosts.matches_url(&full) {
            return Ok(Cow::Borrowed(url));
        }
        self.resolution()?.apply_to_url(&mut full);
        Ok(Cow::Owned(full.into()))
    }

    fn resolution(&self) -> Result<Resolution, AccessError> {
        let token = self.tokens.current().ok_or(AccessError::NotLoggedIn)?;
        Ok(Resolution::set_param(FAT_PARAM, token.query_param().clone()).with_token(token))
    }
}

#[async_trait]
impl MediaAccessStrategy for EmbeddedStrategy {
    fn secure_hosts(&self) -> &SecureHosts {
        &self.hosts
    }

    fn resolve_ready(&self, _url: &MediaUrl<'_>) -> Option<Result<Resolution, AccessError>> {
        self.tokens.current()?;
        Some(self.resolution())
    }

    async fn resolve(&self, _url: &MediaUrl<'_>) -> Result<Resolution, AccessError> {
        let token = self.tokens.token().await?;
        Ok(Resolution::set_param(FAT_PARAM, token.query_param().clone()).with_token(token))
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

impl fmt::Debug for EmbeddedStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStrategy").field("hosts", &self.hosts).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::tests::jwt;
    use crate::{FileAccessToken, LoginCell, StaticToken};

    fn strategy(token: &str) -> EmbeddedStrategy {
        EmbeddedStrategy::new(SecureHosts::cometchat("us").unwrap(), Arc::new(StaticToken::parse(token).unwrap()))
    }

    #[test]
    fn a_url_with_a_query_gets_an_ampersand_not_a_second_question_mark() {
        let s = strategy("TOKEN");
        assert_eq!(
            s.embed("https://files-us.cometchat.io/a/media/x.png?x=1").unwrap(),
            "https://files-us.cometchat.io/a/media/x.png?x=1&fat=TOKEN"
        );
        assert_eq!(
            s.embed("https://files-us.cometchat.io/a/media/x.png").unwrap(),
            "https://files-us.cometchat.io/a/media/x.png?fat=TOKEN"
        );
    }

    #[test]
    fn urls_that_contain_the_letters_fat_still_get_their_token() {
        let s = strategy("TOKEN");
        assert_eq!(
            s.embed("https://files-us.cometchat.io/a/media/fatima.jpg").unwrap(),
            "https://files-us.cometchat.io/a/media/fatima.jpg?fat=TOKEN"
        );
        assert_eq!(
            s.embed("https://files-us.cometchat.io/a.png?format=png").unwrap(),
            "https://files-us.cometchat.io/a.png?format=png&fat=TOKEN"
        );
    }

    #[test]
    fn a_host_that_merely_appears_in_the_string_gets_nothing() {
        let s = strategy("TOKEN");
        for foreign in [
            "https://evil.com/?next=files-us.cometchat.io",
            "https://files-us.cometchat.io.evil.com/a.png",
            "https://files-us.cometchat.io@evil.com/a.png",
            "see https://files-us.cometchat.io/a.png",
            "http://files-us.cometchat.io/a.png",
            "not a url",
        ] {
            let out = s.embed(foreign).unwrap();
            assert_eq!(out, foreign);
            assert!(!out.contains("TOKEN"));
        }
    }

    #[test]
    fn the_token_is_form_encoded() {
        let s = strategy("a+b/c=d");
        assert_eq!(
            s.embed("https://files-us.cometchat.io/x").unwrap(),
            "https://files-us.cometchat.io/x?fat=a%2Bb%2Fc%3Dd"
        );
    }

    #[test]
    fn an_old_fat_is_replaced_in_place_and_embedding_is_idempotent() {
        let s = strategy("NEW");
        let once = s.embed("https://files-us.cometchat.io/x?a=1&fat=OLD&b=2#frag").unwrap().into_owned();
        assert_eq!(once, "https://files-us.cometchat.io/x?a=1&fat=NEW&b=2#frag");
        assert_eq!(s.embed(&once).unwrap(), once);
        assert_eq!(once.matches("fat=").count(), 1);
    }

    #[test]
    fn the_slow_path_agrees_with_the_fast_path() {
        let s = strategy("T");
        // Upper-case scheme takes the WHATWG parse; the result is normalised.
        assert_eq!(
            s.embed("HTTPS://FILES-US.cometchat.io/x?y=1").unwrap(),
            "https://files-us.cometchat.io/x?y=1&fat=T"
        );
    }

    #[test]
    fn no_token_is_a_clear_error_for_secure_urls_only() {
        let s = EmbeddedStrategy::new(SecureHosts::cometchat("us").unwrap(), Arc::new(LoginCell::new()));
        assert_eq!(s.embed("https://files-us.cometchat.io/x"), Err(AccessError::NotLoggedIn));
        assert_eq!(s.embed("https://example.com/x").unwrap(), "https://example.com/x");
    }

    #[tokio::test]
    async fn refused_token_is_refreshed_then_retried_once() {
        let cell = Arc::new(
            LoginCell::new().with_relogin(|| async { FileAccessToken::new(jwt(r#"{"sub":"u","exp":4000000000}"#)) }),
        );
        cell.set(FileAccessToken::new("old").unwrap());
        let s = EmbeddedStrategy::new(SecureHosts::cometchat("us").unwrap(), cell.clone());
        let url = url::Url::parse("https://files-us.cometchat.io/x").unwrap();
        let view = MediaUrl::from_url(&url).unwrap();
        let used = s.resolve(&view).await.unwrap();
        assert_eq!(s.rejected(&view, &used, StatusCode::UNAUTHORIZED).await, RetryDecision::RetryOnce);
        let fresh = s.resolve_ready(&view).unwrap().unwrap();
        assert_ne!(fresh.apply_to_str(url.as_str()), used.apply_to_str(url.as_str()));
        let stats = s.stats();
        assert_eq!((stats.refusals, stats.token_refreshes, stats.retries), (1, 1, 1));
    }
}
