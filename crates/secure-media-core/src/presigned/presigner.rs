//! [`Presigner`]: the presign endpoint, and the signed URLs it hands out.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use url::Url;

use super::endpoint::{saturating_add, unix_secs, MAX_UNIX_SECS};
use super::expiry_of;
use crate::{AccessError, FileAccessToken, MediaUrl, PresignFailure, Scheme, SecureHosts};

/// The longest a presigned URL is trusted for, whatever its endpoint or its own expiry says: S3's
/// limit. A longer-lived URL is renewed as if it expired then (a clamped lifetime, not an error).
pub const MAX_URL_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// How far ahead of this process's clock a stored URL's fetch time may be (another process's
/// clock). A URL fetched further in the future is not used: it is trusted for at most
/// [`MAX_URL_LIFETIME`] after its fetch, which such a time would push back without limit.
pub const MAX_CLOCK_AHEAD: Duration = Duration::from_secs(300);

/// What a presign endpoint answers for one URL.
#[derive(Clone)]
pub struct Presigned {
    /// The presigned URL.
    pub url: String,
    /// The expiry the endpoint states, if it states one (the URL's own is read too).
    pub expires_at: Option<SystemTime>,
}

impl fmt::Debug for Presigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presigned").field("url", &"<redacted>").field("expires_at", &self.expires_at).finish()
    }
}

/// Exchanges clean media URLs for presigned ones: the vendor's presign endpoint, or your own.
///
/// Batch-capable: [`presign_batch`](Self::presign_batch) defaults to one
/// [`presign`](Self::presign) after another; endpoints that take many URLs per call override it
/// and raise [`max_batch`](Self::max_batch).
#[async_trait]
pub trait Presigner: Send + Sync + 'static {
    /// Presigns one clean URL with the user's token.
    async fn presign(&self, url: &str, token: &FileAccessToken) -> Result<Presigned, AccessError>;

    /// Presigns several clean URLs; one answer per URL, in order.
    async fn presign_batch(&self, urls: &[Arc<str>], token: &FileAccessToken) -> Vec<Result<Presigned, AccessError>> {
        let mut out = Vec::with_capacity(urls.len());
        for url in urls {
            out.push(self.presign(url, token).await);
        }
        out
    }

    /// The most URLs one [`presign_batch`](Self::presign_batch) call should carry.
    fn max_batch(&self) -> usize {
        1
    }
}

#[async_trait]
impl<P: Presigner + ?Sized> Presigner for Arc<P> {
    async fn presign(&self, url: &str, token: &FileAccessToken) -> Result<Presigned, AccessError> {
        (**self).presign(url, token).await
    }
    async fn presign_batch(&self, urls: &[Arc<str>], token: &FileAccessToken) -> Vec<Result<Presigned, AccessError>> {
        (**self).presign_batch(urls, token).await
    }
    fn max_batch(&self) -> usize {
        (**self).max_batch()
    }
}

/// A URL that carries its own proof of access for one clean media URL, with the time it stops
/// working. A value: copies share one text (cloning is a reference count).
///
/// `Debug` shows only the clean part (scheme, host, path); the full URL is a credential.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use secure_media_core::presigned::SignedUrl;
///
/// let now = SystemTime::now();
/// let url = url::Url::parse("https://media-us.cometchat.io/a.png?Signature=s").unwrap();
/// let signed = SignedUrl::new("https://files-us.cometchat.io/a.png", url, now, now + Duration::from_secs(60));
/// assert_eq!(signed.as_str(), "https://media-us.cometchat.io/a.png?Signature=s");
/// assert_eq!(signed.clean_url(), "https://files-us.cometchat.io/a.png");
/// ```
#[derive(Clone)]
pub struct SignedUrl {
    /// The clean URL, then the signed URL: one allocation per cached entry (the memory figure in
    /// BENCHMARKS.md; a cache key reads its URL here).
    text: Arc<str>,
    clean_len: usize,
    /// Milliseconds since the epoch (a `SystemTime` is twice the size: every hit's resolution
    /// moves a copy).
    fetched_at_ms: u64,
    expires_at_ms: u64,
}

/// `at` in milliseconds since the epoch: 0 before it, saturating far after it.
fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// The instant `ms` milliseconds after the epoch, or the latest one we represent.
fn instant(ms: u64) -> SystemTime {
    UNIX_EPOCH.checked_add(Duration::from_millis(ms)).unwrap_or_else(|| unix_secs(MAX_UNIX_SECS))
}

impl SignedUrl {
    /// `url`, which grants access to `clean_url`, valid from `fetched_at` until `expires_at`.
    pub fn new(clean_url: &str, url: Url, fetched_at: SystemTime, expires_at: SystemTime) -> Self {
        let text: Arc<str> = [clean_url, url.as_str()].concat().into();
        Self { text, clean_len: clean_url.len(), fetched_at_ms: millis(fetched_at), expires_at_ms: millis(expires_at) }
    }

    /// Checks a presigner's answer: an http(s) URL that is not yet expired. Its expiry is the
    /// earliest of the endpoint's and the URL's own, or `now + default_ttl` when neither says,
    /// and never more than [`MAX_URL_LIFETIME`] from `now`. The strategy also checks where it
    /// points (secure or CDN hosts).
    ///
    /// # Errors
    ///
    /// [`AccessError::Presign`] with [`PresignFailure::InvalidUrl`], [`NotHttp`](PresignFailure::NotHttp)
    /// or [`AlreadyExpired`](PresignFailure::AlreadyExpired).
    pub fn from_presigned(
        answer: Presigned,
        clean_url: &str,
        now: SystemTime,
        default_ttl: Duration,
    ) -> Result<Self, AccessError> {
        let failed = |reason: PresignFailure| AccessError::Presign { url: clean_url.to_owned(), reason };
        let url = Url::parse(&answer.url).map_err(|_| failed(PresignFailure::InvalidUrl))?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err(failed(PresignFailure::NotHttp));
        }
        let stated = [answer.expires_at, expiry_of(&url)].into_iter().flatten().min();
        let latest = saturating_add(now, MAX_URL_LIFETIME);
        let expires_at = stated.unwrap_or_else(|| saturating_add(now, default_ttl)).min(latest);
        if expires_at <= now {
            return Err(failed(PresignFailure::AlreadyExpired));
        }
        Ok(Self::new(clean_url, url, now, expires_at))
    }

    /// The URL to request, parsed.
    pub fn url(&self) -> Url {
        // The text is a `Url`'s own serialization (`new` takes a `Url`), which parses back.
        Url::parse(self.as_str()).unwrap_or_else(|_| unreachable!("a Url's serialization parses"))
    }

    /// The URL to request, as text.
    pub fn as_str(&self) -> &str {
        self.text.get(self.clean_len..).unwrap_or_default()
    }

    /// The clean media URL it grants access to.
    pub fn clean_url(&self) -> &str {
        self.text.get(..self.clean_len).unwrap_or_default()
    }

    /// Is this the very same URL (a copy of one answer), not merely an equal one?
    pub fn same_as(&self, other: &SignedUrl) -> bool {
        Arc::ptr_eq(&self.text, &other.text)
    }

    /// When it was obtained.
    pub fn fetched_at(&self) -> SystemTime {
        instant(self.fetched_at_ms)
    }

    /// When it stops working.
    pub fn expires_at(&self) -> SystemTime {
        instant(self.expires_at_ms)
    }

    /// How long it was valid for when obtained.
    pub fn lifetime(&self) -> Duration {
        Duration::from_millis(self.expires_at_ms.saturating_sub(self.fetched_at_ms))
    }
}

/// Where presigned URLs may point: the secure hosts and the CDN hosts, over https, or http when
/// the secure hosts allow it. Anything else, from the endpoint or from a cache, is not used.
#[derive(Debug, Clone)]
pub(crate) struct Destinations {
    allow_http: bool,
    /// Both host lists with http allowed: the scheme rule is applied once, here.
    hosts: SecureHosts,
    cdn: SecureHosts,
    /// `https://{host}/` (and `http://` when allowed) for each host: a signed URL is a `Url`'s
    /// own serialisation (lowercase scheme and host, default port left out), so one that starts
    /// with one of these is allowed without a parse. Hand-written for the presigned-hit figures
    /// in BENCHMARKS.md; anything else takes the full check.
    origins: Vec<String>,
}

impl Destinations {
    pub(crate) fn new(hosts: &SecureHosts, cdn: &SecureHosts) -> Self {
        let allow_http = hosts.allows_http();
        let schemes: &[&str] = if allow_http { &["https", "http"] } else { &["https"] };
        let origins = hosts
            .iter()
            .chain(cdn.iter())
            .flat_map(|host| schemes.iter().map(move |scheme| format!("{scheme}://{host}/")))
            .collect();
        Self { allow_http, hosts: hosts.clone().allowing_http(), cdn: cdn.clone().allowing_http(), origins }
    }

    /// `Ok`, or why not (naming at most the host, never the URL's query).
    pub(crate) fn check(&self, url: &MediaUrl<'_>) -> Result<(), PresignFailure> {
        if url.scheme() == Scheme::Http && !self.allow_http {
            return Err(PresignFailure::PlainHttp);
        }
        if self.hosts.matches(url) || self.cdn.matches(url) {
            return Ok(());
        }
        Err(PresignFailure::Elsewhere { host: url.host().to_owned() })
    }

    /// [`check`](Self::check) for a URL a cache handed back: a cache, shared or not, may hold
    /// anything.
    pub(crate) fn allows(&self, signed: &SignedUrl) -> bool {
        let text = signed.as_str();
        self.origins.iter().any(|origin| text.starts_with(origin.as_str()))
            || MediaUrl::with_str(text, |url| Some(self.check(url).is_ok())).unwrap_or(false)
    }
}

impl fmt::Debug for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedUrl")
            .field("url", &MediaUrl::with_str(self.as_str(), |url| Some(url.redacted())))
            .field("expires_at", &self.expires_at())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_signature() {
        let answer = Presigned {
            url: "https://m.io/a.png?Expires=4000000000&Signature=SIG&Key-Pair-Id=K".into(),
            expires_at: None,
        };
        assert!(!format!("{answer:?}").contains("SIG"));
        let signed =
            SignedUrl::from_presigned(answer, "https://m.io/a.png", UNIX_EPOCH, Duration::from_secs(60)).unwrap();
        let shown = format!("{signed:?}");
        assert!(
            shown.contains("https://m.io/a.png") && !shown.contains("SIG") && !shown.contains("Key-Pair"),
            "{shown}"
        );
    }

    #[test]
    fn expiry_is_the_earliest_known_or_the_default() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let earliest = SignedUrl::from_presigned(
            Presigned {
                url: "https://m.io/a?Expires=5000".into(),
                expires_at: Some(UNIX_EPOCH + Duration::from_secs(3000)),
            },
            "https://m.io/a",
            now,
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(earliest.expires_at(), UNIX_EPOCH + Duration::from_secs(3000));
        let default = SignedUrl::from_presigned(
            Presigned { url: "https://m.io/a?s=1".into(), expires_at: None },
            "https://m.io/a",
            now,
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(default.lifetime(), Duration::from_secs(60));
    }

    #[test]
    fn lifetimes_are_clamped_and_zero_or_negative_ones_are_errors() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let answer = |url: &str, expires_at| Presigned { url: url.into(), expires_at };
        for far in [
            answer("https://m.io/a?Expires=9223372036854775808", None),
            answer("https://m.io/a?s=1", Some(super::super::endpoint::unix_secs(u64::MAX))),
            answer("https://m.io/a?X-Amz-Date=20261128T101500Z&X-Amz-Expires=18446744073709551615", None),
        ] {
            let signed = SignedUrl::from_presigned(far, "https://m.io/a", now, Duration::from_secs(60)).unwrap();
            assert_eq!(signed.lifetime(), MAX_URL_LIFETIME);
        }
        let huge_default =
            SignedUrl::from_presigned(answer("https://m.io/a", None), "https://m.io/a", now, Duration::MAX).unwrap();
        assert_eq!(huge_default.lifetime(), MAX_URL_LIFETIME);
        for dead in [
            answer("https://m.io/a?Expires=1800000000", None),
            answer("https://m.io/a?Expires=0", None),
            answer("https://m.io/a", Some(now - Duration::from_secs(1))),
        ] {
            let error = SignedUrl::from_presigned(dead, "https://m.io/a", now, Duration::from_secs(60)).unwrap_err();
            assert!(error.to_string().contains("already expired"), "{error}");
        }
    }

    #[test]
    fn a_signed_url_is_allowed_by_its_origin_exactly_as_by_the_full_check() {
        let hosts = SecureHosts::cometchat("us").unwrap().with_host("files.example.com:8443").unwrap();
        let cdn = SecureHosts::new().with_host("cdn.example.com").unwrap();
        let now = SystemTime::now();
        for (http, text) in
            [(false, true), (true, true), (true, false), (false, false)].into_iter().flat_map(|(allow_http, _)| {
                [
                    "https://media-us.cometchat.io/a?Signature=s",
                    "https://files.example.com:8443/a",
                    "https://files.example.com/a",
                    "https://cdn.example.com./a",
                    "https://cdn.example.com.evil.io/a",
                    "https://cdn.example.com@evil.io/a",
                    "https://user@cdn.example.com/a",
                    "http://cdn.example.com/a",
                    "https://CDN.example.com/a",
                    "https://cdn.example.com:443/a",
                ]
                .map(move |url| (allow_http, url))
            })
        {
            let hosts = if http { hosts.clone().allowing_http() } else { hosts.clone() };
            let d = Destinations::new(&hosts, &cdn);
            let signed = SignedUrl::new("https://h.io/a", Url::parse(text).unwrap(), now, now);
            let full = MediaUrl::with_str(signed.as_str(), |url| Some(d.check(url).is_ok())).unwrap_or(false);
            assert_eq!(d.allows(&signed), full, "{text} (http allowed: {http})");
        }
    }

    #[test]
    fn destinations_are_the_secure_and_cdn_hosts_over_the_secure_scheme() {
        let hosts = SecureHosts::cometchat("us").unwrap();
        let cdn = SecureHosts::new().with_host("cdn.example.com").unwrap();
        let check = |d: &Destinations, url: &str| {
            MediaUrl::with_str(url, |view| Some(d.check(view)))
                .unwrap_or(Err(PresignFailure::NotHttp))
                .map_err(|e| e.to_string())
        };
        let strict = Destinations::new(&hosts, &cdn);
        assert!(check(&strict, "https://media-us.cometchat.io/a?Signature=s").is_ok());
        assert!(check(&strict, "https://cdn.example.com/a?Signature=s").is_ok());
        let elsewhere = check(&strict, "https://evil.example/a?Signature=SECRET").unwrap_err();
        assert!(elsewhere.contains("evil.example") && !elsewhere.contains("SECRET"), "{elsewhere}");
        assert!(check(&strict, "http://cdn.example.com/a").unwrap_err().contains("plain http"));
        assert!(check(&strict, "ftp://cdn.example.com/a").is_err());
        let loose = Destinations::new(&hosts.clone().allowing_http(), &cdn);
        assert!(check(&loose, "http://cdn.example.com/a").is_ok());
        assert!(check(&loose, "http://evil.example/a").is_err());
    }

    #[test]
    fn unusable_answers_are_errors_that_name_only_the_clean_url() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        for url in ["not a url", "ftp://m.io/a", "https://m.io/a?Expires=9999&Signature=SECRET"] {
            let err = SignedUrl::from_presigned(
                Presigned { url: url.into(), expires_at: None },
                "https://m.io/a",
                now,
                Duration::from_secs(60),
            )
            .unwrap_err();
            let text = err.to_string();
            assert!(text.contains("https://m.io/a") && !text.contains("SECRET"), "{text}");
        }
    }
}
