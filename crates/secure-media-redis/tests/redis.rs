//! RedisPresignCache against a real `redis-server`: `REDIS_URL` when set, otherwise one started
//! here on a free loopback port. No Redis at all is a failure, never a skip.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use secure_media_core::presigned::{CacheKey, Lease, PresignCache, PresignConfig, PresignedStrategy, SignedUrl};
use secure_media_core::{
    resolve_str, AccessError, FileAccessToken, LoginCell, MediaAccessStrategy, SecureHosts, TokenSource,
};
use secure_media_redis::RedisPresignCache;
use secure_media_reqwest::ReqwestPresigner;
use secure_media_server::{ReferenceServer, RunningServer, ServerConfig};
use secure_media_testkit::redis::RedisServer;

/// `REDIS_URL`, or a server of our own (kept alive by the returned guard).
fn redis() -> (Option<RedisServer>, String) {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => (None, url),
        _ => {
            let server = RedisServer::start();
            let url = server.url();
            (Some(server), url)
        }
    }
}

/// A prefix no other test run uses, so tests can share one Redis.
fn prefix(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("sm-test-{}-{}-{test}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

struct Fleet {
    server: RunningServer,
}

impl Fleet {
    async fn new() -> Self {
        Self { server: ReferenceServer::start(secure_media_testkit::https(ServerConfig::default())).await.unwrap() }
    }

    fn token(&self, uid: &str) -> Arc<dyn TokenSource> {
        secure_media_testkit::logged_in(&self.server, uid)
    }

    /// One "process": its own strategy, its own Redis connection and L1.
    fn process(&self, redis_url: &str, prefix: &str, tokens: Arc<dyn TokenSource>) -> Arc<dyn MediaAccessStrategy> {
        let cache = RedisPresignCache::new(redis_url).unwrap().with_prefix(prefix).with_timeout(Duration::from_secs(1));
        let presigner =
            ReqwestPresigner::new(secure_media_testkit::reqwest_client(), self.server.presign_url().parse().unwrap())
                .unwrap();
        let hosts = SecureHosts::new().with_host(&self.server.host()).unwrap();
        Arc::new(
            PresignedStrategy::new(hosts, tokens, presigner)
                .with_cache(Arc::new(cache))
                .with_config(PresignConfig { safety_margin: Duration::from_secs(1), ..PresignConfig::default() }),
        )
    }

    async fn resolve(&self, strategy: &Arc<dyn MediaAccessStrategy>, name: &str) -> String {
        resolve_str(&**strategy, &self.server.media_url(name)).await.unwrap().0.into_owned()
    }

    async fn fetch_status(&self, url: &str) -> u16 {
        secure_media_testkit::reqwest_client().get(url).send().await.unwrap().status().as_u16()
    }
}

async fn keys(redis_url: &str, prefix: &str) -> Vec<String> {
    let mut conn = redis::Client::open(redis_url).unwrap().get_multiplexed_async_connection().await.unwrap();
    conn.keys(format!("{prefix}:*")).await.unwrap()
}

/// The keys of entries under a principal (`sub:`) scope, leaving out token (`tok:`) scopes.
async fn principal_keys(redis_url: &str, prefix: &str) -> Vec<String> {
    keys(redis_url, prefix).await.into_iter().filter(|k| k.starts_with(&format!("{prefix}:{{s:sub:"))).collect()
}

#[tokio::test]
async fn two_processes_share_one_presign_call() {
    let (_guard, url) = redis();
    let fleet = Fleet::new().await;
    let prefix = prefix("share");
    let token = fleet.token("alice");
    let a = fleet.process(&url, &prefix, token.clone());
    let b = fleet.process(&url, &prefix, token);
    let from_a = fleet.resolve(&a, "sample-64x64.gif").await;
    let from_b = fleet.resolve(&b, "sample-64x64.gif").await;
    assert_eq!(from_a, from_b, "b found a's entry (under the token's own scope: b has not proven it)");
    assert_eq!(fleet.server.stats().presign_calls, 1);
    assert_eq!(fleet.fetch_status(&from_b).await, 200);
    // Presigned before the token was accepted: stored under the token's scope and alice's.
    assert_eq!(keys(&url, &prefix).await.len(), 2);
    assert_eq!(principal_keys(&url, &prefix).await.len(), 1);
}

#[tokio::test]
async fn a_second_process_with_a_renewed_token_uses_alices_entries_once_its_token_is_accepted() {
    let (_guard, url) = redis();
    let fleet = Fleet::new().await;
    let prefix = prefix("renewed");
    let a = fleet.process(&url, &prefix, fleet.token("alice"));
    let from_a = fleet.resolve(&a, "sample-64x64.gif").await;
    // Another of alice's tokens: nothing of hers until the endpoint accepts it, then all of it.
    let b = fleet.process(&url, &prefix, fleet.token("alice"));
    fleet.resolve(&b, "sample-640x480.png").await;
    assert_eq!(fleet.resolve(&b, "sample-64x64.gif").await, from_a);
    assert_eq!(fleet.server.stats().presign_calls, 2);
}

#[tokio::test]
async fn misses_at_once_in_two_processes_make_one_presign_call() {
    let (_guard, url) = redis();
    let fleet = Fleet::new().await;
    let prefix = prefix("race");
    let token = fleet.token("alice");
    let (a, b) = (fleet.process(&url, &prefix, token.clone()), fleet.process(&url, &prefix, token.clone()));
    let (from_a, from_b) =
        tokio::join!(fleet.resolve(&a, "sample-640x480.png"), fleet.resolve(&b, "sample-640x480.png"));
    assert_eq!((fleet.fetch_status(&from_a).await, fleet.fetch_status(&from_b).await), (200, 200));
    assert_eq!(fleet.server.stats().presign_calls, 1, "one process took the lease, the other waited for its URL");
    assert_eq!(from_a, from_b);
    assert_eq!(a.stats().urls_from_fleet + b.stats().urls_from_fleet, 1);
    assert!(!keys(&url, &prefix).await.iter().any(|key| key.ends_with("#lease")), "publishing ended the lease");
    let later = fleet.process(&url, &prefix, token);
    let calls = fleet.server.stats().presign_calls;
    let from_later = fleet.resolve(&later, "sample-640x480.png").await;
    assert!(from_later == from_a || from_later == from_b);
    assert_eq!(fleet.server.stats().presign_calls, calls, "the later process used the stored entry");
}

#[tokio::test]
async fn the_redis_ttl_is_the_expiry_minus_the_margin() {
    let (_guard, url) = redis();
    let fleet = Fleet::new().await;
    fleet.server.faults().set_url_ttl(Duration::from_secs(4));
    let prefix = prefix("ttl");
    let a = fleet.process(&url, &prefix, fleet.token("alice"));
    fleet.resolve(&a, "sample-64x64.gif").await;
    let key = keys(&url, &prefix).await.pop().expect("stored");
    let mut conn = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = conn.pttl(&key).await.unwrap();
    // Lifetime 4 s, margin min(1 s, 4 s / 4) = 1 s: about 3 s left (the URL's Expires is whole seconds).
    assert!((1_000..=3_000).contains(&ttl), "pttl {ttl}");
    let stored: String = conn.get(&key).await.unwrap();
    assert!(!stored.contains("fat") && !stored.contains("eyJ"), "no FAT in Redis: {stored}");
    tokio::time::sleep(Duration::from_millis(ttl as u64 + 200)).await;
    assert!(keys(&url, &prefix).await.is_empty(), "Redis dropped the entry before the URL went stale");
}

#[tokio::test]
async fn principals_are_isolated() {
    let (_guard, url) = redis();
    let fleet = Fleet::new().await;
    let prefix = prefix("isolation");
    let alice = fleet.process(&url, &prefix, fleet.token("alice"));
    let bob = fleet.process(&url, &prefix, fleet.token("bob"));
    fleet.resolve(&alice, "sample-64x64.gif").await;
    fleet.resolve(&bob, "sample-64x64.gif").await;
    assert_eq!(fleet.server.stats().presign_calls, 2, "bob did not get alice's entry");
    let mut stored = principal_keys(&url, &prefix).await;
    stored.sort();
    assert_eq!(stored.len(), 2);
    assert!(stored[0].contains(":{s:sub:alice}:") && stored[1].contains(":{s:sub:bob}:"), "{stored:?}");
}

#[tokio::test]
async fn redis_stopped_then_restarted() {
    // This test stops and starts Redis, so it always runs its own.
    let mut redis_server = RedisServer::start();
    let url = redis_server.url();
    let fleet = Fleet::new().await;
    let prefix = prefix("outage");
    let token = fleet.token("alice");
    let a = fleet.process(&url, &prefix, token.clone());
    fleet.resolve(&a, "sample-64x64.gif").await;

    redis_server.stop();
    let started = Instant::now();
    let during = fleet.resolve(&a, "sample-640x480.png").await;
    assert_eq!(fleet.fetch_status(&during).await, 200, "requests still succeed without Redis");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the Redis timeout");
    assert_eq!(fleet.server.stats().presign_calls, 2);

    redis_server.restart();
    // The connection manager reconnects on the next call; give it a few tries.
    let b = fleet.process(&url, &prefix, token.clone());
    let mut stored = false;
    for attempt in 0..20 {
        let name = format!("sample-256x256.webp?v={attempt}");
        fleet.resolve(&a, &name).await;
        let calls = fleet.server.stats().presign_calls;
        fleet.resolve(&b, &name).await;
        if fleet.server.stats().presign_calls == calls {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored, "after the restart the shared cache is used again");
}

/// Alice's token with its signature replaced: the payload still says `sub: alice`.
fn forged_from(real: &str) -> FileAccessToken {
    let unsigned = real.rsplit_once('.').unwrap().0;
    FileAccessToken::new(format!("{unsigned}.Zm9yZ2VkLXNpZ25hdHVyZQ")).unwrap()
}

#[tokio::test]
async fn a_forged_token_naming_alice_gets_no_hit_on_her_entries_and_is_refused_at_presign() {
    let (_guard, url) = redis();
    let fleet = Fleet::new().await;
    let prefix = prefix("forged");
    let alice_fat = fleet.server.login("alice").unwrap().fat;
    let alice_cell = LoginCell::new();
    alice_cell.set(FileAccessToken::new(alice_fat.clone()).unwrap());
    let alice = fleet.process(&url, &prefix, Arc::new(alice_cell));
    let hers = fleet.resolve(&alice, "sample-64x64.gif").await;
    assert_eq!(fleet.fetch_status(&hers).await, 200);

    let forged = forged_from(&alice_fat);
    assert_eq!(forged.subject(), Some("alice"));
    let cell = LoginCell::new();
    cell.set(forged);
    let attacker = fleet.process(&url, &prefix, Arc::new(cell));
    let media = fleet.server.media_url("sample-64x64.gif");
    let attempt = resolve_str(&*attacker, &media).await.map(|(url, _)| url.into_owned());
    assert!(matches!(attempt, Err(AccessError::RefreshFailed(_))), "{attempt:?}");
    assert_eq!(attacker.stats().cache_hits, 0);
    assert_eq!(fleet.server.stats().presign_calls, 1, "only alice's call was answered");
    assert!(fleet.server.stats().refusals.invalid_fat >= 1, "the endpoint refused the forged token");
    assert_eq!(keys(&url, &prefix).await.len(), 2, "alice's entry, under her token's scope and her own");
}

#[tokio::test]
async fn an_entry_pointing_elsewhere_is_a_miss_and_is_deleted() {
    let (_guard, url) = redis();
    let fleet = Fleet::new().await;
    let prefix = prefix("planted");
    let a = fleet.process(&url, &prefix, fleet.token("alice"));
    fleet.resolve(&a, "sample-640x480.png").await; // alice's token is accepted in this process

    // A writer to the shared cache plants a URL on another origin for a file alice has not loaded.
    let media = fleet.server.media_url("sample-64x64.gif");
    let planter = RedisPresignCache::new(&url).unwrap().with_prefix(&prefix).with_l1(0);
    let now = std::time::SystemTime::now();
    let planted = url::Url::parse("https://evil.example/demo/media/sample-64x64.gif?Expires=4000000000&Signature=x");
    let planted = SignedUrl::new(&media, planted.unwrap(), now, now + Duration::from_secs(3600));
    let alice: Arc<str> = "sub:alice".into();
    planter.put(&CacheKey::new(&alice, &media), planted).await;
    assert_eq!(principal_keys(&url, &prefix).await.len(), 2);

    let used = fleet.resolve(&a, "sample-64x64.gif").await;
    assert!(used.starts_with(&fleet.server.base_url()), "{used}");
    assert_eq!(fleet.fetch_status(&used).await, 200);
    assert_eq!(fleet.server.stats().presign_calls, 2, "the planted entry was a miss");
    let stored = planter.get(&CacheKey::new(&alice, &media)).await.expect("the fresh URL replaced it");
    assert_eq!(stored.as_str(), used);
}

#[tokio::test]
async fn removing_a_refused_url_keeps_a_fresher_one_another_process_stored() {
    let (_guard, url) = redis();
    let prefix = prefix("refused");
    let (one, two) = (
        RedisPresignCache::new(&url).unwrap().with_prefix(&prefix),
        RedisPresignCache::new(&url).unwrap().with_prefix(&prefix).with_l1(0),
    );
    let alice: Arc<str> = "sub:alice".into();
    let key = CacheKey::new(&alice, "https://media.example.com/a.png");
    let now = std::time::SystemTime::now();
    let signed = |sig: &str| {
        let url = url::Url::parse(&format!("https://media.example.com/a.png?Signature={sig}")).unwrap();
        SignedUrl::new("https://media.example.com/a.png", url, now, now + Duration::from_secs(3600))
    };
    let (refused, fresher) = (signed("old"), signed("new"));
    one.put(&key, refused.clone()).await;
    two.put(&key, fresher.clone()).await; // another process renewed it meanwhile
    one.remove_refused(&key, &refused).await;
    assert_eq!(two.get(&key).await.unwrap().as_str(), fresher.as_str(), "the fresher URL stays in Redis");
    one.remove_refused(&key, &fresher).await;
    assert!(two.get(&key).await.is_none());
    assert!(keys(&url, &prefix).await.is_empty());
}

#[tokio::test]
async fn an_entry_written_as_an_array_is_a_miss_and_a_refusal_deletes_it() {
    let (_guard, url) = redis();
    let prefix = prefix("array");
    let cache = RedisPresignCache::new(&url).unwrap().with_prefix(&prefix).with_l1(0);
    let alice: Arc<str> = "sub:alice".into();
    let key = CacheKey::new(&alice, "https://media.example.com/a.png");
    // A writer to Redis plants the fields by position: serde would read them into a struct.
    let planted = r#"["https://media.example.com/a.png","https://evil.example/a.png?Signature=x",1,4000000000000]"#;
    let mut conn = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::AsyncCommands::set(&mut conn, cache.redis_key(&key), planted).await.unwrap();
    assert!(cache.get(&key).await.is_none(), "an array is not an entry");
    let now = std::time::SystemTime::now();
    let refused = url::Url::parse("https://media.example.com/a.png?Signature=y").unwrap();
    let refused = SignedUrl::new("https://media.example.com/a.png", refused, now, now + Duration::from_secs(60));
    cache.remove_refused(&key, &refused).await;
    assert!(keys(&url, &prefix).await.is_empty(), "what is not an entry goes");
}

/// A process with its own cache whose strategy uses a token the app vouched for (its own login),
/// and the given lease.
fn vouched(fleet: &Fleet, uid: &str) -> Arc<dyn TokenSource> {
    let cell = LoginCell::new();
    let token = FileAccessToken::new(fleet.server.login(uid).unwrap().fat).unwrap();
    token.mark_verified();
    cell.set(token);
    Arc::new(cell)
}

fn leasing_process(
    fleet: &Fleet,
    cache: RedisPresignCache,
    tokens: Arc<dyn TokenSource>,
) -> Arc<dyn MediaAccessStrategy> {
    let presigner =
        ReqwestPresigner::new(secure_media_testkit::reqwest_client(), fleet.server.presign_url().parse().unwrap())
            .unwrap();
    let hosts = SecureHosts::new().with_host(&fleet.server.host()).unwrap();
    // Room for a loaded machine: the counts below are exact only if Redis answers in time.
    let cache = cache.with_timeout(Duration::from_secs(2));
    Arc::new(PresignedStrategy::new(hosts, tokens, presigner).with_cache(Arc::new(cache)))
}

#[tokio::test]
async fn a_lease_whose_holder_died_holds_a_miss_only_until_it_runs_out() {
    let (_guard, url) = redis();
    let fleet = Fleet::new().await;
    let prefix = prefix("dead-holder");
    let media = fleet.server.media_url("sample-64x64.gif");
    let alice: Arc<str> = "sub:alice".into();
    // A process takes the lease and dies before it presigns.
    let dead = RedisPresignCache::new(&url).unwrap().with_prefix(&prefix).with_lease(Duration::from_millis(400));
    assert_eq!(dead.lease(&[CacheKey::new(&alice, &media)]).await, [Lease::Mine]);
    // This process would wait up to its own lease (5 s): it waits for the dead one's to run out.
    let cache = RedisPresignCache::new(&url).unwrap().with_prefix(&prefix);
    let a = leasing_process(&fleet, cache, vouched(&fleet, "alice"));
    let started = Instant::now();
    let used = fleet.resolve(&a, "sample-64x64.gif").await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "it waited for the lease: {waited:?}");
    assert!(waited < Duration::from_secs(4), "only until the lease ran out: {waited:?}");
    assert_eq!(fleet.fetch_status(&used).await, 200);
    let stats = a.stats();
    assert_eq!((stats.presign_calls, stats.urls_from_fleet), (1, 0), "it presigned after the lease ran out");
}

#[tokio::test]
async fn a_lease_given_up_ends_the_wait_and_another_principals_lease_is_not_a_wait() {
    let (_guard, url) = redis();
    let prefix = prefix("release");
    let cache = || RedisPresignCache::new(&url).unwrap().with_prefix(&prefix).with_l1(0);
    let (holder, waiter) = (cache(), cache());
    let (alice, bob): (Arc<str>, Arc<str>) = ("sub:alice".into(), "sub:bob".into());
    let media = "https://media.example.com/a.png";
    assert_eq!(holder.lease(&[CacheKey::new(&alice, media)]).await, [Lease::Mine]);
    assert_eq!(waiter.lease(&[CacheKey::new(&alice, media)]).await, [Lease::Theirs]);
    assert_eq!(waiter.lease(&[CacheKey::new(&bob, media)]).await, [Lease::Mine], "bob's URL is bob's");
    // Only the holder's release ends it.
    waiter.release(&[CacheKey::new(&alice, media)]).await;
    assert_eq!(cache().lease(&[CacheKey::new(&alice, media)]).await, [Lease::Theirs]);
    holder.release(&[CacheKey::new(&alice, media)]).await;
    let waited = waiter.wait_for(&[CacheKey::new(&alice, media)]).await;
    assert!(waited.len() == 1 && waited[0].is_none(), "given up: presign it yourself");
    assert_eq!(waiter.lease(&[CacheKey::new(&alice, media)]).await, [Lease::Mine]);
}

#[tokio::test]
async fn what_a_lease_holder_publishes_is_checked_like_any_entry() {
    let (_guard, url) = redis();
    let fleet = Fleet::new().await;
    let prefix = prefix("holder-plants");
    let media = fleet.server.media_url("sample-64x64.gif");
    let alice: Arc<str> = "sub:alice".into();
    let key = CacheKey::new(&alice, &media);
    // A writer to Redis takes the lease and publishes a URL on another origin.
    let holder = RedisPresignCache::new(&url).unwrap().with_prefix(&prefix).with_l1(0);
    assert_eq!(holder.lease(&[key]).await, [Lease::Mine]);
    let a =
        leasing_process(&fleet, RedisPresignCache::new(&url).unwrap().with_prefix(&prefix), vouched(&fleet, "alice"));
    let load = tokio::spawn({
        let (fleet_media, a) = (media.clone(), a.clone());
        async move { resolve_str(&*a, &fleet_media).await.map(|(url, _)| url.into_owned()) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!load.is_finished(), "the load waits on the holder's lease");
    let now = std::time::SystemTime::now();
    let planted = url::Url::parse("https://evil.example/demo/media/sample-64x64.gif?Expires=4000000000&Signature=x");
    holder.put(&key, SignedUrl::new(&media, planted.unwrap(), now, now + Duration::from_secs(3600))).await;
    let used = load.await.unwrap().unwrap();
    assert!(used.starts_with(&fleet.server.base_url()), "{used}");
    assert_eq!(fleet.fetch_status(&used).await, 200);
    let stats = a.stats();
    assert_eq!((stats.presign_calls, stats.urls_from_fleet), (1, 0), "the planted URL was not used");
}

#[tokio::test]
async fn eight_processes_loading_the_same_urls_cold_presign_each_once() {
    let (_guard, url) = redis();
    let fleet = Fleet::new().await;
    let prefix = prefix("eight");
    let urls: Vec<String> = (0..200).map(|i| fleet.server.gallery_url(i)).collect();
    let pods: Vec<_> = (0..8)
        .map(|_| {
            let cache = RedisPresignCache::new(&url).unwrap().with_prefix(&prefix);
            leasing_process(&fleet, cache, vouched(&fleet, "alice"))
        })
        .collect();
    let loads = pods.iter().map(|pod| async {
        pod.prefetch(&urls.iter().map(String::as_str).collect::<Vec<_>>()).await;
        futures::future::join_all(urls.iter().map(|url| resolve_str(&**pod, url))).await
    });
    let answers: Vec<Vec<String>> = futures::future::join_all(loads)
        .await
        .into_iter()
        .map(|answers| answers.into_iter().map(|answer| answer.unwrap().0.into_owned()).collect())
        .collect();
    assert!(answers.iter().all(|pod| pod == &answers[0]), "every process uses the one URL presigned per file");
    let calls = fleet.server.stats().presign_calls;
    let limit = 200usize.div_ceil(PresignConfig::default().batch_limit) as u64 + 8;
    println!("8 processes, 200 URLs, one Redis: {calls} presign calls");
    assert!(calls <= limit, "{calls} presign calls for 8 processes, at most {limit}");
    assert_eq!(fleet.server.stats().urls_presigned, 200, "each URL presigned once across the fleet");
    assert_eq!(fleet.fetch_status(&answers[3][17]).await, 200);
}

#[tokio::test]
async fn what_a_writer_to_redis_plants_as_leases_or_entries_neither_stalls_nor_breaks_the_scripts() {
    let (_guard, url) = redis();
    let prefix = prefix("planted-leases");
    let cache = RedisPresignCache::new(&url).unwrap().with_prefix(&prefix).with_l1(0);
    let mut conn = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let alice: Arc<str> = "sub:alice".into();
    let urls: Vec<String> = (0..5).map(|n| format!("https://media.example.com/{n}.png")).collect();
    let keys: Vec<CacheKey<'_>> = urls.iter().map(|url| CacheKey::new(&alice, url)).collect();
    let lease_of = |key: &CacheKey<'_>| format!("{}#lease", cache.redis_key(key));
    // A lease that never runs out, one far longer than any lease, one of another type, an entry
    // of another type, and an entry of a megabyte.
    let _: () = conn.set(lease_of(&keys[0]), "lease:forever").await.unwrap();
    let _: () = conn.pset_ex(lease_of(&keys[1]), "lease:long", 86_400_000).await.unwrap();
    let _: () = conn.rpush(lease_of(&keys[2]), "x").await.unwrap();
    let _: () = conn.pexpire(lease_of(&keys[2]), 2_000).await.unwrap();
    let _: () = conn.rpush(cache.redis_key(&keys[3]), "x").await.unwrap();
    let _: () = conn.set(cache.redis_key(&keys[4]), "{".repeat(1 << 20)).await.unwrap();

    let leases = cache.lease(&keys).await;
    assert_eq!(leases[..3], [Lease::Mine; 3], "planted leases are taken over, not waited on");
    assert_eq!(leases[3..], [Lease::Theirs; 2], "something is stored there: look at it");
    // Looked at together with a key whose holder really publishes: the script does not fail.
    let holder = RedisPresignCache::new(&url).unwrap().with_prefix(&prefix).with_l1(0);
    let published = "https://media.example.com/published.png";
    let published_key = CacheKey::new(&alice, published);
    assert_eq!(holder.lease(&[published_key]).await, [Lease::Mine]);
    let now = std::time::SystemTime::now();
    let signed = url::Url::parse(&format!("{published}?Signature=real")).unwrap();
    holder.put(&published_key, SignedUrl::new(published, signed, now, now + Duration::from_secs(600))).await;
    let started = Instant::now();
    let found = cache.wait_for(&[keys[3], keys[4], published_key]).await;
    assert!(found[0].is_none() && found[1].is_none(), "neither is an entry: presign them here");
    assert!(found[2].as_ref().is_some_and(|url| url.as_str().ends_with("Signature=real")), "{:?}", found[2]);
    assert!(started.elapsed() < Duration::from_secs(2), "no wait for the lease bound: {:?}", started.elapsed());
    assert!(cache.get(&keys[4]).await.is_none(), "a megabyte is not an entry (and only 16 KiB of it is read)");
    // Leases are this process's own: asking again renews them, releasing ends them.
    assert_eq!(cache.lease(&keys[..3]).await, [Lease::Mine; 3]);
    cache.release(&keys[..3]).await;
    let other = RedisPresignCache::new(&url).unwrap().with_prefix(&prefix).with_l1(0);
    assert_eq!(other.lease(&keys[..3]).await, [Lease::Mine; 3]);
}

#[tokio::test]
async fn no_more_than_16_kib_of_a_stored_value_is_read() {
    let (_guard, url) = redis();
    let prefix = prefix("long-entry");
    let cache = RedisPresignCache::new(&url).unwrap().with_prefix(&prefix).with_l1(0);
    let alice: Arc<str> = "sub:alice".into();
    let media = "https://media.example.com/a.png";
    let key = CacheKey::new(&alice, media);
    // A well-formed entry, but longer than any presigned URL: read in full it would be a hit.
    let now = std::time::SystemTime::now();
    let long = url::Url::parse(&format!("{media}?Signature={}", "a".repeat(20_000))).unwrap();
    cache.put(&key, SignedUrl::new(media, long, now, now + Duration::from_secs(600))).await;
    assert_eq!(keys(&url, &prefix).await.len(), 1, "stored");
    assert!(cache.get(&key).await.is_none(), "read through GET");
    assert!(cache.wait_for(&[key]).await[0].is_none(), "read through the lease's look");
}

#[tokio::test]
async fn loads_that_come_as_they_come_batch_with_a_shared_cache_as_they_do_in_memory() {
    use futures::StreamExt;
    let (_guard, url) = redis();
    let fleet = Fleet::new().await;
    let urls: Vec<String> = (0..200).map(|i| fleet.server.gallery_url(i)).collect();
    // 32 loads in flight at a time, no asking ahead: the misses of a window batch together.
    let load = |pod: Arc<dyn MediaAccessStrategy>| {
        let urls = urls.clone();
        async move {
            let answers = futures::stream::iter(urls.iter().map(|url| resolve_str(&*pod, url)))
                .buffer_unordered(32)
                .collect::<Vec<_>>()
                .await;
            assert!(answers.iter().all(Result::is_ok));
            pod.stats().presign_calls
        }
    };
    let hosts = SecureHosts::new().with_host(&fleet.server.host()).unwrap();
    let presigner =
        ReqwestPresigner::new(secure_media_testkit::reqwest_client(), fleet.server.presign_url().parse().unwrap())
            .unwrap();
    let in_memory: Arc<dyn MediaAccessStrategy> =
        Arc::new(PresignedStrategy::new(hosts, vouched(&fleet, "alice"), presigner));
    let memory_calls = load(in_memory).await;
    let cache = RedisPresignCache::new(&url).unwrap().with_prefix(prefix("as-they-come"));
    let shared_calls = load(leasing_process(&fleet, cache, vouched(&fleet, "bob"))).await;
    println!("200 URLs, 32 at a time: {memory_calls} presign calls in memory, {shared_calls} on Redis");
    assert!(shared_calls <= memory_calls + 2, "{shared_calls} calls on Redis against {memory_calls} in memory");
}
