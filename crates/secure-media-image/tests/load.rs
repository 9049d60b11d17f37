//! Loading real images from the reference server in every mode, and refusing what is not one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use secure_media_core::{AccessError, Media, MediaFetcher, SecureMediaMode};
use secure_media_image::{decode, dimensions, DecodeLimits, ImageLoadError, ImageLoader};
use secure_media_reqwest::ReqwestFetcher;
use secure_media_server::{samples, ReferenceServer, RunningServer, ServerConfig, BOMB_SIDE};

fn fetcher(server: &RunningServer, mode: SecureMediaMode) -> Arc<dyn MediaFetcher> {
    secure_media_testkit::fetcher(server, mode, secure_media_testkit::logged_in(server, "viewer"))
}

#[tokio::test]
async fn every_mode_loads_every_sample_format() {
    let server = ReferenceServer::start(secure_media_testkit::https(ServerConfig::default())).await.unwrap();
    for mode in [SecureMediaMode::Embedded, SecureMediaMode::HeaderBased, SecureMediaMode::Presigned] {
        let loader = ImageLoader::new(fetcher(&server, mode));
        for (name, size) in [
            ("sample-640x480.png", (640, 480)),
            ("sample-1920x1080.jpg", (1920, 1080)),
            ("sample-256x256.webp", (256, 256)),
            ("sample-64x64.gif", (64, 64)),
        ] {
            let image = loader.load(&server.media_url(name)).await.unwrap();
            assert_eq!((image.width(), image.height()), size, "{mode} {name}");
        }
    }
}

#[tokio::test]
async fn the_bomb_is_refused_by_its_header() {
    let server = ReferenceServer::start(secure_media_testkit::https(ServerConfig::default())).await.unwrap();
    let loader = ImageLoader::new(fetcher(&server, SecureMediaMode::HeaderBased));
    let error = loader.load(&server.media_url("bomb.png")).await.unwrap_err();
    assert!(matches!(error, ImageLoadError::Limits(_)), "{error}");
    let bomb = &samples().iter().find(|s| s.name == "bomb.png").unwrap().bytes;
    assert_eq!(dimensions(bomb).unwrap(), (BOMB_SIDE, BOMB_SIDE));
    let tight = DecodeLimits { max_width: 100, max_height: 100, ..DecodeLimits::default() };
    let png = &samples().iter().find(|s| s.name == "sample-640x480.png").unwrap().bytes;
    assert!(matches!(decode(png, tight), Err(ImageLoadError::Limits(_))));
    assert!(decode(png, DecodeLimits::default()).is_ok());
}

#[tokio::test]
async fn what_is_not_a_secure_image_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("secure-media-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("login.png"), "<!doctype html><form>Sign in</form>").unwrap();
    std::fs::write(dir.join("notes.txt"), "plain text").unwrap();
    let server = ReferenceServer::start(secure_media_testkit::https(ServerConfig {
        media_dir: Some(dir.clone()),
        ..ServerConfig::default()
    }))
    .await
    .unwrap();
    let loader = ImageLoader::new(fetcher(&server, SecureMediaMode::Embedded));
    let html = loader.load(&server.media_url("login.png")).await.unwrap_err();
    assert!(matches!(html, ImageLoadError::Fetch(AccessError::NotMedia { .. })), "{html}");
    let text = loader.load(&server.media_url("notes.txt")).await.unwrap_err();
    assert!(matches!(text, ImageLoadError::Decode(_)), "{text}");
    let foreign = loader.load("https://example.com/a.png").await.unwrap_err();
    assert!(matches!(foreign, ImageLoadError::Fetch(AccessError::NotSecure(_))), "{foreign}");
    let missing = loader.load(&server.media_url("nope.png")).await.unwrap_err();
    assert!(matches!(missing, ImageLoadError::Fetch(AccessError::Status { .. })), "{missing}");
    let tokens = secure_media_testkit::logged_in(&server, "x");
    let strategy = secure_media_testkit::media(&server, SecureMediaMode::Embedded, tokens).strategy();
    let capped = ReqwestFetcher::from_client(secure_media_testkit::reqwest_client(), strategy).with_max_bytes(4);
    let too_large = capped.fetch(&server.media_url("notes.txt")).await.unwrap_err();
    assert!(matches!(too_large, AccessError::TooLarge { limit: 4, .. }), "{too_large}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Counts how many fetches run at once (an in-process wrapper of our own trait).
struct Gauge {
    inner: Arc<dyn MediaFetcher>,
    now: AtomicUsize,
    max: AtomicUsize,
}

#[async_trait]
impl MediaFetcher for Gauge {
    fn handles(&self, url: &str) -> bool {
        self.inner.handles(url)
    }
    async fn fetch(&self, url: &str) -> Result<Media, AccessError> {
        let running = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(running, Ordering::SeqCst);
        let result = self.inner.fetch(url).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screenful_loads_in_order_with_bounded_concurrency() {
    let server = ReferenceServer::start(secure_media_testkit::https(ServerConfig::default())).await.unwrap();
    server.faults().delay(secure_media_server::Route::Media, std::time::Duration::from_millis(20));
    let gauge = Arc::new(Gauge {
        inner: fetcher(&server, SecureMediaMode::Presigned),
        now: AtomicUsize::new(0),
        max: AtomicUsize::new(0),
    });
    let loader = ImageLoader::new(gauge.clone());
    let names = ["sample-64x64.gif", "sample-256x256.webp", "sample-640x480.png"];
    let urls: Vec<String> = (0..12).map(|i| format!("{}?i={i}", server.media_url(names[i % 3]))).collect();
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let images = loader.load_all(&refs, 3).await;
    for (i, image) in images.iter().enumerate() {
        let width = image.as_ref().unwrap().width();
        assert_eq!(width, [64, 256, 640][i % 3], "answers come back in the order asked");
    }
    assert!(gauge.max.load(Ordering::SeqCst) <= 3);
    assert!(gauge.max.load(Ordering::SeqCst) >= 2, "loads did overlap");
}

#[tokio::test]
async fn a_gallery_known_ahead_is_presigned_in_full_batches() {
    let server = secure_media_testkit::https_server().await;
    let loader = ImageLoader::new(fetcher(&server, SecureMediaMode::Presigned));
    let urls: Vec<String> = (0..120).map(|i| server.gallery_url(i)).collect();
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let images = loader.load_all(&refs, 8).await;
    assert!(images.iter().all(|image| image.as_ref().is_ok_and(|i| (i.width(), i.height()) == (64, 64))));
    let stats = server.stats();
    // Asked ahead: 120 URLs in ceil(120 / 50) calls, not one call per window of 8 loads.
    assert_eq!((stats.presign_calls, stats.urls_presigned), (3, 120));
}
