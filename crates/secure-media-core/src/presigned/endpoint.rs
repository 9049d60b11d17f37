//! The presign endpoint's wire format, shared by the tower and reqwest presigners:
//! `POST {"urls": [...]}` with `Authorization: Bearer <fat>`, answered by
//! `{"urls": [{"url", "presigned_url", "expires_at"} | {"url", "error"}]}`.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::StatusCode;
use serde_json::Value;

use super::Presigned;
use crate::AccessError;

/// The most bytes of an answer the presigners read.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// The JSON body for a batch of clean URLs.
pub fn request_body(urls: &[Arc<str>]) -> Vec<u8> {
    let list: Vec<&str> = urls.iter().map(|u| &**u).collect();
    serde_json::json!({ "urls": list }).to_string().into_bytes()
}

/// Is a failed call worth another try (a 5xx or 429)?
pub fn is_retryable(status: StatusCode) -> bool {
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
pub fn batch_error(urls: &[Arc<str>], reason: impl Into<String>) -> AccessError {
    AccessError::Presign { url: batch_label(urls), reason: reason.into() }
}

/// Reads an answer: one result per asked URL, matched by `url`. Whole-call failures (a refused
/// token, another status, malformed JSON) are an `Err`.
pub fn parse_answer(
    status: StatusCode,
    body: &[u8],
    urls: &[Arc<str>],
) -> Result<Vec<Result<Presigned, AccessError>>, AccessError> {
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(AccessError::PresignUnauthorized { status });
    }
    if !status.is_success() {
        return Err(batch_error(urls, format!("the presign endpoint answered {status}")));
    }
    let answer: Value =
        serde_json::from_slice(body).map_err(|_| batch_error(urls, "the presign endpoint answered malformed JSON"))?;
    let items = answer
        .get("urls")
        .and_then(Value::as_array)
        .ok_or_else(|| batch_error(urls, "the presign answer has no \"urls\" list"))?;
    Ok(urls
        .iter()
        .map(|url| {
            let failed = |reason: &str| AccessError::Presign { url: url.to_string(), reason: reason.to_owned() };
            let item = items
                .iter()
                .find(|i| i.get("url").and_then(Value::as_str) == Some(&**url))
                .ok_or_else(|| failed("the presign answer left this URL out"))?;
            if let Some(error) = item.get("error").and_then(Value::as_str) {
                return Err(failed(&format!("the endpoint refused it: {error}")));
            }
            let presigned = item
                .get("presigned_url")
                .and_then(Value::as_str)
                .ok_or_else(|| failed("the presign answer has no presigned_url"))?;
            let expires_at =
                item.get("expires_at").and_then(Value::as_u64).map(|s| UNIX_EPOCH + Duration::from_secs(s));
            Ok(Presigned { url: presigned.to_owned(), expires_at })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls() -> Vec<Arc<str>> {
        vec![Arc::from("https://h.io/a"), Arc::from("https://h.io/b"), Arc::from("https://h.io/c")]
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
}
