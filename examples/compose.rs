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
use secure_media_reqwest::{client_builder, ReqwestPresigner, SecureMediaMiddleware};
use secure_media_server::{ReferenceServer, ServerConfig};

/// An in-memory HTTP cache for one client (`Cache-Control: private` media may be stored). Keyed
/// by [`MediaKey`] when `strategy` is given: the clean URL within the principal's scope, so a
/// rotated token finds its entry and another user never gets this one's.
fn http_cache(manager: MokaManager, strategy: Option<Arc<dyn MediaAccessStrategy>>) -> Cache<MokaManager> {
    let cache_key: Option<CacheKeyFn> = strategy.map(|strategy| {
        Arc::new(move |parts: &http::request::Parts| {
            let uri = parts.uri.to_string();
            let key = MediaKey::for_request(&*strategy, &uri).map_or(uri, |key| key.to_string());
            format!("{}:{key}", parts.method)
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
/// `client` comes from [`client_builder`] (no redirects below the middleware, no `Referer`).
pub fn recommended(
    client: reqwest::Client,
    strategy: Arc<dyn MediaAccessStrategy>,
    cache: MokaManager,
) -> ClientWithMiddleware {
    ClientBuilder::new(client)
        .with(http_cache(cache, Some(strategy.clone())))
        .with(RetryTransientMiddleware::new_with_policy(ExponentialBackoff::builder().build_with_max_retries(2)))
        .with(TracingMiddleware::default())
        .with(SecureMediaMiddleware::new(strategy))
        .build()
}

/// The order that does not work: a cache below secure-media keys by the tokenised URL.
pub fn cache_below(
    client: reqwest::Client,
    strategy: Arc<dyn MediaAccessStrategy>,
    cache: MokaManager,
) -> ClientWithMiddleware {
    ClientBuilder::new(client).with(SecureMediaMiddleware::new(strategy)).with(http_cache(cache, None)).build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let server = ReferenceServer::start(ServerConfig::https()).await?;
    let image = server.media_url("sample-640x480.png");
    // The reference server's certificate comes from a test CA: trust it, and only it.
    let ca = reqwest::Certificate::from_pem(server.ca_pem().ok_or("no test CA")?.as_bytes())?;
    let client = client_builder().tls_certs_only([ca]).build()?;
    println!("{:<28} {:>5} {:>8} {:>13} {:>14}", "stack", "round", "x-cache", "cache entries", "server served");
    for (name, build) in
        [("cache outside, media key", recommended as Stack), ("cache below, raw URL", cache_below as Stack)]
    {
        let cell = Arc::new(LoginCell::new());
        cell.set(login(&server, "alice")?);
        let media = SecureMedia::builder(server.app_id())
            .secure_host(&server.host())
            .mode(SecureMediaMode::Embedded)
            .token_source(cell.clone())
            .presigner(Arc::new(ReqwestPresigner::new(client.clone(), server.presign_url().parse()?)?))
            .build()?;
        let cache = MokaManager::default();
        let client = build(client.clone(), media.strategy(), cache.clone());
        server.reset_stats();
        for round in 1..=3 {
            let response = client.get(&image).send().await?;
            let x_cache = response.headers().get("x-cache").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
            response.bytes().await?;
            cache.cache.run_pending_tasks().await;
            let served = server.stats().served.fat_query;
            println!("{name:<28} {round:>5} {x_cache:>8} {:>13} {served:>14}", cache.cache.entry_count());
            // The user logs in again: a new FAT, so the tokenised URL changes.
            cell.set(login(&server, "alice")?);
        }
    }
    server.shutdown().await;
    Ok(())
}

/// A FAT from the app's own login answer. The app vouches for it (`mark_verified`), so its
/// `sub` scopes cache keys from the first request; a token from anywhere else is scoped by a
/// digest of itself until a secure server accepts it.
pub fn login(
    server: &secure_media_server::RunningServer,
    uid: &str,
) -> Result<FileAccessToken, Box<dyn std::error::Error + Send + Sync>> {
    let token = FileAccessToken::new(server.login(uid).map_err(|e| e.to_string())?.fat)?;
    token.mark_verified();
    Ok(token)
}

type CacheKeyFn = Arc<dyn Fn(&http::request::Parts) -> String + Send + Sync>;
/// Builds one of the stacks.
pub type Stack = fn(reqwest::Client, Arc<dyn MediaAccessStrategy>, MokaManager) -> ClientWithMiddleware;
