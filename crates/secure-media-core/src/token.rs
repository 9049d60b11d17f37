//! [`FileAccessToken`] (the secret) and [`TokenSource`] (where the current one comes from):
//! [`StaticToken`] and the app-fed [`LoginCell`].

use std::fmt;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use futures::future::{BoxFuture, FutureExt, Shared};
use http::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use crate::{AccessError, Clock, ParamValue, SharedHeaders, SystemClock};

/// How far past its `exp` a token still counts as valid, for clocks that disagree a little.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5);

const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Keeps the opaque-token digest apart from any other SHA-256 of the token. Changing it changes
/// every principal (and every shared cache key): bump the version when it must.
const OPAQUE_PRINCIPAL_DOMAIN: &[u8] = b"secure-media/opaque-token-principal/v1\0";
/// The same for a token's own scope ([`FileAccessToken::own_scope`]).
const OWN_SCOPE_DOMAIN: &[u8] = b"secure-media/presigned/token-scope/v1\0";

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
    principal: Arc<str>,
    /// `tok:<digest>`: the scope of a token whose claims no server has accepted yet.
    own_scope: Arc<str>,
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
        // Scope an opaque token (or an unverified claim) by a one-way digest of the token, never
        // by the token itself.
        let principal = match &subject {
            Some(sub) => format!("sub:{sub}"),
            None => scoped_digest("fat:", OPAQUE_PRINCIPAL_DOMAIN, &secret),
        };
        let own_scope = scoped_digest("tok:", OWN_SCOPE_DOMAIN, &secret);
        Ok(Self {
            secret: ParamValue::new(secret),
            expires_at,
            subject: subject.map(String::into_boxed_str),
            principal: principal.into(),
            own_scope: own_scope.into(),
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
    ///
    /// The digest is the first 16 bytes, in lower-case hex, of SHA-256 over the fixed prefix
    /// `secure-media/opaque-token-principal/v1\0` followed by the token: one-way, and stable
    /// across processes, machines and Rust releases, so a cache shared through Redis keys alike.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// [`principal`](Self::principal), shared: a scope handed out per request costs a
    /// reference count, not a copy.
    pub(crate) fn principal_shared(&self) -> &Arc<str> {
        &self.principal
    }

    /// The app vouches for this exact token (it came from the app's own login answer): from now
    /// on its claims may scope caches ([`cache_scope`](Self::cache_scope)). Without it, a token's
    /// claims count only once a presign endpoint accepted it.
    pub fn mark_verified(&self) {
        self.verified.store(true, Ordering::Relaxed);
    }

    /// Has a secure server accepted this token?
    pub fn is_verified(&self) -> bool {
        self.verified.load(Ordering::Relaxed)
    }

    /// The scope for cache keys: the [`principal`](Self::principal) of a token without claims
    /// (already a digest) or of one a server accepted, else the token's [own
    /// scope](Self::own_scope). So a forged token whose unverified payload says `sub: alice` never
    /// reaches alice's cached media.
    pub fn cache_scope(&self) -> &Arc<str> {
        if self.subject.is_none() || self.is_verified() {
            &self.principal
        } else {
            &self.own_scope
        }
    }

    /// `tok:` and a digest of the whole token: the scope only holders of this very token share,
    /// here or in another process, while its claims are unproven. The first 16 bytes, in hex, of
    /// SHA-256 over `secure-media/presigned/token-scope/v1\0` and the token: one-way, computed
    /// once per token, the same in every process.
    pub fn own_scope(&self) -> &Arc<str> {
        &self.own_scope
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

/// `prefix` and the first 16 bytes of SHA-256 over a domain-separation prefix and the token, in
/// hex: the same in every process and Rust release, since shared caches (Redis) key by it.
fn scoped_digest(prefix: &str, domain: &[u8], secret: &str) -> String {
    let digest = Sha256::new().chain_update(domain).chain_update(secret.as_bytes()).finalize();
    let mut scope = String::with_capacity(prefix.len() + 32);
    scope.push_str(prefix);
    for byte in &digest[..16] {
        let _ = write!(scope, "{byte:02x}");
    }
    scope
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
/// and skip the renewal when `stale` is no longer the current token. It may answer an error at
/// once instead of renewing: after a logout, or while it backs off from renewals that failed or
/// did not help (see [`LoginCell`]).
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
/// use secure_media_core::{AccessError, FileAccessToken, LoginCell, TokenSource};
///
/// let cell = LoginCell::with_relogin(|| async { FileAccessToken::new("fresh") });
/// assert!(cell.current().is_none());
/// let stale = cell.set(FileAccessToken::new("first").unwrap());
/// let fresh = cell.refresh(&stale).await.unwrap();
/// assert_eq!(fresh.expose_secret(), "fresh");
/// assert!(Arc::ptr_eq(&cell.current().unwrap(), &fresh));
/// // After logout a refusal never logs the user back in.
/// cell.clear();
/// assert_eq!(cell.refresh(&fresh).await.unwrap_err(), AccessError::NotLoggedIn);
/// # });
/// ```
///
/// Renewals are bounded by time, not by traffic:
/// - a failed relogin is remembered for a backoff (1 s, doubling with each failure in a row up to
///   60 s, jittered down to half of that): meanwhile `refresh` answers
///   [`AccessError::RefreshFailed`] at once, without calling the hook;
/// - a token that a relogin installed less than a quiet period ago (5 s) and that is refused
///   already is not renewed again: `refresh` answers [`AccessError::RefreshFailed`].
///
/// So a media server that refuses every token costs one relogin per quiet period, whatever the
/// number of requests. See [`with_renewal_backoff`](Self::with_renewal_backoff),
/// [`with_quiet_period`](Self::with_quiet_period) and [`with_clock`](Self::with_clock).
pub struct LoginCell {
    state: Arc<CellState>,
    relogin: Option<Relogin>,
    policy: RenewalPolicy,
    clock: Arc<dyn Clock>,
}

/// What a relogin in the air reaches through a `Weak`: the flight lives in the cell, so a strong
/// reference would keep the cell alive through a flight nobody polls.
#[derive(Default)]
struct CellState {
    token: RwLock<Option<Arc<FileAccessToken>>>,
    /// Taken before `token` by every writer, so a refresh sees the token, the flight and the
    /// generation change together.
    renewal: Mutex<Renewal>,
    listeners: Mutex<Vec<Weak<dyn TokenListener>>>,
}

#[derive(Default)]
struct Renewal {
    /// Bumped by every change of token, so a relogin started before a logout or a login by the
    /// app can tell that its token is no longer wanted.
    generation: u64,
    /// The relogin in the air: the number that tells it apart from a later one, when it started.
    flight: Option<(u64, SystemTime, Flight)>,
    flights_started: u64,
    /// Failed relogins in a row.
    failures: u32,
    last_failure: Option<RenewalFailure>,
    /// The token the last successful relogin installed, and when.
    renewed: Option<(Weak<FileAccessToken>, SystemTime)>,
}

impl Renewal {
    /// A relogin failed (or was abandoned) at `now`: remembered, and backed off from.
    fn failed(&mut self, error: AccessError, now: SystemTime, policy: RenewalPolicy) {
        self.failures = self.failures.saturating_add(1);
        let wait = policy.backoff(self.failures);
        tracing::warn!(
            %error,
            failures = self.failures,
            backoff_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "logging in again failed: backing off"
        );
        self.last_failure = Some(RenewalFailure { at: now, wait, error });
    }
}

struct RenewalFailure {
    at: SystemTime,
    wait: Duration,
    error: AccessError,
}

#[derive(Debug, Clone, Copy)]
struct RenewalPolicy {
    backoff_first: Duration,
    backoff_max: Duration,
    quiet: Duration,
    relogin_timeout: Duration,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            quiet: Duration::from_secs(5),
            relogin_timeout: Duration::from_secs(30),
        }
    }
}

impl RenewalPolicy {
    /// The wait after `failures` failed relogins in a row: `first · 2^(failures - 1)`, at most
    /// `max`, jittered down to as little as half so that clients that failed together do not
    /// come back together.
    fn backoff(&self, failures: u32) -> Duration {
        let doubling = 2u32.checked_pow(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        let wait = self.backoff_first.saturating_mul(doubling).min(self.backoff_max);
        let factor = 0.5 + fastrand::f64() / 2.0;
        Duration::try_from_secs_f64(wait.as_secs_f64() * factor).map_or(wait, |jittered| jittered.min(wait))
    }
}

/// How long since `mark`; a clock that went back ends a wait rather than stretching it.
fn elapsed_since(now: SystemTime, mark: SystemTime) -> Duration {
    now.duration_since(mark).unwrap_or(Duration::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

enum NextStep {
    Wait(Flight),
    Answer(Result<Arc<FileAccessToken>, AccessError>),
}

type Change = (Option<Arc<FileAccessToken>>, Option<Arc<FileAccessToken>>);

impl CellState {
    fn current(&self) -> Option<Arc<FileAccessToken>> {
        self.token.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Puts `new` in place under the renewal lock the caller holds; answers the change for
    /// [`notify`](Self::notify), to be called once that lock is released.
    fn swap(&self, renewal: &mut Renewal, new: Option<Arc<FileAccessToken>>) -> Option<Change> {
        let mut slot = self.token.write().unwrap_or_else(PoisonError::into_inner);
        let same = match (&*slot, &new) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same {
            return None;
        }
        renewal.generation = renewal.generation.wrapping_add(1);
        let old = std::mem::replace(&mut *slot, new.clone());
        Some((old, new))
    }

    /// Tells the listeners, outside every lock: they may read the cell.
    fn notify(&self, (old, new): Change) {
        let listeners: Vec<_> = {
            let mut list = lock(&self.listeners);
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

    /// The end of relogin `id`, inside its flight: taking the flight down and installing its token
    /// are one step under the renewal lock, so no caller can start a second relogin in between.
    fn finish(
        &self,
        id: u64,
        generation: u64,
        outcome: Result<FileAccessToken, AccessError>,
        now: SystemTime,
        policy: RenewalPolicy,
    ) -> Result<Arc<FileAccessToken>, AccessError> {
        let (answer, change) = {
            let mut renewal = lock(&self.renewal);
            if renewal.flight.as_ref().is_some_and(|(flight, _, _)| *flight == id) {
                renewal.flight = None;
            }
            if renewal.generation != generation {
                // The app logged out (or in) while this relogin was in the air: its choice stands.
                tracing::info!("the user logged out or in during a relogin: its token is dropped");
                return self.current().ok_or(AccessError::NotLoggedIn);
            }
            match outcome {
                Ok(token) => {
                    let fresh = Arc::new(token);
                    let change = self.swap(&mut renewal, Some(fresh.clone()));
                    renewal.failures = 0;
                    renewal.last_failure = None;
                    renewal.renewed = Some((Arc::downgrade(&fresh), now));
                    (Ok(fresh), change)
                }
                Err(error) => {
                    renewal.failed(error.clone(), now, policy);
                    (Err(error), None)
                }
            }
        };
        if let Some(change) = change {
            self.notify(change);
        }
        answer
    }
}

impl Default for LoginCell {
    fn default() -> Self {
        Self { state: Arc::default(), relogin: None, policy: RenewalPolicy::default(), clock: Arc::new(SystemClock) }
    }
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

    /// Uses another clock for the renewal backoff and quiet period (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long a failed relogin is remembered: `first` after one failure, twice as long after
    /// each further failure in a row, never more than `max`; each wait is jittered down to as
    /// little as half. Default: 1 s up to 60 s. `Duration::ZERO` turns the backoff off.
    pub fn with_renewal_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.policy.backoff_first = first.min(max);
        self.policy.backoff_max = max;
        self
    }

    /// How long after a relogin a refusal of the token it installed is answered with an error
    /// instead of another relogin (a server that refuses every token would otherwise be asked
    /// for a new one by every request). Default: 5 s. `Duration::ZERO` turns it off.
    pub fn with_quiet_period(mut self, quiet: Duration) -> Self {
        self.policy.quiet = quiet;
        self
    }

    /// How long a relogin may take before later refusals stop waiting for it: it counts as a
    /// failed one (backed off from) and the next renewal may start. Default: 30 s. Give the hook
    /// its own timeout too: callers already waiting for it wait as long as it does.
    pub fn with_relogin_timeout(mut self, timeout: Duration) -> Self {
        self.policy.relogin_timeout = timeout;
        self
    }

    /// Sets the token after a login or re-login; answers it as shared.
    pub fn set(&self, token: FileAccessToken) -> Arc<FileAccessToken> {
        let token = Arc::new(token);
        self.replace(Some(token.clone()));
        token
    }

    /// Forgets the token (logout). Caches scoped by its principal are purged, and a relogin in
    /// the air when this is called installs nothing.
    pub fn clear(&self) {
        self.replace(None);
    }

    /// A login or logout by the app.
    fn replace(&self, new: Option<Arc<FileAccessToken>>) {
        let change = {
            let mut renewal = lock(&self.state.renewal);
            let change = self.state.swap(&mut renewal, new);
            if change.is_some() {
                // A relogin in the air renews a token that is gone (its waiters get this one),
                // and what failed relogins taught does not apply to the app's own login.
                renewal.flight = None;
                renewal.failures = 0;
                renewal.last_failure = None;
            }
            change
        };
        if let Some(change) = change {
            self.state.notify(change);
        }
    }

    /// The relogin to wait for (joined or started), or the answer when none may start.
    fn next_step(&self, stale: &Arc<FileAccessToken>) -> NextStep {
        let mut renewal = lock(&self.state.renewal);
        match self.state.current() {
            None => return NextStep::Answer(Err(AccessError::NotLoggedIn)),
            Some(current) if !Arc::ptr_eq(&current, stale) => return NextStep::Answer(Ok(current)),
            Some(_) => {}
        }
        let now = self.clock.now();
        if let Some((_, started, flight)) = &renewal.flight {
            if elapsed_since(now, *started) < self.policy.relogin_timeout {
                return NextStep::Wait(flight.clone());
            }
            // A relogin that never ends must not hold every later renewal: it counts as failed
            // (and is backed off from); should it end after all, its token is still installed.
            renewal.flight = None;
            let error = AccessError::RefreshFailed(format!(
                "logging in again did not finish within {} s",
                self.policy.relogin_timeout.as_secs_f64()
            ));
            renewal.failed(error.clone(), now, self.policy);
            return NextStep::Answer(Err(error));
        }
        let Some(relogin) = self.relogin.clone() else {
            return NextStep::Answer(Err(AccessError::RefreshFailed("the token was refused: log in again".into())));
        };
        if let Some((renewed, at)) = &renewal.renewed {
            let since = elapsed_since(now, *at);
            if std::ptr::eq(renewed.as_ptr(), Arc::as_ptr(stale)) && since < self.policy.quiet {
                return NextStep::Answer(Err(AccessError::RefreshFailed(format!(
                    "the token a relogin installed {:.1} s ago was refused too: not logging in again for {:.1} s",
                    since.as_secs_f64(),
                    (self.policy.quiet - since).as_secs_f64()
                ))));
            }
        }
        if let Some(failure) = &renewal.last_failure {
            let since = elapsed_since(now, failure.at);
            if since < failure.wait {
                return NextStep::Answer(Err(AccessError::RefreshFailed(format!(
                    "logging in again failed {} time(s) in a row ({}): backing off for {:.1} s",
                    renewal.failures,
                    failure.error,
                    (failure.wait - since).as_secs_f64()
                ))));
            }
        }
        tracing::info!("file access token refused: logging in again");
        renewal.flights_started = renewal.flights_started.wrapping_add(1);
        let (id, generation) = (renewal.flights_started, renewal.generation);
        let state = Arc::downgrade(&self.state);
        let (clock, policy) = (self.clock.clone(), self.policy);
        let flight = async move {
            let outcome = relogin().await;
            match state.upgrade() {
                Some(state) => state.finish(id, generation, outcome, clock.now(), policy),
                None => Err(AccessError::NotLoggedIn),
            }
        }
        .boxed()
        .shared();
        renewal.flight = Some((id, now, flight.clone()));
        NextStep::Wait(flight)
    }
}

#[async_trait]
impl TokenSource for LoginCell {
    fn current(&self) -> Option<Arc<FileAccessToken>> {
        self.state.current()
    }

    fn peek(&self) -> Option<TokenRef<'_>> {
        let guard = self.state.token.read().unwrap_or_else(PoisonError::into_inner);
        guard.is_some().then(|| TokenRef(Lent::Locked(guard)))
    }

    /// Answers the current token when `stale` is no longer it; [`AccessError::NotLoggedIn`] after
    /// a logout (never logging back in); otherwise joins or starts the one relogin, unless a
    /// failed one is being backed off from or `stale` was installed by a relogin within the quiet
    /// period ([`AccessError::RefreshFailed`], at once).
    async fn refresh(&self, stale: &Arc<FileAccessToken>) -> Result<Arc<FileAccessToken>, AccessError> {
        match self.next_step(stale) {
            NextStep::Wait(flight) => flight.await,
            NextStep::Answer(answer) => answer,
        }
    }

    fn subscribe(&self, listener: Weak<dyn TokenListener>) {
        lock(&self.state.listeners).push(listener);
    }
}

impl fmt::Debug for LoginCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginCell")
            .field("token", &self.current())
            .field("relogin", &self.relogin.is_some())
            .field("renewal_failures", &lock(&self.state.renewal).failures)
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ManualClock;
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

    /// Records each token change as (old principal, new principal).
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(Option<String>, Option<String>)>>);

    impl TokenListener for Recorder {
        fn token_changed(&self, old: Option<&FileAccessToken>, new: Option<&FileAccessToken>) {
            let p = |t: Option<&FileAccessToken>| t.map(|t| t.principal().to_owned());
            self.0.lock().unwrap().push((p(old), p(new)));
        }
    }

    impl Recorder {
        fn attach(cell: &LoginCell) -> Arc<Self> {
            let recorder = Arc::new(Self::default());
            cell.subscribe(Arc::downgrade(&recorder) as Weak<dyn TokenListener>);
            recorder
        }

        fn seen(&self) -> Vec<(Option<String>, Option<String>)> {
            self.0.lock().unwrap().clone()
        }
    }

    #[test]
    fn listeners_hear_login_and_logout() {
        let cell = LoginCell::new();
        let recorder = Recorder::attach(&cell);
        cell.set(FileAccessToken::new(jwt(r#"{"sub":"a"}"#)).unwrap());
        cell.clear();
        cell.clear();
        assert_eq!(recorder.seen(), vec![(None, Some("sub:a".into())), (Some("sub:a".into()), None)]);
    }

    #[test]
    fn opaque_principal_is_a_pinned_sha256_digest() {
        // Shared caches (Redis) key by it: it must not change with the process or the Rust release.
        let token = FileAccessToken::new("s3cr3t-opaque").unwrap();
        assert_eq!(token.principal(), "fat:b3b15991fed4122a4cca061cadc4a376");
        assert_ne!(FileAccessToken::new("s3cr3t-opaquf").unwrap().principal(), token.principal());
    }

    pub(crate) fn start() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000_000)))
    }

    /// A relogin hook that counts its calls and answers `fresh-<n>`, or a 503 while `failing`.
    #[derive(Default)]
    pub(crate) struct Hook {
        calls: AtomicUsize,
        failing: AtomicBool,
    }

    impl Hook {
        pub(crate) fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        pub(crate) fn fail(&self, failing: bool) {
            self.failing.store(failing, Ordering::SeqCst);
        }
    }

    pub(crate) fn cell_with_hook(clock: &Arc<ManualClock>) -> (LoginCell, Arc<Hook>) {
        let hook = Arc::new(Hook::default());
        let counter = hook.clone();
        let cell = LoginCell::with_relogin(move || {
            let n = counter.calls.fetch_add(1, Ordering::SeqCst);
            let failing = counter.failing.load(Ordering::SeqCst);
            async move {
                if failing {
                    Err(AccessError::RefreshFailed("the login endpoint answered 503".into()))
                } else {
                    FileAccessToken::new(format!("fresh-{n}"))
                }
            }
        })
        .with_clock(clock.clone());
        (cell, hook)
    }

    /// A relogin hook that counts its calls, says when it started and waits to be released.
    #[derive(Default)]
    struct Paused {
        calls: AtomicUsize,
        started: tokio::sync::Notify,
        release: tokio::sync::Notify,
    }

    fn paused_cell() -> (Arc<LoginCell>, Arc<Paused>) {
        let hook = Arc::new(Paused::default());
        let paused = hook.clone();
        let cell = LoginCell::with_relogin(move || {
            let paused = paused.clone();
            async move {
                let n = paused.calls.fetch_add(1, Ordering::SeqCst);
                paused.started.notify_one();
                paused.release.notified().await;
                FileAccessToken::new(format!("fresh-{n}"))
            }
        });
        (Arc::new(cell), hook)
    }

    fn is_refresh_failed_saying(answer: &Result<Arc<FileAccessToken>, AccessError>, words: &str) -> bool {
        matches!(answer, Err(AccessError::RefreshFailed(message)) if message.contains(words))
    }

    #[tokio::test]
    async fn refresh_after_logout_answers_not_logged_in_and_never_logs_in() {
        let (cell, hook) = cell_with_hook(&start());
        let stale = cell.set(FileAccessToken::new("before-logout").unwrap());
        cell.clear();
        assert_eq!(cell.refresh(&stale).await.unwrap_err(), AccessError::NotLoggedIn);
        assert_eq!(hook.calls(), 0);
        assert!(cell.current().is_none());
    }

    #[tokio::test]
    async fn a_relogin_that_finishes_after_logout_installs_nothing() {
        let (cell, hook) = paused_cell();
        let recorder = Recorder::attach(&cell);
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        let waiter = tokio::spawn({
            let (cell, stale) = (cell.clone(), stale.clone());
            async move { cell.refresh(&stale).await }
        });
        hook.started.notified().await;
        cell.clear();
        hook.release.notify_one();
        assert_eq!(waiter.await.unwrap().unwrap_err(), AccessError::NotLoggedIn);
        assert!(cell.current().is_none());
        let principal = Some(stale.principal().to_owned());
        assert_eq!(recorder.seen(), vec![(None, principal.clone()), (principal, None)], "only login and logout");
        // Nor does a later refusal of the old token log in.
        assert_eq!(cell.refresh(&stale).await.unwrap_err(), AccessError::NotLoggedIn);
        assert_eq!(hook.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_relogin_that_finishes_after_the_app_logged_in_keeps_the_apps_token() {
        let (cell, hook) = paused_cell();
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        let waiter = tokio::spawn({
            let (cell, stale) = (cell.clone(), stale.clone());
            async move { cell.refresh(&stale).await }
        });
        hook.started.notified().await;
        let app = cell.set(FileAccessToken::new("app-login").unwrap());
        hook.release.notify_one();
        assert!(Arc::ptr_eq(&waiter.await.unwrap().unwrap(), &app));
        assert!(Arc::ptr_eq(&cell.current().unwrap(), &app));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_relogin_never_starts_while_one_is_being_installed() {
        // Callers that joined the relogin and latecomers that still saw the stale token race with
        // its install on two threads: every round makes exactly one relogin.
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let cell = Arc::new(
            LoginCell::with_relogin(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::task::yield_now().await;
                    FileAccessToken::new(format!("fresh-{n}"))
                }
            })
            .with_quiet_period(Duration::ZERO),
        );
        cell.set(FileAccessToken::new("first").unwrap());
        for round in 1..=1_000 {
            let stale = cell.current().unwrap();
            let start = Arc::new(tokio::sync::Barrier::new(8));
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let (cell, stale, start) = (cell.clone(), stale.clone(), start.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        cell.refresh(&stale).await
                    })
                })
                .collect();
            let mut fresh = Vec::new();
            for task in tasks {
                fresh.push(task.await.unwrap().unwrap());
            }
            assert_eq!(calls.load(Ordering::SeqCst), round, "round {round}: a second relogin started");
            assert!(fresh.iter().all(|t| Arc::ptr_eq(t, &fresh[0]) && !Arc::ptr_eq(t, &stale)));
            assert!(Arc::ptr_eq(&cell.current().unwrap(), &fresh[0]));
        }
    }

    #[tokio::test]
    async fn a_failed_relogin_is_not_retried_until_its_backoff_has_passed() {
        let clock = start();
        let (cell, hook) = cell_with_hook(&clock);
        hook.fail(true);
        let stale = cell.set(FileAccessToken::new("stale-secret").unwrap());
        assert!(is_refresh_failed_saying(&cell.refresh(&stale).await, "503"));
        assert_eq!(hook.calls(), 1);
        for _ in 0..100 {
            let answer = cell.refresh(&stale).await;
            assert!(is_refresh_failed_saying(&answer, "backing off"), "{answer:?}");
            assert!(!format!("{answer:?}").contains("stale-secret"));
        }
        assert_eq!(hook.calls(), 1, "answered at once, without the hook");
        // The first wait is at most 1 s.
        clock.advance(Duration::from_secs(1));
        assert!(is_refresh_failed_saying(&cell.refresh(&stale).await, "503"));
        assert_eq!(hook.calls(), 2);
    }

    #[tokio::test]
    async fn a_relogin_that_never_ends_holds_renewals_only_until_its_timeout() {
        let clock = start();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let cell = LoginCell::with_relogin(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<FileAccessToken, AccessError>>()
        })
        .with_clock(clock.clone());
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        // The first refusal starts the relogin and waits for it; a caller that gives up leaves it.
        assert!(futures::FutureExt::now_or_never(cell.refresh(&stale)).is_none());
        assert!(futures::FutureExt::now_or_never(cell.refresh(&stale)).is_none(), "joined, not a second one");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_secs(30));
        let answer = cell.refresh(&stale).await;
        assert!(is_refresh_failed_saying(&answer, "did not finish"), "{answer:?}");
        assert!(is_refresh_failed_saying(&cell.refresh(&stale).await, "backing off"));
        clock.advance(Duration::from_secs(1));
        assert!(futures::FutureExt::now_or_never(cell.refresh(&stale)).is_none(), "a new relogin starts");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_backoff_doubles_with_each_failure_in_a_row_up_to_its_cap() {
        let clock = start();
        let (cell, hook) = cell_with_hook(&clock);
        hook.fail(true);
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        cell.refresh(&stale).await.unwrap_err();
        // Each wait lies between half its target and its target: 1 s, 2 s, 4 s, ... capped at 60 s.
        let mut target = Duration::from_secs(1);
        for failures in 1..=10 {
            clock.advance(target / 2 - Duration::from_millis(1));
            assert!(is_refresh_failed_saying(&cell.refresh(&stale).await, "backing off"), "after {failures}");
            assert_eq!(hook.calls(), failures);
            clock.advance(target / 2 + Duration::from_millis(1));
            cell.refresh(&stale).await.unwrap_err();
            assert_eq!(hook.calls(), failures + 1);
            target = (target * 2).min(Duration::from_secs(60));
        }
    }

    #[tokio::test]
    async fn a_successful_relogin_resets_the_backoff() {
        let clock = start();
        let (cell, hook) = cell_with_hook(&clock);
        hook.fail(true);
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        for wait in [1, 2, 4] {
            cell.refresh(&stale).await.unwrap_err();
            clock.advance(Duration::from_secs(wait));
        }
        hook.fail(false);
        let fresh = cell.refresh(&stale).await.unwrap();
        assert_eq!((fresh.expose_secret(), hook.calls()), ("fresh-3", 4));
        // The renewed token is refused later and the login endpoint fails again: a new streak,
        // whose first wait is 1 s at most (the old streak's next would be 4 s at least).
        clock.advance(Duration::from_secs(5));
        hook.fail(true);
        cell.refresh(&fresh).await.unwrap_err();
        assert_eq!(hook.calls(), 5);
        clock.advance(Duration::from_secs(1));
        cell.refresh(&fresh).await.unwrap_err();
        assert_eq!(hook.calls(), 6);
    }

    #[tokio::test]
    async fn a_login_by_the_app_ends_the_backoff() {
        let clock = start();
        let (cell, hook) = cell_with_hook(&clock);
        hook.fail(true);
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        cell.refresh(&stale).await.unwrap_err();
        hook.fail(false);
        let app = cell.set(FileAccessToken::new("app-login").unwrap());
        assert_eq!(cell.refresh(&app).await.unwrap().expose_secret(), "fresh-1");
    }

    #[tokio::test]
    async fn a_token_refused_right_after_its_relogin_is_not_renewed_again() {
        let clock = start();
        let (cell, hook) = cell_with_hook(&clock);
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        let fresh = cell.refresh(&stale).await.unwrap();
        for _ in 0..100 {
            assert!(is_refresh_failed_saying(&cell.refresh(&fresh).await, "not logging in again"));
        }
        clock.advance(Duration::from_millis(4_999));
        assert!(is_refresh_failed_saying(&cell.refresh(&fresh).await, "not logging in again"));
        assert_eq!(hook.calls(), 1);
        // Once the quiet period (5 s) has passed, the refused token is renewed.
        clock.advance(Duration::from_millis(1));
        assert_eq!(cell.refresh(&fresh).await.unwrap().expose_secret(), "fresh-1");
        // A token the app set itself is renewed at once.
        let app = cell.set(FileAccessToken::new("app-login").unwrap());
        assert_eq!(cell.refresh(&app).await.unwrap().expose_secret(), "fresh-2");
    }

    #[tokio::test]
    async fn the_quiet_period_and_the_backoff_are_configurable() {
        let clock = start();
        let (cell, hook) = cell_with_hook(&clock);
        let cell = cell.with_quiet_period(Duration::ZERO).with_renewal_backoff(Duration::ZERO, Duration::ZERO);
        let first = cell.set(FileAccessToken::new("first").unwrap());
        let second = cell.refresh(&first).await.unwrap();
        cell.refresh(&second).await.unwrap();
        hook.fail(true);
        let current = cell.current().unwrap();
        cell.refresh(&current).await.unwrap_err();
        cell.refresh(&current).await.unwrap_err();
        assert_eq!(hook.calls(), 4);
    }
}
