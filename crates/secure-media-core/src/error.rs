//! The core's errors, one enum per concern: [`ConfigError`] (what was configured cannot work),
//! [`AccessError`] (a request could not be given its proof, or its answer was unusable), with
//! [`RefreshFailure`] (why a refused token was not renewed) and [`NotMediaReason`] (what came
//! back instead of media) inside it, and [`NetworkError`](crate::NetworkError) for requests that
//! did not complete.
//!
//! Every message is complete on its own, its cause's words included, because logs and UIs mostly
//! print only the message; [`source()`](std::error::Error::source) hands the typed cause to code
//! that wants to look at it (a report that walks the chain shows a cause's words again).

use std::error::Error;
use std::fmt;
use std::time::Duration;

use http::StatusCode;

/// A configuration that cannot work: a mode, a host, a header, an endpoint. Answered by the
/// functions that only read configuration (builders, constructors, parsers), so it is reported
/// when the app starts, not at its first request; inside [`AccessError`] as
/// [`AccessError::Config`] when a request path meets one.
///
/// ```
/// use secure_media_core::{ConfigError, SecureHosts};
///
/// let error = SecureHosts::cometchat("u s").unwrap_err();
/// assert!(matches!(error, ConfigError::InvalidHost { .. }));
/// assert!(error.to_string().starts_with("invalid secure host"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A mode number other than 0, 1 or 2.
    #[error("unknown secure media mode {0}: expected 0 (embedded), 1 (header) or 2 (presigned)")]
    UnknownModeNumber(u8),
    /// A mode name other than `embedded`, `header` or `presigned`.
    #[error("unknown secure media mode {0:?}: expected \"embedded\", \"header\" or \"presigned\"")]
    UnknownModeName(String),
    /// A secure host entry that is not a host, `host:port` or a region.
    #[error("invalid secure host {entry:?}: {reason}")]
    InvalidHost {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A header name or scheme that HTTP does not allow.
    #[error("invalid header configuration: {0}")]
    InvalidHeader(&'static str),
    /// A configuration that cannot work (say, presigned mode without a presigner).
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// An endpoint that would receive the file access token (presign, login) is not safe to send
    /// it to: plain http without an explicit opt-in, or not an http(s) URL at all.
    #[error("refusing to send the file access token to {url}: {reason}")]
    InsecureEndpoint {
        /// The endpoint, without user info or query.
        url: String,
        /// Why, and what to do instead.
        reason: &'static str,
    },
}

/// Everything that can go wrong while getting secure media: proving access (a token, a presigned
/// URL), the request itself, and what it answered.
///
/// No message ever contains a token, a signature or a signed URL: URLs in errors are the
/// clean media URL (no query string).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// A configuration problem met on a request path (a strategy that cannot answer, a client
    /// that follows redirects itself). Its message and [`source()`](Error::source) are the
    /// [`ConfigError`]'s own, so `?` from a configuration step changes nothing the user reads.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The string is not a URL we can work with.
    #[error("invalid media URL: {0}")]
    InvalidUrl(&'static str),
    /// The token is not usable (empty, not printable ASCII, or a JWT that cannot be read).
    #[error("malformed file access token: {0}")]
    MalformedToken(&'static str),
    /// No file access token: the user is not logged in (or logged out).
    #[error("no file access token: log in first")]
    NotLoggedIn,
    /// The token was refused and could not be renewed: [`RefreshFailure`] says why. Its message
    /// and [`source()`](Error::source) are the [`RefreshFailure`]'s own (a failed relogin's source
    /// is the relogin's error).
    #[error(transparent)]
    RefreshFailed(RefreshFailure),
    /// The presign endpoint failed or answered something unusable.
    #[error("presigning {url} failed: {reason}")]
    Presign {
        /// The clean media URL.
        url: String,
        /// What went wrong (never a token or signature).
        #[source]
        reason: PresignFailure,
    },
    /// The presign endpoint refused the file access token.
    #[error("the presign endpoint refused the file access token ({status})")]
    PresignUnauthorized {
        /// The status the endpoint answered with.
        status: StatusCode,
    },
    /// The media server refused the request even after the one retry.
    #[error("{url} was refused with {status} after a retry")]
    Refused {
        /// The clean media URL.
        url: String,
        /// The last status.
        status: StatusCode,
    },
    /// Too many presign flights are waiting; try again shortly.
    #[error("too many presign requests waiting ({0}); try again shortly")]
    Busy(usize),
    /// The URL is not on a secure host: hand it to an ordinary loader.
    #[error("{0} is not on a secure host")]
    NotSecure(String),
    /// The answer is not media (an HTML login page with a 200, say).
    #[error("{url}: {reason}")]
    NotMedia {
        /// The clean media URL.
        url: String,
        /// What it was instead.
        reason: NotMediaReason,
    },
    /// The body is larger than the configured cap.
    #[error("{url} is larger than {limit} bytes")]
    TooLarge {
        /// The clean media URL.
        url: String,
        /// The cap.
        limit: u64,
    },
    /// The server answered with a status that is neither success nor a refusal.
    #[error("{url} answered {status}")]
    Status {
        /// The clean media URL.
        url: String,
        /// The status.
        status: StatusCode,
    },
    /// The request did not complete: DNS, connection, TLS, timeout or a cut-off answer
    /// ([`NetworkError::failure`](crate::NetworkError::failure) says which). The
    /// [`NetworkError`](crate::NetworkError) is also the [`source()`](Error::source).
    #[error("{url}: {error}")]
    Network {
        /// The clean media URL.
        url: String,
        /// What failed and its cause chain (never a URL with its query).
        #[source]
        error: crate::NetworkError,
    },
    /// The presign call that this request waited for was cancelled by its caller.
    #[error("the presign call for {0} was cancelled before it finished")]
    Cancelled(String),
}

/// Why a refused file access token was not renewed
/// ([`TokenSource::refresh`](crate::TokenSource::refresh)), inside
/// [`AccessError::RefreshFailed`]. Messages never hold a token.
///
/// ```
/// # futures::executor::block_on(async {
/// use std::error::Error;
/// use http::StatusCode;
/// use secure_media_core::{AccessError, FileAccessToken, LoginCell, RefreshFailure, TokenSource};
///
/// let down = AccessError::Status { url: "https://login.example.com/".into(), status: StatusCode::BAD_GATEWAY };
/// let hook_error = down.clone();
/// let cell = LoginCell::new().with_relogin(move || {
///     let error = hook_error.clone();
///     async move { Err(error) }
/// });
/// let stale = cell.set(FileAccessToken::new("refused").unwrap());
/// let error = cell.refresh(&stale).await.unwrap_err();
/// assert!(matches!(&error, AccessError::RefreshFailed(RefreshFailure::Relogin(_))));
/// // The relogin's own error is the source.
/// assert_eq!(error.source().and_then(|e| e.downcast_ref::<AccessError>()), Some(&down));
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshFailure {
    /// The source holds one token for good ([`StaticToken`](crate::StaticToken)).
    StaticToken,
    /// The source has no relogin hook ([`LoginCell::with_relogin`](crate::LoginCell::with_relogin)):
    /// the app has to log in again.
    NoRelogin,
    /// The app's relogin failed with this error (also the [`source()`](Error::source)).
    Relogin(Box<AccessError>),
    /// The relogin did not finish within its timeout
    /// ([`LoginCell::with_relogin_timeout`](crate::LoginCell::with_relogin_timeout)); it counts as
    /// a failed one.
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// The token was installed by a relogin moments ago and is refused already: no second relogin
    /// within the quiet period ([`LoginCell::with_quiet_period`](crate::LoginCell::with_quiet_period)).
    RenewedTooRecently {
        /// How long ago the relogin installed it.
        renewed_ago: Duration,
        /// How long until a refusal renews it again.
        retry_in: Duration,
    },
    /// Relogins failed recently: none is tried until the backoff has passed
    /// ([`LoginCell::with_renewal_backoff`](crate::LoginCell::with_renewal_backoff)).
    BackingOff {
        /// Failed relogins in a row.
        failures: u32,
        /// How long until the next relogin may start.
        retry_in: Duration,
        /// The last relogin's error (also the [`source()`](Error::source)).
        last: Box<AccessError>,
    },
}

impl fmt::Display for RefreshFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the file access token was refused and could not be refreshed: ")?;
        match self {
            Self::StaticToken => f.write_str("a static token cannot be renewed"),
            Self::NoRelogin => f.write_str("the token was refused: log in again"),
            Self::Relogin(error) => write!(f, "logging in again failed: {error}"),
            Self::TimedOut { after } => {
                write!(f, "logging in again did not finish within {} s", after.as_secs_f64())
            }
            Self::RenewedTooRecently { renewed_ago, retry_in } => write!(
                f,
                "the token a relogin installed {:.1} s ago was refused too: not logging in again for {:.1} s",
                renewed_ago.as_secs_f64(),
                retry_in.as_secs_f64()
            ),
            Self::BackingOff { failures, retry_in, last } => write!(
                f,
                "logging in again failed {failures} time(s) in a row ({last}): backing off for {:.1} s",
                retry_in.as_secs_f64()
            ),
        }
    }
}

// By hand rather than derived: the source is the boxed `AccessError` itself, so that
// `source().downcast_ref::<AccessError>()` finds it (a derive would hand out the `Box`).
impl Error for RefreshFailure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Relogin(error) | Self::BackingOff { last: error, .. } => Some(&**error),
            _ => None,
        }
    }
}

impl From<RefreshFailure> for AccessError {
    fn from(failure: RefreshFailure) -> Self {
        Self::RefreshFailed(failure)
    }
}

/// Why an answer is not media ([`check_media`](crate::check_media)), inside
/// [`AccessError::NotMedia`].
///
/// ```
/// use secure_media_core::{check_media, NotMediaReason};
///
/// assert_eq!(check_media("text/html", b"<!doctype html>"), Err(NotMediaReason::Html));
/// assert_eq!(
///     check_media("application/json", b"{}"),
///     Err(NotMediaReason::WrongContentType { content_type: "application/json".into() }),
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotMediaReason {
    /// An HTML page (a login page answered with a 200, say).
    #[error("the server answered an HTML page (a login page?), not media")]
    Html,
    /// The answer says it is an image, but its bytes carry no image signature.
    #[error("the answer says {content_type} but its bytes are not an image")]
    NotAnImage {
        /// The content type received (its essence, lowercase, without parameters).
        content_type: String,
    },
    /// The content type is not one of media (`image/*`, `video/*`, `audio/*`,
    /// `application/octet-stream`, `application/pdf`, `text/plain`, or none).
    #[error("the answer is {content_type:?}, not media")]
    WrongContentType {
        /// The content type received (its essence, lowercase, without parameters).
        content_type: String,
    },
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::{check_media, NetworkError, NetworkFailure, SecureHosts, SecureMediaMode};

    /// A request path that meets a configuration step.
    fn hosts_for(region: &str) -> Result<SecureHosts, AccessError> {
        Ok(SecureHosts::cometchat(region)?)
    }

    #[test]
    fn a_configuration_error_reads_the_same_through_question_mark() {
        let config = SecureHosts::cometchat("bad region!").unwrap_err();
        assert!(matches!(&config, ConfigError::InvalidHost { entry, .. } if entry == "bad region!"), "{config:?}");
        let access = hosts_for("bad region!").unwrap_err();
        assert_eq!(access, AccessError::Config(config.clone()));
        assert_eq!(
            access.to_string(),
            "invalid secure host \"bad region!\": a region is letters, digits and hyphens (e.g. \"us\", \"eu\", \"in\")"
        );
        // Transparent: the message and the source are the configuration error's own.
        assert_eq!(access.to_string(), config.to_string());
        assert_eq!(access.source().map(ToString::to_string), config.source().map(ToString::to_string));
        let mode = "cookie".parse::<SecureMediaMode>().unwrap_err();
        assert_eq!(AccessError::from(mode.clone()).to_string(), mode.to_string());
    }

    #[test]
    fn a_network_error_is_the_source_and_keeps_what_failed() {
        let error = AccessError::Network {
            url: "https://files-us.cometchat.io/a.png".into(),
            error: NetworkError::new(NetworkFailure::Timeout, "operation timed out"),
        };
        assert_eq!(error.to_string(), "https://files-us.cometchat.io/a.png: timed out: operation timed out");
        let source = error.source().and_then(|e| e.downcast_ref::<NetworkError>()).unwrap();
        assert_eq!(source.failure(), NetworkFailure::Timeout);
        assert!(source.source().is_none(), "the causes are kept as redacted words only");
    }

    #[test]
    fn refresh_failures_read_as_before_and_chain_to_the_relogins_error() {
        let refused = AccessError::from(RefreshFailure::NoRelogin);
        assert_eq!(
            refused.to_string(),
            "the file access token was refused and could not be refreshed: the token was refused: log in again"
        );
        assert!(refused.source().is_none());
        let relogin = AccessError::Status { url: "https://login.example.com/".into(), status: StatusCode::BAD_GATEWAY };
        let backing_off = AccessError::from(RefreshFailure::BackingOff {
            failures: 2,
            retry_in: Duration::from_millis(1_500),
            last: Box::new(relogin.clone()),
        });
        assert_eq!(
            backing_off.to_string(),
            "the file access token was refused and could not be refreshed: logging in again failed 2 time(s) in a \
             row (https://login.example.com/ answered 502 Bad Gateway): backing off for 1.5 s"
        );
        assert_eq!(backing_off.source().and_then(|e| e.downcast_ref::<AccessError>()), Some(&relogin));
        let timed_out = AccessError::from(RefreshFailure::TimedOut { after: Duration::from_secs(30) });
        assert!(timed_out.to_string().ends_with("logging in again did not finish within 30 s"), "{timed_out}");
    }

    #[test]
    fn not_media_says_what_came_instead() {
        let reason = check_media("text/html", b"<html>").unwrap_err();
        let error = AccessError::NotMedia { url: "https://files-us.cometchat.io/a.png".into(), reason };
        assert_eq!(
            error.to_string(),
            "https://files-us.cometchat.io/a.png: the server answered an HTML page (a login page?), not media"
        );
        assert!(matches!(error, AccessError::NotMedia { reason: NotMediaReason::Html, .. }));
    }
}

/// Why a presign call, or one URL's answer, could not be used. Never holds a token, a signature or
/// a signed URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresignFailure {
    /// The endpoint answered a status that is neither success nor a refusal of the token.
    #[error("the presign endpoint answered {0}")]
    Status(StatusCode),
    /// The endpoint could not be reached (DNS, connection, TLS, a cut-off answer).
    #[error("the presign endpoint is unreachable: {0}")]
    Unreachable(#[source] crate::NetworkError),
    /// The call took longer than the policy's timeout.
    #[error("the presign call timed out")]
    TimedOut,
    /// The answer is larger than the presigners read.
    #[error("the presign answer is larger than {limit} bytes")]
    TooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// The answer ended before its end.
    #[error("the presign answer was cut off")]
    CutOff,
    /// The answer is not JSON.
    #[error("the presign endpoint answered malformed JSON")]
    MalformedJson,
    /// The answer is JSON without a `"urls"` list of objects.
    #[error("the presign answer has no \"urls\" list")]
    NoUrlsList,
    /// The answer has no entry for this URL.
    #[error("the presign answer left this URL out")]
    LeftOut,
    /// The endpoint refused this URL, in its own words (made printable, nothing that looks like
    /// a token or a URL).
    #[error("the endpoint refused it: {0}")]
    Refused(String),
    /// The entry has no `presigned_url`.
    #[error("the presign answer has no presigned_url")]
    NoPresignedUrl,
    /// The entry's `expires_at` is not a non-negative number of seconds.
    #[error("the presign answer's expires_at is not a unix time")]
    BadExpiry,
    /// The presigned URL does not parse.
    #[error("the presigned URL is not a valid URL")]
    InvalidUrl,
    /// The presigned URL is not http(s) with a host.
    #[error("the presigned URL is not an http(s) URL")]
    NotHttp,
    /// The presigned URL is plain http and the secure hosts do not allow it.
    #[error("the presigned URL is plain http, which the secure hosts do not allow")]
    PlainHttp,
    /// The presigned URL points to a host that is neither a secure host nor a CDN host.
    #[error(
        "the presigned URL points to {host}, which is neither a secure host nor a CDN host (PresignConfig::cdn_hosts)"
    )]
    Elsewhere {
        /// The host it points to.
        host: String,
    },
    /// The presigned URL had expired when it arrived.
    #[error("the presigned URL is already expired")]
    AlreadyExpired,
    /// The presigner answered fewer URLs than it was asked for.
    #[error("the presigner answered fewer URLs than asked")]
    Missing,
    /// A presigner of the app's own, in its words.
    #[error("{0}")]
    Other(String),
}
