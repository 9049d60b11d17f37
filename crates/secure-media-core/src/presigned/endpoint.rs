//! The presign endpoint's wire format and call discipline, shared by the tower and reqwest
//! presigners: `POST {"urls": [...]}` with `Authorization: Bearer <fat>`, answered by
//! `{"urls": [{"url", "presigned_url", "expires_at"} | {"url", "error"}]}`.
//!
//! The adapters only send the request; [`RetryPolicy::presign`] owns everything after it (the
//! timeout, which failures are retried and how long to wait, the capped body read, the parse), so
//! both stacks behave alike on every fault.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Buf;
use futures::future::{self, Either};
use http::StatusCode;
use http_body_util::BodyExt;
use retry_policies::policies::ExponentialBackoff;
use retry_policies::{Jitter, RetryDecision, RetryPolicy as _};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use url::Url;

use super::Presigned;
use crate::{AccessError, ConfigError, FileAccessToken, NetworkError, NetworkFailure, PresignFailure};

/// The most bytes of an answer the presigners read, with or without a `Content-Length`.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// The latest expiry we represent: 9999-12-31T23:59:59Z. Later ones (say `u64::MAX` seconds) are
/// read as this, so no time arithmetic can overflow on what an endpoint or a cache sends.
pub const MAX_UNIX_SECS: u64 = 253_402_300_799;

/// The longest wait between two attempts, whatever the configured backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The most retries a policy makes after the first attempt.
const MAX_RETRIES: u32 = 10;

/// `secs` after the epoch, clamped to [`MAX_UNIX_SECS`].
pub(crate) fn unix_secs(secs: u64) -> SystemTime {
    let clamped = Duration::from_secs(secs.min(MAX_UNIX_SECS));
    // A platform whose time cannot reach year 9999 gets its own latest second instead.
    UNIX_EPOCH
        .checked_add(clamped)
        .or_else(|| UNIX_EPOCH.checked_add(Duration::from_secs(i32::MAX as u64)))
        .unwrap_or(UNIX_EPOCH)
}

/// `at + by`, or the latest representable expiry when that overflows.
pub(crate) fn saturating_add(at: SystemTime, by: Duration) -> SystemTime {
    at.checked_add(by).unwrap_or_else(|| unix_secs(MAX_UNIX_SECS).max(at))
}

/// Refuses an endpoint that would receive the token (presign, login) unless it is https, or
/// plain http with `allow_http` (a loopback test server). Errors name only the clean URL (no user
/// info, no query). The presigners check their endpoint with it once, when built.
///
/// ```
/// use secure_media_core::presigned::endpoint::check_endpoint;
///
/// assert!(check_endpoint("https://api.example.com/v1/media/presign", false).is_ok());
/// assert!(check_endpoint("http://127.0.0.1:8787/v1/media/presign", false).is_err());
/// assert!(check_endpoint("http://127.0.0.1:8787/v1/media/presign", true).is_ok());
/// ```
///
/// # Errors
///
/// [`ConfigError::InsecureEndpoint`] for an unparsable URL, one without a host, plain http
/// without `allow_http`, or another scheme.
pub fn check_endpoint(endpoint: &str, allow_http: bool) -> Result<(), ConfigError> {
    let Ok(url) = Url::parse(endpoint) else {
        return Err(ConfigError::InsecureEndpoint {
            url: "an unparsable endpoint".into(),
            reason: "it is not an absolute http(s) URL",
        });
    };
    let clean = || crate::redacted_url(&url);
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::InsecureEndpoint { url: clean(), reason: "it has no host" });
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http => Ok(()),
        "http" => Err(ConfigError::InsecureEndpoint {
            url: clean(),
            reason: "plain http would expose the file access token on the way; use https, or allow http \
                     explicitly (`new_allowing_http`, `--allow-http`) for a loopback test server",
        }),
        _ => Err(ConfigError::InsecureEndpoint { url: clean(), reason: "it is not an http(s) URL" }),
    }
}

/// One presign call as it goes on the wire: `POST` to the endpoint with these headers and body.
#[derive(Clone)]
pub struct PresignRequest {
    /// `Authorization: Bearer <token>`, marked sensitive.
    pub authorization: http::HeaderValue,
    /// `{"urls": [...]}`, sent as `application/json`.
    pub body: bytes::Bytes,
}

impl PresignRequest {
    /// The request for `urls` with `token`.
    ///
    /// # Errors
    ///
    /// [`AccessError::Config`] when the token cannot be a header value (it always can: a
    /// [`FileAccessToken`] is printable ASCII).
    pub fn new(urls: &[Arc<str>], token: &FileAccessToken) -> Result<Self, AccessError> {
        Ok(Self { authorization: token.header_value("Bearer")?, body: request_body(urls).into() })
    }
}

impl std::fmt::Debug for PresignRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresignRequest").field("authorization", &"<redacted>").finish_non_exhaustive()
    }
}

/// Is a failed call worth another try (a 5xx or 429)?
pub(crate) fn is_retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

fn batch_label(urls: &[Arc<str>]) -> String {
    match urls {
        [] => String::new(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (+{} more)", rest.len()),
    }
}

/// An error for the whole batch.
pub fn batch_error(urls: &[Arc<str>], reason: PresignFailure) -> AccessError {
    AccessError::Presign { url: batch_label(urls), reason }
}

/// [`Presigner::presign`](super::Presigner::presign) for an endpoint that batches: one URL
/// through its `presign_batch`.
///
/// # Errors
/// The batch's answer for `url`; [`PresignFailure::Missing`] if it gave none.
pub async fn presign_one<P: super::Presigner + ?Sized>(
    presigner: &P,
    url: &str,
    token: &FileAccessToken,
) -> Result<Presigned, AccessError> {
    let urls = [Arc::from(url)];
    let mut answers = presigner.presign_batch(&urls, token).await;
    answers.pop().unwrap_or_else(|| Err(batch_error(&urls, PresignFailure::Missing)))
}

/// The endpoint's own words, made safe to log: at most 120 characters, and only words of letters
/// (with `-`, `'`, `,`, `:`, `;`, `!`) up to 24 long, so nothing that looks like a token, a
/// signature or a URL (an endpoint may echo what it was sent; tokens carry digits or dots).
fn printable(text: &str) -> String {
    let plain =
        |word: &str| word.len() <= 24 && word.bytes().all(|b| b.is_ascii_alphabetic() || b"-',:;!".contains(&b));
    let words: Vec<&str> = text.split_whitespace().filter(|word| plain(word)).collect();
    let mut out: String = words.join(" ").chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(120).collect();
    if out.is_empty() {
        out.push_str("no reason given");
    }
    out
}

/// The request body: `{"urls": [...]}`.
#[derive(Serialize)]
struct Request<'a> {
    urls: Vec<&'a str>,
}

/// The answer: `{"urls": [...]}`. An entry or a field of an unexpected shape is that one URL's
/// problem (it reads as absent or invalid), never the whole answer's.
#[derive(Deserialize)]
struct Answer {
    urls: Vec<Lenient<Object<Item>>>,
}

/// `T` read from a JSON object only: serde's derived structs also read an array, field by
/// position, which no endpoint means.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Fields(std::marker::PhantomData)).map(Object)
    }
}

/// One URL's entry: `{"url", "presigned_url", "expires_at"}` or `{"url", "error"}`.
#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    url: Lenient<String>,
    #[serde(default)]
    presigned_url: Lenient<String>,
    #[serde(default)]
    error: Lenient<String>,
    #[serde(default)]
    expires_at: Lenient<Option<Number>>,
}

/// A value of the expected shape, absent (missing or `null`), or something else.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Lenient<T> {
    Valid(T),
    #[default]
    Absent,
    Invalid(IgnoredAny),
}

impl<T> Lenient<T> {
    fn valid(&self) -> Option<&T> {
        match self {
            Lenient::Valid(value) => Some(value),
            _ => None,
        }
    }
}

/// A JSON number, as the endpoint may write a unix time.
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Whole(u64),
    Float(f64),
}

/// The JSON body for a batch of clean URLs.
pub(crate) fn request_body(urls: &[Arc<str>]) -> Vec<u8> {
    let request = Request { urls: urls.iter().map(|u| &**u).collect() };
    // Serialising strings into a Vec cannot fail.
    serde_json::to_vec(&request).unwrap_or_default()
}

/// Reads an answer: one result per asked URL, matched by `url`. Whole-call failures (a refused
/// token, another status, malformed JSON) are an `Err`. Never panics, whatever the body: an
/// `expires_at` past year 9999 is read as 9999, one that is not a non-negative number is an error
/// for its URL.
pub(crate) fn parse_answer(
    status: StatusCode,
    body: &[u8],
    urls: &[Arc<str>],
) -> Result<Vec<Result<Presigned, AccessError>>, AccessError> {
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(AccessError::PresignUnauthorized { status });
    }
    if !status.is_success() {
        return Err(batch_error(urls, PresignFailure::Status(status)));
    }
    let Object(answer): Object<Answer> = serde_json::from_slice(body).map_err(|error| {
        let reason = if error.is_data() { PresignFailure::NoUrlsList } else { PresignFailure::MalformedJson };
        batch_error(urls, reason)
    })?;
    let items: Vec<&Item> = answer.urls.iter().filter_map(Lenient::valid).map(|Object(item)| item).collect();
    Ok(urls
        .iter()
        .map(|url| {
            let failed = |reason: PresignFailure| AccessError::Presign { url: url.to_string(), reason };
            let item = items
                .iter()
                .find(|item| item.url.valid().is_some_and(|named| **named == **url))
                .ok_or_else(|| failed(PresignFailure::LeftOut))?;
            if let Some(error) = item.error.valid() {
                return Err(failed(PresignFailure::Refused(printable(error))));
            }
            let presigned = item.presigned_url.valid().ok_or_else(|| failed(PresignFailure::NoPresignedUrl))?;
            let expires_at = match &item.expires_at {
                Lenient::Absent | Lenient::Valid(None) => None,
                Lenient::Valid(Some(number)) => {
                    Some(unix_time(number).ok_or_else(|| failed(PresignFailure::BadExpiry))?)
                }
                Lenient::Invalid(_) => return Err(failed(PresignFailure::BadExpiry)),
            };
            Ok(Presigned { url: presigned.clone(), expires_at })
        })
        .collect())
}

/// A JSON number of seconds since the epoch: non-negative, clamped to [`MAX_UNIX_SECS`].
fn unix_time(number: &Number) -> Option<SystemTime> {
    match *number {
        Number::Whole(secs) => Some(unix_secs(secs)),
        // Float to int casts saturate; the clamp in `unix_secs` does the rest.
        Number::Float(secs) => (secs.is_finite() && secs >= 0.0).then(|| unix_secs(secs as u64)),
    }
}

/// The presign endpoint could not be reached (connection refused or reset, DNS, TLS, a service
/// that is not ready), and why. Worth another try, except for a TLS failure (a certificate does
/// not heal by itself). Adapters build the [`NetworkError`] from their error with the endpoint's
/// URL taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable(pub NetworkError);

/// How both presigners call the endpoint: a timeout per attempt (sending and reading the answer),
/// and bounded, jittered exponential backoff after a 5xx, a 429, a connection error, a timeout or
/// an answer cut off mid-body. Refusals (401/403), other statuses, malformed or oversized answers
/// are final. Default: 10 s per attempt, 2 retries waiting from 100 ms (at most 30 s).
///
/// ```
/// use std::time::Duration;
/// use secure_media_core::presigned::endpoint::RetryPolicy;
///
/// let policy = RetryPolicy::default().with_timeout(Duration::from_secs(5)).with_retries(3, Duration::from_millis(50));
/// assert_eq!((policy.timeout(), policy.retries()), (Duration::from_secs(5), 3));
/// assert!(policy.backoff(0).is_some_and(|wait| wait <= Duration::from_secs(30)));
/// assert_eq!(policy.backoff(3), None); // three retries done: give up
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    timeout: Duration,
    backoff: ExponentialBackoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(10), backoff: backoff(2, Duration::from_millis(100)) }
    }
}

fn backoff(retries: u32, first: Duration) -> ExponentialBackoff {
    let first = first.min(MAX_BACKOFF);
    // Doubling from `first` for a handful of retries, never past the cap: min <= max always holds.
    let most = first.saturating_mul(16).clamp(first, MAX_BACKOFF.max(first));
    ExponentialBackoff::builder().retry_bounds(first, most).jitter(Jitter::Bounded).build_with_max_retries(retries)
}

enum Failure {
    Retryable(AccessError),
    Final(AccessError),
}

impl RetryPolicy {
    /// The default policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bound on each attempt, from sending the request to the last byte of the answer.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// At most `retries` more attempts after the first, waiting about `first_backoff`, then twice
    /// that, and so on (jittered, each wait at most 30 s).
    pub fn with_retries(mut self, retries: u32, first_backoff: Duration) -> Self {
        // More retries than this only hold a batch's waiters longer.
        self.backoff = backoff(retries.min(MAX_RETRIES), first_backoff);
        self
    }

    /// The bound on each attempt.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The most retries after the first attempt.
    pub fn retries(&self) -> u32 {
        self.backoff.max_n_retries.unwrap_or(0)
    }

    /// How long to wait after `past_retries` retries have failed, or `None` to give up.
    pub fn backoff(&self, past_retries: u32) -> Option<Duration> {
        let now = SystemTime::now();
        match self.backoff.should_retry(now, past_retries) {
            // Measured against one reading of the clock, and capped: a clock that jumps cannot
            // stretch a wait.
            RetryDecision::Retry { execute_after } => {
                Some(execute_after.duration_since(now).unwrap_or_default().min(MAX_BACKOFF))
            }
            RetryDecision::DoNotRetry => None,
        }
    }

    /// Presigns `urls` with `token` under this policy. `send` makes one attempt's request from
    /// the [`PresignRequest`] (`POST` to the endpoint: the adapter's only job); `sleep` is the
    /// adapter's timer (`tokio::time::sleep`). One answer per URL, in order; a failed call is the
    /// same clear error for every URL.
    pub async fn presign<B, S, SF, W, WF>(
        &self,
        urls: &[Arc<str>],
        token: &FileAccessToken,
        mut send: S,
        sleep: W,
    ) -> Vec<Result<Presigned, AccessError>>
    where
        S: FnMut(&PresignRequest) -> SF,
        SF: Future<Output = Result<http::Response<B>, Unreachable>>,
        B: http_body::Body,
        W: Fn(Duration) -> WF,
        WF: Future<Output = ()>,
    {
        let request = match PresignRequest::new(urls, token) {
            Ok(request) => request,
            Err(error) => return urls.iter().map(|_| Err(error.clone())).collect(),
        };
        let mut past_retries = 0;
        let error = loop {
            let sent = send(&request);
            let attempt = pin!(async move {
                let response = sent.await.map_err(|Unreachable(network)| {
                    let error = batch_error(urls, PresignFailure::Unreachable(network.clone()));
                    match network.failure() {
                        NetworkFailure::Tls(_) => Failure::Final(error),
                        _ => Failure::Retryable(error),
                    }
                })?;
                read_answer(response, urls).await
            });
            let outcome = match future::select(attempt, pin!(sleep(self.timeout))).await {
                Either::Left((outcome, _)) => outcome,
                Either::Right(_) => Err(Failure::Retryable(batch_error(urls, PresignFailure::TimedOut))),
            };
            match outcome {
                Ok(answers) => return answers,
                Err(Failure::Retryable(error)) => match self.backoff(past_retries) {
                    Some(wait) => {
                        tracing::warn!(%error, retry = past_retries + 1, "presign call failed; retrying");
                        sleep(wait).await;
                        past_retries += 1;
                    }
                    None => break error,
                },
                Err(Failure::Final(error)) => break error,
            }
        };
        urls.iter().map(|_| Err(error.clone())).collect()
    }
}

/// The status decides first (a 5xx is retried without reading its body); the body is read in
/// chunks and given up past [`MAX_ANSWER_BYTES`], whether or not a `Content-Length` said so.
async fn read_answer<B: http_body::Body>(
    response: http::Response<B>,
    urls: &[Arc<str>],
) -> Result<Vec<Result<Presigned, AccessError>>, Failure> {
    let status = response.status();
    if is_retryable(status) {
        return Err(Failure::Retryable(batch_error(urls, PresignFailure::Status(status))));
    }
    // A refusal or another failure is decided by its status alone: its body (however large, or
    // cut off) must neither hide a refused token nor make us send the token again.
    if !status.is_success() {
        return parse_answer(status, b"", urls).map_err(Failure::Final);
    }
    let too_large = || Failure::Final(batch_error(urls, PresignFailure::TooLarge { limit: MAX_ANSWER_BYTES }));
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_ANSWER_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = pin!(response.into_body());
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Failure::Retryable(batch_error(urls, PresignFailure::CutOff)))?;
        if let Ok(mut data) = frame.into_data() {
            while data.has_remaining() {
                let chunk = data.chunk();
                if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(too_large());
                }
                bytes.extend_from_slice(chunk);
                let read = chunk.len();
                data.advance(read);
            }
        }
    }
    parse_answer(status, &bytes, urls).map_err(Failure::Final)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn urls() -> Vec<Arc<str>> {
        vec![Arc::from("https://h.io/a"), Arc::from("https://h.io/b"), Arc::from("https://h.io/c")]
    }

    fn reason(error: AccessError) -> PresignFailure {
        match error {
            AccessError::Presign { reason, .. } => reason,
            other => panic!("not a presign failure: {other:?}"),
        }
    }

    #[test]
    fn the_endpoints_words_keep_no_token_signature_or_url() {
        assert_eq!(printable("invalid token Xy7abcQ2 for file: not found"), "invalid token for file: not found");
        assert_eq!(printable("eyJhbGciOi.eyJzdWIi.c2ln https://h.io/a?s=1 sig=abc"), "no reason given");
    }

    #[test]
    fn each_failure_is_typed_and_is_the_errors_source() {
        use std::error::Error as _;
        let status = parse_answer(StatusCode::BAD_GATEWAY, b"", &urls()).unwrap_err();
        assert!(status
            .source()
            .is_some_and(|source| source.to_string() == "the presign endpoint answered 502 Bad Gateway"));
        assert_eq!(reason(status), PresignFailure::Status(StatusCode::BAD_GATEWAY));
        assert_eq!(reason(parse_answer(StatusCode::OK, b"{", &urls()).unwrap_err()), PresignFailure::MalformedJson);
        assert_eq!(
            reason(parse_answer(StatusCode::OK, br#"{"x":1}"#, &urls()).unwrap_err()),
            PresignFailure::NoUrlsList
        );
        let body = br#"{"urls":[{"url":"https://h.io/a","error":"no such file"},{"url":"https://h.io/b"},{"url":"https://h.io/c","presigned_url":"https://h.io/c?s=1","expires_at":"soon"}]}"#;
        let each: Vec<PresignFailure> =
            parse_answer(StatusCode::OK, body, &urls()).unwrap().into_iter().map(|r| reason(r.unwrap_err())).collect();
        assert_eq!(
            each,
            [PresignFailure::Refused("no such file".into()), PresignFailure::NoPresignedUrl, PresignFailure::BadExpiry]
        );
        // Arrays are not objects, whatever their order: an entry in one is left out.
        let positional = br#"{"urls":[["https://h.io/a","https://h.io/a?s=1",null,4000000000]]}"#;
        let answers = parse_answer(StatusCode::OK, positional, &urls()[..1]).unwrap();
        assert_eq!(reason(answers.into_iter().next().unwrap().unwrap_err()), PresignFailure::LeftOut);
        let top = parse_answer(StatusCode::OK, br#"[[{"url":"https://h.io/a"}]]"#, &urls()).unwrap_err();
        assert_eq!(reason(top), PresignFailure::NoUrlsList);
    }

    #[test]
    fn answers_are_matched_by_url() {
        let body = br#"{"urls":[
            {"url":"https://h.io/b","presigned_url":"https://h.io/b?Signature=2","expires_at":100},
            {"url":"https://h.io/a","presigned_url":"https://h.io/a?Signature=1"},
            {"url":"https://h.io/c","error":"not ours"}]}"#;
        let out = parse_answer(StatusCode::OK, body, &urls()).unwrap();
        assert_eq!(out[0].as_ref().unwrap().url, "https://h.io/a?Signature=1");
        assert_eq!(out[1].as_ref().unwrap().expires_at, Some(UNIX_EPOCH + Duration::from_secs(100)));
        assert!(out[2].as_ref().unwrap_err().to_string().contains("not ours"));
    }

    #[test]
    fn the_endpoints_own_words_are_capped_and_never_echo_a_token() {
        let body = br#"{"urls":[{"url":"https://h.io/a","error":"bad token eyJhbGciOi.eyJzdWIi.c2ln for https://h.io/a?fat=SECRET\n\u0007"}]}"#;
        let error = parse_answer(StatusCode::OK, body, &urls()[..1]).unwrap()[0].clone().unwrap_err().to_string();
        assert!(error.contains("bad token") && !error.contains("eyJ") && !error.contains("SECRET"), "{error}");
        assert!(!error.contains('\n') && !error.contains('\u{7}'), "{error}");
        let long = format!(r#"{{"urls":[{{"url":"https://h.io/a","error":"{}"}}]}}"#, "word ".repeat(10_000));
        let error = parse_answer(StatusCode::OK, long.as_bytes(), &urls()[..1]).unwrap()[0].clone().unwrap_err();
        assert!(error.to_string().len() < 300);
    }

    #[test]
    fn a_refusal_is_decided_by_its_status_whatever_its_body() {
        for length in ["999999999", "1"] {
            let response = http::Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(http::header::CONTENT_LENGTH, length)
                .body(http_body_util::Full::new(bytes::Bytes::from_static(b"x")))
                .unwrap();
            let out = futures::executor::block_on(read_answer(response, &urls()));
            assert!(matches!(out, Err(Failure::Final(AccessError::PresignUnauthorized { .. }))), "{length}");
        }
    }

    #[test]
    fn whole_call_failures_are_clear() {
        assert!(matches!(
            parse_answer(StatusCode::UNAUTHORIZED, b"", &urls()),
            Err(AccessError::PresignUnauthorized { .. })
        ));
        let err = parse_answer(StatusCode::OK, b"{\"urls\": [", &urls()).unwrap_err();
        assert!(err.to_string().contains("malformed JSON") && err.to_string().contains("(+2 more)"));
        assert!(parse_answer(StatusCode::OK, b"{}", &urls()).is_err());
        assert!(parse_answer(StatusCode::BAD_GATEWAY, b"", &urls()).unwrap_err().to_string().contains("502"));
        assert!(is_retryable(StatusCode::SERVICE_UNAVAILABLE) && !is_retryable(StatusCode::BAD_REQUEST));
        assert_eq!(request_body(&urls()[..1]), br#"{"urls":["https://h.io/a"]}"#.to_vec());
    }

    #[test]
    fn huge_expires_at_is_clamped_and_a_negative_one_is_an_error() {
        let urls = &urls()[..1];
        for huge in [u64::MAX.to_string(), "9223372036854775808".into(), "1e300".into()] {
            let body = format!(
                r#"{{"urls":[{{"url":"https://h.io/a","presigned_url":"https://h.io/a?s=1","expires_at":{huge}}}]}}"#
            );
            let out = parse_answer(StatusCode::OK, body.as_bytes(), urls).unwrap();
            assert_eq!(out[0].as_ref().unwrap().expires_at, Some(unix_secs(MAX_UNIX_SECS)), "{huge}");
        }
        for bad in ["-1", "\"tomorrow\"", "-1e300", "[1]"] {
            let body = format!(
                r#"{{"urls":[{{"url":"https://h.io/a","presigned_url":"https://h.io/a?s=1","expires_at":{bad}}}]}}"#
            );
            let out = parse_answer(StatusCode::OK, body.as_bytes(), urls).unwrap();
            let error = out[0].as_ref().unwrap_err().to_string();
            assert!(
                error.contains("expires_at is not a unix time") && error.contains("https://h.io/a"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn a_plain_http_endpoint_is_refused_unless_allowed() {
        let http = "http://user:pw@127.0.0.1:8787/v1/media/presign?fat=SECRET";
        let error = check_endpoint(http, false).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, ConfigError::InsecureEndpoint { .. }));
        assert!(text.contains("http://127.0.0.1:8787/v1/media/presign") && text.contains("https"), "{text}");
        assert!(!text.contains("SECRET") && !text.contains("pw"), "{text}");
        assert!(check_endpoint(http, true).is_ok());
        assert!(check_endpoint("https://api.example.com/presign", false).is_ok());
        assert!(check_endpoint("ftp://api.example.com/presign", true).is_err());
        let garbage = check_endpoint("not a url ?fat=SECRET", true).unwrap_err().to_string();
        assert!(!garbage.contains("SECRET"), "{garbage}");
    }

    #[test]
    fn the_backoff_is_bounded_jittered_and_ends() {
        let policy = RetryPolicy::default().with_retries(4, Duration::from_millis(100));
        for retry in 0..4 {
            let wait = policy.backoff(retry).unwrap();
            assert!(wait >= Duration::from_millis(45) && wait <= Duration::from_millis(1_600), "{retry}: {wait:?}");
        }
        assert_eq!(policy.backoff(4), None);
        let huge = RetryPolicy::default().with_retries(u32::MAX, Duration::MAX);
        assert_eq!(huge.retries(), MAX_RETRIES, "retries are capped");
        assert!(huge.backoff(MAX_RETRIES - 1).is_some_and(|wait| wait <= MAX_BACKOFF));
        assert!(huge.backoff(MAX_RETRIES).is_none());
        assert_eq!(RetryPolicy::default().with_retries(0, Duration::ZERO).backoff(0), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever bytes and status an endpoint sends, the parser answers (never panics), one
        /// result per URL when it answers at all.
        #[test]
        fn parse_answer_never_panics_on_arbitrary_bytes(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let status = StatusCode::from_u16(status).unwrap();
            if let Ok(out) = parse_answer(status, &body, &urls()) {
                prop_assert_eq!(out.len(), 3);
            }
        }

        /// Well-formed answers with arbitrary numbers and strings in every field never panic, and
        /// an expiry is always a time we can add to.
        #[test]
        fn parse_answer_never_panics_on_arbitrary_fields(
            url in "https://h\\.io/[abc]",
            presigned in ".{0,40}",
            expires in prop_oneof![
                any::<u64>().prop_map(|n| n.to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|f| if f.is_finite() { format!("{f:e}") } else { "null".into() }),
                ".{0,12}".prop_map(|s| serde_json::Value::String(s).to_string()),
            ],
        ) {
            let item = format!(
                r#"{{"url":{},"presigned_url":{},"expires_at":{expires}}}"#,
                serde_json::Value::String(url),
                serde_json::Value::String(presigned),
            );
            let body = format!(r#"{{"urls":[{item}]}}"#);
            if let Ok(out) = parse_answer(StatusCode::OK, body.as_bytes(), &urls()) {
                for answer in out.into_iter().flatten() {
                    if let Some(at) = answer.expires_at {
                        prop_assert!(at <= unix_secs(MAX_UNIX_SECS));
                        let _ = saturating_add(at, Duration::MAX);
                    }
                }
            }
        }
    }
}
