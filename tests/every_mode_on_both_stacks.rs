//! Every mode on both stacks against the reference server on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::StatusCode;
use secure_media::{SecureMediaMode, StaticToken};
use secure_media_server::{samples, Route, ServerConfig};

fn sample(name: &str) -> &'static [u8] {
    &samples().iter().find(|s| s.name == name).unwrap().bytes
}

#[tokio::test]
async fn every_mode_loads_a_real_image_on_both_stacks() {
    let server = server().await;
    for stack in STACKS {
        for mode in MODES {
            server.reset_stats();
            let cell = login_cell(&server, "alice").await;
            let client = Client::new(stack, media(&server, stack, mode, cell));
            let url = server.media_url("sample-640x480.png");
            let fetched = client.get(&url).await.unwrap();
            assert_eq!(fetched.status, 200, "{stack:?} {mode}");
            assert_eq!(&fetched.bytes[..], sample("sample-640x480.png"));
            let image = image::load_from_memory(&fetched.bytes).unwrap();
            assert_eq!((image.width(), image.height()), (640, 480));
            assert_eq!(fetched.key.unwrap().as_str(), url, "the clean URL travels as the media key");
            let served = server.stats().served;
            let expected = match mode {
                SecureMediaMode::Embedded => (1, 0, 0),
                SecureMediaMode::HeaderBased => (0, 1, 0),
                SecureMediaMode::Presigned => (0, 0, 1),
            };
            assert_eq!((served.fat_query, served.bearer, served.presigned), expected, "{stack:?} {mode}");
        }
    }
}

#[tokio::test]
async fn an_expired_presigned_url_is_retried_once_transparently() {
    let server = server().await;
    for stack in STACKS {
        server.reset_stats();
        let cell = login_cell(&server, "bob").await;
        let client = Client::new(stack, media(&server, stack, SecureMediaMode::Presigned, cell));
        // The server refuses the first presigned URL as expired (403).
        server.faults().fail_next(Route::Media, 1, StatusCode::FORBIDDEN);
        let fetched = client.get(&server.media_url("sample-64x64.gif")).await.unwrap();
        assert_eq!(fetched.status, 200, "{stack:?}");
        let stats = server.stats();
        assert_eq!(stats.presign_calls, 2, "{stack:?}: the refused URL was dropped and presigned again");
        assert_eq!(stats.served.presigned, 1);
        assert_eq!(stats.faults_injected, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_fat_is_renewed_once_for_a_hundred_concurrent_requests() {
    let server = server_with(ServerConfig::default()).await;
    for stack in STACKS {
        for mode in [SecureMediaMode::Embedded, SecureMediaMode::HeaderBased, SecureMediaMode::Presigned] {
            server.faults().set_fat_ttl(Duration::ZERO);
            let cell = login_cell(&server, "carol").await; // holds an already expired FAT
            server.faults().set_fat_ttl(Duration::from_secs(3600));
            server.reset_stats();
            let client = Client::new(stack, media(&server, stack, mode, cell));
            let url = server.media_url("sample-256x256.webp");
            let tasks: Vec<_> = (0..100)
                .map(|_| {
                    let (client, url) = (client.clone(), url.clone());
                    tokio::spawn(async move { client.get(&url).await })
                })
                .collect();
            for task in tasks {
                assert_eq!(task.await.unwrap().unwrap().status, 200, "{stack:?} {mode}");
            }
            assert_eq!(server.stats().logins, 1, "{stack:?} {mode}: one relogin for all");
        }
    }
}

#[tokio::test]
async fn a_server_that_always_refuses_gets_exactly_two_attempts() {
    let server = server().await;
    for stack in STACKS {
        for mode in MODES {
            let cell = login_cell(&server, "dave").await;
            let client = Client::new(stack, media(&server, stack, mode, cell));
            server.reset_stats();
            let status =
                if mode == SecureMediaMode::Presigned { StatusCode::FORBIDDEN } else { StatusCode::UNAUTHORIZED };
            server.faults().fail_next(Route::Media, 1000, status);
            let fetched = client.get(&server.media_url("sample-64x64.gif")).await.unwrap();
            assert_eq!(fetched.status, status.as_u16(), "{stack:?} {mode}");
            assert_eq!(server.stats().faults_injected, 2, "{stack:?} {mode}: one try and one retry");
            server.faults().reset();
        }
    }
}

#[tokio::test]
async fn hosts_that_are_not_secure_pass_through_untouched() {
    let server = server().await;
    let other = server_with(ServerConfig::default()).await;
    for stack in STACKS {
        for mode in MODES {
            let cell = login_cell(&server, "erin").await;
            let client = Client::new(stack, media(&server, stack, mode, cell));
            other.reset_stats();
            let fetched = client.get(&other.media_url("sample-64x64.gif")).await.unwrap();
            assert_eq!(fetched.status, 401, "{stack:?} {mode}: the other server saw no proof");
            assert!(fetched.key.is_none());
            let seen = other.stats();
            assert_eq!((seen.requests, seen.requests_with_token), (1, 0), "{stack:?} {mode}");
        }
    }
    assert_eq!(server.stats().presign_calls, 0);
}

#[tokio::test]
async fn cross_origin_redirects_carry_no_token() {
    let server = server().await;
    let other = server_with(ServerConfig::default()).await;
    // The secure server sends media elsewhere and echoes the query (with any ?fat=) into Location.
    server.faults().redirect_media_to(Some(other.base_url()), true);
    for stack in STACKS {
        for mode in MODES {
            let cell = login_cell(&server, "frank").await;
            let client = Client::new(stack, media(&server, stack, mode, cell));
            other.reset_stats();
            let fetched = client.get(&server.media_url("sample-64x64.gif")).await.unwrap();
            let seen = other.stats();
            assert_eq!(seen.requests, 1, "{stack:?} {mode}: the redirect was followed");
            assert_eq!(seen.requests_with_token, 0, "{stack:?} {mode}: a token followed the redirect");
            // The other server saw no FAT and, in presigned mode, no signature either: a signed URL
            // that reached another origin could be replayed against the secure host.
            assert_eq!(fetched.status, 401, "{stack:?} {mode}");
            assert_eq!(seen.refusals.bad_signature + seen.refusals.expired_url, 0, "{stack:?} {mode}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_for_fifty_images_stay_within_the_batching_bound() {
    let server = server().await;
    for stack in STACKS {
        let cell = login_cell(&server, "gina").await;
        let client = Client::new(stack, media(&server, stack, SecureMediaMode::Presigned, cell));
        server.reset_stats();
        // A presign endpoint with some latency: every request arrives while the first call is out.
        server.faults().delay(Route::Presign, Duration::from_millis(300));
        let urls: Vec<String> = (0..50).map(|n| format!("{}?v={n}", server.media_url("sample-64x64.gif"))).collect();
        let fetches = (0..1000).map(|i| {
            let (client, url) = (client.clone(), urls[i % 50].clone());
            async move { client.get(&url).await.unwrap().status }
        });
        let statuses = futures::future::join_all(fetches).await;
        assert!(statuses.iter().all(|&s| s == 200), "{stack:?}");
        let stats = server.stats();
        // Batch limit 50: at most ceil(50 / 50) + 1 calls.
        assert!(stats.presign_calls <= 2, "{stack:?}: {} presign calls", stats.presign_calls);
        assert_eq!(stats.urls_presigned, 50, "{stack:?}");
        assert_eq!(stats.served.presigned, 1000);
    }
}

#[tokio::test]
async fn errors_never_show_the_token() {
    let server = server().await;
    let fat = server.login("hank").unwrap().fat;
    for stack in STACKS {
        let client = Client::new(
            stack,
            media(&server, stack, SecureMediaMode::Embedded, Arc::new(StaticToken::parse(fat.clone()).unwrap())),
        );
        server.faults().drop_next(Route::Media, 1);
        let error = match client.get(&server.media_url("sample-64x64.gif")).await {
            Err(error) => error,
            Ok(fetched) => panic!("{stack:?}: expected a dropped connection, got {}", fetched.status),
        };
        assert!(!error.contains(&fat) && !error.contains("fat="), "{stack:?}: {error}");
    }
    let cell = Arc::new(secure_media::LoginCell::new());
    let client = Client::new(Stack::Reqwest, media(&server, Stack::Reqwest, SecureMediaMode::Embedded, cell));
    let error = client.get(&server.media_url("sample-64x64.gif")).await.unwrap_err();
    assert!(error.contains("log in"), "{error}");
}

#[tokio::test]
async fn without_the_redirect_policy_reqwest_itself_would_carry_the_query_token() {
    // Why `redirect_policy()` exists: reqwest's default policy follows the cross-origin redirect
    // below every middleware and keeps the query that the server echoed into Location.
    let server = server().await;
    let other = server_with(ServerConfig::default()).await;
    server.faults().redirect_media_to(Some(other.base_url()), true);
    let cell = login_cell(&server, "ivy").await;
    let media = media(&server, Stack::Reqwest, SecureMediaMode::Embedded, cell);
    let naive = reqwest_middleware::ClientBuilder::new(
        reqwest_builder().redirect(reqwest::redirect::Policy::default()).build().unwrap(),
    )
    .with(secure_media_reqwest::SecureMediaMiddleware::new(media.strategy()))
    .build();
    let error = naive.get(server.media_url("sample-64x64.gif")).send().await.unwrap_err();
    assert_eq!(other.stats().requests_with_token, 1, "the leak this crate's policy prevents");
    // The middleware notices and refuses to hand another origin's answer back as the caller's.
    assert!(error.to_string().contains("client_builder"), "{error}");
}

/// Renewal storms are bounded by time, not traffic: a media server that refuses every token, and
/// then a login endpoint that fails too, cost a couple of relogins for 300 requests, not one per
/// window of requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_forever_make_a_bounded_number_of_relogins_on_both_stacks() {
    let server = server().await;
    for stack in STACKS {
        for mode in [SecureMediaMode::Embedded, SecureMediaMode::HeaderBased] {
            for login_fails in [false, true] {
                server.faults().reset();
                let cell = login_cell(&server, "storm").await;
                let client = Client::new(stack, media(&server, stack, mode, cell));
                server.faults().fail_next(Route::Media, 1_000_000, StatusCode::UNAUTHORIZED);
                if login_fails {
                    server.faults().fail_next(Route::Login, 1_000_000, StatusCode::SERVICE_UNAVAILABLE);
                }
                server.reset_stats();
                let url = server.media_url("sample-64x64.gif");
                for _ in 0..3 {
                    let fetches = (0..100).map(|_| {
                        let (client, url) = (client.clone(), url.clone());
                        async move { client.get(&url).await.unwrap().status }
                    });
                    let statuses = futures::future::join_all(fetches).await;
                    assert!(statuses.iter().all(|&s| s == 401), "{stack:?} {mode}");
                }
                // Each load: at most one try and one retry (600 refusals); relogins: at most a few,
                // whether they succeed (`logins`) or fail (injected 503s beyond the refusals).
                let stats = server.stats();
                assert!(
                    stats.logins <= 2 && stats.faults_injected <= 603,
                    "{stack:?} {mode} login fails {login_fails}: {} relogins, {} injected failures for 300 loads",
                    stats.logins,
                    stats.faults_injected
                );
            }
        }
    }
    server.faults().reset();
}
