//! Bad input (issue 16): whatever a Redis value holds (random bytes, bytes that are not UTF-8,
//! JSON with absurd times, a value of another type), reading it back through the cache is a miss
//! or a sane entry, never a panic, and never taken for an outage. Against a real `redis-server`
//! (`REDIS_URL`, or one started here on a free loopback port). The decoder itself runs thousands
//! of cases in `src/lib.rs` (`parser_props`).
//!
//! Generated values: `PROPTEST_CASES / 16` (128 when unset). The long run:
//! `PROPTEST_CASES=200000 cargo test -p secure-media-redis --test parsers --release`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use redis::AsyncCommands;
use secure_media_core::presigned::{CacheKey, PresignCache, MAX_URL_LIFETIME};
use secure_media_redis::RedisPresignCache;
use tokio::runtime::Runtime;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse::<u32>().ok()).unwrap_or(2048).div_ceil(16)
}

/// A `redis-server` a test owns, stopped on drop.
struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Fixture {
    runtime: Runtime,
    url: String,
    _server: Option<RedisServer>,
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

/// A runtime and a Redis for one test (each test owns its `redis-server`, so none outlives it).
fn fixture() -> Fixture {
    {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (url, server) = match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
                let child = Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect(
                        "redis-server is needed for these tests (apt-get install -y redis-server), or set REDIS_URL",
                    );
                let server = RedisServer(child);
                let deadline = Instant::now() + Duration::from_secs(10);
                while !ping(port) {
                    assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                (format!("redis://127.0.0.1:{port}/"), Some(server))
            }
        };
        Fixture { runtime, url, _server: server }
    }
}

/// A cache without L1 (every read goes to Redis) under a prefix of its own.
fn cache(f: &Fixture) -> RedisPresignCache {
    static N: AtomicUsize = AtomicUsize::new(0);
    let prefix = format!("sm-parsers-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    RedisPresignCache::new(&f.url).unwrap().with_prefix(prefix).with_l1(0).with_timeout(Duration::from_secs(2))
}

/// How a value gets into Redis: as a string of bytes, or as a value of another type.
#[derive(Debug, Clone)]
enum Stored {
    Bytes(Vec<u8>),
    List(Vec<u8>),
}

/// Stores `stored` where the cache looks for `key`, then reads it back through the cache.
fn store_and_read(f: &Fixture, stored: &Stored) -> (Option<secure_media_core::presigned::SignedUrl>, String) {
    f.runtime.block_on(async {
        let cache = cache(f);
        let alice: std::sync::Arc<str> = "sub:alice".into();
        let key = CacheKey::new(&alice, "https://m.io/a.png");
        let redis_key = cache.redis_key(&key);
        let mut conn = redis::Client::open(f.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let _: () = conn.del(&redis_key).await.unwrap();
        match stored {
            Stored::Bytes(bytes) => conn.set::<_, _, ()>(&redis_key, bytes.as_slice()).await.unwrap(),
            Stored::List(bytes) => conn.rpush::<_, _, ()>(&redis_key, bytes.as_slice()).await.unwrap(),
        }
        let got = cache.get(&key).await;
        let shown = format!("{cache:?}");
        let _: () = conn.del(&redis_key).await.unwrap();
        (got, shown)
    })
}

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn entry(fetched: &str, expires: &str) -> Vec<u8> {
    format!(
        r#"{{"key":"https://m.io/a.png","url":"https://m.io/a.png?Signature=s","fetched_at_ms":{fetched},"expires_at_ms":{expires}}}"#
    )
    .into_bytes()
}

/// A miss, or an entry with times in order, fetched no later than a little ahead of now, its
/// lifetime within reason; and the cache never believes Redis went down over a string value.
fn check(f: &Fixture, stored: &Stored) -> Result<(), TestCaseError> {
    let (got, shown) = store_and_read(f, stored);
    // A value of another type is a `WRONGTYPE` error from Redis itself, logged as unavailable.
    if matches!(stored, Stored::Bytes(_)) {
        prop_assert!(shown.contains("down: false"), "a bad value was taken for an outage: {}", shown);
    }
    if let Some(url) = got {
        prop_assert!(url.fetched_at() < url.expires_at());
        prop_assert!(url.fetched_at() <= SystemTime::now() + Duration::from_secs(300));
        prop_assert!(url.as_str().starts_with("https://"));
        let _ = url.lifetime().min(MAX_URL_LIFETIME);
    }
    Ok(())
}

#[test]
fn the_worst_stored_values_are_a_miss() {
    let f = fixture();
    let now = now_ms();
    let later = (now + 3_600_000).to_string();
    let far_ahead = (now + 3_600_000).to_string();
    for stored in [
        Stored::Bytes(b"\xff\xfe\x00garbage".to_vec()),
        Stored::Bytes(b"{\"key\":\"https://m.io/a.png\",\"url\":\"https://m.io/a.png?s=\xff\"}".to_vec()),
        Stored::Bytes(Vec::new()),
        Stored::Bytes(b"null".to_vec()),
        Stored::Bytes(format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes()),
        Stored::Bytes(entry("18446744073709551615", "1")),
        Stored::Bytes(entry("1", "18446744073709551615")),
        Stored::Bytes(entry("18446744073709551614", "18446744073709551615")),
        Stored::Bytes(entry(&far_ahead, &(now + 7_200_000).to_string())),
        Stored::Bytes(entry(&later, &later)),
        Stored::Bytes(entry("-1", &later)),
        Stored::Bytes(entry("1.5e12", &later)),
        Stored::List(entry(&now.to_string(), &later)),
    ] {
        let (got, shown) = store_and_read(&f, &stored);
        assert!(got.is_none(), "{stored:?} was read as an entry");
        if matches!(stored, Stored::Bytes(_)) {
            assert!(shown.contains("down: false"), "{stored:?} was taken for an outage: {shown}");
        }
    }
    // And a sane entry is read.
    let (got, _) = store_and_read(&f, &Stored::Bytes(entry(&now.to_string(), &later)));
    assert_eq!(got.unwrap().as_str(), "https://m.io/a.png?Signature=s");
}

fn stored_value() -> impl Strategy<Value = Stored> {
    let base = now_ms();
    let time = prop_oneof![
        3 => (0u64..7_200_000).prop_map(move |offset| (base - 3_600_000 + offset).to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| if f.is_finite() { format!("{f:e}") } else { "null".into() }),
        1 => proptest::sample::select(&["\"1\"", "[]", "{}", "1e400"][..]).prop_map(str::to_owned),
    ];
    prop_oneof![
        4 => (time.clone(), time).prop_map(|(fetched, expires)| Stored::Bytes(entry(&fetched, &expires))),
        2 => proptest::collection::vec(any::<u8>(), 0..256).prop_map(Stored::Bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Stored::List),
    ]
}

/// A runner rather than `proptest!`: the Redis it starts must stop when the test ends.
#[test]
fn any_stored_value_is_a_miss_or_a_sane_entry() {
    let f = fixture();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases()));
    if let Err(failure) = runner.run(&stored_value(), |stored| check(&f, &stored)) {
        panic!("{failure}");
    }
}
