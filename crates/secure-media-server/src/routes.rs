//! The HTTP surface: login, media, presign, `_stats` and `_control`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;

use crate::auth::{expiry, FatRefusal, SignatureRefusal};
use crate::faults::{Control, Injected, Route};
use crate::media::{parse_range, safe_relative, RangeAnswer};
use crate::sigv4::{self, Sigv4Refusal};
use crate::stats::{bump, Carried};
use crate::Shared;

/// The most URLs one presign call may carry.
pub const MAX_PRESIGN_BATCH: usize = 1000;

pub(crate) fn router(state: Arc<Shared>) -> Router {
    let mut router = Router::new()
        .route("/v1/auth/login", post(login))
        .route("/v1/media/presign", post(presign))
        .route("/{app_id}/media/{*path}", get(media))
        .route("/_stats", get(stats));
    // Off by default: anyone who can reach the server could otherwise break it for everyone.
    // Disabled, `/_control` is a 404 like any unknown path.
    if state.config.control {
        router = router.route("/_control", post(control));
    }
    router.layer(axum::middleware::from_fn_with_state(state.clone(), observe)).with_state(state)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn route_of(path: &str, app_id: &str) -> Option<Route> {
    match path {
        "/v1/auth/login" => Some(Route::Login),
        "/v1/media/presign" => Some(Route::Presign),
        p if p.strip_prefix('/').and_then(|p| p.strip_prefix(app_id)).is_some_and(|p| p.starts_with("/media/")) => {
            Some(Route::Media)
        }
        _ => None,
    }
}

/// The query parameters that carry a presign signature: this server's own (CloudFront-style)
/// and SigV4's. `Expires`, `Key-Pair-Id` and the other `X-Amz-*` parameters prove nothing alone.
const SIGNATURE_PARAMS: [&str; 2] = ["Signature", sigv4::SIGNATURE];

/// The credentials a request carries, by kind: a token (`fat` in the query, an `Authorization`
/// header) and a presign signature. Query names match in any case or percent-encoding, as
/// clients strip them (`FAT=`, `%66at=`, `signature=`).
fn credentials_in(request: &Request) -> Carried {
    let mut carried = Carried { token: request.headers().contains_key(header::AUTHORIZATION), signature: false };
    for (name, _) in url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()) {
        carried.token |= name.eq_ignore_ascii_case("fat");
        carried.signature |= SIGNATURE_PARAMS.iter().any(|param| name.eq_ignore_ascii_case(param));
    }
    carried
}

/// `302 Found` to `location` (a fault's redirect), or a 500 when it is no header value.
fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "bad redirect target"),
    }
}

/// Counts, logs, and applies the fault knobs before the handlers run.
async fn observe(State(state): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    bump(&state.counters.requests);
    state.counters.count_credentials(credentials_in(&request));
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let route = route_of(&path, &state.config.app_id);
    let mut cut = false;
    if let Some(route) = route {
        let delay = state.faults.delay_of(route);
        if !delay.is_zero() {
            // async-io's timer, not tokio's: a delay knob of 5 ms must cost 5 ms, not the 6.2 ms
            // tokio's millisecond ticks make of it, or every approach measured against the limit
            // computed from the delays pays 20% the library does not cost (BENCHMARKS.md).
            async_io::Timer::after(delay).await;
        }
        match state.faults.take_injected(route) {
            Some(Injected::Fail(status)) => {
                bump(&state.counters.faults_injected);
                tracing::info!(%method, %path, %status, "injected failure");
                return error(status, "injected failure");
            }
            Some(Injected::Drop) => {
                bump(&state.counters.faults_injected);
                tracing::info!(%method, %path, "injected dropped connection");
                let broken = futures::stream::once(async { Err::<bytes::Bytes, _>(std::io::Error::other("dropped")) });
                return Response::new(Body::from_stream(broken));
            }
            Some(Injected::CutBody) => {
                bump(&state.counters.faults_injected);
                tracing::info!(%method, %path, "injected answer cut off mid-body");
                cut = true;
            }
            None => {}
        }
        if route == Route::Media {
            if let Some(location) = state.faults.moved_location(&path) {
                bump(&state.counters.redirects);
                return found(&location);
            }
            if let Some((origin, keep_query)) = state.faults.redirect() {
                bump(&state.counters.redirects);
                let query = request.uri().query().filter(|_| keep_query).map(|q| format!("?{q}")).unwrap_or_default();
                let location = format!("{origin}{path}{query}");
                tracing::info!(%path, "injected cross-origin redirect");
                return found(&location);
            }
        }
    }
    let response = next.run(request).await;
    // The path only: queries carry tokens and signatures.
    tracing::info!(%method, %path, status = response.status().as_u16(), "request");
    if cut {
        return cut_off(response).await;
    }
    response
}

/// The answer's head, its `Content-Length` included, and half its body; then the connection
/// breaks. The pause after the half lets it reach the client first.
async fn cut_off(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "could not read the answer to cut it off");
    };
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let half = bytes.slice(..bytes.len() / 2);
    let rest = futures::stream::once(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err(std::io::Error::other("cut off"))
    });
    let chunks = futures::stream::iter([Ok(half)]).chain(rest);
    Response::from_parts(parts, Body::from_stream(chunks))
}

#[derive(Deserialize)]
struct LoginRequest {
    uid: String,
}

/// The login answer. `Debug` hides the FAT.
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginAnswer {
    /// The user.
    pub uid: String,
    /// The File Access Token.
    pub fat: String,
    /// Its expiry, unix seconds.
    pub expires_at: u64,
}

impl std::fmt::Debug for LoginAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginAnswer")
            .field("uid", &self.uid)
            .field("fat", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

async fn login(
    State(state): State<Arc<Shared>>,
    body: Result<Json<LoginRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(LoginRequest { uid })) = body else {
        return error(StatusCode::BAD_REQUEST, "expected {\"uid\": \"...\"}");
    };
    match state.issue_fat(&uid) {
        Ok(answer) => Json(answer).into_response(),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

#[derive(Deserialize)]
struct PresignRequest {
    urls: Vec<String>,
}

#[derive(Serialize)]
struct PresignItem {
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    presigned_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

async fn presign(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Json<PresignRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let now = SystemTime::now();
    match bearer(&headers).map(|fat| state.verify_fat(fat, now)) {
        None => {
            bump(&state.counters.refused_missing);
            return error(StatusCode::UNAUTHORIZED, "a File Access Token is required (Authorization: Bearer)");
        }
        Some(Err(refusal)) => return state.refuse_fat(refusal),
        Some(Ok(_)) => {}
    }
    let Ok(Json(PresignRequest { urls })) = body else {
        return error(StatusCode::BAD_REQUEST, "expected {\"urls\": [\"...\"]}");
    };
    if urls.len() > MAX_PRESIGN_BATCH {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "at most 1000 URLs per call");
    }
    if let Some((total, sent)) = state.faults.take_oversized_presign() {
        // 64 KiB at a time, produced only as fast as the client reads, so `sent` counts what it took.
        let chunks = futures::stream::unfold(0u64, move |done| {
            let sent = sent.clone();
            async move {
                (done < total).then(|| {
                    let size = (total - done).min(64 * 1024);
                    sent.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
                    let chunk = bytes::Bytes::from(vec![b' '; usize::try_from(size).unwrap_or(0)]);
                    (Ok::<_, std::io::Error>(chunk), done + size)
                })
            }
        });
        return ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(chunks)).into_response();
    }
    if state.faults.take_malformed_presign() {
        return ([(header::CONTENT_TYPE, "application/json")], "{\"urls\": [{\"url\": ").into_response();
    }
    let ttl = state.faults.url_ttl().unwrap_or(state.config.url_ttl);
    let expires = expiry(now, ttl);
    let items: Vec<PresignItem> = urls.into_iter().map(|url| state.presign_one(url, expires)).collect();
    bump(&state.counters.presign_calls);
    let signed = items.iter().filter(|i| i.presigned_url.is_some()).count();
    state
        .counters
        .urls_presigned
        .fetch_add(u64::try_from(signed).unwrap_or(u64::MAX), std::sync::atomic::Ordering::Relaxed);
    Json(serde_json::json!({ "urls": items })).into_response()
}

impl Shared {
    pub(crate) fn issue_fat(&self, uid: &str) -> Result<LoginAnswer, &'static str> {
        if uid.is_empty() || uid.len() > 256 || uid.chars().any(char::is_control) {
            return Err("uid must be 1 to 256 printable characters");
        }
        let ttl = self.faults.fat_ttl().unwrap_or(self.config.fat_ttl);
        let generation = self.faults.fat_generation();
        let (fat, expires_at) =
            self.keys.issue_fat(uid, SystemTime::now(), ttl, generation).map_err(|_| "could not sign")?;
        bump(&self.counters.logins);
        tracing::info!(uid, "login");
        Ok(LoginAnswer { uid: uid.to_owned(), fat, expires_at })
    }

    /// Checks a FAT, refusing those of a generation expired by
    /// [`Faults::expire_fats_now`](crate::Faults::expire_fats_now).
    fn verify_fat(&self, fat: &str, now: SystemTime) -> Result<(), FatRefusal> {
        self.keys.verify_fat(fat, now, self.faults.fat_generation()).map(drop)
    }

    fn refuse_fat(&self, refusal: FatRefusal) -> Response {
        match refusal {
            FatRefusal::Expired => {
                bump(&self.counters.refused_expired_fat);
                error(StatusCode::UNAUTHORIZED, "the File Access Token expired: log in again")
            }
            FatRefusal::Invalid => {
                bump(&self.counters.refused_invalid_fat);
                error(StatusCode::UNAUTHORIZED, "the File Access Token is not valid")
            }
        }
    }

    /// Is the URL addressed to this server: its scheme and port, and its address or a loopback
    /// name for it, or one of the public origins it is reached through (a TLS proxy)?
    fn is_ours(&self, url: &Url) -> bool {
        if self.public_origins.contains(&url.origin()) {
            return true;
        }
        if url.scheme() != self.scheme() {
            return false;
        }
        let ip = self.addr.ip();
        let host_matches = match url.host() {
            Some(url::Host::Domain(name)) => name == "localhost" && (ip.is_loopback() || ip.is_unspecified()),
            Some(url::Host::Ipv4(v4)) => std::net::IpAddr::V4(v4) == ip || (ip.is_unspecified() && v4.is_loopback()),
            Some(url::Host::Ipv6(v6)) => std::net::IpAddr::V6(v6) == ip || (ip.is_unspecified() && v6.is_loopback()),
            None => false,
        };
        host_matches && url.port_or_known_default() == Some(self.addr.port())
    }

    fn presign_one(&self, url: String, expires: u64) -> PresignItem {
        let refused = |url, error| PresignItem { url, presigned_url: None, expires_at: None, error: Some(error) };
        let Ok(parsed) = Url::parse(&url) else {
            return refused(url, "not a URL");
        };
        let prefix = format!("/{}/media/", self.config.app_id);
        if !self.is_ours(&parsed) || !parsed.path().starts_with(&prefix) || parsed.path().len() == prefix.len() {
            return refused(url, "not a media URL on this server");
        }
        let mut signed = parsed.clone();
        signed.set_fragment(None);
        // `Url::path` is percent-encoded, exactly what a client sends for the presigned URL.
        let signature = self.keys.sign_url(parsed.path(), expires);
        signed
            .query_pairs_mut()
            .clear()
            .append_pair("Expires", &expires.to_string())
            .append_pair("Signature", &signature)
            .append_pair("Key-Pair-Id", &self.keys.key_pair_id);
        PresignItem { url, presigned_url: Some(signed.into()), expires_at: Some(expires), error: None }
    }
}

#[derive(Default)]
struct Proof<'q> {
    fat: Option<String>,
    expires: Option<String>,
    signature: Option<String>,
    key_pair_id: Option<&'q str>,
}

async fn media(
    State(state): State<Arc<Shared>>,
    Path((app_id, path)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if app_id != state.config.app_id {
        bump(&state.counters.not_found);
        return error(StatusCode::NOT_FOUND, "no such app");
    }
    let now = SystemTime::now();
    let query = query.as_deref().unwrap_or("");
    if sigv4::is_sigv4(query) {
        // Judged as SigV4 alone: a query that claims it gets no second chance as another proof.
        return match state.verify_sigv4(&method, &uri, &headers, now) {
            Ok(()) => serve_media(&state, &path, &state.counters.served_sigv4, &method, &headers).await,
            Err(refusal) => state.refuse_sigv4(refusal),
        };
    }
    let mut proof = Proof::default();
    let mut kid = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "fat" => proof.fat = Some(v.into_owned()),
            "Expires" => proof.expires = Some(v.into_owned()),
            "Signature" => proof.signature = Some(v.into_owned()),
            "Key-Pair-Id" => kid = Some(v.into_owned()),
            _ => {}
        }
    }
    proof.key_pair_id = kid.as_deref();
    let served = if proof.signature.is_some() || proof.expires.is_some() {
        // The path as it arrived, percent-encoding and all: the text the presign endpoint signed
        // (`Path` is decoded, so `a%20b.png` would be checked as `a b.png` and refused).
        let verdict = state.keys.verify_url(
            uri.path(),
            proof.expires.as_deref(),
            proof.signature.as_deref(),
            proof.key_pair_id,
            now,
        );
        match verdict {
            Ok(()) => &state.counters.served_presigned,
            Err(SignatureRefusal::Expired) => {
                bump(&state.counters.refused_expired_url);
                return error(StatusCode::FORBIDDEN, "the presigned URL expired: fetch a new one");
            }
            Err(SignatureRefusal::Invalid) => {
                bump(&state.counters.refused_bad_signature);
                return error(StatusCode::FORBIDDEN, "the presigned URL's signature is not valid");
            }
        }
    } else if let Some(fat) = proof.fat.as_deref().or_else(|| bearer(&headers)) {
        let from_query = proof.fat.is_some();
        if let Err(refusal) = state.verify_fat(fat, now) {
            return state.refuse_fat(refusal);
        }
        if from_query {
            &state.counters.served_fat_query
        } else {
            &state.counters.served_bearer
        }
    } else {
        bump(&state.counters.refused_missing);
        return error(StatusCode::UNAUTHORIZED, "a File Access Token is required");
    };
    serve_media(&state, &path, served, &method, &headers).await
}

/// Answers with the file at `path` (decoded, under the media directory) once access is proven,
/// counting it in `served`.
async fn serve_media(
    state: &Shared,
    path: &str,
    served: &std::sync::atomic::AtomicU64,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    let Ok(relative) = safe_relative(path) else {
        bump(&state.counters.refused_traversal);
        return error(StatusCode::BAD_REQUEST, "the path leaves the media directory");
    };
    let Some(file) = state.media.get(&relative).await else {
        bump(&state.counters.not_found);
        return error(StatusCode::NOT_FOUND, "no such media");
    };
    bump(served);
    respond_with_file(file, method, headers)
}

impl Shared {
    /// Checks an AWS SigV4 presigned request against [`ServerConfig::s3`](crate::ServerConfig::s3).
    fn verify_sigv4(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<(), Sigv4Refusal> {
        match &self.config.s3 {
            Some(key) => sigv4::verify(key, method, uri, headers, now),
            None => Err(Sigv4Refusal::Invalid("this server accepts no SigV4 presigned URLs (ServerConfig::s3 is off)")),
        }
    }

    /// The 403 for a SigV4 refusal, counted by reason.
    fn refuse_sigv4(&self, refusal: Sigv4Refusal) -> Response {
        match refusal {
            Sigv4Refusal::Expired => {
                bump(&self.counters.refused_expired_url);
                error(
                    StatusCode::FORBIDDEN,
                    "the SigV4 presigned URL expired (X-Amz-Date + X-Amz-Expires): sign a new one",
                )
            }
            Sigv4Refusal::NotYetValid => {
                bump(&self.counters.refused_not_yet_valid);
                error(
                    StatusCode::FORBIDDEN,
                    "the SigV4 presigned URL is not valid yet: X-Amz-Date is more than 15 minutes ahead of the server's clock",
                )
            }
            Sigv4Refusal::Invalid(why) => {
                bump(&self.counters.refused_bad_signature);
                error(StatusCode::FORBIDDEN, &format!("the SigV4 presigned URL is not valid: {why}"))
            }
        }
    }
}

fn respond_with_file(file: crate::media::File, method: &Method, headers: &HeaderMap) -> Response {
    let digest = Sha256::digest(&file.bytes);
    let etag = format!("\"{}\"", base16ct::lower::encode_string(&digest[..12]));
    let len = u64::try_from(file.bytes.len()).unwrap_or(u64::MAX);
    let base = [
        (header::CONTENT_TYPE, file.content_type.to_owned()),
        (header::ETAG, etag.clone()),
        (header::ACCEPT_RANGES, "bytes".to_owned()),
        (header::CACHE_CONTROL, "private, max-age=60".to_owned()),
    ];
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return (StatusCode::NOT_MODIFIED, base).into_response();
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, body, content_range) = match parse_range(range, len) {
        RangeAnswer::Full => (StatusCode::OK, file.bytes, None),
        RangeAnswer::Partial { start, end } => {
            // `parse_range` keeps `end < len`, so both fit in `usize` and in the body.
            let (Ok(first), Ok(last)) = (usize::try_from(start), usize::try_from(end)) else {
                return unsatisfiable(len);
            };
            if first > last || last >= file.bytes.len() {
                return unsatisfiable(len);
            }
            let slice = file.bytes.slice(first..=last);
            (StatusCode::PARTIAL_CONTENT, slice, Some(format!("bytes {start}-{end}/{len}")))
        }
        RangeAnswer::Unsatisfiable => return unsatisfiable(len),
    };
    let mut response = (status, base).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let Some(content_range) = content_range.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::CONTENT_RANGE, content_range);
    }
    if method != Method::HEAD {
        *response.body_mut() = Body::from(body);
    }
    response
}

fn unsatisfiable(len: u64) -> Response {
    (StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{len}"))]).into_response()
}

async fn stats(State(state): State<Arc<Shared>>) -> Response {
    Json(state.counters.snapshot()).into_response()
}

async fn control(
    State(state): State<Arc<Shared>>,
    body: Result<Json<Control>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(control)) = body else {
        return error(StatusCode::BAD_REQUEST, "expected a JSON control object");
    };
    if let Some(origin) = control.redirect_to.as_deref().filter(|o| !o.is_empty()) {
        let allowed = &state.config.allowed_redirect_origins;
        if !allowed.is_empty() && !allowed.iter().any(|a| a.trim_end_matches('/') == origin.trim_end_matches('/')) {
            return error(StatusCode::BAD_REQUEST, "redirect origin not allowed by the server's configuration");
        }
    }
    match state.faults.apply(&control) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}
