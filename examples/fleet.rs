//! A fleet of pods rendering the same screenful of 500 thumbnails, all cold at the same moment:
//! presign calls across the fleet for 1, 2, 4 and 8 pods, with memory caches only, with one Redis
//! node (without and with leases), and with a local three-master Redis Cluster (with leases).
//!
//! ```sh
//! cargo run --example fleet                   # starts its own redis-server nodes (one node, then a cluster)
//! cargo run --example fleet -- --as-they-come  # pods load 32 at a time without asking ahead
//! ```
//!
//! Each pod logs in on its own and asks ahead for the screenful (`prefetch`), as a thumbnailer
//! that knows its list would, then resolves every URL. Exits 1 if a fleet sharing a cache with
//! leases and asking ahead makes more than one call per batch plus one per pod.

use std::sync::Arc;

use futures::StreamExt;

use secure_media::presigned::{MemoryPresignCache, PresignCache, PresignConfig, PresignedStrategy};
use secure_media::{resolve_str, FileAccessToken, LoginCell, MediaAccessStrategy, SecureHosts};
use secure_media_redis::RedisPresignCache;
use secure_media_reqwest::ReqwestPresigner;
use secure_media_server::{ReferenceServer, RunningServer, ServerConfig};
use secure_media_testkit::redis::{RedisCluster, RedisServer};

type Error = Box<dyn std::error::Error + Send + Sync>;

const SCREEN: usize = 500;
const BATCH: usize = 50;
const FLEETS: [usize; 4] = [1, 2, 4, 8];

/// Where the pods of one fleet keep their presigned URLs.
#[derive(Clone, Copy)]
enum Shared {
    Nothing,
    OneNode { leases: bool },
    Cluster,
}

impl Shared {
    fn title(self) -> &'static str {
        match self {
            Self::Nothing => "memory only",
            Self::OneNode { leases: false } => "1 Redis, no leases",
            Self::OneNode { leases: true } => "1 Redis, leases",
            Self::Cluster => "cluster, leases",
        }
    }
}

/// One pod: its own login, its own cache (over its own Redis connection), its own strategy.
fn pod<C: PresignCache>(server: &RunningServer, cache: C) -> Result<Arc<dyn MediaAccessStrategy>, Error> {
    // The reference server's certificate comes from a test CA: trust it, and only it.
    let ca = reqwest::Certificate::from_pem(server.ca_pem().ok_or("no test CA")?.as_bytes())?;
    let client = secure_media_reqwest::client_builder().tls_certs_only([ca]).build()?;
    let presigner = ReqwestPresigner::new(client, server.presign_url().parse()?)?;
    let hosts = SecureHosts::new().with_host(&server.host())?;
    // A backend's own login answer: the app vouches for the token, so its user scopes the cache.
    let token = FileAccessToken::new(server.login("thumbnailer").map_err(|e| e.to_string())?.fat)?;
    token.mark_verified();
    let login = LoginCell::new();
    login.set(token);
    let config = PresignConfig { batch_limit: BATCH, ..PresignConfig::default() };
    Ok(Arc::new(
        PresignedStrategy::new(hosts, Arc::new(login), presigner).with_cache(Arc::new(cache)).with_config(config),
    ))
}

/// `pods` pods loading the screen at once: the presign calls the fleet made.
async fn run(
    server: &RunningServer,
    shared: Shared,
    pods: usize,
    node: &str,
    cluster: &RedisCluster,
    ask_ahead: bool,
) -> Result<u64, Error> {
    let prefix = format!("fleet-{}-{}-{pods}", std::process::id(), shared.title().replace([' ', ','], "-"));
    let fleet = (0..pods)
        .map(|_| match shared {
            Shared::Nothing => pod(server, MemoryPresignCache::new(10_000)),
            Shared::OneNode { leases } => {
                let cache = RedisPresignCache::new(node)?.with_prefix(&prefix);
                pod(server, if leases { cache } else { cache.with_lease(std::time::Duration::ZERO) })
            }
            Shared::Cluster => pod(server, RedisPresignCache::cluster(&cluster.seed_urls())?.with_prefix(&prefix)),
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let screen: Vec<String> = (0..SCREEN).map(|i| server.gallery_url(i)).collect();
    let screen: Vec<&str> = screen.iter().map(String::as_str).collect();
    server.reset_stats();
    let loads = fleet.iter().map(|pod| async {
        if ask_ahead {
            pod.prefetch(&screen).await;
        }
        let loads = futures::stream::iter(screen.iter().map(|url| resolve_str(&**pod, url)));
        loads.buffer_unordered(32).collect::<Vec<_>>().await
    });
    for answers in futures::future::join_all(loads).await {
        for answer in answers {
            answer?;
        }
    }
    Ok(server.stats().presign_calls)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let server = ReferenceServer::start(ServerConfig::https()).await?;
    let (node, cluster) = (RedisServer::start(), RedisCluster::start());
    let ask_ahead = !std::env::args().any(|arg| arg == "--as-they-come");
    let kinds = [Shared::Nothing, Shared::OneNode { leases: false }, Shared::OneNode { leases: true }, Shared::Cluster];
    let how = if ask_ahead { "asking ahead" } else { "32 at a time, as they come" };
    println!("presign calls for {SCREEN} thumbnails loaded cold by every pod at once, {how} (batches of {BATCH}):");
    println!("{:>4} | {}", "pods", kinds.map(|kind| format!("{:>18}", kind.title())).join(" | "));
    let mut over_bound = false;
    for pods in FLEETS {
        let mut row = Vec::new();
        for kind in kinds {
            let calls = run(&server, kind, pods, &node.url(), &cluster, ask_ahead).await?;
            let bound = (SCREEN.div_ceil(BATCH) + pods) as u64;
            over_bound |=
                ask_ahead && matches!(kind, Shared::OneNode { leases: true } | Shared::Cluster) && calls > bound;
            row.push(format!("{calls:>18}"));
        }
        println!("{pods:>4} | {}", row.join(" | "));
    }
    server.shutdown().await;
    // Before exiting: their drop stops the redis-server processes.
    drop((node, cluster));
    if over_bound {
        eprintln!("a fleet with leases made more than one presign call per batch plus one per pod");
        std::process::exit(1);
    }
    Ok(())
}
