//! TLS on both stacks: a certificate the client must not accept (unknown CA, expired, another
//! host's) is a typed error that names the cause and carries no token; an https-to-http redirect
//! onto a secure host is not followed; plain http works only where it is allowed.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use secure_media::{
    AccessError, MediaAccessStrategy, MediaFetcher, NetworkError, NetworkFailure, SecureMediaMode, StaticToken,
    TlsFailure, TokenSource,
};
use secure_media_reqwest::{network_error, ReqwestFetcher};
use secure_media_server::{ReferenceServer, RunningServer, ServerConfig, Tls};
use tower::{ServiceBuilder, ServiceExt};

const FAT: &str = "TLS-TEST-FAT-0123456789";

fn embedded(server: &RunningServer) -> Arc<dyn MediaAccessStrategy> {
    let hosts = secure_media::SecureHosts::new().with_host(&server.host()).unwrap();
    Arc::new(secure_media::EmbeddedStrategy::new(hosts, Arc::new(StaticToken::parse(FAT).unwrap())))
}

/// What each stack reports for a GET of `url` that fails below HTTP, with its text.
async fn failure_on(stack: Stack, strategy: Arc<dyn MediaAccessStrategy>, url: &str) -> (NetworkFailure, String) {
    match stack {
        Stack::Reqwest => {
            let client = secure_media_reqwest::secure_client_from(reqwest_builder(), strategy.clone()).unwrap();
            let error = client.get(url).send().await.expect_err("the handshake must fail");
            let shown = format!("{error} {error:?}");
            let reqwest_middleware::Error::Reqwest(error) = error else { panic!("not a reqwest error: {shown}") };
            let network = network_error(error);
            // The fetcher says the same, typed, through `AccessError::Network`.
            let fetcher = ReqwestFetcher::from_client(reqwest_client(), strategy);
            match fetcher.fetch(url).await {
                Err(AccessError::Network { error, .. }) => assert_eq!(error.failure(), network.failure()),
                other => panic!("fetcher: {other:?}"),
            }
            (network.failure(), format!("{shown} {network}"))
        }
        Stack::Tower => {
            let service =
                ServiceBuilder::new().layer(secure_media_tower::SecureMediaLayer::new(strategy)).service(hyper());
            let request = http::Request::get(url).body(HyperBody::default()).unwrap();
            let error = service.oneshot(request).await.expect_err("the handshake must fail");
            let network = NetworkError::from_chain(error.as_ref(), NetworkFailure::Other);
            (network.failure(), format!("{error} {error:?} {network}"))
        }
    }
}

fn assert_names(failure: NetworkFailure, shown: &str, expected: TlsFailure, stack: Stack) {
    assert_eq!(failure, NetworkFailure::Tls(expected), "{stack:?}: {shown}");
    assert!(!shown.contains(FAT) && !shown.to_ascii_lowercase().contains("fat="), "{stack:?}: {shown}");
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_named_and_carries_no_token() {
    // Its own fresh CA: the clients here trust only the test CA.
    let server = ReferenceServer::start(ServerConfig::https()).await.unwrap();
    for stack in STACKS {
        let (failure, shown) = failure_on(stack, embedded(&server), &server.media_url("sample-64x64.gif")).await;
        assert_names(failure, &shown, TlsFailure::UnknownIssuer, stack);
        assert!(shown.contains("not signed by a trusted CA"), "{stack:?}: {shown}");
    }
    assert_eq!(server.stats().requests, 0, "no request got past the handshake");
}

#[tokio::test]
async fn an_expired_certificate_is_named() {
    let config = secure_media_testkit::https(ServerConfig::default());
    let server = ReferenceServer::start(ServerConfig { tls: Tls::ExpiredCertificate, ..config }).await.unwrap();
    for stack in STACKS {
        let (failure, shown) = failure_on(stack, embedded(&server), &server.media_url("sample-64x64.gif")).await;
        assert_names(failure, &shown, TlsFailure::Expired, stack);
    }
    assert_eq!(server.stats().requests, 0);
}

#[tokio::test]
async fn a_certificate_for_another_host_is_named() {
    // 127.0.0.2 is loopback too, but the certificate names 127.0.0.1, localhost and ::1 only.
    let addr: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let server = ReferenceServer::start(secure_media_testkit::https(ServerConfig { addr, ..ServerConfig::default() }))
        .await
        .unwrap();
    for stack in STACKS {
        let (failure, shown) = failure_on(stack, embedded(&server), &server.media_url("sample-64x64.gif")).await;
        assert_names(failure, &shown, TlsFailure::WrongHostName, stack);
    }
    assert_eq!(server.stats().requests, 0);
}

/// The secure host answers an https request with a redirect to itself over plain http (and
/// echoes the token into it): not followed, the 3xx goes back with a clean `Location`, and
/// nothing is sent in the clear.
#[tokio::test]
async fn an_https_to_http_redirect_onto_a_secure_host_is_not_followed() {
    let server = server().await;
    server.faults().redirect_media_to(Some(format!("http://{}", server.host())), true);
    for stack in STACKS {
        for mode in MODES {
            let cell = login_cell(&server, "downgrade").await;
            let token = cell.current().unwrap().expose_secret().to_owned();
            let client = Client::new(stack, media(&server, stack, mode, cell));
            server.reset_stats();
            let fetched = client.get(&server.media_url("sample-64x64.gif")).await.unwrap();
            assert_eq!(fetched.status, 302, "{stack:?} {mode}");
            assert_eq!(fetched.record.unwrap().hops, 0, "{stack:?} {mode}");
            assert!(!fetched.shown.contains(&token), "{stack:?} {mode}: {}", fetched.shown);
            // The status and the hop count say the downgrade was not followed (plain http to the
            // TLS port would fail its handshake, never reaching the counters).
        }
    }
}

/// Plain http is an opt-in: with `allowing_http` a plain-http secure host is served on both
/// stacks; without it the same URL is not secure, and no token goes to it.
#[tokio::test]
async fn plain_http_carries_a_token_only_when_allowed() {
    let server = http_server().await;
    for stack in STACKS {
        for mode in MODES {
            let cell = login_cell(&server, "plain").await;
            let allowed = Client::new(stack, media(&server, stack, mode, cell.clone()));
            let fetched = allowed.get(&server.media_url("sample-64x64.gif")).await.unwrap();
            assert_eq!(fetched.status, 200, "{stack:?} {mode}: allowed");

            let hosts = secure_media::SecureHosts::new().with_host(&server.host()).unwrap();
            let strict = secure_media::SecureMedia::builder(server.app_id())
                .secure_hosts(hosts)
                .mode(mode)
                .token_source(cell)
                .presigner(presigner(stack, &server))
                .build()
                .unwrap();
            server.reset_stats();
            let fetched = Client::new(stack, strict).get(&server.media_url("sample-64x64.gif")).await.unwrap();
            assert_eq!(fetched.status, 401, "{stack:?} {mode}: not allowed, so not secure");
            let stats = server.stats();
            assert_eq!((stats.requests_with_token, stats.presign_calls), (0, 0), "{stack:?} {mode}");
        }
    }
}

/// The `native-tls` backend (the platform's TLS) loads over https too, trusting the test CA.
#[cfg(feature = "native-tls")]
#[tokio::test]
async fn the_native_tls_backend_loads_over_https() {
    let server = server().await;
    let cell = login_cell(&server, "native").await;
    let media = media(&server, Stack::Reqwest, SecureMediaMode::HeaderBased, cell);
    let client =
        secure_media_reqwest::secure_client_from(reqwest_builder().tls_backend_native(), media.strategy()).unwrap();
    let response = client.get(server.media_url("sample-64x64.gif")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let untrusting = secure_media_reqwest::client_builder().tls_backend_native().build().unwrap();
    let error = untrusting.get(server.media_url("sample-64x64.gif")).send().await.unwrap_err();
    assert_eq!(network_error(error).failure(), NetworkFailure::Tls(TlsFailure::UnknownIssuer));
}
