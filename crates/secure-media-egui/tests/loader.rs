//! A headless egui::Context polls the loader until secure images arrive from the reference server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::load::{BytesLoader, BytesPoll, LoadError};
use secure_media_core::{SecureMediaMode, StaticToken, TokenSource};
use secure_media_egui::{install, SecureBytesLoader};
use secure_media_server::{samples, ReferenceServer, ServerConfig};
use secure_media_testkit::{fetcher, logged_in};

/// Polls like a UI frame loop would, until the answer is no longer pending.
async fn poll(load: impl Fn() -> egui::load::BytesLoadResult) -> egui::load::BytesLoadResult {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = load();
        if !matches!(answer, Ok(BytesPoll::Pending { .. })) || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_loads_through_a_headless_context() {
    let server = ReferenceServer::start(secure_media_testkit::https(ServerConfig::default())).await.unwrap();
    let expected = &samples().iter().find(|s| s.name == "sample-256x256.webp").unwrap().bytes;
    for mode in [SecureMediaMode::Embedded, SecureMediaMode::HeaderBased, SecureMediaMode::Presigned] {
        let ctx = egui::Context::default();
        install(
            &ctx,
            SecureBytesLoader::new(
                fetcher(&server, mode, logged_in(&server, "egui")),
                tokio::runtime::Handle::current(),
            ),
        );
        let url = server.media_url("sample-256x256.webp");
        match poll(|| ctx.try_load_bytes(&url)).await {
            Ok(BytesPoll::Ready { bytes, mime, .. }) => {
                assert_eq!(&bytes[..], &expected[..], "{mode}");
                assert_eq!(mime.as_deref(), Some("image/webp"));
            }
            Ok(BytesPoll::Pending { .. }) => panic!("{mode}: still pending"),
            Err(error) => panic!("{mode}: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_urls_are_passed_on() {
    let server = ReferenceServer::start(secure_media_testkit::https(ServerConfig::default())).await.unwrap();
    let loader = SecureBytesLoader::new(
        fetcher(&server, SecureMediaMode::Embedded, logged_in(&server, "egui")),
        tokio::runtime::Handle::current(),
    );
    let ctx = egui::Context::default();
    assert!(matches!(loader.load(&ctx, "https://example.com/public.png"), Err(LoadError::NotSupported)));
    assert!(!loader.has_pending());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_reported_then_retried_after_forget() {
    let server = ReferenceServer::start(secure_media_testkit::https(ServerConfig::default())).await.unwrap();
    let forged: Arc<dyn TokenSource> = Arc::new(StaticToken::parse("forged-token").unwrap());
    let loader = SecureBytesLoader::new(
        fetcher(&server, SecureMediaMode::HeaderBased, forged),
        tokio::runtime::Handle::current(),
    )
    .with_retry_after(Duration::from_secs(60));
    let ctx = egui::Context::default();
    let url = server.media_url("sample-64x64.gif");
    match poll(|| loader.load(&ctx, &url)).await {
        Err(LoadError::Loading(message)) => {
            assert!(message.contains("401") && !message.contains("forged"), "{message}")
        }
        Ok(_) => panic!("expected a refusal"),
        Err(error) => panic!("{error}"),
    }
    let asked = server.stats().refusals.invalid_fat;
    // Within the retry window the failure is reported from the cache: no new request.
    assert!(matches!(loader.load(&ctx, &url), Err(LoadError::Loading(_))));
    assert_eq!(server.stats().refusals.invalid_fat, asked);
    // After forget it is tried again (and a stale ?fat= names the same entry).
    loader.forget(&format!("{url}?fat=stale"));
    assert!(matches!(loader.load(&ctx, &url), Ok(BytesPoll::Pending { .. })));
    let _ = poll(|| loader.load(&ctx, &url)).await;
    assert!(server.stats().refusals.invalid_fat > asked);
    assert_eq!(loader.byte_size(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_size_and_forget_all() {
    let server = ReferenceServer::start(secure_media_testkit::https(ServerConfig::default())).await.unwrap();
    let loader = SecureBytesLoader::new(
        fetcher(&server, SecureMediaMode::Embedded, logged_in(&server, "egui")),
        tokio::runtime::Handle::current(),
    );
    let ctx = egui::Context::default();
    let url = server.media_url("sample-64x64.gif");
    assert!(matches!(poll(|| loader.load(&ctx, &url)).await, Ok(BytesPoll::Ready { .. })));
    let size = samples().iter().find(|s| s.name == "sample-64x64.gif").unwrap().bytes.len();
    assert_eq!(loader.byte_size(), size);
    loader.forget_all();
    assert_eq!(loader.byte_size(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gallery_asked_ahead_loads_from_one_presign_call() {
    let server = secure_media_testkit::https_server().await;
    let ctx = egui::Context::default();
    let loader = SecureBytesLoader::new(
        fetcher(&server, SecureMediaMode::Presigned, logged_in(&server, "egui")),
        tokio::runtime::Handle::current(),
    );
    let urls: Vec<String> = (0..40).map(|i| server.gallery_url(i)).collect();
    loader.prefetch(urls.clone()).await.unwrap();
    assert_eq!((server.stats().presign_calls, server.stats().urls_presigned), (1, 40));
    install(&ctx, loader);
    for url in &urls {
        assert!(matches!(poll(|| ctx.try_load_bytes(url)).await, Ok(BytesPoll::Ready { .. })), "{url}");
    }
    assert_eq!(server.stats().presign_calls, 1, "every load found its URL ready");
}
