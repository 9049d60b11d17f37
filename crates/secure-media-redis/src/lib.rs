//! # secure-media-redis
//!
//! A [`PresignCache`] on Redis, so a fleet (API pods, a scaled media proxy) asks the presign
//! endpoint once per URL and principal instead of once per process, and a restart keeps the cache.
//!
//! ```no_run
//! use std::sync::Arc;
//! use secure_media_core::presigned::{Presigner, PresignedStrategy};
//! use secure_media_core::{SecureHosts, StaticToken};
//! use secure_media_redis::RedisPresignCache;
//!
//! # async fn run(presigner: impl Presigner) -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Arc::new(RedisPresignCache::new("redis://127.0.0.1:6379")?);
//! let strategy =
//!     PresignedStrategy::new(SecureHosts::cometchat("us")?, Arc::new(StaticToken::parse("fat")?), presigner)
//!         .with_cache(cache);
//! # Ok(()) }
//! ```
//!
//! - **Key**: `{prefix}:{principal scope}:{clean URL}`, or `{prefix}:{scope}:h:{digest}` for URLs
//!   longer than 256 bytes, where the digest is XXH3-64 (seed 0) of the clean URL in 16 hex
//!   digits: stable across processes, releases and platforms. **Value**: JSON with the presigned URL, its expiry and the clean URL
//!   (checked on read). **TTL**: the URL's expiry minus the safety margin (capped at a quarter of
//!   its lifetime, as the strategy does), so Redis drops entries before they go stale.
//! - **What Redis holds**: presigned URLs (which are themselves time-limited credentials for one
//!   file), clean URLs and principal scopes (`sub:<user id>`, or a one-way digest for tokens without
//!   `sub`, or `tok:<digest>` for a token not yet accepted by the endpoint). Never a FAT.
//! - **L1**: an in-memory LRU in front (on by default), so hits stay in nanoseconds and Redis sees
//!   only L1 misses.
//! - **Redis down or slow**: every call has a timeout (default 250 ms); a failure is a miss (or a
//!   skipped write), logged once per outage, never an error to the caller. The strategy presigns
//!   directly, and the connection manager reconnects when Redis is back.
//! - **Across processes**: no distributed single-flight; two processes that miss at once both
//!   presign and both end with a valid URL (the later write wins), and a process that misses later
//!   finds the stored entry.
//! - **Whose entries**: a JWT's `sub` is read, not verified, so a process uses `sub:<user>` entries
//!   for a token only after the presign endpoint accepted that token there (its first successful
//!   presign call); before that, only entries under the token's own `tok:<digest>` scope, which
//!   the first process to presign with that very token also wrote. A token whose payload merely
//!   claims a user gets none of that user's entries.
//! - **What is read back is checked**: an entry is used only if its URL is on a secure or CDN host
//!   under the secure hosts' scheme rule; anything else is a miss and is deleted (only if it is
//!   still the same entry). A refusal deletes only the refused URL, never a fresher one another
//!   process stored meanwhile.
//! - **Purge** (logout, user switch) clears this process's L1; Redis entries expire on their own.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::await_holding_lock)]

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use secure_media_core::presigned::endpoint::MAX_UNIX_SECS;
use secure_media_core::presigned::{CacheKey, MemoryPresignCache, PresignCache, SignedUrl, MAX_URL_LIFETIME};
use serde::{Deserialize, Serialize};

/// Why the cache could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisCacheError {
    /// The Redis URL is not usable.
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
}

/// Keys longer than this are stored by hash.
const MAX_PLAIN_KEY: usize = 256;

/// The latest time a stored entry may name, in milliseconds: 9999-12-31T23:59:59.999Z, where the
/// core clamps every expiry. Later is not a time anyone wrote: a miss.
const MAX_ENTRY_MILLIS: u64 = MAX_UNIX_SECS * 1000 + 999;

/// How far ahead of this process's clock another process's `fetched_at` may be. An entry fetched
/// further in the future is a miss: the strategy trusts a URL for at most `MAX_URL_LIFETIME`
/// after it was fetched, which such an entry would push back without limit.
const MAX_CLOCK_AHEAD: Duration = Duration::from_secs(300);

/// Deletes `KEYS[1]` only while it still holds the URL `ARGV[1]` (or something unreadable): the
/// check and the delete are one step, so a fresher entry another process wrote is never lost.
const DELETE_IF_SAME: &str = r"
local stored = redis.call('GET', KEYS[1])
if not stored then return 0 end
local ok, entry = pcall(cjson.decode, stored)
if ok and type(entry) == 'table' and type(entry.url) == 'string' and entry.url ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
";

/// A presign cache on Redis with an optional in-memory L1. See the [crate docs](crate).
pub struct RedisPresignCache {
    redis: ConnectionManager,
    prefix: String,
    timeout: Duration,
    safety_margin: Duration,
    l1: Option<MemoryPresignCache>,
    down: AtomicBool,
}

impl RedisPresignCache {
    /// A cache on the Redis at `url` (`redis://host:port/db`), with prefix `secure-media`, a 250 ms
    /// timeout per call, a 30 s safety margin and a 10,000-entry L1. Connects lazily: Redis may be
    /// down now and come up later. Call it inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`RedisCacheError`] when `url` is not a Redis URL the client accepts (the message shows
    /// it without its password).
    pub fn new(url: &str) -> Result<Self, RedisCacheError> {
        let timeout = Duration::from_millis(250);
        let client = redis::Client::open(url).map_err(|_| RedisCacheError::InvalidUrl(redact_url(url)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let redis = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| RedisCacheError::InvalidUrl(e.to_string()))?;
        Ok(Self {
            redis,
            prefix: "secure-media".into(),
            timeout,
            safety_margin: Duration::from_secs(30),
            l1: Some(MemoryPresignCache::new(10_000)),
            down: AtomicBool::new(false),
        })
    }

    /// Keys start with `{prefix}:`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The bound on every Redis call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Entries leave Redis this long before their URL expires (capped at a quarter of its life);
    /// match the strategy's `PresignConfig::safety_margin`.
    pub fn with_safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = margin;
        self
    }

    /// An L1 of `capacity` entries, or none for `0`.
    pub fn with_l1(mut self, capacity: usize) -> Self {
        self.l1 = (capacity > 0).then(|| MemoryPresignCache::new(capacity));
        self
    }

    /// The Redis key of a cache key.
    pub fn redis_key(&self, key: &CacheKey<'_>) -> String {
        if key.url().len() <= MAX_PLAIN_KEY {
            format!("{}:{}:{}", self.prefix, key.scope(), key.url())
        } else {
            format!("{}:{}:h:{:016x}", self.prefix, key.scope(), url_digest(key.url()))
        }
    }

    /// The L1, if any.
    pub fn l1(&self) -> Option<&MemoryPresignCache> {
        self.l1.as_ref()
    }

    /// Runs one Redis call under the timeout; a failure is logged once per outage and read as `None`.
    async fn call<T, F>(&self, what: &str, call: F) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis presign cache is back");
                }
                Some(value)
            }
            Ok(Err(error)) => {
                self.went_down(what, &error.to_string());
                None
            }
            Err(_) => {
                self.went_down(what, "timed out");
                None
            }
        }
    }

    fn went_down(&self, what: &str, why: &str) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                operation = what,
                reason = why,
                "redis presign cache unavailable: presigning directly until it is back"
            );
        }
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn redact_url(url: &str) -> String {
    // A Redis URL may carry a password.
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("");
            parsed.to_string()
        }
        Err(_) => "<unparsable>".into(),
    }
}

/// What a Redis value holds, as JSON.
#[derive(Serialize, Deserialize)]
struct Entry<'a> {
    /// The clean URL it was stored for (a hashed key may be shared by two URLs).
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    url: Cow<'a, str>,
    fetched_at_ms: u64,
    expires_at_ms: u64,
}

fn encode(key: &CacheKey<'_>, url: &SignedUrl) -> String {
    let entry = Entry {
        key: key.url().into(),
        url: url.as_str().into(),
        fetched_at_ms: millis(url.fetched_at()),
        expires_at_ms: millis(url.expires_at()),
    };
    // Strings and numbers into a String cannot fail.
    serde_json::to_string(&entry).unwrap_or_default()
}

/// A stored value read back at `now`: `None` (a miss) for anything but an entry for this very key
/// with two times in order, neither past year 9999 and the fetch not in the future.
fn decode(key: &CacheKey<'_>, text: &str, now: SystemTime) -> Option<SignedUrl> {
    // An object only: serde's derived structs would also read an array, field by position.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let entry: Entry<'_> = serde_json::from_str(text).ok()?;
    if entry.key != key.url() {
        return None; // a hashed key shared by two URLs: a miss, never the other URL
    }
    let url = url::Url::parse(&entry.url).ok()?;
    // Only the form a refusal can name (its serialisation) is an entry: anything else would
    // survive the delete script.
    if url.as_str() != entry.url {
        return None;
    }
    // Anyone who can write to Redis can write here: no arithmetic that could overflow.
    let at = |millis: u64| {
        let millis = Some(millis).filter(|millis| *millis <= MAX_ENTRY_MILLIS)?;
        UNIX_EPOCH.checked_add(Duration::from_millis(millis))
    };
    let (fetched_at, expires_at) = (at(entry.fetched_at_ms)?, at(entry.expires_at_ms)?);
    let fetched_in_the_past = now.checked_add(MAX_CLOCK_AHEAD).is_none_or(|latest| fetched_at <= latest);
    if expires_at <= fetched_at || !fetched_in_the_past {
        return None;
    }
    Some(SignedUrl::new(key.url(), url, fetched_at, expires_at))
}

#[async_trait]
impl PresignCache for RedisPresignCache {
    fn get_ready(&self, key: &CacheKey<'_>) -> Option<SignedUrl> {
        self.l1.as_ref()?.get_ready(key)
    }

    async fn get(&self, key: &CacheKey<'_>) -> Option<SignedUrl> {
        if let Some(hit) = self.get_ready(key) {
            return Some(hit);
        }
        let redis_key = self.redis_key(key);
        let mut redis = self.redis.clone();
        // Bytes, not a `String`: a value that is not UTF-8 is a bad entry (a miss), not an outage.
        let bytes: Option<Vec<u8>> = self.call("GET", async move { redis.get(redis_key).await }).await.flatten();
        let url = decode(key, std::str::from_utf8(&bytes?).ok()?, SystemTime::now())?;
        if let Some(l1) = &self.l1 {
            l1.put(key, url.clone()).await;
        }
        Some(url)
    }

    async fn put(&self, key: &CacheKey<'_>, url: SignedUrl) {
        if let Some(l1) = &self.l1 {
            l1.put(key, url.clone()).await;
        }
        let margin = self.safety_margin.min(url.lifetime() / 4);
        let Some(Ok(left)) = url.expires_at().checked_sub(margin).map(|stale| stale.duration_since(SystemTime::now()))
        else {
            return; // already within the margin: not worth sharing
        };
        // The strategy trusts no URL longer than this; Redis refuses absurd TTLs anyway.
        let ttl_ms = u64::try_from(left.min(MAX_URL_LIFETIME).as_millis()).unwrap_or(u64::MAX).max(1);
        let (redis_key, value) = (self.redis_key(key), encode(key, &url));
        let mut redis = self.redis.clone();
        let _: Option<()> = self.call("SET", async move { redis.pset_ex(redis_key, value, ttl_ms).await }).await;
    }

    async fn remove(&self, key: &CacheKey<'_>) {
        if let Some(l1) = &self.l1 {
            l1.remove(key).await;
        }
        let redis_key = self.redis_key(key);
        let mut redis = self.redis.clone();
        let _: Option<()> = self.call("DEL", async move { redis.del(redis_key).await }).await;
    }

    async fn remove_refused(&self, key: &CacheKey<'_>, refused: &SignedUrl) {
        if let Some(l1) = &self.l1 {
            l1.remove_refused(key, refused).await;
        }
        let (redis_key, url) = (self.redis_key(key), refused.as_str().to_owned());
        let mut redis = self.redis.clone();
        let delete = async move {
            redis::cmd("EVAL").arg(DELETE_IF_SAME).arg(1).arg(redis_key).arg(url).query_async::<i64>(&mut redis).await
        };
        let _: Option<i64> = self.call("EVAL", delete).await;
    }

    fn purge_scope(&self, scope: &str) {
        if let Some(l1) = &self.l1 {
            l1.purge_scope(scope);
        }
    }
}

impl fmt::Debug for RedisPresignCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPresignCache")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("l1", &self.l1.as_ref().map(MemoryPresignCache::capacity))
            .field("down", &self.down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The digest that names a long URL's key: XXH3-64 with seed 0, the same in every process
/// (a digest clash reads as a miss: the entry names its clean URL, checked on read).
fn url_digest(url: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(url.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_long_url_digest_is_pinned_xxh3() {
        // XXH3-64's published vector for empty input, then one of our own: a change to either
        // orphans every fleet's long-URL entries, so it must be deliberate (and in the changelog).
        assert_eq!(url_digest(""), 0x2d06_8005_38d3_94c2);
        assert_eq!(url_digest("https://files-us.cometchat.io/app/media/a.png"), 0x5616_8278_9d33_316e);
        let cache = RedisPresignCache::new("redis://127.0.0.1:1").unwrap();
        let long = format!("https://files-us.cometchat.io/app/media/{}.png", "a".repeat(300));
        let alice: Arc<str> = "sub:alice".into();
        let key = cache.redis_key(&CacheKey::new(&alice, &long));
        assert_eq!(key, format!("secure-media:sub:alice:h:{:016x}", url_digest(&long)));
    }

    #[test]
    fn values_round_trip_and_refuse_another_key() {
        let now = UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        let signed = SignedUrl::new(
            "https://m.io/a",
            url::Url::parse("https://m.io/a?Signature=s").unwrap(),
            now,
            now + Duration::from_secs(60),
        );
        let scope: Arc<str> = "sub:a".into();
        let key = CacheKey::new(&scope, "https://m.io/a");
        let text = encode(&key, &signed);
        let back = decode(&key, &text, now).unwrap();
        assert_eq!((back.as_str(), back.expires_at(), back.fetched_at()), (signed.as_str(), signed.expires_at(), now));
        assert!(decode(&CacheKey::new(&scope, "https://m.io/b"), &text, now).is_none());
        let positional = r#"["https://m.io/a","https://m.io/a?Signature=s",1800000000000,1800000060000]"#;
        assert!(decode(&key, positional, now).is_none(), "an array is not an entry");
        assert!(decode(&key, "not json", now).is_none());
    }

    #[test]
    fn absurd_times_in_a_stored_value_are_a_miss_not_a_panic() {
        let scope: Arc<str> = "sub:a".into();
        let key = CacheKey::new(&scope, "https://m.io/a");
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // Found by `decode_never_panics_and_absurd_times_are_a_miss`: the first five were read as
        // entries (fetched in year 584 million or ahead of the clock, expiring before their fetch).
        for (fetched, expires) in [
            ("18446744073709551615", "1"),
            ("1", "18446744073709551615"),
            ("18446744073709551614", "18446744073709551615"),
            ("1800000600000", "1800003600000"),
            ("5", "5"),
            ("-1", "5"),
            ("1.5", "2"),
            ("253402300800000", "253402300800001"),
        ] {
            let text = format!(
                r#"{{"key":"https://m.io/a","url":"https://m.io/a?s=1","fetched_at_ms":{fetched},"expires_at_ms":{expires}}}"#
            );
            assert!(decode(&key, &text, now).is_none(), "{fetched} .. {expires}");
        }
        let ahead = r#"{"key":"https://m.io/a","url":"https://m.io/a?s=1","fetched_at_ms":1800000060000,"expires_at_ms":1800003600000}"#;
        assert!(decode(&key, ahead, now).is_some(), "a clock a minute ahead is fine");
    }

    #[test]
    fn passwords_never_reach_errors() {
        assert!(!redact_url("redis://user:hunter2@h:6379/0").contains("hunter2"));
    }

    /// Bad input (issue 16): whatever another process (or anyone who can write to Redis) stored,
    /// `PROPTEST_CASES` cases (2048 when unset); the long run:
    /// `PROPTEST_CASES=200000 cargo test -p secure-media-redis --lib --release`.
    mod parser_props {
        use proptest::prelude::*;

        use super::*;

        fn cases() -> u32 {
            std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(2048)
        }

        fn json_number() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => (1_700_000_000_000u64..1_900_000_000_000).prop_map(|n| n.to_string()),
                2 => any::<u64>().prop_map(|n| n.to_string()),
                1 => any::<i64>().prop_map(|n| n.to_string()),
                1 => any::<f64>().prop_map(|f| if f.is_finite() { format!("{f:e}") } else { "null".into() }),
                1 => proptest::sample::select(&["253402300799999", "253402300800000", "0", "-0", "1e400", "\"5\"", "[]", "{}", "null", "true"][..]).prop_map(str::to_owned),
            ]
        }

        fn stored_value() -> impl Strategy<Value = Vec<u8>> {
            let url = prop_oneof![
                3 => Just("\"https://m.io/a?Signature=s\"".to_owned()),
                1 => any::<String>().prop_map(|s| serde_json::Value::String(s).to_string()),
                1 => Just("42".to_owned()),
            ];
            let key = prop_oneof![4 => Just("\"https://m.io/a\"".to_owned()), 1 => Just("\"https://m.io/b\"".to_owned()), 1 => Just("null".to_owned())];
            prop_oneof![
                6 => (key, url, json_number(), json_number(), any::<bool>()).prop_map(|(key, url, fetched, expires, extra)| {
                    let extra = if extra { r#","extra":[[[[1]]]]"# } else { "" };
                    format!(r#"{{"key":{key},"url":{url},"fetched_at_ms":{fetched},"expires_at_ms":{expires}{extra}}}"#).into_bytes()
                }),
                2 => proptest::collection::vec(any::<u8>(), 0..128),
                1 => (1usize..50_000).prop_map(|depth| format!("{}1{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(cases()))]

            /// Random bytes and entries with any numbers: a miss or an entry whose times are in
            /// order, within year 9999 and fetched no later than the clock allows; never a panic,
            /// and what the strategy computes from it never overflows.
            #[test]
            fn decode_never_panics_and_absurd_times_are_a_miss(bytes in stored_value(), now_ms in 1_700_000_000_000u64..1_900_000_000_000) {
                let scope: Arc<str> = "sub:a".into();
        let key = CacheKey::new(&scope, "https://m.io/a");
                let now = UNIX_EPOCH + Duration::from_millis(now_ms);
                let Some(text) = std::str::from_utf8(&bytes).ok() else { return Ok(()) };
                if let Some(url) = decode(&key, text, now) {
                    prop_assert!(url.fetched_at() < url.expires_at());
                    prop_assert!(url.expires_at() <= UNIX_EPOCH + Duration::from_millis(MAX_ENTRY_MILLIS));
                    prop_assert!(url.fetched_at() <= now + MAX_CLOCK_AHEAD);
                    prop_assert!(url.lifetime() > Duration::ZERO);
                    let _ = encode(&key, &url);
                }
            }
        }
    }
}
