//! secure-media inside the reqwest stack people already run: an HTTP cache keyed by the clean
//! media URL, reqwest-retry, reqwest-tracing, then our middleware closest to the client.
//! Tokens and presigned signatures rotate; the cache keeps one entry per image.
//!
//! ```sh
//! cargo run --example compose
//! ```

use std::sync::Arc;

use http_cache_reqwest::{Cache, CacheMode, CacheOptions, HttpCache, HttpCacheOptions, MokaManager};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use reqwest_retry::{policies::ExponentialBackoff, RetryTransientMiddleware};
use reqwest_tracing::TracingMiddleware;
use secure_media::{FileAccessToken, LoginCell, MediaAccessStrategy, MediaKey, SecureMedia, SecureMediaMode};
use secure_media_reqwest::{redirect_policy, ReqwestPresigner, SecureMediaMiddleware};
use secure_media_server::{ReferenceServer, ServerConfig};

/// An in-memory HTTP cache for one client (`Cache-Control: private` media may be stored).
fn http_cache(manager: MokaManager, key_by_media: bool) -> Cache<MokaManager> {
    let cache_key: Option<CacheKeyFn> = key_by_media.then(|| {
        Arc::new(|parts: &http::request::Parts| {
            let uri = parts.uri.to_string();
            format!("{}:{}", parts.method, MediaKey::of_str(&uri).map_or(uri, |k| k.to_string()))
        }) as CacheKeyFn
    });
    let options = HttpCacheOptions {
        cache_key,
        cache_options: Some(CacheOptions { shared: false, ..CacheOptions::default() }),
        cache_status_headers: true,
        ..HttpCacheOptions::default()
    };
    Cache(HttpCache { mode: CacheMode::Default, manager, options })
}

/// The stack that works, outermost first: the cache (keyed by [`MediaKey`], so a URL with a
/// stale `?fat=` or an old signature finds its entry too), retries, tracing, then secure-media
/// closest to the client, so nothing above it ever sees a token.
pub fn recommended(
    strategy: Arc<dyn MediaAccessStrategy>,
    cache: MokaManager,
) -> Result<ClientWithMiddleware, reqwest::Error> {
    let client = reqwest::Client::builder().redirect(redirect_policy()).build()?;
    Ok(ClientBuilder::new(client)
        .with(http_cache(cache, true))
        .with(RetryTransientMiddleware::new_with_policy(ExponentialBackoff::builder().build_with_max_retries(2)))
        .with(TracingMiddleware::default())
        .with(SecureMediaMiddleware::new(strategy))
        .build())
}

/// The order that does not work: a cache below secure-media keys by the tokenised URL.
pub fn cache_below(
    strategy: Arc<dyn MediaAccessStrategy>,
    cache: MokaManager,
) -> Result<ClientWithMiddleware, reqwest::Error> {
    let client = reqwest::Client::builder().redirect(redirect_policy()).build()?;
    Ok(ClientBuilder::new(client).with(SecureMediaMiddleware::new(strategy)).with(http_cache(cache, false)).build())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let server = ReferenceServer::start(ServerConfig::default()).await?;
    let image = server.media_url("sample-640x480.png");
    println!("{:<28} {:>5} {:>8} {:>13} {:>14}", "stack", "round", "x-cache", "cache entries", "server served");
    for (name, build) in
        [("cache outside, media key", recommended as Stack), ("cache below, raw URL", cache_below as Stack)]
    {
        let cell = Arc::new(LoginCell::new());
        cell.set(FileAccessToken::new(server.login("alice").map_err(|e| e.to_string())?.fat)?);
        let media = SecureMedia::builder(server.app_id())
            .secure_host(&server.host())
            .allowing_http()
            .mode(SecureMediaMode::Embedded)
            .token_source(cell.clone())
            .presigner(Arc::new(ReqwestPresigner::new(reqwest::Client::new(), server.presign_url().parse()?)))
            .build()?;
        let cache = MokaManager::default();
        let client = build(media.strategy(), cache.clone())?;
        server.reset_stats();
        for round in 1..=3 {
            let response = client.get(&image).send().await?;
            let x_cache = response.headers().get("x-cache").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
            response.bytes().await?;
            cache.cache.run_pending_tasks().await;
            let served = server.stats().served.fat_query;
            println!("{name:<28} {round:>5} {x_cache:>8} {:>13} {served:>14}", cache.cache.entry_count());
            // The user logs in again: a new FAT, so the tokenised URL changes.
            cell.set(FileAccessToken::new(server.login("alice").map_err(|e| e.to_string())?.fat)?);
        }
    }
    server.shutdown().await;
    Ok(())
}

type CacheKeyFn = Arc<dyn Fn(&http::request::Parts) -> String + Send + Sync>;
/// Builds one of the stacks.
pub type Stack = fn(Arc<dyn MediaAccessStrategy>, MokaManager) -> Result<ClientWithMiddleware, reqwest::Error>;
