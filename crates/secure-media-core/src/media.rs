//! [`SecureMedia`]: the handle with the vendor SDK's helpers, built from one config.

use std::fmt;
use std::sync::Arc;

use crate::presigned::{MemoryPresignCache, PresignConfig, PresignedStrategy, Presigner, DEFAULT_CACHE_CAPACITY};
use crate::{
    resolve_str, AccessError, Clock, ConfigError, EmbeddedStrategy, FileAccessToken, HeaderBasedStrategy,
    MediaAccessStrategy, SecureHosts, SecureMediaMode, SystemClock, TokenSource,
};

/// Builds a [`SecureMedia`]: hosts (a region or explicit), mode, token source, presigner.
pub struct SecureMediaBuilder {
    app_id: String,
    hosts: SecureHosts,
    host_error: Option<ConfigError>,
    mode: SecureMediaMode,
    tokens: Option<Arc<dyn TokenSource>>,
    presigner: Option<Arc<dyn Presigner>>,
    presign_config: PresignConfig,
    cache_capacity: usize,
    cdn_hosts: SecureHosts,
    clock: Arc<dyn Clock>,
}

impl SecureMediaBuilder {
    /// Adds the vendor's secure hosts for a region (`files-<r>.cometchat.io`, `.com`, `media-<r>.cometchat.io`).
    pub fn region(mut self, region: &str) -> Self {
        match std::mem::take(&mut self.hosts).with_cometchat_region(region) {
            Ok(hosts) => self.hosts = hosts,
            Err(error) => self.host_error = Some(error),
        }
        self
    }

    /// Adds an explicit secure host (`host` or `host:port`), as the app's settings name it.
    pub fn secure_host(mut self, host: &str) -> Self {
        if let Err(error) = self.hosts.add(host) {
            self.host_error = Some(error);
        }
        self
    }

    /// Replaces the secure hosts.
    pub fn secure_hosts(mut self, hosts: SecureHosts) -> Self {
        self.hosts = hosts;
        self
    }

    /// Allows `http://` on the secure hosts (loopback test servers only).
    pub fn allowing_http(mut self) -> Self {
        self.hosts = std::mem::take(&mut self.hosts).allowing_http();
        self
    }

    /// The access mode (default [`SecureMediaMode::Embedded`]).
    pub fn mode(mut self, mode: SecureMediaMode) -> Self {
        self.mode = mode;
        self
    }

    /// Where tokens come from (a [`LoginCell`](crate::LoginCell) the app's login feeds, usually).
    pub fn token_source(mut self, tokens: Arc<dyn TokenSource>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// The presign endpoint: required for presigned mode, and enables
    /// [`fetch_presigned_url`](SecureMedia::fetch_presigned_url) in any mode.
    pub fn presigner(mut self, presigner: Arc<dyn Presigner>) -> Self {
        self.presigner = Some(presigner);
        self
    }

    /// How many presigned URLs the in-memory cache holds. Default
    /// [`DEFAULT_CACHE_CAPACITY`].
    pub fn presign_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Tuning for presigned URLs. CDN hosts added with [`cdn_host`](Self::cdn_host) or
    /// [`cdn_hosts`](Self::cdn_hosts) join its [`cdn_hosts`](PresignConfig::cdn_hosts), in either order.
    pub fn presign_config(mut self, config: PresignConfig) -> Self {
        self.presign_config = config;
        self
    }

    /// Adds a host (`host` or `host:port`) that presigned URLs may point to besides the secure
    /// hosts: the CDN that serves them. A presigned URL anywhere else is refused.
    pub fn cdn_host(mut self, host: &str) -> Self {
        if let Err(error) = self.cdn_hosts.add(host) {
            self.host_error = Some(error);
        }
        self
    }

    /// Adds every host of `hosts` as a [CDN host](Self::cdn_host).
    pub fn cdn_hosts(mut self, hosts: SecureHosts) -> Self {
        for host in hosts.iter() {
            if let Err(error) = self.cdn_hosts.add(&host) {
                self.host_error = Some(error);
            }
        }
        self
    }

    /// Another clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the handle.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidHost`] for an invalid host or region given to the builder (the last
    /// one), [`ConfigError::InvalidConfig`] without a token source, or in presigned mode without
    /// a presigner.
    pub fn build(self) -> Result<SecureMedia, ConfigError> {
        if let Some(error) = self.host_error {
            return Err(error);
        }
        let tokens = self
            .tokens
            .ok_or(ConfigError::InvalidConfig("a token source is required (SecureMediaBuilder::token_source)"))?;
        let mut presign_config = self.presign_config;
        for host in self.cdn_hosts.iter() {
            presign_config.cdn_hosts.add(&host)?;
        }
        let presigned = self.presigner.map(|presigner| {
            Arc::new(PresignedStrategy::assemble(
                self.hosts.clone(),
                tokens.clone(),
                presigner,
                Arc::new(MemoryPresignCache::new(self.cache_capacity)),
                presign_config,
                self.clock.clone(),
            ))
        });
        let strategy: Arc<dyn MediaAccessStrategy> = match self.mode {
            SecureMediaMode::Embedded => {
                Arc::new(EmbeddedStrategy::new(self.hosts.clone(), tokens.clone()).with_clock(self.clock.clone()))
            }
            SecureMediaMode::HeaderBased => {
                Arc::new(HeaderBasedStrategy::new(self.hosts.clone(), tokens.clone()).with_clock(self.clock.clone()))
            }
            SecureMediaMode::Presigned => match &presigned {
                Some(p) => p.clone(),
                None => {
                    return Err(ConfigError::InvalidConfig(
                        "presigned mode needs a presigner (SecureMediaBuilder::presigner)",
                    ))
                }
            },
        };
        Ok(SecureMedia {
            app_id: self.app_id,
            hosts: self.hosts,
            mode: self.mode,
            tokens,
            strategy,
            presigned,
            clock: self.clock,
        })
    }
}

type DynPresigned = PresignedStrategy<Arc<dyn Presigner>>;

/// The SDK-parity handle: `fat()`, `is_header_mode_enabled()`, `requires_secure_access(url)`,
/// `fetch_presigned_url(url)`, and the [`MediaAccessStrategy`] the adapters use.
///
/// ```
/// # futures::executor::block_on(async {
/// use std::sync::Arc;
/// use secure_media_core::{LoginCell, FileAccessToken, SecureMedia, SecureMediaMode};
///
/// let login = Arc::new(LoginCell::new());
/// let media = SecureMedia::builder("app")
///     .region("us")
///     .mode(SecureMediaMode::HeaderBased)
///     .token_source(login.clone())
///     .build()
///     .unwrap();
/// assert!(!media.is_header_mode_enabled()); // no token yet
/// login.set(FileAccessToken::new("opaque-fat").unwrap());
/// assert!(media.is_header_mode_enabled());
/// assert!(media.requires_secure_access("https://files-us.cometchat.io/app/media/a.png"));
/// assert!(!media.requires_secure_access("https://example.com/a.png"));
/// // No presigner configured: the URL comes back unchanged, as in the vendor SDK.
/// assert_eq!(media.fetch_presigned_url("https://files-us.cometchat.io/a.png").await.unwrap(), "https://files-us.cometchat.io/a.png");
/// # });
/// ```
pub struct SecureMedia {
    app_id: String,
    hosts: SecureHosts,
    mode: SecureMediaMode,
    tokens: Arc<dyn TokenSource>,
    strategy: Arc<dyn MediaAccessStrategy>,
    presigned: Option<Arc<DynPresigned>>,
    clock: Arc<dyn Clock>,
}

impl SecureMedia {
    /// Starts a configuration for an app.
    pub fn builder(app_id: impl Into<String>) -> SecureMediaBuilder {
        SecureMediaBuilder {
            app_id: app_id.into(),
            hosts: SecureHosts::new(),
            host_error: None,
            mode: SecureMediaMode::default(),
            tokens: None,
            presigner: None,
            presign_config: PresignConfig::default(),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            cdn_hosts: SecureHosts::new(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The app id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The configured mode.
    pub fn mode(&self) -> SecureMediaMode {
        self.mode
    }

    /// The secure hosts.
    pub fn secure_hosts(&self) -> &SecureHosts {
        &self.hosts
    }

    /// The current token if it is valid now (`CometChat.getFat()`).
    pub fn fat(&self) -> Option<Arc<FileAccessToken>> {
        self.tokens.current().filter(|t| t.is_valid_at(self.clock.now()))
    }

    /// Header mode, a valid token, and a secure host configured (`isHeaderModeEnabled()`).
    pub fn is_header_mode_enabled(&self) -> bool {
        self.mode == SecureMediaMode::HeaderBased && self.fat().is_some() && !self.hosts.is_empty()
    }

    /// Is the URL on a configured secure host (`requiresSecureAccess(url)`)? Invalid URLs are not.
    pub fn requires_secure_access(&self, url: &str) -> bool {
        self.hosts.matches_str(url)
    }

    /// A presigned URL for a secure media URL (`fetchPresignedUrl(url)`), in any mode once a
    /// presigner is configured. The input comes back unchanged when presigning is off, the URL is
    /// invalid, or it is not on a secure host; errors are real failures only.
    ///
    /// # Errors
    ///
    /// As the presigned strategy's [`resolve`](MediaAccessStrategy::resolve):
    /// [`AccessError::NotLoggedIn`] without a token, [`AccessError::Presign`],
    /// [`AccessError::PresignUnauthorized`] (after one renewal of the token),
    /// [`AccessError::RefreshFailed`] when that renewal failed, [`AccessError::Busy`] or
    /// [`AccessError::Cancelled`].
    pub async fn fetch_presigned_url(&self, url: &str) -> Result<String, AccessError> {
        let Some(presigned) = &self.presigned else {
            return Ok(url.to_owned());
        };
        let (resolved, _) = resolve_str(&**presigned, url).await?;
        Ok(resolved.into_owned())
    }

    /// Asks ahead for URLs the app is about to show (a screenful, a page of a chat): in presigned
    /// mode their presigned URLs are fetched now, in as few concurrent batches as the limits
    /// allow, so the loads that follow are cache hits. Nothing to do in the other modes.
    pub async fn prefetch(&self, urls: &[&str]) {
        self.strategy.prefetch(urls).await;
    }

    /// The strategy for the configured mode, for the tower and reqwest adapters.
    pub fn strategy(&self) -> Arc<dyn MediaAccessStrategy> {
        self.strategy.clone()
    }

    /// The URL as the configured mode would send it (headers aside): embedded adds `fat`, header
    /// strips a stale one, presigned exchanges it. Unchanged for invalid or non-secure URLs.
    ///
    /// # Errors
    ///
    /// As the mode's strategy's [`resolve`](MediaAccessStrategy::resolve):
    /// [`AccessError::NotLoggedIn`] without a token, and in presigned mode the errors of
    /// [`fetch_presigned_url`](Self::fetch_presigned_url).
    pub async fn resolve_url(&self, url: &str) -> Result<String, AccessError> {
        Ok(resolve_str(&*self.strategy, url).await?.0.into_owned())
    }
}

impl fmt::Debug for SecureMedia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureMedia")
            .field("app_id", &self.app_id)
            .field("mode", &self.mode)
            .field("hosts", &self.hosts)
            .field("presigner", &self.presigned.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use async_trait::async_trait;

    use super::*;
    use crate::presigned::{PresignCache, Presigned};
    use crate::token::tests::jwt;
    use crate::{LoginCell, ManualClock};

    struct Signer;

    #[async_trait]
    impl Presigner for Signer {
        async fn presign(&self, url: &str, _: &FileAccessToken) -> Result<Presigned, AccessError> {
            Ok(Presigned { url: format!("{url}?Expires=4000000000&Signature=s&Key-Pair-Id=k"), expires_at: None })
        }
    }

    fn handle(mode: SecureMediaMode, presigner: bool) -> (SecureMedia, Arc<LoginCell>, Arc<ManualClock>) {
        let login = Arc::new(LoginCell::new());
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
        let mut builder =
            SecureMedia::builder("app").region("us").mode(mode).token_source(login.clone()).clock(clock.clone());
        if presigner {
            builder = builder.presigner(Arc::new(Signer));
        }
        (builder.build().unwrap(), login, clock)
    }

    #[test]
    fn fat_is_the_current_token_only_while_valid() {
        let (media, login, clock) = handle(SecureMediaMode::Embedded, false);
        assert!(media.fat().is_none());
        login.set(FileAccessToken::new(jwt(r#"{"sub":"u","exp":2000}"#)).unwrap());
        assert_eq!(media.fat().unwrap().subject(), Some("u"));
        clock.advance(Duration::from_secs(1_000) + CLOCK_SKEW);
        assert!(media.fat().is_none());
    }

    const CLOCK_SKEW: Duration = crate::CLOCK_SKEW_ALLOWANCE;

    #[test]
    fn header_mode_is_enabled_only_with_mode_token_and_host() {
        let (media, login, _) = handle(SecureMediaMode::HeaderBased, false);
        assert!(!media.is_header_mode_enabled());
        login.set(FileAccessToken::new("t").unwrap());
        assert!(media.is_header_mode_enabled());
        let (embedded, login, _) = handle(SecureMediaMode::Embedded, false);
        login.set(FileAccessToken::new("t").unwrap());
        assert!(!embedded.is_header_mode_enabled());
        let no_host =
            SecureMedia::builder("app").mode(SecureMediaMode::HeaderBased).token_source(login.clone()).build().unwrap();
        assert!(!no_host.is_header_mode_enabled());
    }

    #[test]
    fn requires_secure_access_is_an_exact_host_match() {
        let (media, _, _) = handle(SecureMediaMode::Embedded, false);
        assert!(media.requires_secure_access("https://files-us.cometchat.io/app/media/a.png"));
        assert!(!media.requires_secure_access("https://files-us.cometchat.io.evil.com/a.png"));
        assert!(!media.requires_secure_access("not-a-valid-url"));
    }

    #[tokio::test]
    async fn fetch_presigned_url_passes_through_what_it_cannot_presign() {
        let (off, login, _) = handle(SecureMediaMode::HeaderBased, false);
        login.set(FileAccessToken::new("t").unwrap());
        let secure = "https://files-us.cometchat.io/app/media/a.png";
        assert_eq!(off.fetch_presigned_url(secure).await.unwrap(), secure);

        let (on, login, _) = handle(SecureMediaMode::HeaderBased, true);
        login.set(FileAccessToken::new("t").unwrap());
        for same in ["not-a-valid-url", "https://example.com/file.jpg", ""] {
            assert_eq!(on.fetch_presigned_url(same).await.unwrap(), same);
        }
        // Header mode with a presigner presigns, as the vendor allows.
        let signed = on.fetch_presigned_url(secure).await.unwrap();
        assert!(signed.starts_with(secure) && signed.contains("Signature="));
        // Real failures are errors: no token.
        login.clear();
        assert_eq!(on.fetch_presigned_url(secure).await, Err(AccessError::NotLoggedIn));
    }

    #[tokio::test]
    async fn each_mode_resolves_through_its_strategy() {
        let secure = "https://files-us.cometchat.io/app/media/a.png?fat=old";
        for (mode, expect) in [
            (SecureMediaMode::Embedded, "https://files-us.cometchat.io/app/media/a.png?fat=t"),
            (SecureMediaMode::HeaderBased, "https://files-us.cometchat.io/app/media/a.png"),
            (
                SecureMediaMode::Presigned,
                "https://files-us.cometchat.io/app/media/a.png?Expires=4000000000&Signature=s&Key-Pair-Id=k",
            ),
        ] {
            let (media, login, _) = handle(mode, true);
            login.set(FileAccessToken::new("t").unwrap());
            assert_eq!(media.resolve_url(secure).await.unwrap(), expect, "{mode}");
            assert_eq!(media.mode(), mode);
        }
    }

    /// Signs onto `host`, as a CDN-fronted endpoint does.
    struct CdnSigner(&'static str);

    #[async_trait]
    impl Presigner for CdnSigner {
        async fn presign(&self, url: &str, _: &FileAccessToken) -> Result<Presigned, AccessError> {
            let signed = url.replace("files-us.cometchat.io", self.0);
            Ok(Presigned { url: format!("{signed}?Expires=4000000000&Signature=s"), expires_at: None })
        }
    }

    #[test]
    fn the_secure_host_and_secure_hosts_settings_apply() {
        let login: Arc<dyn TokenSource> = Arc::new(LoginCell::new());
        let one = SecureMedia::builder("app").secure_host("media.example.com:8443").token_source(login.clone());
        let one = one.build().unwrap();
        assert!(one.requires_secure_access("https://media.example.com:8443/a.png"));
        assert!(!one.requires_secure_access("https://media.example.com/a.png"));
        let hosts = SecureHosts::new().with_host("other.example.com").unwrap();
        let replaced =
            SecureMedia::builder("app").region("us").secure_hosts(hosts).token_source(login).build().unwrap();
        assert!(replaced.requires_secure_access("https://other.example.com/a.png"));
        assert!(!replaced.requires_secure_access("https://files-us.cometchat.io/a.png"));
    }

    #[test]
    fn the_allowing_http_setting_applies() {
        let login: Arc<dyn TokenSource> = Arc::new(LoginCell::new());
        let strict = SecureMedia::builder("app").secure_host("127.0.0.1:8787").token_source(login.clone()).build();
        assert!(!strict.unwrap().requires_secure_access("http://127.0.0.1:8787/a.png"));
        let loose = SecureMedia::builder("app").secure_host("127.0.0.1:8787").allowing_http().token_source(login);
        assert!(loose.build().unwrap().requires_secure_access("http://127.0.0.1:8787/a.png"));
    }

    #[tokio::test]
    async fn the_cdn_host_settings_apply_in_either_order_with_presign_config() {
        let secure = "https://files-us.cometchat.io/app/media/a.png";
        let build = |builder: SecureMediaBuilder| {
            let login = Arc::new(LoginCell::new());
            login.set(FileAccessToken::new("t").unwrap());
            let builder = builder.region("us").token_source(login).presigner(Arc::new(CdnSigner("cdn.example.com")));
            builder.build().unwrap()
        };
        let config = || PresignConfig { batch_limit: 7, ..PresignConfig::default() };
        let cdn = || SecureHosts::new().with_host("cdn.example.com").unwrap();
        for media in [
            build(SecureMedia::builder("app").cdn_host("cdn.example.com").presign_config(config())),
            build(SecureMedia::builder("app").presign_config(config()).cdn_host("cdn.example.com")),
            build(SecureMedia::builder("app").cdn_hosts(cdn())),
            build(SecureMedia::builder("app").presign_config(PresignConfig { cdn_hosts: cdn(), ..config() })),
        ] {
            assert!(media
                .fetch_presigned_url(secure)
                .await
                .unwrap()
                .starts_with("https://cdn.example.com/app/media/a.png?"));
        }
        let unlisted = build(SecureMedia::builder("app").cdn_host("other.example.com"));
        assert!(matches!(unlisted.fetch_presigned_url(secure).await, Err(AccessError::Presign { .. })));
        let login: Arc<dyn TokenSource> = Arc::new(LoginCell::new());
        let bad = SecureMedia::builder("app").cdn_host("a/b").token_source(login).build();
        assert!(matches!(bad, Err(ConfigError::InvalidHost { .. })));
    }

    #[tokio::test]
    async fn the_presign_config_setting_applies_through_the_builder() {
        let login = Arc::new(LoginCell::new());
        let config = PresignConfig { scope: Some("team".into()), ..PresignConfig::default() };
        let media = SecureMedia::builder("app")
            .region("us")
            .mode(SecureMediaMode::Presigned)
            .token_source(login.clone())
            .presigner(Arc::new(Signer))
            .presign_config(config)
            .presign_cache_capacity(3)
            .build()
            .unwrap();
        let presigned = media.presigned.clone().unwrap();
        assert_eq!(presigned.cache().capacity(), 3);
        assert_eq!(presigned.config().scope.as_deref(), Some("team"));
        login.set(FileAccessToken::new(jwt(r#"{"sub":"alice"}"#)).unwrap());
        media.resolve_url("https://files-us.cometchat.io/app/media/a.png").await.unwrap();
        // The app's fixed scope is the app's to manage: a user switch purges nothing.
        login.set(FileAccessToken::new(jwt(r#"{"sub":"bob"}"#)).unwrap());
        assert_eq!(presigned.cache().len(), 1);
    }

    #[tokio::test]
    async fn the_clock_setting_applies_to_presigned_urls() {
        let (media, login, clock) = handle(SecureMediaMode::Presigned, true);
        login.set(FileAccessToken::new("t").unwrap());
        let secure = "https://files-us.cometchat.io/app/media/a.png";
        media.resolve_url(secure).await.unwrap();
        let presigned = media.presigned.clone().unwrap();
        let token = login.current().unwrap();
        let key = crate::presigned::CacheKey::new(token.principal_shared(), secure);
        let cached = presigned.cache().get_ready(&key).unwrap();
        assert_eq!(cached.fetched_at(), clock.now(), "fetched at the builder's clock, not the system's");
    }

    #[test]
    fn bad_configuration_is_a_clear_error() {
        let login: Arc<dyn TokenSource> = Arc::new(LoginCell::new());
        let bad_region = SecureMedia::builder("app").region("u s").token_source(login.clone()).build();
        assert!(matches!(bad_region, Err(ConfigError::InvalidHost { .. })));
        let bad_host = SecureMedia::builder("app").secure_host("a/b").token_source(login.clone()).build();
        assert!(matches!(bad_host, Err(ConfigError::InvalidHost { .. })));
        let no_presigner =
            SecureMedia::builder("app").region("us").mode(SecureMediaMode::Presigned).token_source(login).build();
        assert!(matches!(no_presigner, Err(ConfigError::InvalidConfig(_))));
        assert!(matches!(SecureMedia::builder("app").build(), Err(ConfigError::InvalidConfig(_))));
    }
}
