//! The one error type of the core.

use http::StatusCode;

/// Everything that can go wrong while deciding how to access secure media.
///
/// No message ever contains a token, a signature or a signed URL: URLs in errors are the
/// clean media URL (no query string).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
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
    /// The string is not a URL we can work with.
    #[error("invalid media URL: {0}")]
    InvalidUrl(&'static str),
    /// The token is not usable (empty, not printable ASCII, or a JWT that cannot be read).
    #[error("malformed file access token: {0}")]
    MalformedToken(&'static str),
    /// No file access token: the user is not logged in (or logged out).
    #[error("no file access token: log in first")]
    NotLoggedIn,
    /// The token was refused and could not be renewed.
    #[error("the file access token was refused and could not be refreshed: {0}")]
    RefreshFailed(String),
    /// The presign endpoint failed or answered something unusable.
    #[error("presigning {url} failed: {reason}")]
    Presign {
        /// The clean media URL.
        url: String,
        /// What went wrong (never a token or signature).
        reason: String,
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
        reason: String,
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
    /// ([`NetworkError::failure`](crate::NetworkError::failure) says which).
    #[error("{url}: {error}")]
    Network {
        /// The clean media URL.
        url: String,
        /// What failed and its cause chain (never a URL with its query).
        error: crate::NetworkError,
    },
    /// The presign call that this request waited for was cancelled by its caller.
    #[error("the presign call for {0} was cancelled before it finished")]
    Cancelled(String),
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
