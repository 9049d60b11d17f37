//! RedisPresignCache on a real local Redis Cluster (`secure_media_testkit::redis::RedisCluster`). First, the
//! harness itself works: keys spread over its three masters
//! through the `redis` crate's cluster client, and a master can be stopped and restarted for failover tests.

use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::AsyncCommands;
use secure_media_testkit::redis::RedisCluster;

const KEYS: usize = 100;

/// Bounded retries and timeouts, so that a dead master shows up as an error in seconds, not minutes.
fn cluster_client(cluster: &RedisCluster) -> ClusterClient {
    ClusterClient::builder(cluster.seed_urls())
        .retries(2)
        .connection_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

async fn plain(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

#[test]
fn a_local_three_master_cluster_starts_and_spreads_keys() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = RedisCluster::start();

    let key_on_node_1: String = runtime.block_on(async {
        let mut conn = cluster_client(&cluster).get_async_connection().await.unwrap();
        for i in 0..KEYS {
            let _: () = conn.set(format!("sm-cluster-{i}"), i).await.unwrap();
        }
        for i in 0..KEYS {
            let value: Option<usize> = conn.get(format!("sm-cluster-{i}")).await.unwrap();
            assert_eq!(value, Some(i), "sm-cluster-{i} read back");
        }

        let mut sizes = Vec::new();
        for url in cluster.seed_urls() {
            let size: usize = redis::cmd("DBSIZE").query_async(&mut plain(&url).await).await.unwrap();
            sizes.push(size);
        }
        assert_eq!(sizes.iter().sum::<usize>(), KEYS, "every key on exactly one master: {sizes:?}");
        assert!(sizes.iter().all(|&size| size > 0), "keys on all three masters: {sizes:?}");

        let on_node_1: Vec<String> = plain(&cluster.node_url(1)).await.keys("sm-cluster-*").await.unwrap();
        on_node_1[0].clone()
    });

    cluster.stop_node(1);
    runtime.block_on(async {
        let started = Instant::now();
        let mut conn = cluster_client(&cluster).get_async_connection().await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(10), conn.get::<_, Option<usize>>(&key_on_node_1)).await;
        assert!(
            matches!(read, Ok(Err(_))),
            "a GET of {key_on_node_1} on the stopped master errors within 10 s, got {read:?} after {:?}",
            started.elapsed()
        );
    });

    cluster.restart_node(1);
    runtime.block_on(async {
        // The node rejoins with its slots but not its data (nothing is persisted).
        let mut conn = cluster_client(&cluster).get_async_connection().await.unwrap();
        let _: () = conn.set(&key_on_node_1, 7).await.unwrap();
        let value: Option<usize> = conn.get(&key_on_node_1).await.unwrap();
        assert_eq!(value, Some(7), "{key_on_node_1} served by the restarted master");
        let on_node_1: Option<usize> = plain(&cluster.node_url(1)).await.get(&key_on_node_1).await.unwrap();
        assert_eq!(on_node_1, Some(7), "{key_on_node_1} lives on node 1 again");
    });
}

// ---- RedisPresignCache on the cluster: a fleet of pods against the reference server ----

use std::sync::Arc;

use futures::StreamExt;
use secure_media_core::presigned::{CacheKey, Lease, PresignCache, PresignConfig, PresignedStrategy, SignedUrl};
use secure_media_core::{
    resolve_str, AccessError, FileAccessToken, LoginCell, MediaAccessStrategy, SecureHosts, TokenSource,
};
use secure_media_redis::RedisPresignCache;
use secure_media_reqwest::ReqwestPresigner;
use secure_media_server::{gallery_image, ReferenceServer, RunningServer, ServerConfig};

const BATCH: usize = 50;

/// The reference server and a cluster, for one test.
struct Stage {
    server: RunningServer,
    cluster: RedisCluster,
}

/// One pod: its own strategy over its own cluster connection and L1, and a client through it.
struct Pod {
    strategy: Arc<dyn MediaAccessStrategy>,
    client: reqwest_middleware::ClientWithMiddleware,
}

impl Stage {
    async fn new() -> Self {
        let server = ReferenceServer::start(secure_media_testkit::https(ServerConfig::default())).await.unwrap();
        Self { server, cluster: tokio::task::block_in_place(RedisCluster::start) }
    }

    /// A cache on the cluster with room for a loaded 2-core machine running tests in parallel:
    /// counts are exact only if Redis answers in time.
    fn cache(&self) -> RedisPresignCache {
        RedisPresignCache::cluster(&self.cluster.seed_urls()).unwrap().with_timeout(Duration::from_secs(1))
    }

    /// A token from `uid`'s own login, vouched for as a backend does with its login answer.
    fn vouched(&self, uid: &str) -> Arc<dyn TokenSource> {
        let token = FileAccessToken::new(self.server.login(uid).unwrap().fat).unwrap();
        token.mark_verified();
        let cell = LoginCell::new();
        cell.set(token);
        Arc::new(cell)
    }

    fn pod_with(&self, cache: impl Into<Arc<RedisPresignCache>>, tokens: Arc<dyn TokenSource>) -> Pod {
        let presigner =
            ReqwestPresigner::new(secure_media_testkit::reqwest_client(), self.server.presign_url().parse().unwrap())
                .unwrap();
        let hosts = SecureHosts::new().with_host(&self.server.host()).unwrap();
        let config = PresignConfig { batch_limit: BATCH, ..PresignConfig::default() };
        let strategy: Arc<dyn MediaAccessStrategy> =
            Arc::new(PresignedStrategy::new(hosts, tokens, presigner).with_cache(cache.into()).with_config(config));
        let client =
            secure_media_reqwest::secure_client_from(secure_media_testkit::reqwest_builder(), strategy.clone())
                .unwrap();
        Pod { strategy, client }
    }

    fn pod(&self, uid: &str) -> Pod {
        self.pod_with(self.cache(), self.vouched(uid))
    }

    /// The slot (and so the master) of `uid`'s entries, from a key as the cache makes it.
    fn slot_of(&self, uid: &str) -> u16 {
        let scope: Arc<str> = format!("sub:{uid}").into();
        self.cluster.slot_of(&self.cache().redis_key(&CacheKey::new(&scope, "https://x")))
    }

    fn presign_calls(&self) -> u64 {
        self.server.stats().presign_calls
    }

    /// Whether, within 20 tries, what `writer` presigns (ten new thumbnails from `from` on) a new
    /// fleet pod finds with no presign call: the cluster serves the fleet's slot again (a client
    /// reconnects in its own time).
    async fn shares_again(&self, writer: &Pod, from: usize) -> bool {
        for attempt in 0..20 {
            let range = from + attempt * 10..from + attempt * 10 + 10;
            assert_eq!(writer.load(self, range.clone()).await, 0);
            let before = self.presign_calls();
            assert_eq!(self.pod("fleet").load(self, range).await, 0);
            if self.presign_calls() == before {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

impl Pod {
    /// Asks ahead for gallery thumbnails `range`, then loads each through the client (32 at a
    /// time) and checks its bytes. Answers how many loads failed or came back wrong.
    async fn load(&self, stage: &Stage, range: std::ops::Range<usize>) -> usize {
        let urls: Vec<(usize, String)> = range.map(|i| (i, stage.server.gallery_url(i))).collect();
        self.strategy.prefetch(&urls.iter().map(|(_, url)| url.as_str()).collect::<Vec<_>>()).await;
        futures::stream::iter(urls)
            .map(|(i, url)| async move {
                let Ok(response) = self.client.get(&url).send().await else { return false };
                if response.status() != 200 {
                    return false;
                }
                response.bytes().await.ok() == gallery_image(i)
            })
            .buffer_unordered(32)
            .filter(|right| std::future::ready(!right))
            .count()
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_pods_loading_the_same_500_urls_cold_presign_each_once_across_the_cluster() {
    let stage = Stage::new().await;
    let pods: Vec<Pod> = (0..8).map(|_| stage.pod("fleet")).collect();
    let failed = futures::future::join_all(pods.iter().map(|pod| pod.load(&stage, 0..500))).await;
    assert_eq!(failed, [0; 8], "every URL served, every body right, in every pod");
    let calls = stage.presign_calls();
    let limit = 500usize.div_ceil(BATCH) as u64 + 8;
    println!("8 pods x 500 URLs on a 3-master cluster: {calls} presign calls (at most {limit})");
    assert!(calls <= limit, "{calls} presign calls across the fleet, at most {limit}");
    assert_eq!(stage.server.stats().urls_presigned, 500, "each URL presigned once across the fleet");
    // How the others got theirs varies with timing: waiting on a lease, or finding the entry.
    let from_fleet: u64 = pods.iter().map(|pod| pod.strategy.stats().urls_from_fleet).sum();
    println!("URLs awaited on another pod's lease: {from_fleet}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_stopped_mid_run_fails_no_load_and_shared_hits_resume_when_it_is_back() {
    let mut stage = Stage::new().await;
    let pods: Vec<Pod> = (0..4).map(|_| stage.pod("fleet")).collect();
    let failed = futures::future::join_all(pods.iter().map(|pod| pod.load(&stage, 0..100))).await;
    assert_eq!(failed, [0; 4]);
    assert!(stage.presign_calls() <= 2 + 4, "100 URLs, batches of 50, shared by the pods");

    // The master holding the fleet's entries and leases goes down mid-run.
    let master = stage.cluster.owner_of(stage.slot_of("fleet"));
    tokio::task::block_in_place(|| stage.cluster.stop_node(master));
    let before = stage.presign_calls();
    let started = Instant::now();
    let failed = futures::future::join_all(pods.iter().map(|pod| pod.load(&stage, 100..300))).await;
    let took = started.elapsed();
    assert_eq!(failed, [0; 4], "no load fails while a master is down");
    let during = stage.presign_calls() - before;
    println!("master down: 4 pods x 200 cold URLs: {during} presign calls in {took:?}");
    // Each pod presigns on its own: at most its own batches (4 per pod), plus a batch cut in two.
    assert!(during <= 4 * (200 / BATCH as u64 + 1), "{during} presign calls while the master was down");
    assert!(took < Duration::from_secs(20), "bounded by the cache's timeouts, not stuck: {took:?}");
    // What the pods had cached in memory still serves, with no call at all.
    let before = stage.presign_calls();
    assert_eq!(pods[0].load(&stage, 0..100).await, 0);
    assert_eq!(stage.presign_calls(), before);

    tokio::task::block_in_place(|| stage.cluster.restart_node(master));
    // Back (empty: nothing was persisted): what one pod presigns, a new pod finds.
    assert!(stage.shares_again(&pods[1], 400).await, "after the master came back, pods share the cache again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moving_between_masters_mid_run_is_followed() {
    let stage = Stage::new().await;
    let first = stage.pod("fleet");
    assert_eq!(first.load(&stage, 0..50).await, 0);
    let slot = stage.slot_of("fleet");
    let from = stage.cluster.owner_of(slot);
    let to = (from + 1) % 3;

    // Migrating: the source answers ASK for keys it does not hold.
    tokio::task::block_in_place(|| stage.cluster.begin_migration(slot, from, to));
    let during = stage.pod("fleet");
    let before = stage.presign_calls();
    assert_eq!(during.load(&stage, 0..50).await, 0, "entries still on the source are served from it");
    assert_eq!(stage.presign_calls(), before, "and are hits");
    assert_eq!(during.load(&stage, 50..100).await, 0, "new URLs mid-migration load");

    // Moved: the source answers MOVED, the client follows to the new owner.
    tokio::task::block_in_place(|| stage.cluster.finish_migration(slot, from, to));
    assert_eq!(stage.cluster.owner_of(slot), to);
    let before = stage.presign_calls();
    assert_eq!(stage.pod("fleet").load(&stage, 0..50).await, 0);
    assert_eq!(stage.presign_calls(), before, "the migrated entries are hits on their new master");
    assert_eq!(first.load(&stage, 100..150).await, 0);
    let before = stage.presign_calls();
    assert_eq!(stage.pod("fleet").load(&stage, 100..150).await, 0);
    assert_eq!(stage.presign_calls(), before, "entries stored after the move are shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_and_trust_checks_hold_through_the_cluster() {
    let stage = Stage::new().await;
    let (alice, bob) = (stage.pod("alice"), stage.pod("bob"));
    let media = stage.server.gallery_url(1);
    resolve_str(&*alice.strategy, &media).await.unwrap();
    resolve_str(&*bob.strategy, &media).await.unwrap();
    let his = bob.strategy.stats();
    assert_eq!((his.presign_calls, his.cache_hits, his.urls_from_fleet), (1, 0, 0), "bob presigned his own");
    assert_eq!(stage.presign_calls(), 2);

    // A writer to the cluster plants a URL on another origin under alice's key.
    let planted_media = stage.server.gallery_url(2);
    let now = std::time::SystemTime::now();
    let evil = url::Url::parse("https://evil.example/demo/media/gallery/0002.png?Expires=4000000000&Signature=x");
    let planted = SignedUrl::new(&planted_media, evil.unwrap(), now, now + Duration::from_secs(3600));
    let scope: Arc<str> = "sub:alice".into();
    stage.cache().with_l1(0).put(&CacheKey::new(&scope, &planted_media), planted).await;
    let fresh = stage.pod("alice");
    let (used, _) = resolve_str(&*fresh.strategy, &planted_media).await.unwrap();
    assert!(used.starts_with(&stage.server.base_url()), "{used}");
    assert_eq!(fresh.load(&stage, 2..3).await, 0);

    // A token whose payload names alice but whose signature is forged gets none of her entries.
    let alice_fat = stage.server.login("alice").unwrap().fat;
    let forged = format!("{}.Zm9yZ2VkLXNpZ25hdHVyZQ", alice_fat.rsplit_once('.').unwrap().0);
    let cell = LoginCell::new();
    cell.set(FileAccessToken::new(forged).unwrap());
    let attacker = stage.pod_with(stage.cache(), Arc::new(cell));
    let attempt = resolve_str(&*attacker.strategy, &media).await.map(|(url, _)| url.into_owned());
    assert!(matches!(attempt, Err(AccessError::RefreshFailed(_))), "{attempt:?}");
    assert_eq!(attacker.strategy.stats().cache_hits, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_several_principals_with_braces_anywhere_is_leased_without_a_cross_slot_command() {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    // Braces in the prefix are dropped; braces in a scope stay inside the key's own hash tag.
    let cache = || {
        let cache = RedisPresignCache::cluster(&cluster.seed_urls()).unwrap();
        cache.with_prefix("app{1}").with_l1(0).with_timeout(Duration::from_secs(1))
    };
    let scopes: Vec<Arc<str>> =
        ["sub:alice", "sub:{bob", "sub:}carol{", "", "tok:{x}", "s}:a", "s"].map(Arc::from).to_vec();
    let urls = ["https://media.example.com/a.png", "https://media.example.com/b{}.png"];
    let mut keys: Vec<CacheKey<'_>> =
        scopes[..5].iter().flat_map(|scope| urls.iter().map(move |url| CacheKey::new(scope, url))).collect();
    // Unencoded, these two would share one key: `{s:s}:a}:b`.
    keys.extend([CacheKey::new(&scopes[5], "b"), CacheKey::new(&scopes[6], "a}:b")]);
    let (first, second) = (cache(), cache());
    assert!(first.lease(&keys).await.iter().all(|lease| *lease == Lease::Mine));
    // Had any script been refused (CROSSSLOT), no lease would be stored and these would be Mine.
    assert!(second.lease(&keys).await.iter().all(|lease| *lease == Lease::Theirs), "every lease was stored");
    let now = std::time::SystemTime::now();
    let signed_for =
        |key: &CacheKey<'_>| format!("https://media.example.com/signed.png?Signature={}", key.scope().len());
    for key in &keys {
        let url = url::Url::parse(&signed_for(key)).unwrap();
        first.put(key, SignedUrl::new(key.url(), url, now, now + Duration::from_secs(600))).await;
    }
    let found = second.wait_for(&keys).await;
    for (key, found) in keys.iter().zip(found) {
        let found = found.unwrap_or_else(|| panic!("{key:?} published"));
        assert_eq!(found.as_str(), signed_for(key), "{key:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_stops_answering_costs_its_own_principals_only_and_serves_again_when_it_resumes() {
    let stage = Stage::new().await;
    let master = stage.cluster.owner_of(stage.slot_of("fleet"));
    // A principal whose entries live on another master.
    let other = (0..100)
        .map(|n| format!("user{n}"))
        .find(|uid| stage.cluster.owner_of(stage.slot_of(uid)) != master)
        .expect("a principal on another master");
    // One cache (one cluster connection, no L1: every hit is Redis's) under both principals, with
    // the default timeouts: a master that hangs costs 250 ms per call, not more.
    let shared = Arc::new(RedisPresignCache::cluster(&stage.cluster.seed_urls()).unwrap().with_l1(0));
    let fleet = stage.pod_with(shared.clone(), stage.vouched("fleet"));
    let others = stage.pod_with(shared, stage.vouched(&other));
    assert_eq!(fleet.load(&stage, 0..50).await, 0);
    assert_eq!(others.load(&stage, 0..50).await, 0);
    let others_calls = others.strategy.stats().presign_calls;

    stage.cluster.pause_node(master);
    let started = Instant::now();
    assert_eq!(fleet.load(&stage, 50..100).await, 0, "the hung master's principal still loads");
    assert!(started.elapsed() < Duration::from_secs(20), "bounded by the timeouts: {:?}", started.elapsed());
    // The same connection took those timeouts; it still serves the other master.
    assert_eq!(others.load(&stage, 0..50).await, 0);
    assert_eq!(others.strategy.stats().presign_calls, others_calls, "the other principal's entries still hit");

    tokio::task::block_in_place(|| stage.cluster.resume_node(master));
    assert!(stage.shares_again(&fleet, 200).await, "once the master answers again, pods share its entries again");
}
