//! ReqwestPresigner against the reference server's presign endpoint.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use secure_media_core::presigned::endpoint::RetryPolicy;
use secure_media_core::presigned::Presigner;
use secure_media_core::{AccessError, ConfigError, FileAccessToken};
use secure_media_reqwest::ReqwestPresigner;
use secure_media_server::{ReferenceServer, Route, RunningServer, ServerConfig};

/// A client trusting only `server`'s test CA.
fn trusting(server: &RunningServer) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(server.ca_pem().unwrap().as_bytes()).unwrap();
    secure_media_reqwest::client_builder().tls_certs_only([ca]).build().unwrap()
}

async fn setup() -> (RunningServer, FileAccessToken, ReqwestPresigner) {
    let server = ReferenceServer::start(ServerConfig::https()).await.unwrap();
    let token = FileAccessToken::new(server.login("p").unwrap().fat).unwrap();
    let presigner =
        ReqwestPresigner::new(trusting(&server), server.presign_url().parse().unwrap()).unwrap().with_retry_policy(
            RetryPolicy::default().with_retries(2, Duration::from_millis(10)).with_timeout(Duration::from_millis(500)),
        );
    (server, token, presigner)
}

fn urls(server: &RunningServer) -> Vec<Arc<str>> {
    vec![
        server.media_url("sample-640x480.png").into(),
        server.media_url("sample-64x64.gif").into(),
        Arc::from("https://elsewhere.example/demo/media/a.png"),
    ]
}

#[tokio::test]
async fn one_call_presigns_a_batch_with_per_item_errors() {
    let (server, token, presigner) = setup().await;
    let urls = urls(&server);
    let answers = presigner.presign_batch(&urls, &token).await;
    assert_eq!(answers.len(), 3);
    for (url, answer) in urls.iter().zip(&answers[..2]) {
        let presigned = answer.as_ref().unwrap();
        assert!(presigned.url.starts_with(&**url) && presigned.url.contains("Signature="));
        assert!(presigned.expires_at.is_some());
    }
    assert!(matches!(&answers[2], Err(AccessError::Presign { .. })));
    assert_eq!(server.stats().presign_calls, 1);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_and_bounded() {
    let (server, token, presigner) = setup().await;
    server.faults().fail_next(Route::Presign, 2, StatusCode::SERVICE_UNAVAILABLE);
    let answers = presigner.presign_batch(&urls(&server)[..1], &token).await;
    assert!(answers[0].is_ok());
    assert_eq!((server.stats().faults_injected, server.stats().presign_calls), (2, 1));

    server.faults().fail_next(Route::Presign, 10, StatusCode::BAD_GATEWAY);
    let answers = presigner.presign_batch(&urls(&server)[..1], &token).await;
    let error = answers[0].as_ref().unwrap_err();
    assert!(error.to_string().contains("502"), "{error}");
    assert_eq!(server.stats().faults_injected, 2 + 3, "one try and two retries");
}

#[tokio::test]
async fn a_malformed_answer_is_a_clear_error_and_not_retried() {
    let (server, token, presigner) = setup().await;
    server.faults().malformed_presign_next(3);
    let answers = presigner.presign_batch(&urls(&server)[..2], &token).await;
    for answer in &answers {
        assert!(answer.as_ref().unwrap_err().to_string().contains("malformed JSON"));
    }
    server.faults().malformed_presign_next(0);
    assert!(presigner.presign_batch(&urls(&server)[..1], &token).await[0].is_ok());
}

#[tokio::test]
async fn a_slow_endpoint_times_out_and_a_dropped_one_is_retried() {
    let (server, token, presigner) = setup().await;
    let presigner = presigner.with_retry_policy(
        RetryPolicy::default().with_retries(0, Duration::ZERO).with_timeout(Duration::from_millis(100)),
    );
    server.faults().delay(Route::Presign, Duration::from_millis(400));
    let error = presigner.presign(&urls(&server)[0], &token).await.unwrap_err();
    assert!(error.to_string().contains("timed out"), "{error}");
    server.faults().delay(Route::Presign, Duration::ZERO);

    let (server, token, presigner) = setup().await;
    server.faults().drop_next(Route::Presign, 1);
    assert!(presigner.presign(&urls(&server)[0], &token).await.is_ok());
}

#[tokio::test]
async fn a_refused_token_is_unauthorized_and_never_shown() {
    let (server, _, presigner) = setup().await;
    let forged = FileAccessToken::new("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.Zm9yZ2Vk").unwrap();
    let error = presigner.presign(&urls(&server)[0], &forged).await.unwrap_err();
    assert!(matches!(error, AccessError::PresignUnauthorized { status } if status == StatusCode::UNAUTHORIZED));
    assert!(!error.to_string().contains(forged.expose_secret()));
    assert!(!format!("{presigner:?}").contains("Zm9yZ2Vk"));
}

#[tokio::test]
async fn a_plain_http_endpoint_is_refused_at_construction() {
    let http = "http://127.0.0.1:8787/v1/media/presign?fat=SECRET".parse().unwrap();
    let error = ReqwestPresigner::new(secure_media_reqwest::client_builder().build().unwrap(), http).unwrap_err();
    assert!(matches!(error, ConfigError::InsecureEndpoint { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("http://127.0.0.1:8787/v1/media/presign") && text.contains("new_allowing_http"), "{text}");
    assert!(!text.contains("SECRET"));
    let https = "https://api.example.com/v1/media/presign".parse().unwrap();
    assert!(ReqwestPresigner::new(secure_media_reqwest::client_builder().build().unwrap(), https).is_ok());
    let ftp = "ftp://api.example.com/presign".parse().unwrap();
    assert!(ReqwestPresigner::new_allowing_http(secure_media_reqwest::client_builder().build().unwrap(), ftp).is_err());
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

#[tokio::test]
async fn a_503_and_a_dropped_connection_are_retried_and_the_batch_succeeds() {
    let (server, token, presigner) = setup().await;
    let urls = urls(&server);
    server.faults().fail_next(Route::Presign, 1, StatusCode::SERVICE_UNAVAILABLE);
    let answers = presigner.presign_batch(&urls[..2], &token).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    server.faults().drop_next(Route::Presign, 1);
    let answers = presigner.presign_batch(&urls[..2], &token).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!((server.stats().faults_injected, server.stats().presign_calls), (2, 2));
}

#[tokio::test]
async fn a_permanent_503_ends_in_a_clear_error_after_the_bounded_attempts() {
    let (server, token, presigner) = setup().await;
    server.faults().fail_next(Route::Presign, 100, StatusCode::SERVICE_UNAVAILABLE);
    let answers = presigner.presign_batch(&urls(&server)[..2], &token).await;
    for answer in &answers {
        let error = answer.as_ref().unwrap_err().to_string();
        assert!(error.contains("503") && !error.contains(token.expose_secret()), "{error}");
    }
    assert_eq!(server.stats().faults_injected, 3, "one try and two retries");
}

/// An endpoint whose certificate the client does not trust: one attempt (a certificate does not
/// heal on retry), and an error that names the cause and carries neither the token nor the URL's
/// query.
#[tokio::test]
async fn an_untrusted_certificate_is_a_named_error_without_retries() {
    let (server, token, _) = setup().await;
    let untrusting = secure_media_reqwest::client_builder()
        .tls_certs_only([reqwest::Certificate::from_pem(
            secure_media_server::TestCa::new().unwrap().ca_pem().as_bytes(),
        )
        .unwrap()])
        .build()
        .unwrap();
    let presigner = ReqwestPresigner::new(untrusting, format!("{}?fat=SECRET", server.presign_url()).parse().unwrap())
        .unwrap()
        .with_retry_policy(RetryPolicy::default().with_retries(3, Duration::from_millis(200)));
    let started = std::time::Instant::now();
    let error = presigner.presign(&server.media_url("sample-64x64.gif"), &token).await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("TLS: the server's certificate is not signed by a trusted CA"), "{text}");
    assert!(!text.contains("SECRET") && !text.contains(token.expose_secret()), "{text}");
    assert!(started.elapsed() < Duration::from_millis(600), "no backoff for a TLS failure");
    assert_eq!(server.stats().presign_calls, 0);
}
