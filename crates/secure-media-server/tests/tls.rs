//! The reference server over https, proven with rustls clients on 127.0.0.1: who gets through
//! the handshake, who does not, and that a stuck handshake holds up nobody.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use secure_media_server::{ReferenceServer, ServerConfig, ServerError, TestCa, Tls};
use serde_json::Value;

/// The error and its sources, one line, lowercase: what a user would read.
fn chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(" / ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.to_lowercase()
}

#[tokio::test]
async fn a_client_trusting_the_ca_logs_in_presigns_and_fetches_over_https() {
    let server = start(ServerConfig::https()).await;
    assert!(server.is_https());
    assert!(server.base_url().starts_with("https://127.0.0.1:"), "{}", server.base_url());
    for url in [server.login_url(), server.presign_url(), server.media_url("a.png")] {
        assert!(url.starts_with(&server.base_url()), "{url}");
    }
    assert!(server.ca_pem().unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    let client = client_of(&server);

    let login: Value = login(&client, &server, "alice").await;
    let fat = login["fat"].as_str().unwrap();
    let url = server.media_url("sample-64x64.gif");
    let answer = presign(&client, &server, fat, &[url.clone(), url.replacen("https:", "http:", 1)]).await;
    let presigned = answer["urls"][0]["presigned_url"].as_str().unwrap();
    assert!(presigned.starts_with(&format!("{url}?Expires=")), "{presigned}");
    assert!(answer["urls"][1]["error"].is_string(), "an http:// URL is not on an https server: {answer}");

    let media = client.get(presigned).send().await.unwrap();
    assert_eq!(media.status(), StatusCode::OK);
    assert_eq!(&media.bytes().await.unwrap()[..], sample("sample-64x64.gif"));
    let bearer = client.get(&url).bearer_auth(fat).send().await.unwrap();
    assert_eq!(&bearer.bytes().await.unwrap()[..], sample("sample-64x64.gif"));

    // The certificate also names localhost.
    let by_name = trusting(server.ca_pem().unwrap()).resolve("localhost", server.addr()).build().unwrap();
    let stats = by_name.get(format!("https://localhost:{}/_stats", server.addr().port())).send().await.unwrap();
    assert_eq!(stats.status(), StatusCode::OK);

    let counted = server.stats();
    assert_eq!((counted.logins, counted.presign_calls, counted.served.presigned, counted.served.bearer), (1, 1, 1, 1));
}

#[tokio::test]
async fn a_plain_server_has_no_ca_and_stays_http() {
    let server = start(ServerConfig::default()).await;
    assert!(!server.is_https());
    assert_eq!(server.ca_pem(), None);
    assert!(server.base_url().starts_with("http://127.0.0.1:"));
    let config = format!("{:?}", ServerConfig::https());
    assert!(config.contains("tls: TestCa"), "{config}");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails_the_handshake() {
    let server = start(ServerConfig::https()).await;
    let stranger = TestCa::new().unwrap();
    let refused = trusting(stranger.ca_pem()).build().unwrap().get(server.login_url()).send().await.unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");
    // Another test CA has the same name, so rustls finds it and the signature does not match.
    assert!(chain(&refused).contains("invalid peer certificate"), "{}", chain(&refused));
    // Nor does a client with only the usual roots.
    let usual = Client::builder().tls_backend_rustls().build().unwrap();
    let refused = usual.get(format!("{}/_stats", server.base_url())).send().await.unwrap_err();
    assert!(chain(&refused).contains("certificate"), "{}", chain(&refused));
    // Nothing reached the routes, and the server still serves a client that trusts it.
    let stats = client_of(&server).get(format!("{}/_stats", server.base_url())).send().await.unwrap();
    assert_eq!(stats.json::<Value>().await.unwrap()["requests"], 1);
}

#[tokio::test]
async fn an_expired_certificate_fails_with_an_expiry_error() {
    let server = start(ServerConfig { tls: Tls::ExpiredCertificate, ..ServerConfig::default() }).await;
    assert!(server.is_https());
    let refused = client_of(&server).get(format!("{}/_stats", server.base_url())).send().await.unwrap_err();
    assert!(chain(&refused).contains("expired"), "{}", chain(&refused));
    assert_eq!(server.stats().requests, 0);
}

#[tokio::test]
async fn a_name_that_is_not_on_the_certificate_fails() {
    let server = start(ServerConfig::https()).await;
    let client = trusting(server.ca_pem().unwrap()).resolve("wrong.test", server.addr()).build().unwrap();
    let refused = client.get(format!("https://wrong.test:{}/_stats", server.addr().port())).send().await.unwrap_err();
    assert!(chain(&refused).contains("not valid for name"), "{}", chain(&refused));
    assert_eq!(server.stats().requests, 0);
}

#[tokio::test]
async fn a_handshake_that_never_completes_does_not_block_other_clients() {
    let server = start(ServerConfig::https()).await;
    // Connected, silent: its handshake waits for bytes that never come.
    let silent = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = client_of(&server);
    let answered =
        tokio::time::timeout(Duration::from_secs(3), client.get(format!("{}/_stats", server.base_url())).send())
            .await
            .expect("the second client waited behind the silent one")
            .unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    // Plain http on the https port fails its handshake and is dropped, and the server carries on.
    let plain = Client::new().get(format!("http://{}/_stats", server.addr())).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()));
    let again = client.get(format!("{}/_stats", server.base_url())).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    drop(silent);
}

#[tokio::test]
async fn urls_on_a_public_origin_are_presigned_keeping_that_origin() {
    // Plain http behind a TLS proxy on :8443 (not started: a proxy forwards the path unchanged,
    // which the test does by hand).
    let public = "https://127.0.0.1:8443";
    let server = start(ServerConfig {
        public_origins: vec![public.to_owned(), "https://media.test".into()],
        ..ServerConfig::default()
    })
    .await;
    let fat = server.login("pat").unwrap().fat;
    let client = Client::new();
    let through_proxy = format!("{public}/demo/media/sample-64x64.gif");
    let urls = [
        through_proxy.clone(),
        "https://media.test:443/demo/media/sample-64x64.gif".to_owned(),
        "http://127.0.0.1:8443/demo/media/sample-64x64.gif".to_owned(),
        "https://127.0.0.1:8444/demo/media/sample-64x64.gif".to_owned(),
        "https://127.0.0.1:8443/other/media/sample-64x64.gif".to_owned(),
    ];
    let answer = presign(&client, &server, &fat, &urls).await;
    let items = answer["urls"].as_array().unwrap();
    let presigned = items[0]["presigned_url"].as_str().unwrap();
    assert!(presigned.starts_with(&format!("{through_proxy}?Expires=")), "{presigned}");
    assert!(items[1]["presigned_url"].as_str().unwrap().starts_with("https://media.test/demo/media/"));
    for refused in &items[2..] {
        assert_eq!(refused["error"], "not a media URL on this server", "{refused}");
    }
    // What the proxy would send on: the same path and query, to the server itself.
    let forwarded = presigned.replacen(public, &server.base_url(), 1);
    let media = client.get(forwarded).send().await.unwrap();
    assert_eq!(media.status(), StatusCode::OK);
    assert_eq!(&media.bytes().await.unwrap()[..], sample("sample-64x64.gif"));
    assert_eq!(server.stats().served.presigned, 1);
}

#[tokio::test]
async fn a_public_origin_that_is_not_an_origin_is_refused_at_start() {
    for bad in ["127.0.0.1:8443", "https://proxy.test/prefix", "ftp://proxy.test"] {
        let config = ServerConfig { public_origins: vec![bad.to_owned()], ..ServerConfig::default() };
        let error = ReferenceServer::start(config).await.unwrap_err();
        assert!(matches!(error, ServerError::PublicOrigin(ref origin) if origin == bad), "{error}");
    }
}

async fn refuses_connections(addr: SocketAddr) -> bool {
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn shutdown_and_drop_end_an_https_server_even_with_a_handshake_pending() {
    let server = start(ServerConfig::https()).await;
    let addr = server.addr();
    let client = client_of(&server);
    assert_eq!(client.get(format!("{}/_stats", server.base_url())).send().await.unwrap().status(), StatusCode::OK);
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown waited for the silent client");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed once shutdown returns");

    let dropped = start(ServerConfig::https()).await;
    let addr = dropped.addr();
    drop(dropped);
    assert!(refuses_connections(addr).await, "a dropped server still accepts connections");
}
