//! [`FileAccessToken`]: the secret, which never prints, with what its JWT claims say (read, not
//! verified) and the scopes caches key by.

use std::fmt;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use crate::{AccessError, ConfigError, ParamValue, SharedHeaders};

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
    /// # Errors
    ///
    /// [`AccessError::MalformedToken`], saying why, when the token is empty, longer than 16 KiB,
    /// not printable ASCII (it must fit a header and a URL), or dotted like a JWT without being a
    /// readable one (three parts, a base64url JSON object as payload, an `exp` that is a time, a
    /// string `sub`). The message never holds the token.
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

    /// The secret as a query parameter value, raw and form-urlencoded.
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

    /// Its claims may name a scope without a server's word: it has none (its principal is a
    /// digest), or the app vouched for it.
    pub(crate) fn claims_trusted(&self) -> bool {
        self.subject.is_none() || self.is_verified()
    }

    /// The scope for cache keys: the [`principal`](Self::principal) of a token without claims
    /// (already a digest) or of one a server accepted, else the token's [own
    /// scope](Self::own_scope). So a forged token whose unverified payload says `sub: alice` never
    /// reaches alice's cached media.
    pub fn cache_scope(&self) -> &Arc<str> {
        if self.claims_trusted() {
            &self.principal
        } else {
            &self.own_scope
        }
    }

    /// `tok:` and a digest of the whole token: the scope only holders of this very token share,
    /// here or in another process, while its claims are unproven. The first 16 bytes, in hex, of
    /// SHA-256 over `secure-media/presigned/token-scope/v1\0` and the token: one-way, and the
    /// same in every process.
    pub fn own_scope(&self) -> &Arc<str> {
        &self.own_scope
    }

    /// Valid at `now`: no known expiry, or `now` is before `exp` plus [`CLOCK_SKEW_ALLOWANCE`].
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_none_or(|exp| now < exp + CLOCK_SKEW_ALLOWANCE)
    }

    /// `<scheme> <token>` (or the bare token for an empty scheme) as a header value, marked
    /// sensitive: HTTP/2 never indexes it and `Debug` hides it.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidHeader`] when `scheme` holds a character a header value cannot (a
    /// control character such as a line break): the token itself always fits.
    pub fn header_value(&self, scheme: &str) -> Result<HeaderValue, ConfigError> {
        let secret = self.secret.raw();
        let text = if scheme.is_empty() { secret.to_owned() } else { format!("{scheme} {secret}") };
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| ConfigError::InvalidHeader("the header scheme is not a valid header value"))?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// `name: <scheme> <token>` as a one-header list: the header strategy's, asked for on every
    /// request, so the first (name, scheme) asked is built once per token and shared; any other
    /// is built on each call.
    pub(crate) fn headers(&self, name: &HeaderName, scheme: &str) -> Result<SharedHeaders, AccessError> {
        let cached = self
            .headers
            .get()
            .filter(|(cached_name, cached_scheme, _)| cached_name == name && **cached_scheme == *scheme);
        if let Some((_, _, headers)) = cached {
            return Ok(headers.clone());
        }
        let headers: SharedHeaders = Arc::new([(name.clone(), self.header_value(scheme)?)]);
        let _ = self.headers.set((name.clone(), scheme.into(), headers.clone()));
        Ok(headers)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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
    fn header_value_puts_the_scheme_before_the_token() {
        let token = FileAccessToken::new("tok").unwrap();
        assert_eq!(token.header_value("Bearer").unwrap(), "Bearer tok");
        assert_eq!(token.header_value("").unwrap(), "tok");
        assert_eq!(token.header_value("Bearer").unwrap(), "Bearer tok");
        assert!(token.header_value("bad\nscheme").is_err());
    }

    #[test]
    fn opaque_principal_is_a_pinned_sha256_digest() {
        // Shared caches (Redis) key by it: it must not change with the process or the Rust release.
        let token = FileAccessToken::new("s3cr3t-opaque").unwrap();
        assert_eq!(token.principal(), "fat:b3b15991fed4122a4cca061cadc4a376");
        assert_ne!(FileAccessToken::new("s3cr3t-opaquf").unwrap().principal(), token.principal());
    }
}
