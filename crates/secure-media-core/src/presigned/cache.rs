//! [`PresignCache`]: where presigned URLs wait for reuse, and the in-memory
//! [`MemoryPresignCache`] (sharded, CLOCK eviction).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};

use async_trait::async_trait;
use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use hashbrown::HashTable;

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

/// A fast 64-bit hash, the same in every process (shared caches key by it; a release that
/// changes it only orphans a shared cache's entries until they expire): sixteen bytes a step through a folded 128-bit multiply, then a full avalanche. Not
/// collision-proof, so every hit is verified against the full key.
fn stable_hash(scope: &str, url: &str) -> u64 {
    // Every byte of K is >= 0x80, so no ASCII word cancels it to a zero factor.
    const K: u64 = 0xa0b1_c2d3_e4f5_8697;
    let fold = |a: u64, b: u64| {
        let product = u128::from(a) * u128::from(b);
        (product as u64) ^ ((product >> 64) as u64)
    };
    let mut h: u64 = ((scope.len() as u64) << 32 | url.len() as u64) ^ K.rotate_left(17);
    for part in [scope.as_bytes(), url.as_bytes()] {
        let mut pairs = part.chunks_exact(16);
        for pair in &mut pairs {
            let (a, b) = pair.split_at(8);
            h = fold(le64(a) ^ h, le64(b) ^ K);
        }
        h = fold(tail64(pairs.remainder()) ^ h, K);
    }
    // fmix64 from MurmurHash3: every output bit depends on every input bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The first eight bytes, little-endian (`bytes` holds at least eight).
fn le64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes.get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(word)
}

/// Up to fifteen bytes folded into one word: the first and last eight overlap when there are
/// eight or more, and the length keeps "ab" and "ab\0" apart.
fn tail64(rest: &[u8]) -> u64 {
    let n = rest.len();
    let mixed = if n >= 8 {
        le64(rest) ^ le64(&rest[n - 8..]).rotate_left(23)
    } else {
        rest.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b))
    };
    mixed ^ (n as u64) << 59
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

    /// Forgets `refused` if it is still what `key` holds, and keeps a fresher URL stored there
    /// since (the media server refused, or the strategy could not use, that one URL). Default:
    /// [`remove`](Self::remove), for caches that cannot compare.
    async fn remove_refused(&self, key: &CacheKey<'_>, refused: &SignedUrl) {
        let _ = refused;
        self.remove(key).await
    }

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
    async fn remove_refused(&self, key: &CacheKey<'_>, refused: &SignedUrl) {
        (**self).remove_refused(key, refused).await
    }
    fn purge_scope(&self, scope: &str) {
        (**self).purge_scope(scope)
    }
}

/// Keys up to this many bytes (scope and URL) are stored inline.
const INLINE_KEY: usize = 102;

/// Scope and URL, side by side: inline when short, else in one allocation.
enum KeyBytes {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

/// The key a [`SignedUrl`] was stored under, kept inside it so a hit verifies the key in the
/// memory it touches anyway (the `Arc` it clones).
pub(crate) struct StoredKey {
    hash: u64,
    scope_len: usize,
    key: KeyBytes,
}

impl StoredKey {
    fn of(key: &CacheKey<'_>) -> Self {
        let (scope, url) = (key.scope.as_bytes(), key.url.as_bytes());
        let total = scope.len() + url.len();
        let bytes = match u8::try_from(total) {
            Ok(len) if total <= INLINE_KEY => {
                let mut bytes = [0u8; INLINE_KEY];
                bytes[..scope.len()].copy_from_slice(scope);
                bytes[scope.len()..total].copy_from_slice(url);
                KeyBytes::Inline { len, bytes }
            }
            _ => KeyBytes::Heap([scope, url].concat().into_boxed_slice()),
        };
        Self { hash: key.hash, scope_len: scope.len(), key: bytes }
    }

    fn bytes(&self) -> &[u8] {
        match &self.key {
            KeyBytes::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            KeyBytes::Heap(bytes) => bytes,
        }
    }

    pub(crate) fn scope(&self) -> &[u8] {
        self.bytes().get(..self.scope_len).unwrap_or_default()
    }

    fn is(&self, key: &CacheKey<'_>) -> bool {
        let stored = self.bytes();
        self.hash == key.hash
            && self.scope_len == key.scope.len()
            && stored.len() == key.scope.len() + key.url.len()
            && stored.starts_with(key.scope.as_bytes())
            && stored.ends_with(key.url.as_bytes())
    }
}

/// One cached URL: the slab stays small (the key lives in the [`SignedUrl`]).
struct Slot {
    hash: u64,
    value: Arc<SignedUrl>,
    /// Set by hits (under the read lock), cleared by the clock hand: the second chance.
    visited: AtomicBool,
}

impl Slot {
    /// The slot for `value` under `key`; a URL already stored under another key is copied, so
    /// each stored URL names exactly one key.
    fn new(key: &CacheKey<'_>, value: Arc<SignedUrl>) -> Self {
        let stored = value.stored_as.get_or_init(|| StoredKey::of(key));
        let value = if stored.is(key) {
            value
        } else {
            let copy = SignedUrl::new(value.url().clone(), value.fetched_at(), value.expires_at());
            let _ = copy.stored_as.set(StoredKey::of(key));
            Arc::new(copy)
        };
        Self { hash: key.hash, value, visited: AtomicBool::new(false) }
    }

    fn key(&self) -> Option<&StoredKey> {
        self.value.stored_as.get()
    }

    fn is(&self, key: &CacheKey<'_>) -> bool {
        self.key().is_some_and(|k| k.is(key))
    }
}

/// A shard: slots in a dense slab swept by a CLOCK hand, found through a table of slab indices
/// keyed by the entry hash (at most one slot per hash: a colliding put replaces).
struct Shard {
    table: HashTable<u32>,
    slots: Vec<Slot>,
    hand: usize,
    capacity: usize,
}

impl Shard {
    fn new(capacity: usize) -> Self {
        Self { table: HashTable::new(), slots: Vec::new(), hand: 0, capacity: capacity.max(1) }
    }

    fn find(&self, hash: u64) -> Option<usize> {
        let slots = &self.slots;
        self.table.find(hash, |&i| slots[i as usize].hash == hash).map(|&i| i as usize)
    }

    fn put(&mut self, slot: Slot) {
        if let Some(i) = self.find(slot.hash) {
            self.slots[i] = slot;
            return;
        }
        let index = if self.slots.len() < self.capacity {
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            // Second chance: skip (and clear) visited slots; at most one full turn.
            while self.slots[self.hand].visited.swap(false, Ordering::Relaxed) {
                self.hand = (self.hand + 1) % self.slots.len();
            }
            let victim = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            self.unlink(victim);
            self.slots[victim] = slot;
            victim
        };
        let slots = &self.slots;
        // Slab indices fit in u32: a shard holds at most its capacity, far below 2^32 entries.
        self.table.insert_unique(slots[index].hash, index as u32, |&i| slots[i as usize].hash);
    }

    /// Removes slot `index`'s table entry (the slot itself stays until overwritten or moved).
    fn unlink(&mut self, index: usize) {
        let hash = self.slots[index].hash;
        if let Ok(entry) = self.table.find_entry(hash, |&i| i as usize == index) {
            entry.remove();
        }
    }

    /// Removes slot `index`, moving the last slot into its place.
    fn remove(&mut self, index: usize) {
        self.unlink(index);
        let last = self.slots.len() - 1;
        if index != last {
            let moved = self.slots[last].hash;
            if let Some(i) = self.table.find_mut(moved, |&i| i as usize == last) {
                *i = index as u32;
            }
        }
        self.slots.swap_remove(index);
        if self.hand >= self.slots.len() {
            self.hand = 0;
        }
    }
}

/// An in-memory cache of presigned URLs, sharded so threads on different keys do not queue on
/// one lock, and bounded: it never holds more than its capacity. Eviction is CLOCK (second
/// chance), an approximation of LRU in which a hit only sets a flag: hits take a read lock, touch
/// no list and clone an `Arc`. Each shard's lock is a `ShardedLock`: a reader locks only its own
/// thread's part, so threads reading the same shard do not pass a lock's cache line back and
/// forth (writers, rare, lock every part).
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
    shards: Box<[Padded<ShardedLock<Shard>>]>,
    capacity: usize,
}

/// A shard alone on its pair of cache lines: threads locking neighbouring shards do not
/// invalidate each other's line (x86 prefetches lines in 128-byte pairs).
#[repr(align(128))]
struct Padded<T>(T);

impl MemoryPresignCache {
    /// A cache holding at most `capacity` URLs (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // 16 shards once each can hold a useful number of entries; one for tiny caches.
        let shard_count = if capacity >= 16 * 4 { 16 } else { 1 };
        let shards = (0..shard_count)
            .map(|i| {
                Padded(ShardedLock::new(Shard::new(capacity / shard_count + usize::from(i < capacity % shard_count))))
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
        self.shards.iter().map(|s| read(&s.0).slots.len()).sum()
    }

    /// Holds nothing?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &CacheKey<'_>) -> &ShardedLock<Shard> {
        // The high bits pick the shard; the table uses the low bits.
        &self.shards[(key.hash >> 48) as usize % self.shards.len()].0
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
    fn get_ready(&self, key: &CacheKey<'_>) -> Option<Arc<SignedUrl>> {
        let shard = read(self.shard(key));
        let slot = &shard.slots[shard.find(key.hash)?];
        // A 64-bit collision between two keys reads as a miss, never as the other key's URL.
        if !slot.is(key) {
            return None;
        }
        // Only the first hit since the hand passed writes: later hits leave the line shared.
        if !slot.visited.load(Ordering::Relaxed) {
            slot.visited.store(true, Ordering::Relaxed);
        }
        Some(slot.value.clone())
    }

    async fn put(&self, key: &CacheKey<'_>, url: Arc<SignedUrl>) {
        let slot = Slot::new(key, url);
        write(self.shard(key)).put(slot);
    }

    async fn remove(&self, key: &CacheKey<'_>) {
        let mut shard = write(self.shard(key));
        if let Some(index) = shard.find(key.hash).filter(|&i| shard.slots[i].is(key)) {
            shard.remove(index);
        }
    }

    async fn remove_refused(&self, key: &CacheKey<'_>, refused: &SignedUrl) {
        let mut shard = write(self.shard(key));
        let same = |slot: &Slot| {
            slot.is(key) && (std::ptr::eq(&*slot.value, refused) || slot.value.as_str() == refused.as_str())
        };
        if let Some(index) = shard.find(key.hash).filter(|&i| same(&shard.slots[i])) {
            shard.remove(index);
        }
    }

    fn purge_scope(&self, scope: &str) {
        for shard in self.shards.iter() {
            let mut shard = write(&shard.0);
            // Backwards: a removal moves the last slot, one already looked at, into the hole.
            for index in (0..shard.slots.len()).rev() {
                if shard.slots[index].key().is_some_and(|k| k.scope() == scope.as_bytes()) {
                    shard.remove(index);
                }
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
    async fn a_slot_hit_since_the_hand_passed_gets_a_second_chance() {
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

    #[tokio::test]
    async fn removing_a_refused_url_keeps_a_fresher_one() {
        let cache = MemoryPresignCache::new(10);
        let key = CacheKey::new("sub:a", "https://h.io/a");
        let (refused, fresher) = (signed(1), signed(2));
        cache.put(&key, refused.clone()).await;
        cache.put(&key, fresher.clone()).await;
        cache.remove_refused(&key, &refused).await;
        assert_eq!(cache.get_ready(&key).unwrap().as_str(), fresher.as_str());
        cache.remove_refused(&key, &fresher).await;
        assert!(cache.get_ready(&key).is_none());
    }

    #[test]
    fn the_hash_is_pinned_so_processes_agree() {
        // Shared caches key by it: a change must be deliberate (and noted in the changelog).
        assert_eq!(stable_hash("sub:alice", "https://files-us.cometchat.io/app/media/a.png"), 13387839156249009144);
        assert_ne!(stable_hash("sub:alice", "https://h.io/ab"), stable_hash("sub:alice", "https://h.io/ab\0"));
        assert_ne!(stable_hash("sub:a", "lice/x"), stable_hash("sub:alice", "/x"));
    }

    #[tokio::test]
    async fn a_hash_collision_is_a_miss_and_a_colliding_put_replaces() {
        let cache = MemoryPresignCache::new(10);
        let a = CacheKey { scope: "s", url: "https://h.io/a", hash: 7 };
        let b = CacheKey { scope: "s", url: "https://h.io/b", hash: 7 };
        cache.put(&a, signed(1)).await;
        assert!(cache.get_ready(&b).is_none());
        cache.put(&b, signed(2)).await;
        assert!(cache.get_ready(&a).is_none());
        assert_eq!(cache.get_ready(&b).unwrap().as_str(), signed(2).as_str());
        assert_eq!(cache.len(), 1);
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
        for capacity in [1, 5, 64, 200] {
            let cache = MemoryPresignCache::new(capacity);
            let mut model = std::collections::HashMap::new();
            let urls: Vec<String> = (0..300).map(|i| format!("https://h.io/{i}")).collect();
            let scopes = ["sub:a", "sub:b"];
            for step in 0..5_000 {
                let key = CacheKey::new(scopes[next(2)], &urls[next(300)]);
                match next(10) {
                    0..=3 => {
                        cache.put(&key, signed(step)).await;
                        model.insert((key.scope, key.url), signed(step).as_str().to_owned());
                    }
                    4..=7 => {
                        if let Some(hit) = cache.get_ready(&key) {
                            assert_eq!(Some(hit.as_str()), model.get(&(key.scope, key.url)).map(String::as_str));
                        }
                    }
                    8 => {
                        cache.remove(&key).await;
                        model.remove(&(key.scope, key.url));
                        assert!(cache.get_ready(&key).is_none());
                    }
                    _ if step % 50 == 0 => {
                        cache.purge_scope(key.scope);
                        model.retain(|(scope, _), _| *scope != key.scope);
                        assert!(urls.iter().all(|u| cache.get_ready(&CacheKey::new(key.scope, u)).is_none()));
                    }
                    _ => {}
                }
                assert!(cache.len() <= capacity);
            }
        }
    }
}
