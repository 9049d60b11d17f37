//! [`PresignCache`]: where presigned URLs wait for reuse, and the in-memory
//! [`MemoryPresignCache`] (sharded, least recently used out first, by the `lru` crate).

use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};

use async_trait::async_trait;
use lru::LruCache;

use super::SignedUrl;

/// A cache key: the principal scope and the clean media URL.
#[derive(Debug, Clone, Copy)]
pub struct CacheKey<'a> {
    scope: &'a Arc<str>,
    url: &'a str,
}

impl<'a> CacheKey<'a> {
    /// The key of `url` (a clean URL) for principal `scope`.
    pub fn new(scope: &'a Arc<str>, url: &'a str) -> Self {
        Self { scope, url }
    }

    /// Whose URL this is.
    pub fn scope(&self) -> &'a str {
        self.scope
    }

    /// The clean media URL.
    pub fn url(&self) -> &'a str {
        self.url
    }
}

/// Who presigns a key that missed: this process, or another one sharing the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// This process presigns it: it holds the lease, or the cache shares no work.
    Mine,
    /// Another process holds the lease: [`PresignCache::wait_for`] waits for its URL.
    Theirs,
}

/// Stores presigned URLs by [`CacheKey`]. The strategy decides freshness; a cache only stores.
///
/// In-memory caches answer [`get_ready`](Self::get_ready) (the hot path, no await); a remote cache
/// answers its local tier there, or `None`, and its remote tier in [`get`](Self::get).
///
/// A cache shared between processes may also share the work: before a presign call the strategy
/// asks it for a [`lease`](Self::lease) on each key, presigns only the keys that are
/// [`Mine`](Lease::Mine), and [waits](Self::wait_for) for the others' URLs, which it checks like
/// any cached URL. The defaults share nothing.
#[async_trait]
pub trait PresignCache: Send + Sync + 'static {
    /// A lookup that does not wait. It may be called while the token source is read: it must not
    /// call back into the token source.
    fn get_ready(&self, key: &CacheKey<'_>) -> Option<SignedUrl>;

    /// A lookup that may wait (a remote tier). The strategy asks it for the keys of a presign
    /// call, all at once, before leasing them: misses join their batch without waiting on it, and
    /// what it answers fresh goes to its waiters at once. A cache with a local tier keeps what it
    /// answers there (the strategy stores only what it presigned). Default:
    /// [`get_ready`](Self::get_ready).
    async fn get(&self, key: &CacheKey<'_>) -> Option<SignedUrl> {
        self.get_ready(key)
    }

    /// Stores a URL; it may be dropped at any time (capacity, its expiry).
    async fn put(&self, key: &CacheKey<'_>, url: SignedUrl);

    /// Forgets a URL (the media server refused it).
    async fn remove(&self, key: &CacheKey<'_>);

    /// Forgets `refused` if it is still what `key` holds, and keeps a fresher URL stored there
    /// since (the media server refused, or the strategy could not use, that one URL). Default:
    /// [`remove`](Self::remove), for caches that cannot compare.
    async fn remove_refused(&self, key: &CacheKey<'_>, refused: &SignedUrl) {
        let _ = refused;
        self.remove(key).await
    }

    /// Forgets everything this process holds for one principal (logout, user switch).
    fn purge_scope(&self, scope: &str);

    /// Before a presign call for `keys` (which missed): who presigns each, one answer per key, in
    /// order. A cache shared by a fleet takes a short lease on each key, so that processes that
    /// miss the same URL at once presign it once. Default: [`Lease::Mine`] for every key.
    async fn lease(&self, keys: &[CacheKey<'_>]) -> Vec<Lease> {
        vec![Lease::Mine; keys.len()]
    }

    /// Waits, bounded, for the URLs of keys another process leased, one answer per key, in
    /// order. `None` where the holder gave up or went away, or the wait passed its bound: this
    /// process then presigns that key itself. A cache with a local tier keeps what it answers
    /// there (the strategy stores only what it presigned). Default: `None` for every key.
    async fn wait_for(&self, keys: &[CacheKey<'_>]) -> Vec<Option<SignedUrl>> {
        vec![None; keys.len()]
    }

    /// Gives up the leases of keys this process could not presign (its call failed), so that
    /// processes waiting for them presign them themselves at once. Default: nothing.
    async fn release(&self, keys: &[CacheKey<'_>]) {
        let _ = keys;
    }
}

#[async_trait]
impl<C: PresignCache + ?Sized> PresignCache for Arc<C> {
    fn get_ready(&self, key: &CacheKey<'_>) -> Option<SignedUrl> {
        (**self).get_ready(key)
    }
    async fn get(&self, key: &CacheKey<'_>) -> Option<SignedUrl> {
        (**self).get(key).await
    }
    async fn put(&self, key: &CacheKey<'_>, url: SignedUrl) {
        (**self).put(key, url).await
    }
    async fn remove(&self, key: &CacheKey<'_>) {
        (**self).remove(key).await
    }
    async fn remove_refused(&self, key: &CacheKey<'_>, refused: &SignedUrl) {
        (**self).remove_refused(key, refused).await
    }
    fn purge_scope(&self, scope: &str) {
        (**self).purge_scope(scope)
    }
    async fn lease(&self, keys: &[CacheKey<'_>]) -> Vec<Lease> {
        (**self).lease(keys).await
    }
    async fn wait_for(&self, keys: &[CacheKey<'_>]) -> Vec<Option<SignedUrl>> {
        (**self).wait_for(keys).await
    }
    async fn release(&self, keys: &[CacheKey<'_>]) {
        (**self).release(keys).await
    }
}

/// A cached URL, filed under the hash of its key; the key itself (scope and clean URL) is
/// verified on every hit, so two keys that share a hash read as a miss, never as each other.
struct Slot {
    /// Shared with every entry of that principal.
    scope: Arc<str>,
    /// Its text starts with the clean URL: the key costs no allocation of its own.
    signed: SignedUrl,
    /// Hit since it last reached the back: the eviction gives it a second chance.
    hit: AtomicBool,
}

impl Slot {
    fn is(&self, key: &CacheKey<'_>) -> bool {
        self.signed.clean_url() == key.url && (Arc::ptr_eq(&self.scope, key.scope) || *self.scope == **key.scope)
    }
}

/// A shard: an `lru` cache keyed by the key's hash, in the order URLs were stored or given
/// their second chance.
type Shard = LruCache<u64, Slot>;

/// Drops the least recently used URL that was not hit since it last reached the back; a hit
/// one goes to the front instead (second chance). Hits only flag a URL, under a read lock that
/// writes no memory another thread reads: hand-written for the cache-hit figures in
/// BENCHMARKS.md (one thread against quick_cache, and two threads against one).
fn evict(shard: &mut Shard) -> bool {
    // Each URL is looked at most twice: the flags it clears do not come back.
    for _ in 0..=shard.len() {
        let Some((&hash, slot)) = shard.peek_lru() else { return false };
        if slot.hit.swap(false, Ordering::Relaxed) {
            shard.promote(&hash);
        } else {
            return shard.pop_lru().is_some();
        }
    }
    shard.pop_lru().is_some()
}

/// Shards: threads on different keys do not queue on one lock.
const SHARDS: usize = 16;

/// An in-memory cache of presigned URLs, bounded: it never holds more than its capacity, and it
/// fills to its capacity before it drops anything. Its 16 shards are `lru` caches chosen by the
/// key's hash; when the cache is full, a put drops the least recently stored URL of its shard
/// that was not hit since (a hit one gets a second chance at the front), so URLs in use stay.
/// Hits take a read lock and touch no list: threads reading the cache do not queue.
///
/// ```
/// # futures::executor::block_on(async {
/// use std::sync::Arc;
/// use std::time::{Duration, SystemTime};
/// use secure_media_core::presigned::{CacheKey, MemoryPresignCache, PresignCache, SignedUrl};
///
/// let cache = MemoryPresignCache::new(1_000);
/// let (alice, bob): (Arc<str>, Arc<str>) = ("sub:alice".into(), "sub:bob".into());
/// let clean = "https://files-us.cometchat.io/a.png";
/// let now = SystemTime::now();
/// let url = url::Url::parse("https://media-us.cometchat.io/a.png?Signature=s").unwrap();
/// cache.put(&CacheKey::new(&alice, clean), SignedUrl::new(clean, url, now, now + Duration::from_secs(60))).await;
/// assert!(cache.get_ready(&CacheKey::new(&alice, clean)).is_some());
/// assert!(cache.get_ready(&CacheKey::new(&bob, clean)).is_none());
/// # });
/// ```
pub struct MemoryPresignCache {
    shards: Box<[ShardedLock<Shard>]>,
    /// Files keys by hash and picks their shard. Seeded per cache: keys are the caller's URLs,
    /// so their hashes must not be predictable.
    hasher: lru::DefaultHasher,
    len: AtomicUsize,
    capacity: usize,
}

impl MemoryPresignCache {
    /// A cache holding at most `capacity` URLs (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let shards = (0..SHARDS).map(|_| ShardedLock::new(LruCache::unbounded())).collect();
        Self { shards, hasher: lru::DefaultHasher::default(), len: AtomicUsize::new(0), capacity }
    }

    /// The most URLs it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many URLs it holds now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| read(shard).len()).sum()
    }

    /// Holds nothing?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key's hash and its shard's index.
    fn shard(&self, key: &CacheKey<'_>) -> (u64, usize) {
        let hash = self.hasher.hash_one((key.scope(), key.url));
        // The high bits pick the shard; the shard's table hashes the whole value again.
        (hash, (hash >> 60) as usize % SHARDS)
    }

    /// Entries removed: the count follows.
    fn removed(&self, count: usize) {
        self.len.fetch_sub(count, Ordering::Relaxed);
    }
}

fn read(shard: &ShardedLock<Shard>) -> ShardedLockReadGuard<'_, Shard> {
    shard.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(shard: &ShardedLock<Shard>) -> ShardedLockWriteGuard<'_, Shard> {
    shard.write().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl PresignCache for MemoryPresignCache {
    fn get_ready(&self, key: &CacheKey<'_>) -> Option<SignedUrl> {
        let (hash, index) = self.shard(key);
        let shard = read(&self.shards[index]);
        let slot = shard.peek(&hash).filter(|slot| slot.is(key))?;
        // Written once per trip through the shard: later hits leave the line shared.
        if !slot.hit.load(Ordering::Relaxed) {
            slot.hit.store(true, Ordering::Relaxed);
        }
        Some(slot.signed.clone())
    }

    async fn put(&self, key: &CacheKey<'_>, url: SignedUrl) {
        // A URL presigned for another clean URL is not this key's answer.
        if url.clean_url() != key.url {
            return;
        }
        let slot = Slot { scope: key.scope.clone(), signed: url, hit: AtomicBool::new(false) };
        let (hash, index) = self.shard(key);
        let mut shard = write(&self.shards[index]);
        if shard.contains(&hash) {
            shard.put(hash, slot); // this key (or one sharing its hash): replaced, the count stays
            return;
        }
        // Room first, then the new URL: an eviction never takes the URL just stored.
        if self.len.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            let evicted = if evict(&mut shard) {
                true
            } else {
                // This shard holds nothing: a URL of another goes (one lock held at a time).
                drop(shard);
                let evicted = self.shards.iter().enumerate().any(|(i, other)| i != index && evict(&mut write(other)));
                shard = write(&self.shards[index]);
                evicted
            };
            if evicted {
                self.removed(1);
            }
        }
        if shard.put(hash, slot).is_some() {
            self.removed(1); // stored meanwhile by another caller: replaced, not added
        }
    }

    async fn remove(&self, key: &CacheKey<'_>) {
        let (hash, index) = self.shard(key);
        let mut shard = write(&self.shards[index]);
        if shard.peek(&hash).is_some_and(|slot| slot.is(key)) && shard.pop(&hash).is_some() {
            self.removed(1);
        }
    }

    async fn remove_refused(&self, key: &CacheKey<'_>, refused: &SignedUrl) {
        let (hash, index) = self.shard(key);
        let mut shard = write(&self.shards[index]);
        let same = shard.peek(&hash).is_some_and(|slot| {
            slot.is(key) && (slot.signed.same_as(refused) || slot.signed.as_str() == refused.as_str())
        });
        if same && shard.pop(&hash).is_some() {
            self.removed(1);
        }
    }

    fn purge_scope(&self, scope: &str) {
        for shard in self.shards.iter() {
            let mut shard = write(shard);
            let before = shard.len();
            shard.retain(|_, slot| &*slot.scope != scope);
            self.removed(before - shard.len());
        }
    }
}

impl fmt::Debug for MemoryPresignCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryPresignCache").field("capacity", &self.capacity).field("len", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    /// The `n`th signed URL for `clean`.
    fn signed(clean: &str, n: usize) -> SignedUrl {
        let now = SystemTime::now();
        let url = url::Url::parse(&format!("https://m.io/{n}?Signature=s")).unwrap();
        SignedUrl::new(clean, url, now, now + Duration::from_secs(60))
    }

    fn scope(name: &str) -> Arc<str> {
        name.into()
    }

    #[tokio::test]
    async fn capacity_n_never_holds_more_than_n() {
        let s = scope("s");
        for capacity in [1, 7, 64, 100, 1000] {
            let cache = MemoryPresignCache::new(capacity);
            let urls: Vec<String> = (0..capacity * 3).map(|i| format!("https://h.io/{i}")).collect();
            for (i, url) in urls.iter().enumerate() {
                cache.put(&CacheKey::new(&s, url), signed(url, i)).await;
                assert_eq!(cache.len(), (i + 1).min(capacity), "it fills to its capacity before it drops anything");
            }
        }
    }

    #[tokio::test]
    async fn a_hit_answers_the_url_put_under_that_key() {
        let (s, cache) = (scope("s"), MemoryPresignCache::new(10));
        let key = CacheKey::new(&s, "https://h.io/a");
        cache.put(&key, signed(key.url(), 1)).await;
        let hit = cache.get_ready(&key).unwrap();
        assert_eq!((hit.as_str(), hit.clean_url()), ("https://m.io/1?Signature=s", "https://h.io/a"));
        cache.put(&key, signed(key.url(), 2)).await;
        assert_eq!(cache.get_ready(&key).unwrap().as_str(), "https://m.io/2?Signature=s", "a put replaces");
        assert_eq!(cache.len(), 1);
        cache.put(&key, signed("https://h.io/other", 3)).await;
        assert_eq!(
            cache.get_ready(&key).unwrap().as_str(),
            "https://m.io/2?Signature=s",
            "another URL's answer is not stored"
        );
    }

    #[tokio::test]
    async fn a_full_shard_keeps_the_url_just_stored_even_when_every_other_was_hit() {
        let (s, cache) = (scope("s"), MemoryPresignCache::new(3));
        let urls: Vec<String> = (0..400).map(|i| format!("https://h.io/{i}")).collect();
        let first = cache.shard(&CacheKey::new(&s, &urls[0])).1;
        let same: Vec<&String> =
            urls.iter().filter(|u| cache.shard(&CacheKey::new(&s, u)).1 == first).take(4).collect();
        for url in &same[..3] {
            cache.put(&CacheKey::new(&s, url), signed(url, 0)).await;
            assert!(cache.get_ready(&CacheKey::new(&s, url)).is_some());
        }
        let newest = CacheKey::new(&s, same[3]);
        cache.put(&newest, signed(same[3], 1)).await;
        assert!(cache.get_ready(&newest).is_some());
        assert_eq!(cache.len(), 3);
    }

    #[tokio::test]
    async fn the_least_recently_used_url_goes_first() {
        // Find three keys that share a shard: eviction starts in the shard written to.
        let (s, cache) = (scope("s"), MemoryPresignCache::new(2));
        let urls: Vec<String> = (0..400).map(|i| format!("https://h.io/{i}")).collect();
        let shard_of = |url: &str| cache.shard(&CacheKey::new(&s, url)).1;
        let first = shard_of(&urls[0]);
        let same: Vec<&String> = urls.iter().filter(|u| shard_of(u) == first).take(3).collect();
        let [a, b, c] = [same[0], same[1], same[2]].map(|url| CacheKey::new(&s, url));
        cache.put(&a, signed(a.url(), 1)).await;
        cache.put(&b, signed(b.url(), 2)).await;
        assert!(cache.get_ready(&a).is_some());
        cache.put(&c, signed(c.url(), 3)).await;
        assert!(cache.get_ready(&a).is_some() && cache.get_ready(&b).is_none() && cache.get_ready(&c).is_some());
    }

    #[tokio::test]
    async fn scopes_are_isolated_and_purged_alone() {
        let (alice_scope, bob_scope) = (scope("sub:alice"), scope("sub:bob"));
        let cache = MemoryPresignCache::new(100);
        let alice = CacheKey::new(&alice_scope, "https://h.io/a");
        let bob = CacheKey::new(&bob_scope, "https://h.io/a");
        cache.put(&alice, signed(alice.url(), 1)).await;
        assert!(cache.get_ready(&bob).is_none());
        cache.put(&bob, signed(bob.url(), 2)).await;
        cache.purge_scope("sub:alice");
        assert!(cache.get_ready(&alice).is_none());
        assert!(cache.get_ready(&bob).is_some());
        cache.remove(&bob).await;
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn removing_a_refused_url_keeps_a_fresher_one() {
        let (s, cache) = (scope("sub:a"), MemoryPresignCache::new(10));
        let key = CacheKey::new(&s, "https://h.io/a");
        let (refused, fresher) = (signed(key.url(), 1), signed(key.url(), 2));
        cache.put(&key, refused.clone()).await;
        cache.put(&key, fresher.clone()).await;
        cache.remove_refused(&key, &refused).await;
        assert_eq!(cache.get_ready(&key).unwrap().as_str(), fresher.as_str());
        cache.remove_refused(&key, &fresher).await;
        assert!(cache.get_ready(&key).is_none());
    }

    /// Random puts, hits, removals and purges against a plain map: the cache may forget, but it
    /// never answers a URL that was not the last one put for that key, nor exceeds its capacity.
    #[tokio::test]
    async fn random_operations_never_answer_a_wrong_url() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n) as usize
        };
        let scopes = [scope("sub:a"), scope("sub:b")];
        for capacity in [1, 5, 64, 200] {
            let cache = MemoryPresignCache::new(capacity);
            let mut model = std::collections::HashMap::new();
            let urls: Vec<String> = (0..300).map(|i| format!("https://h.io/{i}")).collect();
            for step in 0..5_000 {
                let key = CacheKey::new(&scopes[next(2)], &urls[next(300)]);
                let model_key = (key.scope().to_owned(), key.url().to_owned());
                match next(10) {
                    0..=3 => {
                        cache.put(&key, signed(key.url(), step)).await;
                        model.insert(model_key, signed(key.url(), step).as_str().to_owned());
                    }
                    4..=7 => {
                        if let Some(hit) = cache.get_ready(&key) {
                            assert_eq!(Some(hit.as_str()), model.get(&model_key).map(String::as_str));
                            assert_eq!(hit.clean_url(), key.url());
                        }
                    }
                    8 => {
                        cache.remove(&key).await;
                        model.remove(&model_key);
                        assert!(cache.get_ready(&key).is_none());
                    }
                    _ if step % 50 == 0 => {
                        cache.purge_scope(key.scope());
                        model.retain(|(scope, _), _| scope != key.scope());
                        assert!(urls.iter().all(|u| cache.get_ready(&CacheKey::new(key.scope, u)).is_none()));
                    }
                    _ => {}
                }
                assert!(cache.len() <= capacity);
            }
        }
    }
}
