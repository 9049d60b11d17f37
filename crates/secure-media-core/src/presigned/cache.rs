//! [`PresignCache`]: where presigned URLs wait for reuse, and the in-memory
//! [`MemoryPresignCache`] (a sharded LRU).

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use lru::LruCache;

use super::SignedUrl;

/// A cache key: the principal scope and the clean media URL, hashed once.
#[derive(Debug, Clone, Copy)]
pub struct CacheKey<'a> {
    scope: &'a str,
    url: &'a str,
    hash: u64,
}

impl<'a> CacheKey<'a> {
    /// The key of `url` (a clean URL) for principal `scope`.
    pub fn new(scope: &'a str, url: &'a str) -> Self {
        Self { scope, url, hash: stable_hash(scope, url) }
    }

    /// Whose URL this is.
    pub fn scope(&self) -> &'a str {
        self.scope
    }

    /// The clean media URL.
    pub fn url(&self) -> &'a str {
        self.url
    }

    /// A stable 64-bit hash of scope and URL.
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

/// A fast 64-bit hash, the same in every process and release (shared caches key by it):
/// eight bytes a step, then a full avalanche. Not collision-proof, so every hit is verified
/// against the full key.
fn stable_hash(scope: &str, url: &str) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = (scope.len() as u64) << 32 | url.len() as u64;
    for part in [scope.as_bytes(), url.as_bytes()] {
        let mut words = part.chunks_exact(8);
        for word in &mut words {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(bytes)).wrapping_mul(K);
        }
        let mut last = [0u8; 8];
        last[..words.remainder().len()].copy_from_slice(words.remainder());
        h = (h.rotate_left(5) ^ u64::from_le_bytes(last)).wrapping_mul(K);
    }
    // fmix64 from MurmurHash3: every output bit depends on every input bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The LRU's own map is keyed by [`CacheKey::hash`], already a good hash: no second hashing.
#[derive(Default)]
struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Stores presigned URLs by [`CacheKey`]. The strategy decides freshness; a cache only stores.
///
/// In-memory caches answer [`get_ready`](Self::get_ready) (the hot path, no await); a remote cache
/// answers its local tier there, or `None`, and its remote tier in [`get`](Self::get).
#[async_trait]
pub trait PresignCache: Send + Sync + 'static {
    /// A lookup that does not wait.
    fn get_ready(&self, key: &CacheKey<'_>) -> Option<Arc<SignedUrl>>;

    /// A lookup that may wait (a remote tier). Default: [`get_ready`](Self::get_ready).
    async fn get(&self, key: &CacheKey<'_>) -> Option<Arc<SignedUrl>> {
        self.get_ready(key)
    }

    /// Stores a URL; it may be dropped at any time (capacity, its expiry).
    async fn put(&self, key: &CacheKey<'_>, url: Arc<SignedUrl>);

    /// Forgets a URL (the media server refused it).
    async fn remove(&self, key: &CacheKey<'_>);

    /// Forgets everything this process holds for one principal (logout, user switch).
    fn purge_scope(&self, scope: &str);
}

#[async_trait]
impl<C: PresignCache + ?Sized> PresignCache for Arc<C> {
    fn get_ready(&self, key: &CacheKey<'_>) -> Option<Arc<SignedUrl>> {
        (**self).get_ready(key)
    }
    async fn get(&self, key: &CacheKey<'_>) -> Option<Arc<SignedUrl>> {
        (**self).get(key).await
    }
    async fn put(&self, key: &CacheKey<'_>, url: Arc<SignedUrl>) {
        (**self).put(key, url).await
    }
    async fn remove(&self, key: &CacheKey<'_>) {
        (**self).remove(key).await
    }
    fn purge_scope(&self, scope: &str) {
        (**self).purge_scope(scope)
    }
}

struct Entry {
    scope: Box<str>,
    url: Box<str>,
    value: Arc<SignedUrl>,
}

impl Entry {
    fn is(&self, key: &CacheKey<'_>) -> bool {
        *self.url == *key.url && *self.scope == *key.scope
    }
}

type Shard = Mutex<LruCache<u64, Entry, BuildHasherDefault<KeyIsHash>>>;

/// An in-memory LRU of presigned URLs, sharded so threads on different keys do not queue on one
/// lock, and bounded: it never holds more than its capacity. A lookup locks one shard for the
/// lookup only and clones an `Arc`.
///
/// ```
/// # futures::executor::block_on(async {
/// use std::sync::Arc;
/// use std::time::{Duration, SystemTime};
/// use secure_media_core::presigned::{CacheKey, MemoryPresignCache, PresignCache, SignedUrl};
///
/// let cache = MemoryPresignCache::new(1_000);
/// let key = CacheKey::new("sub:alice", "https://files-us.cometchat.io/a.png");
/// let now = SystemTime::now();
/// let url = url::Url::parse("https://media-us.cometchat.io/a.png?Signature=s").unwrap();
/// cache.put(&key, Arc::new(SignedUrl::new(url, now, now + Duration::from_secs(60)))).await;
/// assert!(cache.get_ready(&key).is_some());
/// assert!(cache.get_ready(&CacheKey::new("sub:bob", "https://files-us.cometchat.io/a.png")).is_none());
/// # });
/// ```
pub struct MemoryPresignCache {
    shards: Box<[Shard]>,
    capacity: usize,
}

impl MemoryPresignCache {
    /// A cache holding at most `capacity` URLs (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // 16 shards once each can hold a useful number of entries; one for tiny caches.
        let shard_count = if capacity >= 16 * 4 { 16 } else { 1 };
        let shards = (0..shard_count)
            .map(|i| {
                let share = capacity / shard_count + usize::from(i < capacity % shard_count);
                Mutex::new(LruCache::with_hasher(
                    NonZeroUsize::new(share.max(1)).unwrap_or(NonZeroUsize::MIN),
                    BuildHasherDefault::default(),
                ))
            })
            .collect();
        Self { shards, capacity }
    }

    /// The most URLs it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many URLs it holds now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Holds nothing?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &CacheKey<'_>) -> &Shard {
        // The high bits pick the shard; the LRU's map uses the low bits.
        &self.shards[(key.hash >> 48) as usize % self.shards.len()]
    }
}

fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, LruCache<u64, Entry, BuildHasherDefault<KeyIsHash>>> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl PresignCache for MemoryPresignCache {
    fn get_ready(&self, key: &CacheKey<'_>) -> Option<Arc<SignedUrl>> {
        let mut shard = lock(self.shard(key));
        // A 64-bit collision between two keys reads as a miss, never as the other key's URL.
        shard.get(&key.hash).filter(|e| e.is(key)).map(|e| e.value.clone())
    }

    async fn put(&self, key: &CacheKey<'_>, url: Arc<SignedUrl>) {
        let entry = Entry { scope: key.scope.into(), url: key.url.into(), value: url };
        lock(self.shard(key)).put(key.hash, entry);
    }

    async fn remove(&self, key: &CacheKey<'_>) {
        let mut shard = lock(self.shard(key));
        if shard.peek(&key.hash).is_some_and(|e| e.is(key)) {
            shard.pop(&key.hash);
        }
    }

    fn purge_scope(&self, scope: &str) {
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let doomed: Vec<u64> = shard.iter().filter(|(_, e)| &*e.scope == scope).map(|(k, _)| *k).collect();
            for k in doomed {
                shard.pop(&k);
            }
        }
    }
}

impl fmt::Debug for MemoryPresignCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryPresignCache")
            .field("capacity", &self.capacity)
            .field("shards", &self.shards.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn signed(n: usize) -> Arc<SignedUrl> {
        let now = SystemTime::now();
        Arc::new(SignedUrl::new(
            url::Url::parse(&format!("https://m.io/{n}?Signature=s")).unwrap(),
            now,
            now + Duration::from_secs(60),
        ))
    }

    #[tokio::test]
    async fn capacity_n_never_holds_more_than_n() {
        for capacity in [1, 7, 64, 100, 1000] {
            let cache = MemoryPresignCache::new(capacity);
            let urls: Vec<String> = (0..capacity * 3).map(|i| format!("https://h.io/{i}")).collect();
            for (i, url) in urls.iter().enumerate() {
                cache.put(&CacheKey::new("s", url), signed(i)).await;
                assert!(cache.len() <= capacity);
            }
            assert!(cache.len() >= capacity * 9 / 10, "capacity {capacity} holds {}", cache.len());
        }
    }

    #[tokio::test]
    async fn least_recently_used_goes_first() {
        let cache = MemoryPresignCache::new(2);
        let (a, b, c) = (CacheKey::new("s", "a"), CacheKey::new("s", "b"), CacheKey::new("s", "c"));
        cache.put(&a, signed(1)).await;
        cache.put(&b, signed(2)).await;
        assert!(cache.get_ready(&a).is_some());
        cache.put(&c, signed(3)).await;
        assert!(cache.get_ready(&a).is_some() && cache.get_ready(&b).is_none() && cache.get_ready(&c).is_some());
    }

    #[tokio::test]
    async fn scopes_are_isolated_and_purged_alone() {
        let cache = MemoryPresignCache::new(100);
        let alice = CacheKey::new("sub:alice", "https://h.io/a");
        let bob = CacheKey::new("sub:bob", "https://h.io/a");
        cache.put(&alice, signed(1)).await;
        assert!(cache.get_ready(&bob).is_none());
        cache.put(&bob, signed(2)).await;
        cache.purge_scope("sub:alice");
        assert!(cache.get_ready(&alice).is_none());
        assert!(cache.get_ready(&bob).is_some());
        cache.remove(&bob).await;
        assert!(cache.is_empty());
    }
}
