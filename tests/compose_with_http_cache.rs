//! The compose example's stacks: a cache outside secure-media, keyed by the media key, keeps one
//! entry per image while tokens rotate; a cache below it keys by the tokenised URL and misses.

#[path = "../examples/compose.rs"]
#[allow(dead_code)]
mod compose;

use std::sync::Arc;

use http_cache_reqwest::MokaManager;
use secure_media::{FileAccessToken, LoginCell, SecureMedia, SecureMediaMode};
use secure_media_server::RunningServer;
use secure_media_testkit::{https_server, reqwest_client};

async fn rounds(server: &RunningServer, build: compose::Stack, mode: SecureMediaMode) -> (u64, u64) {
    let cell = Arc::new(LoginCell::new());
    cell.set(compose::login(server, "alice").unwrap());
    let mut builder =
        SecureMedia::builder(server.app_id()).secure_host(&server.host()).mode(mode).token_source(cell.clone());
    if mode == SecureMediaMode::Presigned {
        builder = builder.presigner(Arc::new(
            secure_media_reqwest::ReqwestPresigner::new(reqwest_client(), server.presign_url().parse().unwrap())
                .unwrap(),
        ));
    }
    let media = builder.build().unwrap();
    let cache = MokaManager::default();
    let client = build(reqwest_client(), media.strategy(), cache.clone());
    server.reset_stats();
    server.faults().set_url_ttl(std::time::Duration::from_secs(86_400));
    let image = server.media_url("sample-640x480.png");
    for round in 0..3 {
        let response = client.get(&image).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        // Log out and in again: a new FAT (embedded URLs change); the presigned URLs of the old
        // session are purged, and new ones carry a new expiry and signature.
        cell.clear();
        // Lifetimes far apart: two rounds a second or two apart never get the same `Expires`.
        server.faults().set_url_ttl(std::time::Duration::from_secs(86_400 + (round + 1) * 1_000));
        cell.set(compose::login(server, "alice").unwrap());
    }
    cache.cache.run_pending_tasks().await;
    let served = server.stats().served;
    (cache.cache.entry_count(), served.fat_query + served.bearer + served.presigned)
}

#[tokio::test]
async fn the_http_cache_keeps_one_entry_per_image_while_tokens_and_signatures_rotate() {
    let server = https_server().await;
    for mode in [SecureMediaMode::Embedded, SecureMediaMode::Presigned] {
        let (entries, served) = rounds(&server, compose::recommended, mode).await;
        assert_eq!((entries, served), (1, 1), "{mode}: one entry, one download");
        let (entries, served) = rounds(&server, compose::cache_below, mode).await;
        assert_eq!((entries, served), (3, 3), "{mode}: below secure-media the key rotates with the token");
    }
}

/// One client, one cache outside secure-media: alice loads, then bob logs in on the same client.
/// Bob's load is not served from alice's entry (the media key carries the principal), nor is a
/// forged token's whose unverified payload says `sub: alice`.
#[tokio::test]
async fn the_http_cache_never_serves_one_principals_media_to_another() {
    let server = https_server().await;
    for mode in [SecureMediaMode::Embedded, SecureMediaMode::HeaderBased] {
        let cell = Arc::new(LoginCell::new());
        let alice = compose::login(&server, "alice").unwrap();
        let forged = {
            let secret = alice.expose_secret();
            let (unsigned, _) = secret.rsplit_once('.').unwrap();
            FileAccessToken::new(format!("{unsigned}.Zm9yZ2Vk")).unwrap()
        };
        assert_eq!(forged.subject(), Some("alice"));
        cell.set(alice);
        let media = SecureMedia::builder(server.app_id())
            .secure_host(&server.host())
            .mode(mode)
            .token_source(cell.clone())
            .build()
            .unwrap();
        let cache = MokaManager::default();
        let client = compose::recommended(reqwest_client(), media.strategy(), cache.clone());
        let image = server.media_url("sample-640x480.png");
        server.reset_stats();
        let load = |client: reqwest_middleware::ClientWithMiddleware| {
            let image = image.clone();
            async move {
                let response = client.get(&image).send().await.unwrap();
                let x_cache = response.headers().get("x-cache").map(|v| v.to_str().unwrap().to_owned());
                (response.status().as_u16(), x_cache, response.bytes().await.unwrap().len())
            }
        };
        assert_eq!(load(client.clone()).await.0, 200, "{mode}");
        let (status, x_cache, _) = load(client.clone()).await;
        assert_eq!((status, x_cache.as_deref()), (200, Some("HIT")), "{mode}: alice's second load is a hit");
        cell.set(compose::login(&server, "bob").unwrap());
        let (status, x_cache, _) = load(client.clone()).await;
        assert_eq!((status, x_cache.as_deref()), (200, Some("MISS")), "{mode}: bob got alice's entry");
        cell.set(forged);
        let (status, x_cache, _) = load(client.clone()).await;
        assert_eq!(
            (status, x_cache.as_deref()),
            (401, Some("MISS")),
            "{mode}: a forged sub: alice was served from alice's entry"
        );
        let served = server.stats().served;
        assert_eq!(served.fat_query + served.bearer, 2, "{mode}: alice once, bob once");
    }
}
