//! Two "pods" rendering the same chat media: presign calls with and without a shared Redis cache.
//!
//! ```sh
//! cargo run --example fleet          # starts its own redis-server, or uses REDIS_URL
//! ```

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use secure_media::presigned::{MemoryPresignCache, PresignCache, PresignedStrategy};
use secure_media::{resolve_str, FileAccessToken, LoginCell, MediaAccessStrategy, SecureHosts, TokenSource};
use secure_media_redis::RedisPresignCache;
use secure_media_reqwest::ReqwestPresigner;
use secure_media_server::{ReferenceServer, RunningServer, ServerConfig};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// `REDIS_URL`, or a redis-server of our own on a free port (killed on drop).
struct Redis(Option<Child>, String);

impl Redis {
    fn start() -> Result<Self, Error> {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return Ok(Self(None, url));
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server is needed (apt-get install -y redis-server) or set REDIS_URL: {e}"))?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self(Some(child), format!("redis://127.0.0.1:{port}/")))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn pod<C: PresignCache>(
    server: &RunningServer,
    tokens: Arc<dyn TokenSource>,
    cache: Arc<C>,
) -> Result<Arc<dyn MediaAccessStrategy>, Error> {
    // The reference server's certificate comes from a test CA: trust it, and only it.
    let ca = reqwest::Certificate::from_pem(server.ca_pem().ok_or("no test CA")?.as_bytes())?;
    let client = secure_media_reqwest::client_builder().tls_certs_only([ca]).build()?;
    let presigner = ReqwestPresigner::new(client, server.presign_url().parse()?)?;
    let hosts = SecureHosts::new().with_host(&server.host())?;
    Ok(Arc::new(PresignedStrategy::new(hosts, tokens, presigner).with_cache(cache)))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let redis = Redis::start()?;
    let server = ReferenceServer::start(ServerConfig::https()).await?;
    let login = Arc::new(LoginCell::new());
    login.set(FileAccessToken::new(server.login("alice").map_err(|e| e.to_string())?.fat)?);
    let screen: Vec<String> = (0..50).map(|n| format!("{}?thumb={n}", server.media_url("sample-64x64.gif"))).collect();

    for shared in [false, true] {
        server.reset_stats();
        let prefix = format!("fleet-example-{}", std::process::id());
        let pods: Vec<Arc<dyn MediaAccessStrategy>> = if shared {
            let a = Arc::new(RedisPresignCache::new(&redis.1)?.with_prefix(prefix.clone()));
            let b = Arc::new(RedisPresignCache::new(&redis.1)?.with_prefix(prefix));
            vec![pod(&server, login.clone(), a)?, pod(&server, login.clone(), b)?]
        } else {
            let a = Arc::new(MemoryPresignCache::new(1000));
            let b = Arc::new(MemoryPresignCache::new(1000));
            vec![pod(&server, login.clone(), a)?, pod(&server, login.clone(), b)?]
        };
        for pod in &pods {
            // A screen of 50 thumbnails on each pod, all at once (batched into few calls).
            for resolved in futures::future::join_all(screen.iter().map(|url| resolve_str(&**pod, url))).await {
                resolved?;
            }
        }
        let stats = server.stats();
        println!(
            "{:<28} presign calls: {:>3}, URLs presigned: {:>3}",
            if shared { "2 pods, shared Redis cache" } else { "2 pods, memory caches only" },
            stats.presign_calls,
            stats.urls_presigned
        );
    }
    server.shutdown().await;
    Ok(())
}
