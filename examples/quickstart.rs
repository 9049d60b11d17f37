//! The main job: resolve media URLs in the three modes and show what each request would carry.
//!
//! Run it with `cargo run --example quickstart`. (Once the reference server and the middleware
//! land, this loads real images from a local server in every mode.)

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use secure_media::presigned::{Presigned, Presigner};
use secure_media::{resolve_str, AccessError, FileAccessToken, LoginCell, SecureMedia, SecureMediaMode, StrategyStats};

/// A stand-in presign endpoint that signs in-process (the reference server does this over HTTP).
struct LocalSigner;

#[async_trait]
impl Presigner for LocalSigner {
    async fn presign(&self, url: &str, _token: &FileAccessToken) -> Result<Presigned, AccessError> {
        let expires = SystemTime::now() + Duration::from_secs(86_400);
        let unix = expires.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        Ok(Presigned {
            url: format!("{url}?Expires={unix}&Signature=demo-signature&Key-Pair-Id=demo"),
            expires_at: None,
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), AccessError> {
    let login = Arc::new(LoginCell::new());
    login.set(FileAccessToken::new("demo+fat/token=")?);

    let urls = [
        "https://files-us.cometchat.io/demo/media/photo.jpg",
        "https://files-us.cometchat.io/demo/media/fatima.jpg?w=320",
        "https://files-us.cometchat.io/demo/media/clip.mp4?fat=stale#t=10",
        "https://evil.com/?next=files-us.cometchat.io",
        "not a url",
    ];

    for mode in [SecureMediaMode::Embedded, SecureMediaMode::HeaderBased, SecureMediaMode::Presigned] {
        let media = SecureMedia::builder("demo")
            .region("us")
            .mode(mode)
            .token_source(login.clone())
            .presigner(Arc::new(LocalSigner))
            .build()?;
        println!("\n== mode {} ({}) ==", mode, u8::from(mode));
        let strategy = media.strategy();
        for url in urls {
            let (resolved, resolution) = resolve_str(&*strategy, url).await?;
            let headers: Vec<String> =
                resolution.iter().flat_map(|r| r.headers()).map(|(name, _)| format!("{name}: <redacted>")).collect();
            let secure = if media.requires_secure_access(url) { "secure " } else { "public " };
            println!(
                "{secure} {url}\n   -> {resolved}{}",
                if headers.is_empty() { String::new() } else { format!("\n      + {}", headers.join(", ")) }
            );
        }
        let StrategyStats { presign_calls, cache_hits, .. } = strategy.stats();
        println!(
            "   presign calls: {presign_calls}, cache hits: {cache_hits}, header mode enabled: {}",
            media.is_header_mode_enabled()
        );
    }
    Ok(())
}
