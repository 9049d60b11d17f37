//! [`FileAccessToken`] (the secret) and [`TokenSource`] (where the current one comes from):
//! [`StaticToken`] and the app-fed [`LoginCell`].

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use futures::future::{BoxFuture, FutureExt, Shared};
use http::{HeaderName, HeaderValue};

use crate::{AccessError, ParamValue, SharedHeaders};

/// How far past its `exp` a token still counts as valid, for clocks that disagree a little.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5);

const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A File Access Token: the secret that proves access to secure media.
///
/// It never prints: `Debug` and `Display` show `<redacted>`. When it is a JWT, its payload is read
/// (not verified: only the server can) to learn `exp` and `sub`; an opaque token has no known expiry.
///
/// ```
/// use secure_media_core::FileAccessToken;
///
/// let token = FileAccessToken::new("opaque-secret").unwrap();
/// assert_eq!(format!("{token}"), "<redacted>");
/// assert!(!format!("{token:?}").contains("opaque-secret"));
/// assert_eq!(token.expires_at(), None);
/// assert!(FileAccessToken::new("a.b").is_err()); // looks like a JWT, is not one
/// ```
pub struct FileAccessToken {
    /// The secret, raw and form-urlencoded (encoded once per token, not per request).
    secret: ParamValue,
    expires_at: Option<SystemTime>,
    subject: Option<Box<str>>,
    principal: Box<str>,
    /// `fat:<digest>`: the scope of a token no server has accepted yet.
    digest_scope: Box<str>,
    /// A secure server accepted this exact token, so its claims (`sub`) can be trusted.
    verified: AtomicBool,
    /// The header strategy's (name, scheme) and the header list it sends, built once.
    headers: OnceLock<(HeaderName, Box<str>, SharedHeaders)>,
}

impl FileAccessToken {
    /// Takes a token as the login response gives it.
    ///
    /// Errors: empty, longer than 16 KiB, not printable ASCII (it must fit a header and a URL), or
    /// a dotted token that is not a readable JWT.
    pub fn new(secret: impl Into<String>) -> Result<Self, AccessError> {
        let secret: String = secret.into();
        if secret.is_empty() {
            return Err(AccessError::MalformedToken("empty"));
        }
        if secret.len() > MAX_TOKEN_LEN {
            return Err(AccessError::MalformedToken("longer than 16 KiB"));
        }
        if !secret.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(AccessError::MalformedToken("not printable ASCII"));
        }
        let (expires_at, subject) = if secret.contains('.') { read_jwt_claims(&secret)? } else { (None, None) };
        // Scope an opaque token by a one-way digest of it, never by the token itself.
        let digest_scope = format!("fat:{:016x}", fingerprint(&secret));
        let principal = match &subject {
            Some(sub) => format!("sub:{sub}"),
            None => digest_scope.clone(),
        };
        Ok(Self {
            secret: ParamValue::new(secret),
            expires_at,
            subject: subject.map(String::into_boxed_str),
            principal: principal.into_boxed_str(),
            digest_scope: digest_scope.into_boxed_str(),
            verified: AtomicBool::new(false),
            headers: OnceLock::new(),
        })
    }

    /// The secret itself, to put on the wire. Named so that every use stands out in review.
    pub fn expose_secret(&self) -> &str {
        self.secret.raw()
    }

    /// The secret as a query parameter value (raw and form-urlencoded, computed once per token).
    pub fn query_param(&self) -> &ParamValue {
        &self.secret
    }

    /// `exp` of a JWT; `None` for an opaque token or a JWT without `exp`.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// `sub` of a JWT, when present.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// Who this token speaks for: `sub:<sub>`, or `fat:<digest>` for a token without `sub`.
    /// Presigned URLs are cached per principal so one user's URL never reaches another.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// Records that a secure server (the media host, the presign endpoint) accepted this exact
    /// token: from now on its claims may scope caches ([`cache_scope`](Self::cache_scope)).
    pub fn mark_verified(&self) {
        self.verified.store(true, Ordering::Relaxed);
    }

    /// Has a secure server accepted this token?
    pub fn is_verified(&self) -> bool {
        self.verified.load(Ordering::Relaxed)
    }

    /// The scope for cache keys: the [`principal`](Self::principal) once a server accepted the
    /// token, before that a digest of the token itself. So a forged token whose unverified payload
    /// says `sub: alice` never reaches alice's cached media.
    pub fn cache_scope(&self) -> &str {
        if self.is_verified() {
            &self.principal
        } else {
            &self.digest_scope
        }
    }

    /// Valid at `now`: no known expiry, or `now` is before `exp` plus [`CLOCK_SKEW_ALLOWANCE`].
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_none_or(|exp| now < exp + CLOCK_SKEW_ALLOWANCE)
    }

    /// `<scheme> <token>` (or the bare token for an empty scheme) as a sensitive header value,
    /// built once per token for the first scheme asked and then cloned.
    pub fn header_value(&self, scheme: &str) -> Result<HeaderValue, AccessError> {
        let headers = self.headers(&http::header::AUTHORIZATION, scheme)?;
        Ok(headers[0].1.clone())
    }

    /// `name: <scheme> <token>` as a shared one-header list, built once per token for the first
    /// (name, scheme) asked and then cloned with one reference count.
    pub(crate) fn headers(&self, name: &HeaderName, scheme: &str) -> Result<SharedHeaders, AccessError> {
        if let Some(headers) = self.cached_headers().filter(|_| self.caches_headers_for(name, scheme)) {
            return Ok(headers.clone());
        }
        let secret = self.secret.raw();
        let text = if scheme.is_empty() { secret.to_owned() } else { format!("{scheme} {secret}") };
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| AccessError::InvalidHeader("the header scheme is not a valid header value"))?;
        value.set_sensitive(true);
        let headers: SharedHeaders = Arc::new([(name.clone(), value)]);
        let _ = self.headers.set((name.clone(), scheme.into(), headers.clone()));
        Ok(headers)
    }

    /// Whether the list this token caches is `name: <scheme> <token>`.
    pub(crate) fn caches_headers_for(&self, name: &HeaderName, scheme: &str) -> bool {
        self.headers
            .get()
            .is_some_and(|(cached_name, cached_scheme, _)| cached_name == name && **cached_scheme == *scheme)
    }

    /// The list [`headers`](Self::headers) cached first, if any.
    pub(crate) fn cached_headers(&self) -> Option<&SharedHeaders> {
        self.headers.get().map(|(_, _, headers)| headers)
    }
}

fn fingerprint(secret: &str) -> u64 {
    // Fixed keys, so a principal is stable across processes (a shared cache keys by it).
    let mut hasher =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
    hasher.write(secret.as_bytes());
    hasher.finish()
}

fn read_jwt_claims(token: &str) -> Result<(Option<SystemTime>, Option<String>), AccessError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AccessError::MalformedToken("a JWT has three dot-separated parts"));
    };
    if header.is_empty() || payload.is_empty() {
        return Err(AccessError::MalformedToken("a JWT has a header and a payload"));
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| AccessError::MalformedToken("the JWT payload is not base64url"))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| AccessError::MalformedToken("the JWT payload is not JSON"))?;
    let claims = claims.as_object().ok_or(AccessError::MalformedToken("the JWT payload is not a JSON object"))?;
    let expires_at = match claims.get("exp") {
        None | Some(serde_json::Value::Null) => None,
        Some(exp) => {
            let secs = exp
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e12)
                .ok_or(AccessError::MalformedToken("the JWT exp claim is not a time"))?;
            Some(UNIX_EPOCH + Duration::from_secs_f64(secs))
        }
    };
    let subject = match claims.get("sub") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(sub)) => Some(sub.clone()),
        Some(_) => return Err(AccessError::MalformedToken("the JWT sub claim is not a string")),
    };
    Ok((expires_at, subject))
}

impl fmt::Debug for FileAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileAccessToken")
            .field("secret", &"<redacted>")
            .field("subject", &self.subject)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl fmt::Display for FileAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Told when a [`TokenSource`]'s token changes (login, re-login, logout), so caches scoped by the
/// old principal can be purged.
pub trait TokenListener: Send + Sync {
    /// The token went from `old` to `new`.
    fn token_changed(&self, old: Option<&FileAccessToken>, new: Option<&FileAccessToken>);
}

/// A token lent by [`TokenSource::peek`]: read it, do not keep it (a lock may be held).
pub struct TokenRef<'a>(Lent<'a>);

enum Lent<'a> {
    Borrowed(&'a FileAccessToken),
    Locked(RwLockReadGuard<'a, Option<Arc<FileAccessToken>>>),
    Owned(Arc<FileAccessToken>),
}

impl std::ops::Deref for TokenRef<'_> {
    type Target = FileAccessToken;

    fn deref(&self) -> &FileAccessToken {
        match &self.0 {
            Lent::Borrowed(token) => token,
            // Proven invariant: `LoginCell::peek` builds this only from a guard over `Some`, and
            // the read guard it holds keeps every writer out until it is dropped.
            #[allow(clippy::expect_used)]
            Lent::Locked(guard) => guard.as_deref().expect("peek lends a guard only over a token"),
            Lent::Owned(token) => token,
        }
    }
}

impl fmt::Debug for TokenRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Where the current file access token comes from.
///
/// `current` is the synchronous hot path; `refresh` is called after the media server refused
/// `stale`, and must be single-flight (one renewal for any number of callers that saw `stale`)
/// and skip the renewal when `stale` is no longer the current token.
#[async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// The current token, if there is one.
    fn current(&self) -> Option<Arc<FileAccessToken>>;

    /// The current token, lent rather than cloned: cache hits need only its scope, and an `Arc`
    /// clone is a locked add on a line every thread shares. Default: through
    /// [`current`](Self::current).
    fn peek(&self) -> Option<TokenRef<'_>> {
        self.current().map(|token| TokenRef(Lent::Owned(token)))
    }

    /// The current token, waiting for one to be fetched if the source can do that.
    async fn token(&self) -> Result<Arc<FileAccessToken>, AccessError> {
        self.current().ok_or(AccessError::NotLoggedIn)
    }

    /// `stale` was refused: answer a newer token, renewing it if `stale` is still current.
    async fn refresh(&self, stale: &Arc<FileAccessToken>) -> Result<Arc<FileAccessToken>, AccessError>;

    /// Registers a listener for token changes. Sources whose token never changes ignore it.
    fn subscribe(&self, listener: Weak<dyn TokenListener>) {
        let _ = listener;
    }
}

#[async_trait]
impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn current(&self) -> Option<Arc<FileAccessToken>> {
        (**self).current()
    }
    fn peek(&self) -> Option<TokenRef<'_>> {
        (**self).peek()
    }
    async fn token(&self) -> Result<Arc<FileAccessToken>, AccessError> {
        (**self).token().await
    }
    async fn refresh(&self, stale: &Arc<FileAccessToken>) -> Result<Arc<FileAccessToken>, AccessError> {
        (**self).refresh(stale).await
    }
    fn subscribe(&self, listener: Weak<dyn TokenListener>) {
        (**self).subscribe(listener)
    }
}

/// A token that never changes (a service account, a test). A refusal cannot be repaired.
#[derive(Debug, Clone)]
pub struct StaticToken(Arc<FileAccessToken>);

impl StaticToken {
    /// Wraps a token.
    pub fn new(token: FileAccessToken) -> Self {
        Self(Arc::new(token))
    }

    /// Parses and wraps a token.
    pub fn parse(secret: impl Into<String>) -> Result<Self, AccessError> {
        FileAccessToken::new(secret).map(Self::new)
    }
}

#[async_trait]
impl TokenSource for StaticToken {
    fn current(&self) -> Option<Arc<FileAccessToken>> {
        Some(self.0.clone())
    }

    fn peek(&self) -> Option<TokenRef<'_>> {
        Some(TokenRef(Lent::Borrowed(&self.0)))
    }

    async fn refresh(&self, stale: &Arc<FileAccessToken>) -> Result<Arc<FileAccessToken>, AccessError> {
        if Arc::ptr_eq(stale, &self.0) {
            Err(AccessError::RefreshFailed("a static token cannot be renewed".into()))
        } else {
            Ok(self.0.clone())
        }
    }
}

type Relogin = Arc<dyn Fn() -> BoxFuture<'static, Result<FileAccessToken, AccessError>> + Send + Sync>;
type Flight = Shared<BoxFuture<'static, Result<Arc<FileAccessToken>, AccessError>>>;

/// The token as the app's login sets it: the SDK's behaviour. The app calls [`set`](Self::set)
/// after login and re-login and [`clear`](Self::clear) on logout. With a
/// [`relogin`](Self::with_relogin) hook, a refused token is renewed once for all waiting requests.
///
/// ```
/// # futures::executor::block_on(async {
/// use std::sync::Arc;
/// use secure_media_core::{FileAccessToken, LoginCell, TokenSource};
///
/// let cell = LoginCell::with_relogin(|| async { FileAccessToken::new("fresh") });
/// assert!(cell.current().is_none());
/// let stale = cell.set(FileAccessToken::new("first").unwrap());
/// let fresh = cell.refresh(&stale).await.unwrap();
/// assert_eq!(fresh.expose_secret(), "fresh");
/// assert!(Arc::ptr_eq(&cell.current().unwrap(), &fresh));
/// # });
/// ```
#[derive(Default)]
pub struct LoginCell {
    token: RwLock<Option<Arc<FileAccessToken>>>,
    relogin: Option<Relogin>,
    flight: Mutex<Option<Flight>>,
    listeners: Mutex<Vec<Weak<dyn TokenListener>>>,
}

impl LoginCell {
    /// An empty cell without a relogin hook: a refused token stays refused until the app sets a new one.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cell that renews a refused token by calling `relogin` (single-flight).
    pub fn with_relogin<F, Fut>(relogin: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<FileAccessToken, AccessError>> + Send + 'static,
    {
        Self { relogin: Some(Arc::new(move || relogin().boxed())), ..Self::default() }
    }

    /// Sets the token after a login or re-login; answers it as shared.
    pub fn set(&self, token: FileAccessToken) -> Arc<FileAccessToken> {
        let token = Arc::new(token);
        self.install(Some(token.clone()));
        token
    }

    /// Forgets the token (logout). Caches scoped by its principal are purged.
    pub fn clear(&self) {
        self.install(None);
    }

    fn install(&self, new: Option<Arc<FileAccessToken>>) {
        let old = {
            let mut slot = self.token.write().unwrap_or_else(PoisonError::into_inner);
            let same = match (&*slot, &new) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if same {
                return;
            }
            std::mem::replace(&mut *slot, new.clone())
        };
        // Listeners run outside the lock: they may read the cell.
        let listeners: Vec<_> = {
            let mut list = self.listeners.lock().unwrap_or_else(PoisonError::into_inner);
            list.retain(|l| l.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        tracing::debug!(
            changed_principal = old.as_ref().map(|t| t.principal()) != new.as_ref().map(|t| t.principal()),
            "file access token replaced"
        );
        for listener in listeners {
            listener.token_changed(old.as_deref(), new.as_deref());
        }
    }
}

#[async_trait]
impl TokenSource for LoginCell {
    fn current(&self) -> Option<Arc<FileAccessToken>> {
        self.token.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn peek(&self) -> Option<TokenRef<'_>> {
        let guard = self.token.read().unwrap_or_else(PoisonError::into_inner);
        guard.is_some().then(|| TokenRef(Lent::Locked(guard)))
    }

    async fn refresh(&self, stale: &Arc<FileAccessToken>) -> Result<Arc<FileAccessToken>, AccessError> {
        if let Some(current) = self.current() {
            if !Arc::ptr_eq(&current, stale) {
                return Ok(current);
            }
        }
        let Some(relogin) = self.relogin.clone() else {
            return Err(AccessError::RefreshFailed("the token was refused: log in again".into()));
        };
        let flight = {
            let mut slot = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
            match &*slot {
                Some(flight) => flight.clone(),
                None => {
                    tracing::info!("file access token refused: logging in again");
                    let flight = async move { relogin().await.map(Arc::new) }.boxed().shared();
                    *slot = Some(flight.clone());
                    flight
                }
            }
        };
        let outcome = flight.clone().await;
        {
            let mut slot = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.as_ref().is_some_and(|f| f.ptr_eq(&flight)) {
                *slot = None;
            }
        }
        let fresh = outcome?;
        self.install(Some(fresh.clone()));
        Ok(fresh)
    }

    fn subscribe(&self, listener: Weak<dyn TokenListener>) {
        self.listeners.lock().unwrap_or_else(PoisonError::into_inner).push(listener);
    }
}

impl fmt::Debug for LoginCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginCell").field("token", &self.current()).field("relogin", &self.relogin.is_some()).finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// An unsigned JWT with the given claims (tests only).
    pub(crate) fn jwt(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", b64(r#"{"alg":"HS256","typ":"JWT"}"#), b64(claims))
    }

    #[test]
    fn jwt_claims_are_read() {
        let token = FileAccessToken::new(jwt(r#"{"sub":"alice","exp":2000000000}"#)).unwrap();
        assert_eq!(token.subject(), Some("alice"));
        assert_eq!(token.expires_at(), Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000)));
        assert_eq!(token.principal(), "sub:alice");
    }

    #[test]
    fn expired_jwt_is_not_valid_but_skew_is_allowed() {
        let token = FileAccessToken::new(jwt(r#"{"exp":1000}"#)).unwrap();
        let exp = UNIX_EPOCH + Duration::from_secs(1000);
        assert!(token.is_valid_at(exp - Duration::from_secs(1)));
        assert!(token.is_valid_at(exp + Duration::from_secs(2)));
        assert!(!token.is_valid_at(exp + CLOCK_SKEW_ALLOWANCE));
        assert!(!token.is_valid_at(exp + Duration::from_secs(3600)));
    }

    #[test]
    fn malformed_jwts_are_clear_errors() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        for bad in [
            "a.b".to_string(),
            "a.b.c.d".to_string(),
            ".x.y".to_string(),
            "h.!!!.s".to_string(),
            format!("h.{}.s", b64("not json")),
            format!("h.{}.s", b64("[1,2]")),
            format!("h.{}.s", b64(r#"{"exp":"tomorrow"}"#)),
            format!("h.{}.s", b64(r#"{"sub":42}"#)),
        ] {
            let err = FileAccessToken::new(bad.clone()).unwrap_err();
            assert!(matches!(err, AccessError::MalformedToken(_)), "{bad}: {err:?}");
            assert!(!err.to_string().contains(&bad), "error leaks the token");
        }
    }

    #[test]
    fn opaque_tokens_have_no_expiry_and_a_digest_principal() {
        let token = FileAccessToken::new("s3cr3t-opaque").unwrap();
        assert_eq!(token.expires_at(), None);
        assert!(token.is_valid_at(SystemTime::now()));
        assert!(token.principal().starts_with("fat:"));
        assert!(!token.principal().contains("s3cr3t"));
        assert_eq!(token.principal(), FileAccessToken::new("s3cr3t-opaque").unwrap().principal());
    }

    #[test]
    fn unusable_characters_are_refused() {
        for bad in ["", "has space", "new\nline", "tab\t", "ünï"] {
            assert!(FileAccessToken::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_secret_never_prints() {
        let secret = jwt(r#"{"sub":"bob","exp":2000000000}"#);
        let token = FileAccessToken::new(secret.clone()).unwrap();
        let signature = secret.rsplit('.').next().unwrap();
        for shown in [format!("{token}"), format!("{token:?}"), format!("{token:#?}")] {
            assert!(!shown.contains(&secret) && !shown.contains(signature), "{shown}");
        }
        let header = token.header_value("Bearer").unwrap();
        assert!(header.is_sensitive());
        assert!(!format!("{header:?}").contains(signature));
    }

    #[test]
    fn query_value_is_form_encoded_once() {
        let token = FileAccessToken::new("a+b/c=").unwrap();
        assert_eq!(token.query_param().encoded(), "a%2Bb%2Fc%3D");
        assert_eq!(token.query_param().raw(), "a+b/c=");
    }

    #[test]
    fn header_value_is_built_once_per_scheme() {
        let token = FileAccessToken::new("tok").unwrap();
        assert_eq!(token.header_value("Bearer").unwrap(), "Bearer tok");
        assert_eq!(token.header_value("").unwrap(), "tok");
        assert_eq!(token.header_value("Bearer").unwrap(), "Bearer tok");
        assert!(token.header_value("bad\nscheme").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hundred_concurrent_refusals_make_one_refresh() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let cell = Arc::new(LoginCell::with_relogin(move || {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                FileAccessToken::new(format!("fresh-{n}"))
            }
        }));
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (cell, stale) = (cell.clone(), stale.clone());
                tokio::spawn(async move { cell.refresh(&stale).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().expose_secret(), "fresh-0");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A late caller that saw the stale token gets the fresh one without another login.
        assert_eq!(cell.refresh(&stale).await.unwrap().expose_secret(), "fresh-0");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refresh_is_skipped_when_the_stale_token_is_no_longer_current() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let cell = LoginCell::with_relogin(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { FileAccessToken::new("relogin") }
        });
        let stale = cell.set(FileAccessToken::new("one").unwrap());
        cell.set(FileAccessToken::new("two").unwrap());
        assert_eq!(cell.refresh(&stale).await.unwrap().expose_secret(), "two");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn peek_lends_the_current_token_from_every_source() {
        let cell = LoginCell::new();
        assert!(cell.peek().is_none());
        cell.set(FileAccessToken::new("one").unwrap());
        assert_eq!(cell.peek().unwrap().expose_secret(), "one");
        let fixed = StaticToken::parse("two").unwrap();
        assert_eq!(fixed.peek().unwrap().expose_secret(), "two");
        let shared: Arc<dyn TokenSource> = Arc::new(fixed);
        assert_eq!(shared.peek().unwrap().expose_secret(), "two");
        assert_eq!(format!("{:?}", shared.peek().unwrap()), format!("{:?}", shared.current().unwrap()));
        // A source that only answers `current` is lent a clone.
        struct Plain(Arc<FileAccessToken>);
        #[async_trait]
        impl TokenSource for Plain {
            fn current(&self) -> Option<Arc<FileAccessToken>> {
                Some(self.0.clone())
            }
            async fn refresh(&self, stale: &Arc<FileAccessToken>) -> Result<Arc<FileAccessToken>, AccessError> {
                Ok(stale.clone())
            }
        }
        assert_eq!(Plain(Arc::new(FileAccessToken::new("three").unwrap())).peek().unwrap().expose_secret(), "three");
    }

    #[tokio::test]
    async fn without_relogin_a_refusal_asks_to_log_in() {
        let cell = LoginCell::new();
        let stale = cell.set(FileAccessToken::new("one").unwrap());
        assert!(matches!(cell.refresh(&stale).await, Err(AccessError::RefreshFailed(_))));
        let fixed = StaticToken::parse("x").unwrap();
        assert!(fixed.refresh(&fixed.current().unwrap()).await.is_err());
    }

    #[test]
    fn listeners_hear_login_and_logout() {
        struct Recorder(Mutex<Vec<(Option<String>, Option<String>)>>);
        impl TokenListener for Recorder {
            fn token_changed(&self, old: Option<&FileAccessToken>, new: Option<&FileAccessToken>) {
                let p = |t: Option<&FileAccessToken>| t.map(|t| t.principal().to_owned());
                self.0.lock().unwrap().push((p(old), p(new)));
            }
        }
        let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
        let cell = LoginCell::new();
        let weak: Weak<dyn TokenListener> = Arc::downgrade(&recorder) as Weak<dyn TokenListener>;
        cell.subscribe(weak);
        cell.set(FileAccessToken::new(jwt(r#"{"sub":"a"}"#)).unwrap());
        cell.clear();
        cell.clear();
        let seen = recorder.0.lock().unwrap().clone();
        assert_eq!(seen, vec![(None, Some("sub:a".into())), (Some("sub:a".into()), None)]);
    }
}
