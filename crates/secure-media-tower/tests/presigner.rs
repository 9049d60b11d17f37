//! TowerPresigner against the reference server's presign endpoint, and against a server that
//! streams an oversized answer: the same fault behaviour as the reqwest presigner.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use secure_media_core::presigned::endpoint::RetryPolicy;
use secure_media_core::presigned::Presigner;
use secure_media_core::{AccessError, ConfigError, FileAccessToken};
use secure_media_server::{ReferenceServer, Route, RunningServer, ServerConfig};
use secure_media_tower::TowerPresigner;

use secure_media_testkit::{hyper, Hyper};

fn presigner(endpoint: &str) -> TowerPresigner<Hyper> {
    TowerPresigner::new(hyper(), endpoint.parse().unwrap()).unwrap().with_retry_policy(
        RetryPolicy::default().with_retries(2, Duration::from_millis(10)).with_timeout(Duration::from_millis(500)),
    )
}

async fn setup() -> (RunningServer, FileAccessToken, TowerPresigner<Hyper>) {
    let server = ReferenceServer::start(secure_media_testkit::https(ServerConfig::default())).await.unwrap();
    let token = FileAccessToken::new(server.login("p").unwrap().fat).unwrap();
    let presigner = presigner(&server.presign_url());
    (server, token, presigner)
}

fn urls(server: &RunningServer) -> Vec<Arc<str>> {
    vec![server.media_url("sample-640x480.png").into(), server.media_url("sample-64x64.gif").into()]
}

#[tokio::test]
async fn a_plain_http_endpoint_is_refused_at_construction() {
    let http = "http://127.0.0.1:8787/v1/media/presign?fat=SECRET".parse().unwrap();
    let error = TowerPresigner::new(hyper(), http).unwrap_err();
    assert!(matches!(error, ConfigError::InsecureEndpoint { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("http://127.0.0.1:8787/v1/media/presign") && !text.contains("SECRET"), "{text}");
    assert!(TowerPresigner::new(hyper(), "https://api.example.com/v1/media/presign".parse().unwrap()).is_ok());
}

#[tokio::test]
async fn one_call_presigns_a_batch() {
    let (server, token, presigner) = setup().await;
    let answers = presigner.presign_batch(&urls(&server), &token).await;
    assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|p| p.url.contains("Signature="))), "{answers:?}");
    assert_eq!(server.stats().presign_calls, 1);
}

#[tokio::test]
async fn a_503_and_a_dropped_connection_are_retried_and_the_batch_succeeds() {
    let (server, token, presigner) = setup().await;
    server.faults().fail_next(Route::Presign, 1, StatusCode::SERVICE_UNAVAILABLE);
    let answers = presigner.presign_batch(&urls(&server), &token).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    server.faults().drop_next(Route::Presign, 1);
    let answers = presigner.presign_batch(&urls(&server), &token).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!((server.stats().faults_injected, server.stats().presign_calls), (2, 2));
}

#[tokio::test]
async fn a_permanent_503_ends_in_a_clear_error_after_the_bounded_attempts() {
    let (server, token, presigner) = setup().await;
    server.faults().fail_next(Route::Presign, 100, StatusCode::SERVICE_UNAVAILABLE);
    let answers = presigner.presign_batch(&urls(&server), &token).await;
    for answer in &answers {
        let error = answer.as_ref().unwrap_err().to_string();
        assert!(error.contains("503") && !error.contains(token.expose_secret()), "{error}");
    }
    assert_eq!(server.stats().faults_injected, 3, "one try and two retries");
}

#[tokio::test]
async fn a_slow_endpoint_times_out() {
    let (server, token, presigner) = setup().await;
    let presigner = presigner.with_retry_policy(
        RetryPolicy::default().with_retries(0, Duration::ZERO).with_timeout(Duration::from_millis(100)),
    );
    server.faults().delay(Route::Presign, Duration::from_millis(400));
    let error = presigner.presign(&urls(&server)[0], &token).await.unwrap_err();
    assert!(error.to_string().contains("timed out"), "{error}");
}

#[tokio::test]
async fn a_refused_token_is_unauthorized_and_a_malformed_answer_is_final() {
    let (server, token, presigner) = setup().await;
    let forged = FileAccessToken::new("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.Zm9yZ2Vk").unwrap();
    let error = presigner.presign(&urls(&server)[0], &forged).await.unwrap_err();
    assert!(matches!(error, AccessError::PresignUnauthorized { status } if status == StatusCode::UNAUTHORIZED));
    server.faults().malformed_presign_next(3);
    let error = presigner.presign(&urls(&server)[0], &token).await.unwrap_err();
    assert!(error.to_string().contains("malformed JSON"), "{error}");
    assert_eq!(server.stats().presign_calls, 0, "not retried: the next two malformed answers are unused");
}

#[tokio::test]
async fn a_chunked_answer_over_the_cap_is_a_clear_error_without_reading_it_all() {
    let (server, token, presigner) = setup().await;
    // 128 MiB streamed in chunks with no Content-Length: only reading it says how large it is.
    server.faults().oversized_presign_next(128 * 1024 * 1024);
    let error = presigner.presign_batch(&urls(&server)[..1], &token).await.remove(0).unwrap_err();
    assert!(error.to_string().contains("larger than 4194304 bytes"), "{error}");
    let (answers, sent) = server.faults().oversized_sent();
    assert_eq!(answers, 1, "an oversized answer is final, not retried");
    assert!(sent < 32 * 1024 * 1024, "the client stopped reading near the cap, not after {sent} bytes");
}
